//! Domain types shared by the coordinator and the agent: what a job is, what one attempt
//! of it measured, and how a measurement says it is missing.
//!
//! Units live in field names (`energy_mj`, `dur_ns`). An unavailable measurement is
//! `None` plus a reason, never zero.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the `RawResult` layout; bump on incompatible change.
pub const RAW_RESULT_SCHEMA_VERSION: u32 = 1;

/// What kind of physical device a reading belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Gpu,
    /// A RAPL `package-N` zone (cores + uncore of one socket).
    CpuPackage,
    /// A RAPL `dram` zone.
    Dram,
    /// A MIG slice (GPU instance) of a physical GPU; its energy is attributed from the
    /// parent's counter (see `crate::mig`), and totals never add it to the parent's.
    MigSlice,
}

/// Where an energy number came from. Every reading names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnergySource {
    /// Difference of NVML's total-energy counter.
    NvmlCounter,
    /// Integral of NVML's polled power.
    NvmlPower,
    /// Linux powercap (RAPL) `energy_uj` counters.
    Rapl,
    /// A modelled value (e.g. TDP × time). Only when explicitly requested.
    Estimate,
    /// No source could be opened; see the reading's reason.
    None,
}

/// The energy of one physical device over one measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    pub device_kind: DeviceKind,
    /// Stable id of the physical device: GPU UUID, `package-0`, `package-0/dram`, ...
    pub device_id: String,
    /// Human-readable name ("NVIDIA H100", "package-0").
    pub device_name: String,
    pub source: EnergySource,
    /// `None` when unavailable; `unavailable_reason` then says why.
    pub energy_mj: Option<f64>,
    pub unavailable_reason: Option<String>,
    /// Length of the window this reading covers.
    pub window_ns: u64,
    /// Start of this reading's window relative to the meters' start (negative: earlier).
    /// Set where the edges are placed on the counter's own updates (NVML), so a device's
    /// window can differ from the job's by up to one counter period at each end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start_offset_ns: Option<i64>,
    /// Sampling period of the source where it has one (counter update or poll period).
    pub sample_period_ms: Option<f64>,
    /// True only for modelled numbers (`EnergySource::Estimate`).
    pub estimated: bool,
    /// Mean power of the device idle (model loaded, nothing running) just before the
    /// window, or a cached value from a recent cycle; `None` when no baseline was taken.
    #[serde(default)]
    pub baseline_power_w: Option<f64>,
    /// `energy_mj − baseline_power_w × window`: the energy the job added over idle. Not
    /// clamped: a negative value means the device drew less than its idle baseline
    /// (noise, counter quantisation on a short window, or a changed idle state) and is kept
    /// so averages over cycles stay unbiased.
    #[serde(default)]
    pub net_energy_mj: Option<f64>,
    /// True when the number comes from a simulated device (the fake NVML library).
    #[serde(default)]
    pub simulated: bool,
    /// Driver version of the source where it has one (NVML).
    #[serde(default)]
    pub driver_version: Option<String>,
    /// The sampler's trace over the window (power, temperature, clocks, throttling),
    /// where the device has sensors. Kept beside the counter, never instead of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PowerTrace>,
    /// Energy split into prefill and decode, labelled with how it was split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<PhaseEnergy>,
    /// For a MIG slice or a GPU in MIG mode: the mode and every input of the
    /// attribution, so anyone can recompute it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<crate::mig::MigAttribution>,
    /// Half-width of the interval the true energy of the window lies in (mJ), from the
    /// source's resolution at the window's edges; `uncertainty_method` says how it was
    /// derived. `None` for unavailable readings and results written before lem had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_mj: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_method: Option<String>,
    /// How `sample_period_ms` was obtained for a counter: measured on this device, or
    /// the nominal value when it could not be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_period_method: Option<String>,
    /// Counter energy ÷ power-trace integral over the same window, where the device has
    /// both (agreement check; `docs/measurement.md` gives the bound beyond which the
    /// result warns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter_trace_ratio: Option<f64>,
    /// How the idle baseline behind `baseline_power_w` was taken (or why there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineInfo>,
}

/// How an idle baseline was measured, for the reading it is applied to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineInfo {
    /// `None` when no baseline could be measured; `unavailable_reason` says why.
    pub power_w: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// How the power was derived (e.g. `counter-changes`, `window-average`).
    pub method: String,
    /// Length of the span the power was measured over.
    pub measured_ns: u64,
    /// Time spent waiting for power to become steady before measuring; `None` where the
    /// meter has no settle step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ns: Option<u64>,
    /// Whether power was steady when the settle step ended (`false`: it hit its bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<bool>,
    /// Sample standard deviation of the power over sub-spans of the baseline (W).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_w: Option<f64>,
    /// Age of the baseline when the window started (cached baselines are reused).
    #[serde(default)]
    pub age_ns: u64,
    /// A caveat on what "idle" means here (e.g. other MIG tenants were running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One sample of a device's sensors during a window. Each field is `None` where the
/// device cannot report it (the trace's `unavailable` says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerSample {
    /// Since the start of the window.
    pub t_ns: u64,
    /// NVML power usage: a 1 s average on Hopper and newer, instantaneous on GA100 and
    /// older (as NVML documents `nvmlDeviceGetPowerUsage`).
    pub power_avg_w: Option<f64>,
    /// Instantaneous power (NVML field `POWER_INSTANT`) where supported.
    pub power_instant_w: Option<f64>,
    /// The total-energy counter at this sample.
    pub energy_counter_mj: Option<u64>,
    pub temperature_c: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    /// NVML clock-event (throttle) reason bits.
    pub throttle_reasons: Option<u64>,
}

impl PowerSample {
    /// A sample with only the power usage reading (`power_avg_w`), every other sensor
    /// absent: what traces built from a power profile need.
    pub fn power_usage_only(t_ns: u64, power_w: f64) -> Self {
        Self {
            t_ns,
            power_avg_w: Some(power_w),
            power_instant_w: None,
            energy_counter_mj: None,
            temperature_c: None,
            sm_clock_mhz: None,
            throttle_reasons: None,
        }
    }
}

/// The sampler's record of one device over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerTrace {
    /// Requested sampling period.
    pub period_ms: f64,
    pub samples: Vec<PowerSample>,
    /// Sensor name (`power_instant_w`, ...) → why it could not be read.
    #[serde(default)]
    pub unavailable: BTreeMap<String, String>,
}

/// How a reading's energy was split into phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseSplitMethod {
    /// Counter read at each phase boundary; every phase segment spans enough counter
    /// updates for the step error to stay small.
    CounterAtBoundaries,
    /// Power trace integrated over each phase's intervals (segments too short for the
    /// counter's update period).
    TraceIntegral,
    /// The trace integral, but the trace cannot resolve the phases (every prefill and
    /// decode segment is shorter than its resolution: the sample period, or the 1 s
    /// averaging window of averaged power), so the split is in effect the window's power
    /// apportioned by time.
    TimeApportioned,
}

/// Energy of one device in the prefill and decode phases of the window. Time between
/// batches (scheduling, idle waits) is in neither; `other_mj` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseEnergy {
    pub method: PhaseSplitMethod,
    pub prefill_mj: f64,
    pub decode_mj: f64,
    pub other_mj: f64,
}

impl EnergyReading {
    /// Sets the baseline and the net energy from it (when the gross is available).
    pub fn apply_baseline(&mut self, baseline_power_w: f64) {
        self.baseline_power_w = Some(baseline_power_w);
        self.net_energy_mj = self
            .energy_mj
            .map(|gross_mj| net_energy_mj(gross_mj, baseline_power_w, self.window_ns));
    }

    /// A reading that could not be taken, with the reason.
    pub fn unavailable(
        device_kind: DeviceKind,
        device_id: impl Into<String>,
        reason: impl Into<String>,
        window_ns: u64,
    ) -> Self {
        let device_id = device_id.into();
        Self {
            device_kind,
            device_name: device_id.clone(),
            device_id,
            source: EnergySource::None,
            energy_mj: None,
            unavailable_reason: Some(reason.into()),
            window_ns,
            window_start_offset_ns: None,
            sample_period_ms: None,
            estimated: false,
            baseline_power_w: None,
            net_energy_mj: None,
            simulated: false,
            driver_version: None,
            trace: None,
            phases: None,
            mig: None,
            uncertainty_mj: None,
            uncertainty_method: None,
            sample_period_method: None,
            counter_trace_ratio: None,
            baseline: None,
        }
    }
}

/// Energy over idle: `gross − P_base × window` (W × s = J, ×1000 = mJ). Not clamped.
pub fn net_energy_mj(gross_mj: f64, baseline_power_w: f64, window_ns: u64) -> f64 {
    gross_mj - baseline_power_w * window_ns as f64 / 1e6
}

/// Where inference actually ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeDevice {
    /// `cpu` or `cuda`.
    pub kind: String,
    /// e.g. "AMD EPYC 7B13 (2 threads)" or "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// CUDA ordinal, when `kind == "cuda"`.
    pub ordinal: Option<u32>,
    /// Worker threads for CPU inference.
    pub threads: Option<u32>,
    /// Why this device was chosen (e.g. "no CUDA device: running on the CPU").
    pub note: Option<String>,
}

/// Architecture numbers FLOPs are computed from (read from the model's own config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerShape {
    pub architecture: String,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_attention_heads: u64,
    pub num_kv_heads: u64,
    pub head_dim: u64,
    pub vocab_size: u64,
    /// Gated MLP (SwiGLU: gate, up, down) as in Llama; false = two-matrix MLP.
    pub gated_mlp: bool,
    /// Layers that attend through a sliding window (Gemma 3); None: every layer attends
    /// over the whole context. Absent from records of models without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<SlidingWindow>,
}

/// Sliding-window attention: `layers` of the decoder's layers let a token attend to at
/// most `window` keys (itself and the `window - 1` before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    pub window: u64,
    pub layers: u64,
}

/// What was loaded and how it computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// As given in the config (`model_name`).
    pub requested: String,
    /// The file or directory actually loaded.
    pub resolved_path: String,
    /// How it was found: `local`, `lem-cache`, `hf-cache`, `hf-download`.
    pub resolved_from: String,
    /// `gguf` or `safetensors`.
    pub format: String,
    /// Weight storage type as loaded, e.g. `Q4_1`, `Q8_0 (requantised from Q4_1)`, `F16`.
    pub weight_dtype: String,
    /// Dtype of activations / matmul outputs actually used, e.g. `f32`.
    pub compute_dtype: String,
    pub num_parameters: Option<u64>,
    pub shape: TransformerShape,
    /// Where the tokenizer came from: `tokenizer.json` or `gguf-metadata`.
    pub tokenizer_source: String,
    pub eos_token_ids: Vec<u32>,
    pub context_length: Option<u64>,
    /// SHA-256 of the weights lem loaded (its `source` says what was hashed), or why
    /// there is none. Absent on records written before lem hashed models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<Measured<String>>,
}

/// Why a request stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxTokens,
}

/// Per-request timing and token counts. Token counts never include padding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub index: u32,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// From request arrival (or batch start) to the first output token.
    pub ttft_ns: u64,
    /// Gaps between consecutive output tokens (length = output_tokens - 1). From an
    /// external server (`engine: openai`): between consecutive streamed chunks with text,
    /// which is one gap fewer than tokens only when the server streams one token a chunk.
    pub itl_ns: Vec<u64>,
    /// From arrival to the last token.
    pub e2e_ns: u64,
    pub stop_reason: StopReason,
    /// Generated text, only when `save_outputs` is set.
    pub output_text: Option<String>,
    /// When the request arrived, from the measured window's start (`latency_simulation`);
    /// `None` when every request arrived at once. TTFT and e2e then count from here.
    #[serde(default)]
    pub arrival_offset_ns: Option<u64>,
    /// When the request's batch started generating, from the measured window's start;
    /// `None` in results stored before lem recorded it.
    #[serde(default)]
    pub start_offset_ns: Option<u64>,
    /// When the request's last token was produced, from the measured window's start.
    /// With `itl_ns` this places every output token in the window (steady-state energy).
    #[serde(default)]
    pub finish_offset_ns: Option<u64>,
}

/// Analytic FLOPs of one job (see docs/flops.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlopsBreakdown {
    pub prefill_flops: f64,
    pub decode_flops: f64,
}

impl FlopsBreakdown {
    pub fn total(&self) -> f64 {
        self.prefill_flops + self.decode_flops
    }
}

/// A value that may be unavailable, with the reason when it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured<T> {
    pub value: Option<T>,
    pub unavailable_reason: Option<String>,
    /// What produced it (e.g. `VmHWM`, `nvml memory info`).
    pub source: Option<String>,
}

impl<T> Measured<T> {
    pub fn known(value: T, source: impl Into<String>) -> Self {
        Self {
            value: Some(value),
            unavailable_reason: None,
            source: Some(source.into()),
        }
    }
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            value: None,
            unavailable_reason: Some(reason.into()),
            source: None,
        }
    }
}

/// One CLI override as stored with a result: the value it replaced and the new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRecord {
    pub original: serde_json::Value,
    pub new: serde_json::Value,
}

/// Warmup until steady state: the rounds run after the fixed warmup and whether they
/// settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmupRecord {
    /// The rule, in words (tolerance, bound, what was compared).
    pub rule: String,
    /// Rounds run (each the warmup prompts once).
    pub rounds: u32,
    /// `false`: the bound was reached before two consecutive rounds agreed.
    pub stable: bool,
    /// Output tokens per second of each round.
    pub output_tokens_per_s: Vec<f64>,
    /// Mean metered power of each round (W, summed over the devices read), `None` where
    /// no meter could read.
    pub power_w: Vec<Option<f64>>,
    /// Wall time of all rounds.
    pub wall_ns: u64,
}

/// What one attempt of one job measured. Immutable once stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawResult {
    pub schema_version: u32,
    pub experiment_id: String,
    /// Hash of the canonical job spec and cycle.
    pub job_key: String,
    pub cycle: u32,
    pub attempt: u32,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    /// The fully resolved config this job ran with (JSON of `ExperimentConfig`).
    pub effective_config: serde_json::Value,
    /// Field path -> {original, new} for every CLI override.
    pub cli_overrides: BTreeMap<String, OverrideRecord>,
    pub compute_device: ComputeDevice,
    pub model: ModelInfo,
    pub requests: Vec<RequestRecord>,
    /// Measured window: first request start to last token, after warmup.
    pub wall_ns: u64,
    /// Time spent in prefill forward passes / decode forward passes within the window.
    pub prefill_ns: u64,
    pub decode_ns: u64,
    pub energy: Vec<EnergyReading>,
    pub flops: FlopsBreakdown,
    pub peak_memory_bytes: Measured<u64>,
    pub warmup_requests: u32,
    /// How warmup ended when it ran until steady state (`warmup_until_stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupRecord>,
    pub warnings: Vec<String>,
    /// The external server the job drove (`engine: openai`): its identity and the
    /// requests that failed. `None` for lem's own engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::server::ServerRecord>,
    /// Host the attempt ran on.
    pub hostname: String,
    pub lem_version: String,
}

impl RawResult {
    pub fn input_tokens(&self) -> u64 {
        self.requests.iter().map(|r| r.input_tokens as u64).sum()
    }
    pub fn output_tokens(&self) -> u64 {
        self.requests.iter().map(|r| r.output_tokens as u64).sum()
    }
}

/// One unit of work: one experiment config for one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub experiment_id: String,
    pub job_key: String,
    pub cycle: u32,
    pub attempt: u32,
    pub config: crate::config::ExperimentConfig,
    pub cli_overrides: BTreeMap<String, OverrideRecord>,
}

/// Hex SHA-256 of `value` as canonical JSON (object keys sorted), truncated to 16 bytes.
pub fn fingerprint(value: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let mut canonical = Vec::new();
    write_canonical(value, &mut canonical);
    let digest = Sha256::digest(&canonical);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// JobKey = hash(canonical effective config, cycle).
pub fn job_key(config_json: &serde_json::Value, cycle: u32) -> String {
    fingerprint(&serde_json::json!({ "config": config_json, "cycle": cycle }))
}

/// Canonical JSON: object keys sorted whatever map type serde_json was built with.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("a string always serialises"));
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("a scalar always serialises")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_energy_is_gross_minus_baseline_times_window_and_may_be_negative() {
        // 150 W idle over 2 s = 300 J = 300 000 mJ.
        assert_eq!(net_energy_mj(500_000.0, 150.0, 2_000_000_000), 200_000.0);
        assert_eq!(net_energy_mj(250_000.0, 150.0, 2_000_000_000), -50_000.0);
        let mut r = EnergyReading::unavailable(DeviceKind::Gpu, "gpu-0", "x", 1_000_000_000);
        r.apply_baseline(60.0);
        assert_eq!((r.baseline_power_w, r.net_energy_mj), (Some(60.0), None));
        r.energy_mj = Some(50_000.0);
        r.apply_baseline(60.0);
        assert_eq!(r.net_energy_mj, Some(-10_000.0));
    }

    #[test]
    fn readings_stored_before_the_baseline_fields_still_parse() {
        let old = r#"{"device_kind":"gpu","device_id":"g","device_name":"g","source":"nvml-counter",
            "energy_mj":1.0,"unavailable_reason":null,"window_ns":1,"sample_period_ms":null,"estimated":false}"#;
        let r: EnergyReading = serde_json::from_str(old).unwrap();
        assert_eq!(
            (r.baseline_power_w, r.net_energy_mj, r.simulated),
            (None, None, false)
        );
        assert_eq!(r.driver_version, None);
    }

    #[test]
    fn fingerprint_ignores_key_order_and_sees_values() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,2]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":[1,2],"y":2},"b":1}"#).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":[2,1],"y":2},"b":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 32);
        assert_ne!(job_key(&a, 0), job_key(&a, 1));
    }

    #[test]
    fn unavailable_reading_is_null_with_reason() {
        let r = EnergyReading::unavailable(DeviceKind::CpuPackage, "package-0", "no powercap", 5);
        assert_eq!(r.energy_mj, None);
        assert_eq!(r.source, EnergySource::None);
        assert_eq!(r.unavailable_reason.as_deref(), Some("no powercap"));
        let json = serde_json::to_value(&r).unwrap();
        assert!(
            json["energy_mj"].is_null(),
            "unavailable energy must serialise as null, not 0"
        );
    }
}
