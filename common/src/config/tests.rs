//! Tests across the config modules: parsing, defaults, presets, precedence, CLI rules,
//! validation rules and the wording of error messages (snapshots).

use super::test_text::{errors, resolve_text, text, warnings, MIN};
use super::*;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn files(list: &[(&str, &str)]) -> impl Fn(&Path) -> std::io::Result<String> {
    let map: HashMap<PathBuf, String> = list
        .iter()
        .map(|(p, t)| (load::normalise(Path::new(p)), t.to_string()))
        .collect();
    move |p: &Path| {
        map.get(&load::normalise(p))
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
    }
}

fn load(list: &[(&str, &str)], path: &str) -> LoadedConfig {
    load_config(Path::new(path), &files(list)).unwrap()
}

const SEED_STYLE: &str = r#"
config_name: llama-energy
model_name: meta-llama/Llama-3.2-1B
max_input_tokens: 1024
max_output_tokens: 256
min_output_tokens: 16
num_input_prompts: 100
save_outputs: true
gpu_list: [0, 1, 2, 3]
num_processes: 4
fp_precision: bfloat16
backend: pytorch
random_seed: 1234
num_cycles: 3
extra_metadata:
  project: green-ai
  tags: [a, b]
batching_options:
  batch_size: 16
  strategy: sorted_dynamic
  max_tokens_per_batch: 8192
sharding_config:
  strategy: none
  num_shards: 1
latency_simulation:
  enabled: false
  mode: constant
  target_qps: 2.5
  seed: 7
decoder_config:
  temperature: 0.7
  do_sample: true
  top_p: 0.9
  top_k: 40
  min_p: 0.05
  repetition_penalty: 1.2
  no_repeat_ngram_size: 0
quantization_config:
  quantization: true
  load_in_4bit: true
  load_in_8bit: false
  bnb_4bit_quant_type: nf4
  bnb_4bit_compute_dtype: bfloat16
  bnb_4bit_use_double_quant: true
prompt_source:
  type: huggingface
  dataset: alpaca
  split: train
  column: instruction
  sample_size: 100
  shuffle: true
  seed: 3
"#;

#[test]
fn a_full_seed_style_config_parses_into_every_field() {
    let r = resolve_text(SEED_STYLE).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let c = r.config;
    assert_eq!(c.config_name, "llama-energy");
    assert_eq!(c.model_name, "meta-llama/Llama-3.2-1B");
    assert_eq!(
        (c.max_input_tokens, c.max_output_tokens, c.min_output_tokens),
        (1024, 256, 16)
    );
    assert_eq!(c.num_input_prompts, Some(100));
    assert!(c.save_outputs);
    assert_eq!(c.gpu_list, vec![0, 1, 2, 3]);
    assert_eq!(c.num_processes, 4);
    assert_eq!(c.fp_precision, Precision::Bfloat16);
    assert_eq!(c.backend, Backend::Pytorch);
    assert_eq!(c.random_seed, Some(1234));
    assert_eq!(c.num_cycles, 3);
    assert_eq!(c.extra_metadata["project"], json!("green-ai"));
    assert_eq!(c.extra_metadata["tags"], json!(["a", "b"]));
    assert_eq!(
        c.batching_options,
        BatchingOptions {
            batch_size: 16,
            strategy: BatchingStrategy::SortedDynamic,
            max_tokens_per_batch: Some(8192)
        }
    );
    assert_eq!(c.sharding_config, ShardingConfig::default());
    assert_eq!(
        c.latency_simulation,
        LatencySimulation {
            enabled: false,
            mode: LatencyMode::Constant,
            target_qps: 2.5,
            seed: Some(7)
        }
    );
    assert_eq!(
        c.decoder_config,
        DecoderConfig {
            temperature: 0.7,
            do_sample: true,
            top_p: 0.9,
            top_k: 40,
            min_p: 0.05,
            repetition_penalty: 1.2,
            no_repeat_ngram_size: 0,
            preset: None
        }
    );
    assert_eq!(
        c.quantization_config,
        QuantizationConfig {
            quantization: true,
            load_in_4bit: true,
            load_in_8bit: false,
            bnb_4bit_quant_type: Some("nf4".into()),
            bnb_4bit_compute_dtype: Some("bfloat16".into()),
            bnb_4bit_use_double_quant: true
        }
    );
    assert_eq!(
        c.prompt_source,
        Some(PromptSource::Huggingface {
            dataset: "alpaca".into(),
            split: Some("train".into()),
            subset: None,
            column: Some("instruction".into()),
            sample_size: Some(100),
            shuffle: true,
            seed: 3
        })
    );
    // lem-only fields at their defaults.
    assert_eq!(
        (c.warmup_prompts, c.device, c.cpu_threads),
        (1, Device::Auto, None)
    );
    // JSON round trip (what results store and the coordinator reads back).
    let back: ExperimentConfig = serde_json::from_value(c.to_json()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn defaults_are_the_seeds() {
    let r = resolve_text(MIN).unwrap();
    assert_eq!(r.config, ExperimentConfig::default_for("t", "m"));
    let j = r.config.to_json();
    assert_eq!(j["max_input_tokens"], 512);
    assert_eq!(j["max_output_tokens"], 128);
    assert_eq!(j["min_output_tokens"], 0);
    assert_eq!(j["num_input_prompts"], json!(null));
    assert_eq!(j["gpu_list"], json!([0]));
    assert_eq!(j["fp_precision"], "float16");
    assert_eq!(j["backend"], "pytorch");
    assert_eq!(j["num_cycles"], 1);
    assert_eq!(
        j["batching_options"],
        json!({"batch_size": 1, "strategy": "static", "max_tokens_per_batch": null})
    );
    assert_eq!(
        j["sharding_config"],
        json!({"strategy": "none", "num_shards": 1})
    );
    assert_eq!(
        j["latency_simulation"],
        json!({"enabled": false, "mode": "poisson", "target_qps": 1.0, "seed": null})
    );
    assert_eq!(
        j["decoder_config"],
        json!({"temperature": 1.0, "do_sample": false, "top_p": 1.0, "top_k": 50, "min_p": 0.0,
               "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "preset": null})
    );
    assert_eq!(j["quantization_config"]["quantization"], false);
    assert_eq!(j["prompt_source"], json!(null));
    assert_eq!(j["warmup_prompts"], 1);
    assert_eq!(j["device"], "auto");
    assert!(r.config.decoder_config.is_greedy());
}

#[test]
fn prompt_source_defaults_and_types() {
    let r = resolve_text(&format!("{MIN}prompt_source: {{type: synthetic}}\n")).unwrap();
    assert_eq!(
        r.config.prompt_source,
        Some(PromptSource::Synthetic {
            input_tokens: None,
            sample_size: None,
            shuffle: false,
            seed: 42
        })
    );
    let r = resolve_text(&format!(
        "{MIN}prompt_source: {{type: file, path: p.jsonl, column: text}}\n"
    ))
    .unwrap();
    let src = r.config.prompt_source.unwrap();
    assert_eq!(src.type_name(), "file");
    assert_eq!(
        (src.sample_size(), src.shuffle(), src.seed()),
        (None, false, 42)
    );
    // Empty sections (every key commented out) are accepted as empty.
    let r = resolve_text(&format!(
        "{MIN}decoder_config:\n  # temperature: 0.5\nextra_metadata:\n"
    ))
    .unwrap();
    assert_eq!(r.config.decoder_config, DecoderConfig::default());
}

#[test]
fn every_preset_resolves_to_its_settings() {
    let cli = CliOverrides {
        model: Some("HuggingFaceTB/SmolLM2-135M-Instruct".into()),
        ..Default::default()
    };
    let names: Vec<&str> = presets().iter().map(|p| p.name).collect();
    assert_eq!(names, ["quick-test", "benchmark", "throughput"]);

    let q = resolve(Some("quick-test"), None, &cli).unwrap();
    assert_eq!(q.config.config_name, "quick-test-SmolLM2-135M-Instruct");
    assert_eq!(q.preset.as_deref(), Some("quick-test"));
    assert_eq!(
        (
            q.config.batching_options.batch_size,
            q.config.max_input_tokens,
            q.config.max_output_tokens
        ),
        (1, 64, 32)
    );
    assert_eq!(
        q.config.decoder_config.preset,
        Some(DecoderPreset::Deterministic)
    );
    assert_eq!(q.config.fp_precision, Precision::Float32);
    assert_eq!(q.config.decoder_config.temperature, 0.0);
    assert!(q.config.decoder_config.is_greedy());

    let b = resolve(Some("benchmark"), None, &cli).unwrap();
    assert_eq!(
        (
            b.config.batching_options.batch_size,
            b.config.max_input_tokens,
            b.config.max_output_tokens
        ),
        (1, 2048, 512)
    );
    assert_eq!(b.config.fp_precision, Precision::Float16);
    assert!(b.config.decoder_config.is_greedy());

    let t = resolve(Some("throughput"), None, &cli).unwrap();
    assert_eq!(
        (
            t.config.batching_options.batch_size,
            t.config.max_input_tokens,
            t.config.max_output_tokens
        ),
        (8, 512, 256)
    );
    assert_eq!(
        t.config.batching_options.strategy,
        BatchingStrategy::Dynamic
    );
    assert_eq!(t.config.fp_precision, Precision::Float16);
    // The model came from the CLI.
    assert_eq!(t.cli_overrides["model_name"].original, json!(null));
    assert_eq!(
        t.cli_overrides["model_name"].new,
        json!("HuggingFaceTB/SmolLM2-135M-Instruct")
    );

    let err = resolve(Some("quick-test"), None, &CliOverrides::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model_name: missing: give --model (or a config file that sets model_name)"
    );
    let err = resolve(Some("throughput2"), None, &cli).unwrap_err();
    assert!(
        err.to_string().ends_with("did you mean `throughput`?"),
        "{err}"
    );
}

#[test]
fn precedence_is_cli_over_file_over_preset_over_defaults() {
    let file = text(
        "config_name: exp\nmodel_name: file-model\nmax_output_tokens: 100\nbatching_options:\n  batch_size: 4\n",
    );
    // No CLI: the file beats the preset where both set a value; the preset beats defaults.
    let r = resolve(Some("throughput"), Some(&file), &CliOverrides::default()).unwrap();
    assert_eq!(r.config.config_name, "exp");
    assert_eq!(r.config.batching_options.batch_size, 4); // file > preset (8)
    assert_eq!(r.config.max_output_tokens, 100); // file > preset (256)
    assert_eq!(
        r.config.batching_options.strategy,
        BatchingStrategy::Dynamic
    ); // preset > default
    assert_eq!(r.config.num_cycles, 1); // default
    assert!(r.cli_overrides.is_empty());

    let cli = CliOverrides {
        model: Some("cli-model".into()),
        batch_size: Some(2),
        precision: Some("float32".into()),
        max_tokens: Some(64),
        seed: Some(9),
        cycles: Some(3),
        gpu_list: Some(vec![0, 1]),
        num_processes: Some(2),
        ..Default::default()
    };
    let r = resolve(Some("throughput"), Some(&file), &cli).unwrap();
    let c = &r.config;
    assert_eq!(c.model_name, "cli-model");
    assert_eq!(c.batching_options.batch_size, 2);
    assert_eq!(c.fp_precision, Precision::Float32);
    assert_eq!(c.max_output_tokens, 64);
    assert_eq!(c.random_seed, Some(9));
    assert_eq!(c.num_cycles, 3);
    assert_eq!(c.gpu_list, vec![0, 1]);
    assert_eq!(c.num_processes, 2);
    let rec = |k: &str| {
        let o = &r.cli_overrides[k];
        (o.original.clone(), o.new.clone())
    };
    assert_eq!(rec("model_name"), (json!("file-model"), json!("cli-model")));
    assert_eq!(rec("batching_options.batch_size"), (json!(4), json!(2)));
    // Original = the value before the CLI: from the preset here ...
    assert_eq!(rec("fp_precision"), (json!("float16"), json!("float32")));
    assert_eq!(rec("max_output_tokens"), (json!(100), json!(64)));
    // ... and the default where nothing set it.
    assert_eq!(rec("random_seed"), (json!(null), json!(9)));
    assert_eq!(rec("num_cycles"), (json!(1), json!(3)));
    assert_eq!(rec("gpu_list"), (json!([0]), json!([0, 1])));
    assert_eq!(rec("num_processes"), (json!(1), json!(2)));
    assert_eq!(r.cli_overrides.len(), 8);
}

#[test]
fn cli_dataset_and_num_prompts() {
    let file = text(&format!(
        "{MIN}prompt_source:\n  type: file\n  path: x.txt\n  shuffle: true\n  seed: 5\n"
    ));
    let cli = CliOverrides {
        dataset: Some("alpaca".into()),
        num_prompts: Some(50),
        ..Default::default()
    };
    let r = resolve(None, Some(&file), &cli).unwrap();
    assert_eq!(
        r.config.prompt_source,
        Some(PromptSource::Huggingface {
            dataset: "alpaca".into(),
            split: None,
            subset: None,
            column: None,
            sample_size: Some(50),
            shuffle: true,
            seed: 5
        })
    );
    assert_eq!(r.config.num_input_prompts, Some(50));
    assert_eq!(r.cli_overrides["prompt_source"].original["type"], "file");
    assert_eq!(
        r.cli_overrides["prompt_source.sample_size"].original,
        json!(null)
    );
    assert_eq!(r.cli_overrides["prompt_source.sample_size"].new, json!(50));
    assert_eq!(r.cli_overrides["num_input_prompts"].new, json!(50));

    let kind = |d: &str| {
        let cli = CliOverrides {
            dataset: Some(d.into()),
            ..Default::default()
        };
        resolve(None, Some(&text(MIN)), &cli).map(|r| r.config.prompt_source.unwrap())
    };
    assert!(
        matches!(kind("data/prompts.jsonl").unwrap(), PromptSource::File { path, .. } if path == "data/prompts.jsonl")
    );
    assert!(matches!(
        kind("./prompts").unwrap(),
        PromptSource::File { .. }
    ));
    assert!(matches!(
        kind("Prompts.CSV").unwrap(),
        PromptSource::File { .. }
    ));
    assert!(
        matches!(kind("openai/gsm8k").unwrap(), PromptSource::Huggingface { dataset, .. } if dataset == "openai/gsm8k")
    );
    assert!(matches!(
        kind("synthetic").unwrap(),
        PromptSource::Synthetic { .. }
    ));
    let err = kind("alpacca").unwrap_err();
    assert_eq!(
        err.to_string(),
        "command line (--dataset): prompt_source.dataset: unknown dataset `alpacca`: neither a built-in alias (alpaca, gsm8k, mmlu, sharegpt) nor a Hugging Face `org/name` id; did you mean `alpaca`?"
    );
    // -n without a prompt source sets only num_input_prompts.
    let cli = CliOverrides {
        num_prompts: Some(5),
        ..Default::default()
    };
    let r = resolve(None, Some(&text(MIN)), &cli).unwrap();
    assert_eq!(r.config.num_input_prompts, Some(5));
    assert_eq!(r.config.prompt_source, None);
    assert_eq!(r.cli_overrides.len(), 1);
}

#[test]
fn cli_temperature_and_quantization_rules() {
    let t = |temp: f64| {
        let cli = CliOverrides {
            temperature: Some(temp),
            ..Default::default()
        };
        resolve(None, Some(&text(MIN)), &cli).unwrap()
    };
    let r = t(0.0);
    assert!(!r.config.decoder_config.do_sample);
    assert!(r.config.decoder_config.is_greedy());
    let r = t(0.7);
    assert!(r.config.decoder_config.do_sample);
    assert_eq!(r.config.decoder_config.temperature, 0.7);
    assert_eq!(
        r.cli_overrides["decoder_config.do_sample"].original,
        json!(false)
    );
    assert_eq!(
        r.cli_overrides["decoder_config.temperature"].original,
        json!(1.0)
    );

    let q = |file: &str, on: bool| {
        let cli = CliOverrides {
            quantization: Some(on),
            ..Default::default()
        };
        resolve(None, Some(&text(file)), &cli)
    };
    let r = q(MIN, true).unwrap();
    assert!(r.config.quantization_config.quantization && r.config.quantization_config.load_in_4bit);
    assert_eq!(
        r.warnings,
        ["--quantization: the config sets no bit mode; using load_in_4bit"]
    );
    let eight = format!("{MIN}quantization_config: {{load_in_8bit: true}}\n");
    let r = q(&eight, true).unwrap();
    assert!(
        r.config.quantization_config.load_in_8bit && !r.config.quantization_config.load_in_4bit
    );
    assert!(r.warnings.is_empty());
    let r = q(
        &format!("{MIN}quantization_config: {{quantization: true, load_in_8bit: true}}\n"),
        false,
    )
    .unwrap();
    assert!(
        !r.config.quantization_config.quantization && !r.config.quantization_config.load_in_8bit
    );
    // In a file, quantization without a bit mode stays an error.
    let err = resolve_text(&format!(
        "{MIN}quantization_config: {{quantization: true}}\n"
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "configs/a.yaml:3: quantization_config.quantization: quantization is enabled but no bit mode is set: set load_in_4bit or load_in_8bit"
    );
    // A bad CLI value is reported against the flag.
    let cli = CliOverrides {
        precision: Some("fp16".into()),
        ..Default::default()
    };
    let err = resolve(None, Some(&text(MIN)), &cli).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("command line (--precision): fp_precision: unknown value `fp16`"),
        "{err}"
    );
}

#[test]
fn decoder_preset_with_an_explicit_override() {
    let r = resolve_text(&format!(
        "{MIN}decoder_config:\n  preset: creative\n  top_p: 0.5\n"
    ))
    .unwrap();
    let d = r.config.decoder_config;
    assert_eq!(d.preset, Some(DecoderPreset::Creative));
    assert_eq!(d.top_p, 0.5); // explicit
    assert_eq!(d.temperature, 0.8); // preset
    assert_eq!(d.repetition_penalty, 1.1); // preset
    assert!(d.do_sample);
    assert_eq!(d.top_k, 50); // default (creative does not set it)

    let f = resolve_text(&format!("{MIN}decoder_config: {{preset: factual}}\n")).unwrap();
    assert_eq!(
        (
            f.config.decoder_config.temperature,
            f.config.decoder_config.top_k
        ),
        (0.3, 10)
    );
    let s = resolve_text(&format!("{MIN}decoder_config: {{preset: standard}}\n")).unwrap();
    assert_eq!(
        (s.config.decoder_config.top_p, s.config.decoder_config.top_k),
        (0.95, 50)
    );

    // A child file's preset beats its base's explicit values; its own explicit values beat its preset.
    let l = load(
        &[
            ("base.yaml", "config_name: b\nmodel_name: m\ndecoder_config:\n  temperature: 0.5\n  do_sample: true\n"),
            ("child.yaml", "_extends: base.yaml\ndecoder_config:\n  preset: deterministic\n"),
        ],
        "child.yaml",
    );
    let r = resolve(None, Some(&l), &CliOverrides::default()).unwrap();
    assert_eq!(r.config.decoder_config.temperature, 0.0);
    assert!(!r.config.decoder_config.do_sample);
    // An experiment preset's decoder preset yields to the file's explicit temperature.
    let file = text(&format!(
        "{MIN}decoder_config:\n  temperature: 0.6\n  do_sample: true\n"
    ));
    let r = resolve(Some("quick-test"), Some(&file), &CliOverrides::default()).unwrap();
    assert_eq!(r.config.decoder_config.temperature, 0.6);
    assert!(r.config.decoder_config.do_sample);
}

#[test]
fn extends_through_resolve_names_the_defining_file() {
    let list = [
        ("configs/base.yaml", "model_name: m\nbatching_options:\n  batch_size: 2\n  stratgy: dynamic\nnum_cycles: 12\n"),
        ("configs/exp/a.yaml", "_extends: ../base.yaml\nconfig_name: a\nbatching_options:\n  batch_size: 3\n"),
    ];
    let l = load(&list, "configs/exp/a.yaml");
    let err = resolve(None, Some(&l), &CliOverrides::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "configs/exp/../base.yaml:4: batching_options.stratgy: unknown field; did you mean `strategy`?\n\
         configs/exp/../base.yaml:5: num_cycles: must be between 1 and 10 (found 12)"
    );
    assert_eq!(err.problems().len(), 2);
}

#[test]
fn validation_rules() {
    let e = |extra: &str| errors(&format!("{MIN}{extra}"));
    let ok = |extra: &str| {
        let v = e(extra);
        assert!(v.is_empty(), "{extra}: {v:?}");
    };
    let one = |extra: &str, want: &str| {
        let v = e(extra);
        assert_eq!(v.len(), 1, "{extra}: {v:?}");
        assert!(
            v[0].contains(want),
            "{extra}: {} does not contain {want}",
            v[0]
        );
    };
    ok("");
    one(
        "num_cycles: 0\n",
        "num_cycles: must be between 1 and 10 (found 0)",
    );
    one("num_cycles: 11\n", "must be between 1 and 10 (found 11)");
    ok("num_cycles: 10\n");
    one(
        "decoder_config: {temperature: 2.5}\n",
        "decoder_config.temperature: must be between 0 and 2 (found 2.5)",
    );
    one(
        "decoder_config: {temperature: -0.1}\n",
        "must be between 0 and 2",
    );
    ok("decoder_config: {temperature: 2, do_sample: true}\n");
    one(
        "decoder_config: {top_p: 1.5}\n",
        "decoder_config.top_p: must be between 0 and 1",
    );
    one(
        "latency_simulation: {target_qps: 0}\n",
        "latency_simulation.target_qps: must be greater than 0 (found 0)",
    );
    one(
        "latency_simulation: {target_qps: -1}\n",
        "must be greater than 0",
    );
    one(
        "prompt_source: {type: synthetic, sample_size: 0}\n",
        "prompt_source.sample_size: must be at least 1 (found 0)",
    );
    one(
        "min_output_tokens: 200\n",
        "min_output_tokens: must not exceed max_output_tokens (128); found 200",
    );
    ok("min_output_tokens: 128\n");
    one(
        "num_processes: 2\n",
        "num_processes: 2 processes need at least 2 GPUs, but gpu_list has 1",
    );
    ok("num_processes: 2\ngpu_list: [0, 1]\n");
    one(
        "sharding_config: {strategy: tensor_parallel, num_shards: 3}\ngpu_list: [0, 1]\n",
        "sharding_config.num_shards: 3 shards need at least 3 GPUs, but gpu_list has 2",
    );
    one(
        "quantization_config: {quantization: true, load_in_4bit: true, load_in_8bit: true}\n",
        "quantization_config.load_in_8bit: load_in_4bit and load_in_8bit are mutually exclusive",
    );
    one(
        "quantization_config: {quantization: true}\n",
        "no bit mode is set",
    );
    ok("quantization_config: {quantization: true, load_in_8bit: true}\n");
    one("fp_precision: float64\n", "fp_precision: unknown value `float64` (expected one of: float32, float16, bfloat16); did you mean `float16`?");
    one(
        "batching_options: {strategy: Dynamic}\n",
        "did you mean `dynamic`?",
    );
    one("backend: onnx\n", "backend: unknown value `onnx`");
    one(
        "prompt_source: {type: huggingface, dataset: alpacca}\n",
        "did you mean `alpaca`?",
    );
    ok("prompt_source: {type: huggingface, dataset: gsm8k}\n");
    ok("prompt_source: {type: huggingface, dataset: my-org/my_set.v2}\n");
    one(
        "prompt_source: {type: huggingface, dataset: a/b/c}\n",
        "unknown dataset `a/b/c`",
    );
    one(
        "prompt_source: {type: hf, dataset: alpaca}\n",
        "prompt_source.type: unknown value `hf`",
    );
    one(
        "prompt_source: {dataset: alpaca}\n",
        "prompt_source.type: missing required field",
    );
    one(
        "prompt_source: {type: file}\n",
        "prompt_source.path: missing required field for a `file` prompt source",
    );
    one("prompt_source: {type: file, path: p.txt, dataset: x}\n", "prompt_source.dataset: not a field of a `file` prompt source (it belongs to type `huggingface`)");
    one(
        "prompt_source: {type: synthetic, shufle: true}\n",
        "prompt_source.shufle: unknown field; did you mean `shuffle`?",
    );
    one(
        "batching_options: {batch_size: \"8\"}\n",
        "batching_options.batch_size: expected a whole number, found a string (\"8\")",
    );
    one(
        "batching_options: {batch_size: 0}\n",
        "must be at least 1 (found 0)",
    );
    one(
        "max_output_tokens: 1.5\n",
        "expected a whole number, found a number (1.5)",
    );
    one(
        "save_outputs: yes\n",
        "save_outputs: expected true or false, found a string (\"yes\")",
    );
    one(
        "gpu_list: 0\n",
        "gpu_list: expected a list of whole numbers, found an integer (0)",
    );
    one(
        "gpu_list: []\n",
        "gpu_list: must list at least one GPU index",
    );
    one(
        "gpu_list: [0, -1]\n",
        "gpu_list.1: must be 0 or more (found -1)",
    );
    one("gpu_list: [0, 0]\n", "gpu_list.1: 0 is listed twice");
    one(
        "decoder_config: 3\n",
        "decoder_config: expected a mapping, found an integer (3)",
    );
    one(
        "random_seed: -5\n",
        "random_seed: must be 0 or more (found -5)",
    );
    one(
        "batching_options: {batch_size: null}\n",
        "batching_options.batch_size: must not be null",
    );
    ok("random_seed: null\nnum_input_prompts: null\nprompt_source: null\n");
    one(
        "extra_metadata: [1]\n",
        "extra_metadata: expected a mapping",
    );
    one(
        "temperature: 0.5\n",
        "temperature: unknown field; did you mean `decoder_config.temperature`?",
    );
    one(
        "batching_options: {num_cycles: 2}\n",
        "did you mean `num_cycles`?",
    );
    one(
        "device: gpu\n",
        "device: unknown value `gpu` (expected one of: auto, cpu, cuda)",
    );
    one(
        "cpu_threads: 0\n",
        "cpu_threads: must be at least 1 (found 0)",
    );
    ok("cpu_threads: 2\nwarmup_prompts: 0\ndevice: cpu\nbackend: candle\n");
    one(
        "quantization_config: {bnb_4bit_quant_type: nf5}\n",
        "did you mean `nf4`?",
    );
    assert_eq!(
        errors("model_name: m\n"),
        ["configs/a.yaml: config_name: missing required field"]
    );
}

#[test]
fn list_top_level_is_a_parse_error() {
    let err = parse_config_str("x.yaml", "- a\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.yaml: the top level must be a mapping of config fields"
    );
}

#[test]
fn warnings_for_settings_without_effect() {
    let w = |extra: &str| warnings(&format!("{MIN}{extra}"));
    assert!(w("").is_empty());
    assert_eq!(
        w("backend: vllm\n"),
        ["configs/a.yaml:3: backend: lem runs the candle engine; backend vllm is recorded but not used"]
    );
    assert_eq!(
        w("decoder_config:\n  temperature: 0.7\n  top_k: 5\n"),
        ["configs/a.yaml:3: decoder_config.do_sample: do_sample is false (greedy decoding), so temperature, top_k has no effect; set do_sample: true to sample"]
    );
    assert!(w("decoder_config: {temperature: 0.7, do_sample: true}\n").is_empty());
    assert_eq!(
        w("batching_options: {max_tokens_per_batch: 100}\n").len(),
        1
    );
    assert!(w("batching_options: {strategy: dynamic, max_tokens_per_batch: 100}\n").is_empty());
    assert_eq!(w("quantization_config: {load_in_4bit: true}\n").len(), 1);
    assert_eq!(
        w("sharding_config: {num_shards: 2}\ngpu_list: [0, 1]\n").len(),
        1
    );
    assert_eq!(
        w("max_input_tokens: 64\nprompt_source: {type: synthetic, input_tokens: 100}\n").len(),
        1
    );
    // Warnings travel to the resolved config as text.
    let r = resolve_text(&format!("{MIN}backend: tensorrt\n")).unwrap();
    assert_eq!(r.warnings.len(), 1);
}

#[test]
fn unsupported_lists_what_lem_refuses() {
    let mut c = ExperimentConfig::default_for("a", "m");
    assert!(unsupported(&c).is_empty());
    c.backend = Backend::Vllm; // a warning from validation, not a refusal
    assert!(unsupported(&c).is_empty());
    // Simulated arrivals are honoured (agent::serving), not refused.
    c.latency_simulation.enabled = true;
    assert!(unsupported(&c).is_empty());
    c.sharding_config.strategy = ShardingStrategy::TensorParallel;
    c.decoder_config.no_repeat_ngram_size = 3;
    let fields: Vec<String> = unsupported(&c).into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "sharding_config.strategy",
            "decoder_config.no_repeat_ngram_size"
        ]
    );
    let msg = &unsupported(&c)[0].message;
    assert_eq!(
        msg,
        "tensor/pipeline parallel sharding is not supported by lem's candle engine yet"
    );
}

#[test]
fn json_configs_validate_with_lines() {
    let l = load(
        &[("c.json", "{\n  \"config_name\": \"a\",\n  \"model_name\": \"m\",\n  \"batching_options\": {\n    \"batch_sise\": 2\n  }\n}\n")],
        "c.json",
    );
    let v: Vec<String> = validate(&l).errors.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        v,
        ["c.json:5: batching_options.batch_sise: unknown field; did you mean `batch_size`?"]
    );
}

// ---- snapshots of the messages users read ----

fn report(t: &str) -> String {
    validate(&text(t))
        .errors
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn snapshot_unknown_key_with_suggestion_and_line() {
    insta::assert_snapshot!(
        "unknown_key",
        report("config_name: t\nmodel_name: m\n\nbatching_options:\n  strategy: static\n  batch_sise: 4\nnum_cylces: 2\n")
    );
}

#[test]
fn snapshot_bad_enum() {
    insta::assert_snapshot!(
        "bad_enum",
        report("config_name: t\nmodel_name: m\nfp_precision: flaot16\nbatching_options:\n  strategy: greedy\n")
    );
}

#[test]
fn snapshot_range_errors() {
    insta::assert_snapshot!(
        "range",
        report("config_name: t\nmodel_name: m\nnum_cycles: 20\ndecoder_config:\n  temperature: 3.5\n  top_p: -0.5\nlatency_simulation:\n  target_qps: 0\n")
    );
}

#[test]
fn snapshot_4bit_and_8bit() {
    insta::assert_snapshot!(
        "quantization_4bit_8bit",
        report("config_name: t\nmodel_name: m\nquantization_config:\n  quantization: true\n  load_in_4bit: true\n  load_in_8bit: true\n")
    );
}

#[test]
fn snapshot_inherited_field_names_its_file() {
    let l = load(
        &[
            (
                "configs/base.yaml",
                "model_name: m\ngpu_list: [0]\ndecoder_config:\n  top_p: 0.9\n  temprature: 0.5\n",
            ),
            (
                "configs/child.yaml",
                "_extends: base.yaml\nconfig_name: child\nnum_processes: 2\n",
            ),
        ],
        "configs/child.yaml",
    );
    let err = resolve(None, Some(&l), &CliOverrides::default()).unwrap_err();
    insta::assert_snapshot!("inherited_field", err.to_string());
}
