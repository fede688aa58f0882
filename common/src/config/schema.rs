//! The experiment config: the seed tool's schema (field names, defaults and meanings
//! kept), plus a few lem-only fields marked as such.
//!
//! Deserialising does not check ranges or combinations; `validate` does, on the raw
//! tree, so that every problem is reported at once with its file and line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One experiment, fully resolved (`ExperimentConfig::to_json` is what results store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    pub config_name: String,
    /// Hugging Face repo id or local path.
    pub model_name: String,
    /// Prompts are truncated to this many tokens.
    #[serde(default = "d512")]
    pub max_input_tokens: u32,
    #[serde(default = "d128")]
    pub max_output_tokens: u32,
    /// Must be <= `max_output_tokens`.
    #[serde(default)]
    pub min_output_tokens: u32,
    /// How many prompts (`-n`); `None` = every prompt the source yields.
    #[serde(default)]
    pub num_input_prompts: Option<u32>,
    #[serde(default)]
    pub save_outputs: bool,
    #[serde(default = "default_gpu_list")]
    pub gpu_list: Vec<u32>,
    /// Must be <= `gpu_list.len()`.
    #[serde(default = "d1")]
    pub num_processes: u32,
    #[serde(default)]
    pub fp_precision: Precision,
    #[serde(default)]
    pub backend: Backend,
    /// Batch i uses `random_seed + i`.
    #[serde(default)]
    pub random_seed: Option<u64>,
    /// 1..=10; the YAML twin of `--cycles`.
    #[serde(default = "d1")]
    pub num_cycles: u32,
    /// Copied into results as is.
    #[serde(default)]
    pub extra_metadata: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub batching_options: BatchingOptions,
    #[serde(default)]
    pub sharding_config: ShardingConfig,
    #[serde(default)]
    pub latency_simulation: LatencySimulation,
    #[serde(default)]
    pub decoder_config: DecoderConfig,
    #[serde(default)]
    pub quantization_config: QuantizationConfig,
    /// Where prompts come from; `None` lets the runner choose (synthetic prompts, or
    /// the CLI's `--dataset`).
    #[serde(default)]
    pub prompt_source: Option<PromptSource>,
    /// lem-only: requests run and discarded before the measured window.
    #[serde(default = "d1")]
    pub warmup_prompts: u32,
    /// lem-only: where inference runs.
    #[serde(default)]
    pub device: Device,
    /// lem-only: worker threads for CPU inference; `None` = all cores.
    #[serde(default)]
    pub cpu_threads: Option<u32>,
    /// lem-only: seconds each energy meter is read idle before the measured window, to
    /// subtract the idle power (net energy); 0 disables.
    #[serde(default = "default_idle_baseline_s")]
    pub idle_baseline_s: f64,
    /// lem-only: period of the GPU sensor sampler (power, temperature, clocks), ms;
    /// 0 turns the sampler off.
    #[serde(default = "default_sample_period_ms")]
    pub sample_period_ms: f64,
    /// lem-only: a device window shorter than this many of its counter's update periods
    /// gets a warning on the result (its edge uncertainty is then a large share).
    #[serde(default = "default_min_window_counter_periods")]
    pub min_window_counter_periods: f64,
    /// lem-only: carbon accounting inputs; nothing is assumed when absent.
    #[serde(default)]
    pub carbon: CarbonConfig,
    /// lem-only: after the fixed `warmup_prompts`, keep warming up until throughput (and
    /// metered power) is stable, bounded.
    #[serde(default)]
    pub warmup_until_stable: SteadyWarmupConfig,
    /// lem-only: what runs inference: lem's own candle engine, or an external
    /// OpenAI-compatible server (`openai`, configured in the `openai` section).
    #[serde(default)]
    pub engine: EngineKind,
    /// lem-only: the external server, for `engine: openai`.
    #[serde(default)]
    pub openai: Option<OpenAiServerConfig>,
    /// lem-only: what one job needs on a cluster (`sweep submit`): whole GPUs of a model,
    /// or one MIG slice. Left out of the JSON when absent, so configs without it keep
    /// their fingerprints and job keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceRequirements>,
}

/// The `devices` section: where a cluster may place each job of the experiment. Embedded
/// runs (`lem experiment`, `lem batch`) meter the GPUs in `gpu_list` instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceRequirements {
    /// Whole GPUs per job; `None` = as many as `gpu_list` names.
    pub gpus: Option<u32>,
    /// The GPU product name exactly as NVML reports it ("NVIDIA H100 80GB HBM3").
    pub gpu_model: Option<String>,
    /// One MIG slice of this profile ("1g.10gb") instead of whole GPUs.
    pub mig_profile: Option<String>,
    /// With `mig_profile`: lease the slice's whole parent GPU, so its energy counter
    /// measures this job alone (energy-exact) instead of energy attributed among slices.
    pub exclusive_parent: bool,
}

/// What runs inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// lem's own engine, in process.
    #[default]
    Candle,
    /// An OpenAI-compatible server (vLLM, TGI, SGLang, llama.cpp) lem sends requests to.
    Openai,
}

/// An OpenAI-compatible server lem drives (`engine: openai`). `model_name` still names
/// the model locally: lem reads its tokenizer (prompt truncation, token counts the
/// server does not report) and shape (FLOPs) from it; the server serves the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiServerConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8000/v1`; lem calls
    /// `<endpoint>/completions` and `<endpoint>/models`. Plain `http://` only.
    pub endpoint: String,
    /// The model id the server knows the model by (the request's `model`).
    pub model: String,
    /// Name of the environment variable holding the API key (sent as a bearer token);
    /// the key itself never goes in a config or a result.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// What the user says the server is (`vllm`, `llama.cpp`, ...), recorded as given.
    #[serde(default)]
    pub engine_name: Option<String>,
    #[serde(default)]
    pub engine_version: Option<String>,
    /// Most requests in flight at once; `None` = `batching_options.batch_size`.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Bound on one request, connect to last byte, seconds.
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: f64,
}

fn default_request_timeout_s() -> f64 {
    300.0
}

/// Warmup until steady state: rounds of `warmup_prompts` prompts (at least one) until two
/// consecutive rounds' output throughput — and mean metered power, where a meter reads —
/// differ by at most `tolerance`, or `max_rounds` ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SteadyWarmupConfig {
    pub enabled: bool,
    /// Most rounds before measuring anyway (the result says it did not settle).
    pub max_rounds: u32,
    /// Largest relative change between consecutive rounds that counts as stable.
    pub tolerance: f64,
}

impl Default for SteadyWarmupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_rounds: 10,
            tolerance: 0.05,
        }
    }
}

fn default_sample_period_ms() -> f64 {
    100.0
}

fn default_min_window_counter_periods() -> f64 {
    10.0
}

/// Carbon = energy × PUE × grid intensity. Without a grid intensity no carbon figure is
/// given; a missing PUE is taken as 1.0 (device energy only) and said so in the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CarbonConfig {
    /// Power usage effectiveness of the facility, ≥ 1.
    pub pue: Option<f64>,
    /// Grid carbon intensity, gCO2e per kWh.
    pub grid_intensity_gco2e_per_kwh: Option<f64>,
}

fn default_idle_baseline_s() -> f64 {
    10.0
}

fn d1() -> u32 {
    1
}
fn d128() -> u32 {
    128
}
fn d512() -> u32 {
    512
}
fn default_gpu_list() -> Vec<u32> {
    vec![0]
}

impl ExperimentConfig {
    /// Every field at its default.
    pub fn default_for(config_name: impl Into<String>, model_name: impl Into<String>) -> Self {
        Self {
            config_name: config_name.into(),
            model_name: model_name.into(),
            max_input_tokens: d512(),
            max_output_tokens: d128(),
            min_output_tokens: 0,
            num_input_prompts: None,
            save_outputs: false,
            gpu_list: default_gpu_list(),
            num_processes: 1,
            fp_precision: Precision::default(),
            backend: Backend::default(),
            random_seed: None,
            num_cycles: 1,
            extra_metadata: BTreeMap::new(),
            batching_options: BatchingOptions::default(),
            sharding_config: ShardingConfig::default(),
            latency_simulation: LatencySimulation::default(),
            decoder_config: DecoderConfig::default(),
            quantization_config: QuantizationConfig::default(),
            prompt_source: None,
            warmup_prompts: 1,
            device: Device::default(),
            cpu_threads: None,
            idle_baseline_s: default_idle_baseline_s(),
            sample_period_ms: default_sample_period_ms(),
            min_window_counter_periods: default_min_window_counter_periods(),
            carbon: CarbonConfig::default(),
            warmup_until_stable: SteadyWarmupConfig::default(),
            engine: EngineKind::default(),
            openai: None,
            devices: None,
        }
    }

    /// The config as JSON, every field present (`null` for unset options).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the config is plain data and always serialises")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Float32,
    #[default]
    Float16,
    Bfloat16,
}

/// The seed's inference backends. lem always runs its candle engine; the value is
/// recorded (and `tensorrt`/`vllm` draw a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Pytorch,
    Tensorrt,
    Vllm,
    Candle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchingOptions {
    pub batch_size: u32,
    pub strategy: BatchingStrategy,
    /// Token budget per batch, for the dynamic strategies.
    pub max_tokens_per_batch: Option<u32>,
}

impl Default for BatchingOptions {
    fn default() -> Self {
        Self {
            batch_size: 1,
            strategy: BatchingStrategy::Static,
            max_tokens_per_batch: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchingStrategy {
    #[default]
    Static,
    Dynamic,
    SortedStatic,
    SortedDynamic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardingConfig {
    pub strategy: ShardingStrategy,
    /// Must be <= `gpu_list.len()`.
    pub num_shards: u32,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        Self {
            strategy: ShardingStrategy::None,
            num_shards: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardingStrategy {
    #[default]
    None,
    TensorParallel,
    PipelineParallel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencySimulation {
    pub enabled: bool,
    pub mode: LatencyMode,
    /// Requests per second; > 0.
    pub target_qps: f64,
    pub seed: Option<u64>,
}

impl Default for LatencySimulation {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: LatencyMode::Poisson,
            target_qps: 1.0,
            seed: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyMode {
    #[default]
    Poisson,
    Constant,
}

/// Generation settings. `do_sample` defaults to false (the seed's schema gives none):
/// by default lem decodes greedily, the reproducible choice for measurements. The
/// sampling presets and `--temperature > 0` turn sampling on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecoderConfig {
    /// 0..=2; 0 = greedy.
    pub temperature: f64,
    pub do_sample: bool,
    /// 0..=1; 1 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: u32,
    /// 0..=1; 0 = off.
    pub min_p: f64,
    /// > 0; 1 = off.
    pub repetition_penalty: f64,
    /// 0 = off.
    pub no_repeat_ngram_size: u32,
    /// Applied while merging: the preset's values fill the fields its layer leaves unset.
    pub preset: Option<DecoderPreset>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            do_sample: false,
            top_p: 1.0,
            top_k: 50,
            min_p: 0.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            preset: None,
        }
    }
}

impl DecoderConfig {
    /// Whether generation picks the most likely token every step.
    pub fn is_greedy(&self) -> bool {
        !self.do_sample || self.temperature == 0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderPreset {
    /// temperature 0, no sampling.
    Deterministic,
    /// temperature 1.0, top_p 0.95, top_k 50.
    Standard,
    /// temperature 0.8, top_p 0.9, repetition_penalty 1.1.
    Creative,
    /// temperature 0.3, top_k 10.
    Factual,
}

impl DecoderPreset {
    pub const ALL: [DecoderPreset; 4] = [
        DecoderPreset::Deterministic,
        DecoderPreset::Standard,
        DecoderPreset::Creative,
        DecoderPreset::Factual,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DecoderPreset::Deterministic => "deterministic",
            DecoderPreset::Standard => "standard",
            DecoderPreset::Creative => "creative",
            DecoderPreset::Factual => "factual",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The decoder fields this preset sets. The sampling presets also set
    /// `do_sample: true`, since their temperatures would otherwise have no effect.
    pub fn settings(self) -> Vec<(&'static str, serde_yaml::Value)> {
        use serde_yaml::Value as V;
        match self {
            DecoderPreset::Deterministic => {
                vec![("temperature", V::from(0.0)), ("do_sample", V::from(false))]
            }
            DecoderPreset::Standard => vec![
                ("temperature", V::from(1.0)),
                ("do_sample", V::from(true)),
                ("top_p", V::from(0.95)),
                ("top_k", V::from(50)),
            ],
            DecoderPreset::Creative => vec![
                ("temperature", V::from(0.8)),
                ("do_sample", V::from(true)),
                ("top_p", V::from(0.9)),
                ("repetition_penalty", V::from(1.1)),
            ],
            DecoderPreset::Factual => vec![
                ("temperature", V::from(0.3)),
                ("do_sample", V::from(true)),
                ("top_k", V::from(10)),
            ],
        }
    }
}

/// bitsandbytes-style settings, kept for compatibility. `load_in_4bit` and
/// `load_in_8bit` are mutually exclusive; `quantization: true` needs one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuantizationConfig {
    pub quantization: bool,
    pub load_in_4bit: bool,
    pub load_in_8bit: bool,
    /// `nf4` or `fp4`.
    pub bnb_4bit_quant_type: Option<String>,
    /// `float32`, `float16` or `bfloat16`.
    pub bnb_4bit_compute_dtype: Option<String>,
    pub bnb_4bit_use_double_quant: bool,
}

fn default_prompt_seed() -> u64 {
    42
}

/// Where prompts come from, tagged by `type`. All three take `sample_size` (>= 1; how
/// many prompts to draw), `shuffle` (false) and `seed` (42, for the shuffle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromptSource {
    /// Deterministic prompts of a controlled token length; no download.
    Synthetic {
        /// Tokens per prompt; `None` = `max_input_tokens`.
        #[serde(default)]
        input_tokens: Option<u32>,
        #[serde(default)]
        sample_size: Option<u32>,
        #[serde(default)]
        shuffle: bool,
        #[serde(default = "default_prompt_seed")]
        seed: u64,
    },
    /// One prompt per line (`.txt`), or a column of a JSONL/CSV/JSON file.
    File {
        path: String,
        #[serde(default)]
        column: Option<String>,
        /// The file's SHA-256 (lowercase hex). Set by `sweep submit` when it ships the
        /// file; a runner refuses a file whose content has another hash.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// The file's bytes, base64, as `sweep submit` ships them to the agent (which
        /// writes them to its data dir and clears this); never written by hand.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_base64: Option<String>,
        #[serde(default)]
        sample_size: Option<u32>,
        #[serde(default)]
        shuffle: bool,
        #[serde(default = "default_prompt_seed")]
        seed: u64,
    },
    /// A built-in alias (`datasets::DATASET_ALIASES`) or any `org/name` dataset.
    /// `split`/`subset`/`column` default to the alias's (or `train` and auto-detection).
    Huggingface {
        dataset: String,
        #[serde(default)]
        split: Option<String>,
        #[serde(default)]
        subset: Option<String>,
        #[serde(default)]
        column: Option<String>,
        #[serde(default)]
        sample_size: Option<u32>,
        #[serde(default)]
        shuffle: bool,
        #[serde(default = "default_prompt_seed")]
        seed: u64,
    },
}

impl PromptSource {
    pub fn sample_size(&self) -> Option<u32> {
        match self {
            PromptSource::Synthetic { sample_size, .. }
            | PromptSource::File { sample_size, .. }
            | PromptSource::Huggingface { sample_size, .. } => *sample_size,
        }
    }

    pub fn shuffle(&self) -> bool {
        match self {
            PromptSource::Synthetic { shuffle, .. }
            | PromptSource::File { shuffle, .. }
            | PromptSource::Huggingface { shuffle, .. } => *shuffle,
        }
    }

    pub fn seed(&self) -> u64 {
        match self {
            PromptSource::Synthetic { seed, .. }
            | PromptSource::File { seed, .. }
            | PromptSource::Huggingface { seed, .. } => *seed,
        }
    }

    /// `synthetic`, `file` or `huggingface`.
    pub fn type_name(&self) -> &'static str {
        match self {
            PromptSource::Synthetic { .. } => "synthetic",
            PromptSource::File { .. } => "file",
            PromptSource::Huggingface { .. } => "huggingface",
        }
    }
}
