//! The commented starting config written by `lem config new [--preset P]`.

use super::error::ConfigError;
use super::presets::{preset as find_preset, presets, Preset};
use super::schema::DecoderPreset;
use super::spec::nearest;

/// A complete, commented YAML config; with a preset, its values filled in.
pub fn new_config_yaml(preset: Option<&str>) -> Result<String, ConfigError> {
    let p: Option<&Preset> = match preset {
        None => None,
        Some(name) => Some(find_preset(name).ok_or_else(|| {
            ConfigError::UnknownPreset {
                name: name.to_string(),
                available: presets()
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                suggestion: nearest(name, presets().iter().map(|p| p.name)),
            }
        })?),
    };
    let name = p.map_or("my-experiment".to_string(), |p| {
        format!("{}-experiment", p.name)
    });
    let from = p.map_or(String::new(), |p| format!(" (from preset `{}`)", p.name));
    let max_in = p.map_or(512, |p| p.max_input_tokens);
    let max_out = p.map_or(128, |p| p.max_output_tokens);
    let batch = p.map_or(1, |p| p.batch_size);
    let precision = enum_name(p.and_then(|p| p.fp_precision).unwrap_or_default());
    let strategy = enum_name(p.and_then(|p| p.batching_strategy).unwrap_or_default());
    let decoder = match p.and_then(|p| p.decoder_preset) {
        Some(d) => decoder_with_preset(d),
        None => DEFAULT_DECODER.to_string(),
    };
    Ok(format!(
        "\
# lem experiment config{from}.
# The schema is the seed tool's (LLM Energy Measure); lem-only fields are marked.
# Check it with `lem config validate <file>`, run it with `lem experiment <file>`.
# Precedence: command-line flags > this file > preset > defaults.
# Inherit from another file with `_extends: base.yaml` (deep merge, this file wins).

config_name: {name}
model_name: HuggingFaceTB/SmolLM2-135M-Instruct   # Hugging Face repo id or local path

max_input_tokens: {max_in}      # prompts are truncated to this many tokens
max_output_tokens: {max_out}     # --max-tokens
min_output_tokens: 0        # must be <= max_output_tokens
num_input_prompts: 10       # -n; remove to use every prompt of the source
save_outputs: false         # keep the generated text in the results
num_cycles: 1               # 1..10 repetitions for mean/std/CI (--cycles)
random_seed: 42             # --seed; batch i uses seed + i

fp_precision: {precision}       # float32 | float16 | bfloat16 (--precision)
backend: pytorch            # pytorch | tensorrt | vllm | candle; lem always runs candle
gpu_list: [0]               # --gpu-list
num_processes: 1            # <= len(gpu_list)

batching_options:
  batch_size: {batch}             # --batch-size
  strategy: {strategy}          # static | dynamic | sorted_static | sorted_dynamic
  # max_tokens_per_batch: 4096   # token budget per batch (dynamic strategies)

{decoder}
prompt_source:
  type: synthetic           # synthetic | file | huggingface (--dataset)
  # input_tokens: {max_in}      # synthetic: tokens per prompt (default max_input_tokens)
  # path: prompts.jsonl      # file: .txt (one per line), .jsonl/.json/.csv with column
  # dataset: alpaca          # huggingface: alpaca | gsm8k | mmlu | sharegpt | org/name
  # split: train
  # column: instruction
  sample_size: 10           # >= 1
  shuffle: false
  seed: 42

quantization_config:
  quantization: false       # true needs load_in_4bit or load_in_8bit (not both)
  load_in_4bit: false
  load_in_8bit: false

sharding_config:
  strategy: none            # none | tensor_parallel | pipeline_parallel (lem: none only)
  num_shards: 1             # <= len(gpu_list)

latency_simulation:
  enabled: false            # true: requests arrive on this schedule (docs/latency.md)
  mode: poisson             # poisson | constant
  target_qps: 1.0           # > 0

extra_metadata: {{}}          # copied into the results as is

# lem-only fields
warmup_prompts: 1           # requests run and discarded before measuring
device: auto                # auto | cpu | cuda
# cpu_threads: 2            # CPU inference threads (default: all cores)
idle_baseline_s: 10.0       # idle power measured before the window (net energy); 0 = off
sample_period_ms: 100       # GPU sensor sampler period (power trace, temperature, clocks); 0 = off
min_window_counter_periods: 10  # warn when a device window is shorter than this many counter updates
warmup_until_stable:        # after warmup_prompts, warm up until throughput (and power) are steady
  enabled: false
  max_rounds: 10            # bound: measure anyway after this many rounds (recorded)
  tolerance: 0.05           # largest relative change between consecutive rounds
carbon:                     # carbon = energy x PUE x grid intensity; none without intensity
  # pue: 1.2
  # grid_intensity_gco2e_per_kwh: 400
"
    ))
}

const DEFAULT_DECODER: &str = "\
decoder_config:
  # preset: deterministic   # deterministic | standard | creative | factual
  do_sample: false          # false = greedy; true samples with the settings below
  temperature: 1.0          # 0..2; 0 = greedy (--temperature)
  top_p: 1.0                # 0..1; 1 = off
  top_k: 50                 # 0 = off
  min_p: 0.0
  repetition_penalty: 1.0   # 1 = off
";

fn decoder_with_preset(d: DecoderPreset) -> String {
    format!(
        "\
decoder_config:
  preset: {}     # deterministic | standard | creative | factual
  # temperature: 0.7        # fields set here override the preset's
",
        d.name()
    )
}

fn enum_name<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_config_str, resolve, validate, CliOverrides};

    #[test]
    fn every_template_validates_without_warnings_and_carries_its_preset() {
        for name in [
            None,
            Some("quick-test"),
            Some("benchmark"),
            Some("throughput"),
        ] {
            let text = new_config_yaml(name).unwrap();
            let loaded = parse_config_str("new.yaml", &text).unwrap();
            let v = validate(&loaded);
            assert!(
                v.errors.is_empty() && v.warnings.is_empty(),
                "{name:?}: {v:?}"
            );
            let r = resolve(None, Some(&loaded), &CliOverrides::default()).unwrap();
            if let Some(p) = name.and_then(find_preset) {
                assert_eq!(r.config.max_input_tokens, p.max_input_tokens);
                assert_eq!(r.config.max_output_tokens, p.max_output_tokens);
                assert_eq!(r.config.batching_options.batch_size, p.batch_size);
                if let Some(s) = p.batching_strategy {
                    assert_eq!(r.config.batching_options.strategy, s);
                }
                if p.decoder_preset == Some(DecoderPreset::Deterministic) {
                    assert!(r.config.decoder_config.is_greedy());
                    assert_eq!(r.config.decoder_config.temperature, 0.0);
                }
            } else {
                assert_eq!(r.config.config_name, "my-experiment");
            }
        }
        let err = new_config_yaml(Some("quick")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown preset `quick` (available: quick-test, benchmark, throughput); did you mean `quick-test`?"
        );
    }
}
