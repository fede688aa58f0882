//! A table of every config key, its type and range: what validation walks and what
//! `--vary` paths and "did you mean" suggestions are checked against.
//! Kept beside `schema.rs`; a test checks that the two agree.

pub(crate) enum Ty {
    Str,
    Bool,
    UInt {
        min: u64,
        max: u64,
    },
    Float {
        min: f64,
        max: f64,
        min_exclusive: bool,
    },
    Enum(&'static [&'static str]),
    UIntList,
    /// Any mapping with string keys (`extra_metadata`).
    AnyMap,
    Section(&'static [Field]),
    /// Tagged by `type`; see `PROMPT_TYPES`.
    PromptSource,
}

pub(crate) struct Field {
    pub name: &'static str,
    pub ty: Ty,
    /// `null` is accepted (an `Option` field).
    pub nullable: bool,
    pub required: bool,
}

const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        nullable: false,
        required: false,
    }
}
const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        nullable: true,
        required: false,
    }
}
const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        nullable: false,
        required: true,
    }
}

const U32: u64 = u32::MAX as u64;
const fn uint(min: u64, max: u64) -> Ty {
    Ty::UInt { min, max }
}
const fn float(min: f64, max: f64) -> Ty {
    Ty::Float {
        min,
        max,
        min_exclusive: false,
    }
}
const fn positive() -> Ty {
    Ty::Float {
        min: 0.0,
        max: f64::INFINITY,
        min_exclusive: true,
    }
}

pub(crate) const PRECISIONS: &[&str] = &["float32", "float16", "bfloat16"];
pub(crate) const BACKENDS: &[&str] = &["pytorch", "tensorrt", "vllm", "candle"];
pub(crate) const DEVICES: &[&str] = &["auto", "cpu", "cuda"];
pub(crate) const BATCHING_STRATEGIES: &[&str] =
    &["static", "dynamic", "sorted_static", "sorted_dynamic"];
pub(crate) const SHARDING_STRATEGIES: &[&str] = &["none", "tensor_parallel", "pipeline_parallel"];
pub(crate) const LATENCY_MODES: &[&str] = &["poisson", "constant"];
pub(crate) const DECODER_PRESETS: &[&str] = &["deterministic", "standard", "creative", "factual"];
pub(crate) const QUANT_TYPES: &[&str] = &["nf4", "fp4"];
pub(crate) const ENGINES: &[&str] = &["candle", "openai"];
pub(crate) const PROMPT_TYPES: &[&str] = &["synthetic", "file", "huggingface"];

pub(crate) const BATCHING: &[Field] = &[
    f("batch_size", uint(1, U32)),
    f("strategy", Ty::Enum(BATCHING_STRATEGIES)),
    opt("max_tokens_per_batch", uint(1, U32)),
];

pub(crate) const SHARDING: &[Field] = &[
    f("strategy", Ty::Enum(SHARDING_STRATEGIES)),
    f("num_shards", uint(1, U32)),
];

pub(crate) const LATENCY: &[Field] = &[
    f("enabled", Ty::Bool),
    f("mode", Ty::Enum(LATENCY_MODES)),
    f("target_qps", positive()),
    opt("seed", uint(0, u64::MAX)),
];

pub(crate) const DECODER: &[Field] = &[
    f("temperature", float(0.0, 2.0)),
    f("do_sample", Ty::Bool),
    f("top_p", float(0.0, 1.0)),
    f("top_k", uint(0, U32)),
    f("min_p", float(0.0, 1.0)),
    f("repetition_penalty", positive()),
    f("no_repeat_ngram_size", uint(0, U32)),
    opt("preset", Ty::Enum(DECODER_PRESETS)),
];

pub(crate) const QUANTIZATION: &[Field] = &[
    f("quantization", Ty::Bool),
    f("load_in_4bit", Ty::Bool),
    f("load_in_8bit", Ty::Bool),
    opt("bnb_4bit_quant_type", Ty::Enum(QUANT_TYPES)),
    opt("bnb_4bit_compute_dtype", Ty::Enum(PRECISIONS)),
    f("bnb_4bit_use_double_quant", Ty::Bool),
];

pub(crate) const STEADY_WARMUP: &[Field] = &[
    f("enabled", Ty::Bool),
    f("max_rounds", uint(1, 1_000)),
    f("tolerance", float(0.0, 1.0)),
];

pub(crate) const CARBON: &[Field] = &[
    opt("pue", float(1.0, 10.0)),
    opt("grid_intensity_gco2e_per_kwh", float(0.0, 10_000.0)),
];

pub(crate) const OPENAI: &[Field] = &[
    req("endpoint", Ty::Str),
    req("model", Ty::Str),
    opt("api_key_env", Ty::Str),
    opt("engine_name", Ty::Str),
    opt("engine_version", Ty::Str),
    opt("max_concurrency", uint(1, 100_000)),
    f("request_timeout_s", positive()),
];

pub(crate) const DEVICE_REQUIREMENTS: &[Field] = &[
    opt("gpus", uint(1, U32)),
    opt("gpu_model", Ty::Str),
    opt("mig_profile", Ty::Str),
    f("exclusive_parent", Ty::Bool),
];

/// Keys every prompt source takes.
pub(crate) const PROMPT_COMMON: &[Field] = &[
    req("type", Ty::Enum(PROMPT_TYPES)),
    opt("sample_size", uint(1, U32)),
    f("shuffle", Ty::Bool),
    f("seed", uint(0, u64::MAX)),
];
pub(crate) const PROMPT_SYNTHETIC: &[Field] = &[opt("input_tokens", uint(1, U32))];
pub(crate) const PROMPT_FILE: &[Field] = &[
    req("path", Ty::Str),
    opt("column", Ty::Str),
    opt("sha256", Ty::Str),
];
pub(crate) const PROMPT_HF: &[Field] = &[
    req("dataset", Ty::Str),
    opt("split", Ty::Str),
    opt("subset", Ty::Str),
    opt("column", Ty::Str),
];

/// The keys specific to one prompt source type.
pub(crate) fn prompt_fields(ty: &str) -> &'static [Field] {
    match ty {
        "synthetic" => PROMPT_SYNTHETIC,
        "file" => PROMPT_FILE,
        "huggingface" => PROMPT_HF,
        _ => &[],
    }
}

pub(crate) const TOP: &[Field] = &[
    req("config_name", Ty::Str),
    req("model_name", Ty::Str),
    f("max_input_tokens", uint(1, U32)),
    f("max_output_tokens", uint(1, U32)),
    f("min_output_tokens", uint(0, U32)),
    opt("num_input_prompts", uint(1, U32)),
    f("save_outputs", Ty::Bool),
    f("gpu_list", Ty::UIntList),
    f("num_processes", uint(1, U32)),
    f("fp_precision", Ty::Enum(PRECISIONS)),
    f("backend", Ty::Enum(BACKENDS)),
    opt("random_seed", uint(0, u64::MAX)),
    f("num_cycles", uint(1, 10)),
    f("extra_metadata", Ty::AnyMap),
    f("batching_options", Ty::Section(BATCHING)),
    f("sharding_config", Ty::Section(SHARDING)),
    f("latency_simulation", Ty::Section(LATENCY)),
    f("decoder_config", Ty::Section(DECODER)),
    f("quantization_config", Ty::Section(QUANTIZATION)),
    opt("prompt_source", Ty::PromptSource),
    // lem-only extensions.
    f("warmup_prompts", uint(0, U32)),
    f("device", Ty::Enum(DEVICES)),
    opt("cpu_threads", uint(1, U32)),
    f("idle_baseline_s", float(0.0, f64::INFINITY)),
    f("sample_period_ms", float(0.0, 60_000.0)),
    f("min_window_counter_periods", float(0.0, 1e9)),
    f("carbon", Ty::Section(CARBON)),
    f("warmup_until_stable", Ty::Section(STEADY_WARMUP)),
    f("engine", Ty::Enum(ENGINES)),
    opt("openai", Ty::Section(OPENAI)),
    opt("devices", Ty::Section(DEVICE_REQUIREMENTS)),
];

/// Sections that may be written empty (`decoder_config:` with every key commented out).
pub(crate) const SECTIONS: &[&str] = &[
    "batching_options",
    "sharding_config",
    "latency_simulation",
    "decoder_config",
    "quantization_config",
    "extra_metadata",
    "carbon",
    "warmup_until_stable",
];

/// Every dotted path of the schema (sections and their keys; prompt source keys of all
/// types), for suggestions.
pub(crate) fn all_paths() -> Vec<String> {
    let mut out = Vec::new();
    for field in TOP {
        out.push(field.name.to_string());
        match &field.ty {
            Ty::Section(fields) => {
                for sub in *fields {
                    out.push(format!("{}.{}", field.name, sub.name));
                }
            }
            Ty::PromptSource => {
                for sub in PROMPT_COMMON
                    .iter()
                    .chain(PROMPT_SYNTHETIC)
                    .chain(PROMPT_FILE)
                    .chain(PROMPT_HF)
                {
                    let p = format!("prompt_source.{}", sub.name);
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `path` names something in the schema (`extra_metadata.<anything>` included).
pub(crate) fn path_exists(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix("extra_metadata.") {
        return !rest.is_empty();
    }
    all_paths().iter().any(|p| p == path)
}

/// The nearest candidate to `word`, if it is close enough to be a plausible typo.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    // Below this the "suggestion" is usually unrelated and only confuses.
    best.filter(|(s, _)| *s >= 0.8).map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::*;

    fn names<T: serde::Serialize>(items: &[T]) -> Vec<String> {
        items
            .iter()
            .map(|i| {
                serde_json::to_value(i)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn enum_tables_match_the_schema_enums() {
        use Precision as P;
        assert_eq!(names(&[P::Float32, P::Float16, P::Bfloat16]), PRECISIONS);
        use Backend as B;
        assert_eq!(
            names(&[B::Pytorch, B::Tensorrt, B::Vllm, B::Candle]),
            BACKENDS
        );
        use BatchingStrategy as S;
        assert_eq!(
            names(&[S::Static, S::Dynamic, S::SortedStatic, S::SortedDynamic]),
            BATCHING_STRATEGIES
        );
        use ShardingStrategy as H;
        assert_eq!(
            names(&[H::None, H::TensorParallel, H::PipelineParallel]),
            SHARDING_STRATEGIES
        );
        assert_eq!(
            names(&[LatencyMode::Poisson, LatencyMode::Constant]),
            LATENCY_MODES
        );
        assert_eq!(names(&DecoderPreset::ALL), DECODER_PRESETS);
        assert_eq!(names(&[Device::Auto, Device::Cpu, Device::Cuda]), DEVICES);
        assert_eq!(names(&[EngineKind::Candle, EngineKind::Openai]), ENGINES);
    }

    #[test]
    fn field_table_matches_the_serialised_config() {
        let json = ExperimentConfig::default_for("n", "m").to_json();
        let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        keys.sort();
        // `devices` is left out of the JSON while unset (its own test below).
        let mut table: Vec<&str> = TOP
            .iter()
            .map(|f| f.name)
            .filter(|name| *name != "devices")
            .collect();
        table.sort();
        assert_eq!(keys, table);
        for (section, fields) in [
            ("batching_options", BATCHING),
            ("sharding_config", SHARDING),
            ("latency_simulation", LATENCY),
            ("decoder_config", DECODER),
            ("quantization_config", QUANTIZATION),
            ("carbon", CARBON),
            ("warmup_until_stable", STEADY_WARMUP),
        ] {
            let mut keys: Vec<&String> = json[section].as_object().unwrap().keys().collect();
            keys.sort();
            let mut table: Vec<&str> = fields.iter().map(|f| f.name).collect();
            table.sort();
            assert_eq!(keys, table, "{section}");
        }
        // `openai` is null by default: its keys, from a config that sets it.
        let mut with_server = ExperimentConfig::default_for("n", "m");
        with_server.openai = Some(OpenAiServerConfig {
            endpoint: "http://127.0.0.1:8000/v1".into(),
            model: "m".into(),
            api_key_env: None,
            engine_name: None,
            engine_version: None,
            max_concurrency: None,
            request_timeout_s: 1.0,
        });
        let json = with_server.to_json();
        let mut keys: Vec<&String> = json["openai"].as_object().unwrap().keys().collect();
        keys.sort();
        let mut table: Vec<&str> = OPENAI.iter().map(|f| f.name).collect();
        table.sort();
        assert_eq!(keys, table, "openai");
    }

    #[test]
    fn devices_is_left_out_until_set_and_then_has_the_tables_keys() {
        // Absent: not serialised at all (old configs keep their fingerprints), and the
        // one top-level key of the table the default JSON lacks.
        let json = ExperimentConfig::default_for("n", "m").to_json();
        assert!(json.get("devices").is_none(), "{json}");
        let missing: Vec<&str> = TOP
            .iter()
            .map(|f| f.name)
            .filter(|name| json.get(*name).is_none())
            .collect();
        assert_eq!(missing, ["devices"]);
        let mut with_devices = ExperimentConfig::default_for("n", "m");
        with_devices.devices = Some(DeviceRequirements::default());
        let json = with_devices.to_json();
        let mut keys: Vec<&String> = json["devices"].as_object().unwrap().keys().collect();
        keys.sort();
        let mut table: Vec<&str> = DEVICE_REQUIREMENTS.iter().map(|f| f.name).collect();
        table.sort();
        assert_eq!(keys, table, "devices");
    }

    #[test]
    fn suggestions_catch_typos_and_skip_nonsense() {
        assert_eq!(
            nearest("batch_sise", ["batch_size", "strategy"]),
            Some("batch_size".into())
        );
        assert_eq!(
            nearest("flaot16", PRECISIONS.iter().copied()),
            Some("float16".into())
        );
        assert_eq!(nearest("zzz", ["batch_size", "strategy"]), None);
    }
}
