//! Validation of a raw config tree: unknown keys (with the nearest valid key), types,
//! ranges, enum values, and the rules that tie fields together. Every problem is
//! reported at once, each with the file and line that set the field.
//!
//! Errors make a config unusable. Warnings are accepted configs that probably do not
//! do what their author meant (a value with no effect, a backend lem does not run).
//! `unsupported` is separate: valid seed configs that lem cannot honour yet and refuses
//! to run (`config validate` accepts them, `experiment` does not).

use super::datasets::{dataset_alias, DATASET_ALIASES};
use super::error::{ConfigError, Origins, Problem};
use super::load::LoadedConfig;
use super::schema::{EngineKind, ExperimentConfig, ShardingStrategy};
use super::spec::{self, nearest, Field, Ty};
use super::tree::{get_path, join, key_str, kind};
use serde_yaml::{Mapping, Value};

/// The outcome of validating one config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validation {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// The warnings when valid, else the errors as one `ConfigError::Invalid`.
    pub fn into_result(self) -> Result<Vec<Problem>, ConfigError> {
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(ConfigError::Invalid {
                problems: self.errors,
            })
        }
    }
}

/// Validates a loaded file on its own (no preset, no CLI flags).
pub fn validate(loaded: &LoadedConfig) -> Validation {
    validate_tree(&loaded.raw, &loaded.origins)
}

/// Validates a merged raw tree; `origins` place each problem in a file and line.
pub fn validate_tree(raw: &Value, origins: &Origins) -> Validation {
    let mut cx = Cx {
        origins,
        out: Validation::default(),
    };
    match raw {
        Value::Mapping(m) => {
            check_section(&mut cx, "", m, spec::TOP);
            cross_checks(&mut cx, raw);
        }
        other => cx.error(
            "(config)",
            format!(
                "the config must be a mapping of fields, found {}",
                kind(other)
            ),
            None,
        ),
    }
    cx.out
}

/// What lem accepts (the seed's schema) but cannot honour yet; the runner refuses
/// configs with any of these rather than silently measuring something else.
pub fn unsupported(cfg: &ExperimentConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |field: &str, message: String| {
        out.push(Problem {
            file: None,
            line: None,
            field: field.to_string(),
            message,
            suggestion: None,
        })
    };
    if cfg.sharding_config.strategy != ShardingStrategy::None {
        add(
            "sharding_config.strategy",
            "tensor/pipeline parallel sharding is not supported by lem's candle engine yet".into(),
        );
    }
    if cfg.num_processes > 1 {
        add(
            "num_processes",
            format!(
                "{} data-parallel processes requested; lem's engine runs one process per experiment for now (use 1)",
                cfg.num_processes
            ),
        );
    }
    if cfg.engine == EngineKind::Openai && cfg.warmup_until_stable.enabled {
        add(
            "warmup_until_stable.enabled",
            "warmup until steady state is not implemented for engine: openai yet (use warmup_prompts)".into(),
        );
    }
    if cfg.decoder_config.no_repeat_ngram_size > 0 {
        add(
            "decoder_config.no_repeat_ngram_size",
            "n-gram repetition blocking is not implemented by lem's sampler yet".into(),
        );
    }
    out
}

struct Cx<'a> {
    origins: &'a Origins,
    out: Validation,
}

impl Cx<'_> {
    fn problem(&self, field: &str, message: String, suggestion: Option<String>) -> Problem {
        let origin = self.origins.lookup(field);
        Problem {
            file: origin.map(|o| o.file.clone()),
            line: origin.and_then(|o| o.line),
            field: field.to_string(),
            message,
            suggestion,
        }
    }
    fn error(&mut self, field: &str, message: String, suggestion: Option<String>) {
        let p = self.problem(field, message, suggestion);
        self.out.errors.push(p);
    }
    fn warn(&mut self, field: &str, message: String) {
        let p = self.problem(field, message, None);
        self.out.warnings.push(p);
    }
}

fn find<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().find(|f| f.name == name)
}

fn check_section(cx: &mut Cx<'_>, prefix: &str, map: &Mapping, fields: &[Field]) {
    for (k, v) in map {
        let key = key_str(k);
        let path = join(prefix, &key);
        match find(fields, &key) {
            Some(field) => check_value(cx, &path, v, field),
            None => {
                let suggestion = suggest_key(prefix, &key, fields.iter().map(|f| f.name));
                cx.error(&path, "unknown field".into(), suggestion);
            }
        }
    }
    for field in fields.iter().filter(|f| f.required) {
        if !map.contains_key(field.name) {
            cx.error(
                &join(prefix, field.name),
                "missing required field".into(),
                None,
            );
        }
    }
}

/// The full path of the same key in another section, when there is exactly one
/// (`temperature` at the top level -> `decoder_config.temperature`), else the nearest
/// sibling key.
fn suggest_key<'a>(
    prefix: &str,
    key: &str,
    siblings: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let elsewhere: Vec<String> = spec::all_paths()
        .into_iter()
        .filter(|p| {
            let (parent, last) = p.rsplit_once('.').unwrap_or(("", p));
            last == key && parent != prefix
        })
        .collect();
    if let [only] = elsewhere.as_slice() {
        return Some(only.clone());
    }
    nearest(key, siblings)
}

fn check_value(cx: &mut Cx<'_>, path: &str, v: &Value, field: &Field) {
    if v.is_null() {
        let empty_section = matches!(field.ty, Ty::Section(_) | Ty::AnyMap);
        if !(field.nullable || empty_section) {
            cx.error(path, "must not be null".into(), None);
        }
        return;
    }
    check_type(cx, path, v, &field.ty);
}

fn check_type(cx: &mut Cx<'_>, path: &str, v: &Value, ty: &Ty) {
    match ty {
        Ty::Str => {
            if !v.is_string() {
                cx.error(path, format!("expected a string, found {}", kind(v)), None);
            }
        }
        Ty::Bool => {
            if !v.is_bool() {
                cx.error(
                    path,
                    format!("expected true or false, found {}", kind(v)),
                    None,
                );
            }
        }
        Ty::UInt { min, max } => match (v.as_u64(), v.as_i64()) {
            (Some(n), _) if n < *min || n > *max => cx.error(path, range_msg(*min, *max, n), None),
            (Some(_), _) => {}
            (None, Some(n)) => cx.error(path, range_msg(*min, *max, n), None),
            (None, None) => cx.error(
                path,
                format!("expected a whole number, found {}", kind(v)),
                None,
            ),
        },
        Ty::Float {
            min,
            max,
            min_exclusive,
        } => match v.as_f64() {
            Some(x) if x.is_nan() => cx.error(path, "must be a number, found NaN".into(), None),
            Some(x) => {
                let too_low = if *min_exclusive { x <= *min } else { x < *min };
                if too_low || x > *max {
                    let msg = match (*min_exclusive, max.is_finite()) {
                        (true, false) => format!("must be greater than {min} (found {x})"),
                        (false, true) => format!("must be between {min} and {max} (found {x})"),
                        (true, true) => {
                            format!("must be greater than {min} and at most {max} (found {x})")
                        }
                        (false, false) => format!("must be at least {min} (found {x})"),
                    };
                    cx.error(path, msg, None);
                }
            }
            None => cx.error(path, format!("expected a number, found {}", kind(v)), None),
        },
        Ty::Enum(values) => match v.as_str() {
            Some(s) if values.contains(&s) => {}
            Some(s) => cx.error(
                path,
                format!(
                    "unknown value `{s}` (expected one of: {})",
                    values.join(", ")
                ),
                nearest(s, values.iter().copied()).or_else(|| {
                    let lower = s.to_ascii_lowercase();
                    values.contains(&lower.as_str()).then_some(lower)
                }),
            ),
            None => cx.error(
                path,
                format!("expected one of: {}; found {}", values.join(", "), kind(v)),
                None,
            ),
        },
        Ty::UIntList => match v.as_sequence() {
            Some(items) if items.is_empty() => {
                cx.error(path, "must list at least one GPU index".into(), None)
            }
            Some(items) => {
                let mut seen = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let p = join(path, &i.to_string());
                    check_type(
                        cx,
                        &p,
                        item,
                        &Ty::UInt {
                            min: 0,
                            max: u32::MAX as u64,
                        },
                    );
                    if let Some(n) = item.as_u64() {
                        if seen.contains(&n) {
                            cx.error(&p, format!("{n} is listed twice"), None);
                        }
                        seen.push(n);
                    }
                }
            }
            None => cx.error(
                path,
                format!("expected a list of whole numbers, found {}", kind(v)),
                None,
            ),
        },
        Ty::AnyMap => match v.as_mapping() {
            Some(m) => {
                for k in m.keys() {
                    if !k.is_string() {
                        cx.error(
                            &join(path, &key_str(k)),
                            format!("keys must be strings, found {}", kind(k)),
                            None,
                        );
                    }
                }
            }
            None => cx.error(path, format!("expected a mapping, found {}", kind(v)), None),
        },
        Ty::Section(fields) => match v.as_mapping() {
            Some(m) => check_section(cx, path, m, fields),
            None => cx.error(path, format!("expected a mapping, found {}", kind(v)), None),
        },
        Ty::PromptSource => check_prompt_source(cx, path, v),
    }
}

fn range_msg<T: std::fmt::Display>(min: u64, max: u64, n: T) -> String {
    let unbounded = max == u32::MAX as u64 || max == u64::MAX;
    match (min, unbounded) {
        (0, true) => format!("must be 0 or more (found {n})"),
        (m, true) => format!("must be at least {m} (found {n})"),
        (m, false) => format!("must be between {m} and {max} (found {n})"),
    }
}

fn check_prompt_source(cx: &mut Cx<'_>, path: &str, v: &Value) {
    let Some(m) = v.as_mapping() else {
        cx.error(path, format!("expected a mapping, found {}", kind(v)), None);
        return;
    };
    let ty = match m.get("type") {
        None => {
            cx.error(
                &join(path, "type"),
                format!(
                    "missing required field (one of: {})",
                    spec::PROMPT_TYPES.join(", ")
                ),
                None,
            );
            None
        }
        Some(t) => t.as_str().filter(|t| spec::PROMPT_TYPES.contains(t)),
    };
    // An unknown or missing type: check the keys every source takes and the type.
    let own = ty.map(spec::prompt_fields).unwrap_or(&[]);
    for (k, val) in m {
        let key = key_str(k);
        let p = join(path, &key);
        if let Some(field) = find(spec::PROMPT_COMMON, &key).or_else(|| find(own, &key)) {
            check_value(cx, &p, val, field);
            continue;
        }
        let Some(ty) = ty else {
            // Keys of a specific type cannot be judged without a valid type.
            let any_type = spec::PROMPT_TYPES
                .iter()
                .any(|t| find(spec::prompt_fields(t), &key).is_some());
            if !any_type {
                let names = spec::PROMPT_COMMON
                    .iter()
                    .chain(spec::PROMPT_SYNTHETIC)
                    .chain(spec::PROMPT_FILE)
                    .chain(spec::PROMPT_HF)
                    .map(|f| f.name);
                cx.error(&p, "unknown field".into(), nearest(&key, names));
            }
            continue;
        };
        let owner = spec::PROMPT_TYPES
            .iter()
            .find(|t| find(spec::prompt_fields(t), &key).is_some());
        let names = spec::PROMPT_COMMON.iter().chain(own).map(|f| f.name);
        match owner {
            Some(owner) => cx.error(
                &p,
                format!("not a field of a `{ty}` prompt source (it belongs to type `{owner}`)"),
                None,
            ),
            None => cx.error(&p, "unknown field".into(), nearest(&key, names)),
        }
    }
    for field in own.iter().filter(|f| f.required) {
        if !m.contains_key(field.name) {
            cx.error(
                &join(path, field.name),
                format!(
                    "missing required field for a `{}` prompt source",
                    ty.unwrap_or("")
                ),
                None,
            );
        }
    }
}

/// A field's value for the cross checks: the default when absent, `None` when it has
/// the wrong type (already reported; the rule is then skipped).
fn uint_or(raw: &Value, path: &str, default: u64) -> Option<u64> {
    match get_path(raw, path) {
        None | Some(Value::Null) => Some(default),
        Some(v) => v.as_u64(),
    }
}
fn float_or(raw: &Value, path: &str, default: f64) -> Option<f64> {
    match get_path(raw, path) {
        None | Some(Value::Null) => Some(default),
        Some(v) => v.as_f64(),
    }
}
fn bool_or(raw: &Value, path: &str, default: bool) -> Option<bool> {
    match get_path(raw, path) {
        None | Some(Value::Null) => Some(default),
        Some(v) => v.as_bool(),
    }
}
fn str_or<'a>(raw: &'a Value, path: &str, default: &'a str) -> Option<&'a str> {
    match get_path(raw, path) {
        None | Some(Value::Null) => Some(default),
        Some(v) => v.as_str(),
    }
}

/// Whether `s` looks like a Hugging Face `org/name` dataset id.
pub(crate) fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn cross_checks(cx: &mut Cx<'_>, raw: &Value) {
    if let (Some(min), Some(max)) = (
        uint_or(raw, "min_output_tokens", 0),
        uint_or(raw, "max_output_tokens", 128),
    ) {
        if min > max {
            cx.error(
                "min_output_tokens",
                format!("must not exceed max_output_tokens ({max}); found {min}"),
                None,
            );
        }
    }

    let gpus = match get_path(raw, "gpu_list") {
        None => Some(1),
        Some(v) => v.as_sequence().map(|s| s.len() as u64),
    };
    if let Some(gpus) = gpus.filter(|g| *g > 0) {
        if let Some(n) = uint_or(raw, "num_processes", 1).filter(|n| *n > gpus) {
            cx.error(
                "num_processes",
                format!("{n} processes need at least {n} GPUs, but gpu_list has {gpus}"),
                None,
            );
        }
        if let Some(n) = uint_or(raw, "sharding_config.num_shards", 1).filter(|n| *n > gpus) {
            cx.error(
                "sharding_config.num_shards",
                format!("{n} shards need at least {n} GPUs, but gpu_list has {gpus}"),
                None,
            );
        }
    }
    if str_or(raw, "sharding_config.strategy", "none") == Some("none")
        && uint_or(raw, "sharding_config.num_shards", 1).is_some_and(|n| n > 1)
    {
        cx.warn(
            "sharding_config.num_shards",
            "has no effect with sharding strategy `none`".into(),
        );
    }

    let q = "quantization_config";
    let four = bool_or(raw, "quantization_config.load_in_4bit", false);
    let eight = bool_or(raw, "quantization_config.load_in_8bit", false);
    let quant = bool_or(raw, "quantization_config.quantization", false);
    if four == Some(true) && eight == Some(true) {
        cx.error(
            &format!("{q}.load_in_8bit"),
            "load_in_4bit and load_in_8bit are mutually exclusive; enable only one".into(),
            None,
        );
    }
    if quant == Some(true) && four == Some(false) && eight == Some(false) {
        cx.error(
            &format!("{q}.quantization"),
            "quantization is enabled but no bit mode is set: set load_in_4bit or load_in_8bit"
                .into(),
            None,
        );
    }
    if quant == Some(false) {
        for (mode, on) in [("load_in_4bit", four), ("load_in_8bit", eight)] {
            if on == Some(true) {
                cx.warn(
                    &format!("{q}.{mode}"),
                    "has no effect while quantization is false".into(),
                );
            }
        }
    }

    let strategy = str_or(raw, "batching_options.strategy", "static");
    if matches!(strategy, Some("static" | "sorted_static"))
        && get_path(raw, "batching_options.max_tokens_per_batch").is_some_and(|v| !v.is_null())
    {
        cx.warn(
            "batching_options.max_tokens_per_batch",
            "is only used by the dynamic batching strategies".into(),
        );
    }

    if let Some(backend @ ("tensorrt" | "vllm")) = str_or(raw, "backend", "pytorch") {
        cx.warn(
            "backend",
            format!("lem runs the candle engine; backend {backend} is recorded but not used"),
        );
    }

    decoder_checks(cx, raw);
    prompt_checks(cx, raw);
    engine_checks(cx, raw);
    device_requirement_checks(cx, raw);
}

/// The `devices` section: names that are not blank, one MIG slice per job, nothing that
/// asks for GPUs on a CPU experiment.
fn device_requirement_checks(cx: &mut Cx<'_>, raw: &Value) {
    let Some(Value::Mapping(section)) = get_path(raw, "devices") else {
        return;
    };
    for key in ["gpu_model", "mig_profile"] {
        if let Some(name) = section.get(key).and_then(Value::as_str) {
            if name.trim().is_empty() {
                cx.error(
                    &format!("devices.{key}"),
                    "must not be empty (leave the key out to accept any)".into(),
                    None,
                );
            }
        }
    }
    let mig = section.get("mig_profile").is_some_and(|v| !v.is_null());
    let gpus = section.get("gpus").and_then(Value::as_u64);
    if let (true, Some(n)) = (mig, gpus.filter(|n| *n > 1)) {
        cx.error(
            "devices.gpus",
            format!("a job with mig_profile runs on one MIG slice; gpus must be 1 or left out (found {n})"),
            None,
        );
    }
    let exclusive = section.get("exclusive_parent").and_then(Value::as_bool);
    if exclusive == Some(true) && !mig {
        cx.warn(
            "devices.exclusive_parent",
            "has no effect without mig_profile (whole GPUs are always leased exclusively)".into(),
        );
    }
    let asks_gpus = ["gpus", "gpu_model", "mig_profile"]
        .iter()
        .filter(|k| section.get(**k).is_some_and(|v| !v.is_null()))
        .collect::<Vec<_>>();
    if str_or(raw, "device", "auto") == Some("cpu") {
        if let Some(first) = asks_gpus.first() {
            cx.error(
                &format!("devices.{first}"),
                "device: cpu runs on the CPU packages; remove the GPU needs or set device: cuda"
                    .into(),
                None,
            );
        }
    }
}

/// `engine: openai` needs its server; the server's settings mean nothing to candle.
fn engine_checks(cx: &mut Cx<'_>, raw: &Value) {
    let server = get_path(raw, "openai").filter(|v| !v.is_null());
    match str_or(raw, "engine", "candle") {
        Some("openai") => {
            let Some(server) = server else {
                cx.error(
                    "openai",
                    "engine: openai needs an `openai` section with at least `endpoint` (e.g. http://127.0.0.1:8000/v1) and `model` (the id the server serves)".into(),
                    None,
                );
                return;
            };
            if let Some(endpoint) = server.get("endpoint").and_then(Value::as_str) {
                if let Err(why) = check_endpoint(endpoint) {
                    cx.error("openai.endpoint", why, None);
                }
            }
            if let Some(model) = server.get("model").and_then(Value::as_str) {
                if model.trim().is_empty() {
                    cx.error("openai.model", "must not be empty".into(), None);
                }
            }
            if let Some(var) = server.get("api_key_env").and_then(Value::as_str) {
                let valid = !var.is_empty()
                    && !var.starts_with(|c: char| c.is_ascii_digit())
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    cx.error(
                        "openai.api_key_env",
                        format!("`{var}` is not an environment variable name (letters, digits, `_`; it names the variable holding the key, not the key)"),
                        None,
                    );
                }
            }
        }
        Some(_) if server.is_some() => cx.warn(
            "openai",
            "has no effect with engine: candle (set engine: openai to drive the server)".into(),
        ),
        _ => {}
    }
}

/// Why `endpoint` is not a base URL lem can call, if it is not: plain `http://`, a host,
/// no query or fragment.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.starts_with("https://") {
        return Err(format!(
            "`{endpoint}`: https is not supported yet; use a plain http:// endpoint (e.g. a loopback server or a TLS-terminating proxy on this node)"
        ));
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(format!(
            "`{endpoint}` is not an http:// URL (expected e.g. http://127.0.0.1:8000/v1)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("`{endpoint}` has no host"));
    }
    if rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
        return Err(format!(
            "`{endpoint}` must be a base URL without query, fragment or spaces"
        ));
    }
    Ok(())
}

fn decoder_checks(cx: &mut Cx<'_>, raw: &Value) {
    let d = "decoder_config";
    let (Some(sample), Some(temp)) = (
        bool_or(raw, "decoder_config.do_sample", false),
        float_or(raw, "decoder_config.temperature", 1.0),
    ) else {
        return;
    };
    if sample {
        return;
    }
    // Greedy decoding: sampling settings that differ from their defaults do nothing.
    let mut ignored = Vec::new();
    if temp != 0.0 && temp != 1.0 {
        ignored.push("temperature");
    }
    if float_or(raw, "decoder_config.top_p", 1.0).is_some_and(|x| x != 1.0) {
        ignored.push("top_p");
    }
    if uint_or(raw, "decoder_config.top_k", 50).is_some_and(|x| x != 50 && x != 0) {
        ignored.push("top_k");
    }
    if float_or(raw, "decoder_config.min_p", 0.0).is_some_and(|x| x != 0.0) {
        ignored.push("min_p");
    }
    if !ignored.is_empty() {
        cx.warn(
            &format!("{d}.do_sample"),
            format!(
                "do_sample is false (greedy decoding), so {} has no effect; set do_sample: true to sample",
                ignored.join(", ")
            ),
        );
    }
}

fn prompt_checks(cx: &mut Cx<'_>, raw: &Value) {
    let Some(Value::Mapping(_)) = get_path(raw, "prompt_source") else {
        return;
    };
    match get_path(raw, "prompt_source.type").and_then(Value::as_str) {
        Some("huggingface") => {
            if let Some(ds) = get_path(raw, "prompt_source.dataset").and_then(Value::as_str) {
                if dataset_alias(ds).is_none() && !is_repo_id(ds) {
                    let aliases: Vec<&str> = DATASET_ALIASES.iter().map(|a| a.alias).collect();
                    cx.error(
                        "prompt_source.dataset",
                        format!(
                            "unknown dataset `{ds}`: neither a built-in alias ({}) nor a Hugging Face `org/name` id",
                            aliases.join(", ")
                        ),
                        nearest(ds, aliases.iter().copied()),
                    );
                }
            }
        }
        Some("synthetic") => {
            let tokens = uint_or(raw, "prompt_source.input_tokens", 0);
            let max_in = uint_or(raw, "max_input_tokens", 512);
            if let (Some(t), Some(m)) = (tokens, max_in) {
                if t > m {
                    cx.warn(
                        "prompt_source.input_tokens",
                        format!("prompts are truncated to max_input_tokens ({m})"),
                    );
                }
            }
        }
        _ => {}
    }
}
