//! Late aggregation: derived numbers computed from stored raw results only.
//!
//! Within a job: energy summed over distinct physical devices, tokens summed, wall time
//! is the window's length, throughput = tokens / wall time. A total over devices is null
//! unless every device was read and all are simulated or all real (`sum_devices`); the
//! readable part stays visible as `partial_total_j`. Across cycles: mean, sample std,
//! Student-t 95% CI and CV per metric; energy statistics use only the cycles where the
//! figure exists and list the others (`energy_cycles_left_out`). Pure functions of the
//! raw results: running them again gives identical numbers.

use crate::window_energy::{self, WindowEnergy};
use lem_common::arrivals;
use lem_common::config::CarbonConfig;
use lem_common::config::LatencySimulation;
use lem_common::domain::{ComputeDevice, DeviceKind, PhaseEnergy, RawResult};
use lem_common::mig::MigMode;
use lem_common::stats::{LatencyPercentiles, Summary};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Energy of one job by device kind. A kind's total is `None` when the job has no
/// device of that kind or one of them could not be read (see `sum_devices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyTotals {
    pub gpu_j: Option<f64>,
    pub cpu_j: Option<f64>,
    pub dram_j: Option<f64>,
    /// Sum over every device of the job; `None` when any device's reading is missing,
    /// when simulated and real readings would be mixed, or when nothing was measured.
    pub total_j: Option<f64>,
    /// Why `total_j` is null, when it is.
    #[serde(default)]
    pub total_unavailable_reason: Option<String>,
    /// Why `gpu_j` is null while the job has GPU readings.
    #[serde(default)]
    pub gpu_unavailable_reason: Option<String>,
    /// Sum of the devices that were read, only when `total_j` is null because some were
    /// not (those are in `missing`). Never a whole-job figure.
    #[serde(default)]
    pub partial_total_j: Option<f64>,
    /// One line per device whose reading was unavailable: "device: reason".
    pub missing: Vec<String>,
    /// True when any reading comes from a simulated device.
    #[serde(default)]
    pub simulated: bool,
    /// Sources that contributed, e.g. ["rapl"].
    pub sources: Vec<String>,
    /// Sum of net energies (gross − idle baseline × window); `None` unless `total_j`
    /// exists and every reading has a net value. May be negative (see
    /// `EnergyReading::net_energy_mj`).
    #[serde(default)]
    pub net_total_j: Option<f64>,
    /// Each measured device, in reading order.
    #[serde(default)]
    pub devices: Vec<DeviceEnergy>,
    /// Gross energy in prefill and in decode passes, summed over devices; `None` unless
    /// `total_j` exists and every device has a phase split.
    #[serde(default)]
    pub prefill_j: Option<f64>,
    #[serde(default)]
    pub decode_j: Option<f64>,
}

/// One device's contribution to a sum over devices.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePart {
    pub device_id: String,
    pub energy_j: Option<f64>,
    pub simulated: bool,
    pub unavailable_reason: Option<String>,
}

/// The sum over `parts`, or why there is none: a device that was not read makes the sum
/// partial, and simulated and real readings are never added into one figure.
pub fn sum_devices(parts: &[DevicePart]) -> Result<f64, String> {
    if parts.is_empty() {
        return Err("no device was measured".into());
    }
    let missing: Vec<String> = parts
        .iter()
        .filter(|p| p.energy_j.is_none())
        .map(|p| {
            format!(
                "{}: {}",
                p.device_id,
                p.unavailable_reason.as_deref().unwrap_or("unavailable")
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} of {} devices not read ({})",
            missing.len(),
            parts.len(),
            missing.join("; ")
        ));
    }
    let ids = |simulated: bool| -> Vec<&str> {
        parts
            .iter()
            .filter(|p| p.simulated == simulated)
            .map(|p| p.device_id.as_str())
            .collect()
    };
    let (simulated, real) = (ids(true), ids(false));
    if !simulated.is_empty() && !real.is_empty() {
        return Err(format!(
            "simulated and real readings are not added together (simulated: {}; real: {})",
            simulated.join(", "),
            real.join(", ")
        ));
    }
    Ok(parts.iter().filter_map(|p| p.energy_j).sum())
}

/// One measured device of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEnergy {
    pub device_kind: DeviceKind,
    pub device_id: String,
    pub device_name: String,
    pub source: String,
    pub gross_j: f64,
    pub baseline_power_w: Option<f64>,
    pub net_j: Option<f64>,
    pub simulated: bool,
    /// Prefill/decode split of `gross_j`, with its method.
    #[serde(default)]
    pub phases: Option<PhaseEnergy>,
    /// `exclusive` or `shared` for a GPU in MIG mode or a MIG slice.
    #[serde(default)]
    pub mig_mode: Option<MigMode>,
    /// Half-width of the reading's interval (J), from the source's edge resolution.
    #[serde(default)]
    pub uncertainty_j: Option<f64>,
}

/// Metrics of one job (one cycle's accepted attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    pub cycle: u32,
    pub attempt: u32,
    pub job_key: String,
    /// Successful requests (the ones every other metric covers).
    pub num_requests: u64,
    /// Requests an external server failed (`engine: openai`), left out of every metric.
    #[serde(default)]
    pub failed_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub wall_s: f64,
    /// Tokens / measured wall time; `None` for a zero-length window (not 0).
    pub output_tokens_per_s: Option<f64>,
    pub total_tokens_per_s: Option<f64>,
    /// Prompt tokens / time in prefill passes.
    pub prefill_tokens_per_s: Option<f64>,
    /// Output tokens produced by decode passes / time in decode passes.
    pub decode_tokens_per_s: Option<f64>,
    pub ttft_ms: Option<LatencyPercentiles>,
    pub itl_ms: Option<LatencyPercentiles>,
    pub e2e_ms: Option<LatencyPercentiles>,
    /// Time per output token after the first, one value per request:
    /// (e2e − TTFT) / (output tokens − 1); requests with a single token are left out.
    #[serde(default)]
    pub tpot_ms: Option<LatencyPercentiles>,
    /// Requests completed / measured wall time; `None` for a zero-length window.
    #[serde(default)]
    pub request_throughput_per_s: Option<f64>,
    /// How requests arrived: "all at once" or the `latency_simulation` schedule, e.g.
    /// "poisson 2 req/s (seed 7)". With "all at once", TTFT and e2e count from the start
    /// of each request's batch (no queueing); otherwise from the request's arrival.
    #[serde(default = "all_at_once")]
    pub arrivals: String,
    /// Arrivals per second actually scheduled: (n − 1) / (last − first arrival); `None`
    /// when requests arrived all at once or fewer than two arrived at distinct times.
    #[serde(default)]
    pub achieved_arrival_rate_per_s: Option<f64>,
    pub energy: EnergyTotals,
    /// Emissions of the gross energy, from the config's carbon inputs.
    #[serde(default)]
    pub carbon: Option<CarbonEstimate>,
    pub j_per_output_token: Option<f64>,
    pub output_tokens_per_j: Option<f64>,
    pub flops_total: f64,
    pub flops_per_output_token: Option<f64>,
    /// `None` for a zero-length window.
    pub flops_per_s: Option<f64>,
    pub peak_memory_bytes: Option<u64>,
    /// Energy over the whole measured window, per output token, per request and per
    /// 1,000 queries, for every device and for the GPUs.
    #[serde(default)]
    pub whole_window: Option<WindowEnergy>,
    /// The same over the steady-state window (see `window_energy`).
    #[serde(default)]
    pub steady_state: Option<WindowEnergy>,
}

/// An experiment's aggregate: per-cycle metrics plus statistics across cycles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentAggregate {
    pub experiment_id: String,
    pub config_name: String,
    pub model_name: String,
    pub compute_device: Option<ComputeDevice>,
    pub num_cycles_expected: u32,
    pub cycles: Vec<JobMetrics>,
    /// True when every expected cycle has a result.
    pub complete: bool,
    /// Metric name → summary across cycles. Energy metrics: over the cycles where the
    /// figure exists (see `energy_cycles_left_out`); other metrics: only when available
    /// in every cycle.
    pub stats: BTreeMap<String, Summary>,
    /// Energy statistic name → the cycles it leaves out, with why. Only statistics that
    /// exist (over at least one cycle) and leave a cycle out.
    #[serde(default)]
    pub energy_cycles_left_out: BTreeMap<String, Vec<CycleLeftOut>>,
    /// True when any cycle has a reading from a simulated device.
    #[serde(default)]
    pub simulated: bool,
    pub warnings: Vec<String>,
    /// The `--until-ci` rule the cycles were run under and how it ended, copied from the
    /// experiment's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ci: Option<crate::until_ci::UntilCiRecord>,
}

/// A cycle left out of an energy statistic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleLeftOut {
    /// 1-based, as the summary numbers cycles.
    pub cycle: u32,
    pub reason: String,
}

/// Results stored before arrival schedules existed all had every request at once.
fn all_at_once() -> String {
    "all at once".into()
}

/// The arrival schedule named by a result's effective config (absent = all at once).
fn arrivals_label(raw: &RawResult) -> String {
    let cfg = &raw.effective_config;
    let sim: LatencySimulation = cfg
        .get("latency_simulation")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let random_seed = cfg.get("random_seed").and_then(|v| v.as_u64());
    arrivals::describe(&sim, random_seed)
}

/// (n − 1) arrivals over the span from the first to the last, per second.
fn achieved_arrival_rate_per_s(raw: &RawResult) -> Option<f64> {
    let offsets: Option<Vec<u64>> = raw.requests.iter().map(|r| r.arrival_offset_ns).collect();
    let offsets = offsets?;
    let first = *offsets.iter().min()?;
    let last = *offsets.iter().max()?;
    (last > first).then(|| (offsets.len() - 1) as f64 / ((last - first) as f64 / 1e9))
}

/// Carbon of one job: gross energy × PUE × grid intensity, with its inputs. No figure
/// without a configured grid intensity (no silent default); a missing PUE is 1.0 and
/// `pue_assumed` says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarbonEstimate {
    pub co2e_g: Option<f64>,
    pub energy_kwh: Option<f64>,
    pub pue: f64,
    pub pue_assumed: bool,
    pub grid_intensity_gco2e_per_kwh: Option<f64>,
    /// Why `co2e_g` is missing, when it is.
    pub unavailable_reason: Option<String>,
}

fn carbon_estimate(
    raw: &RawResult,
    total_j: Option<f64>,
    total_unavailable_reason: Option<&str>,
) -> CarbonEstimate {
    let cfg: CarbonConfig = raw
        .effective_config
        .get("carbon")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let pue = cfg.pue.unwrap_or(1.0);
    let energy_kwh = total_j.map(|j| j / 3.6e6);
    let (co2e_g, unavailable_reason) = match (cfg.grid_intensity_gco2e_per_kwh, energy_kwh) {
        (None, _) => (
            None,
            Some("no grid intensity configured (carbon.grid_intensity_gco2e_per_kwh)".into()),
        ),
        (Some(_), None) => (
            None,
            Some(format!(
                "no energy total: {}",
                total_unavailable_reason.unwrap_or("no energy was measured")
            )),
        ),
        (Some(g), Some(kwh)) => (Some(kwh * pue * g), None),
    };
    CarbonEstimate {
        co2e_g,
        energy_kwh,
        pue,
        pue_assumed: cfg.pue.is_none(),
        grid_intensity_gco2e_per_kwh: cfg.grid_intensity_gco2e_per_kwh,
        unavailable_reason,
    }
}

/// Metrics of one raw result.
pub fn job_metrics(raw: &RawResult) -> JobMetrics {
    let input_tokens = raw.input_tokens();
    let output_tokens = raw.output_tokens();
    let wall_s = raw.wall_ns as f64 / 1e9;
    let per_s = |n: f64| (wall_s > 0.0).then(|| n / wall_s);

    let ttft: Vec<f64> = raw
        .requests
        .iter()
        .map(|r| r.ttft_ns as f64 / 1e6)
        .collect();
    let e2e: Vec<f64> = raw.requests.iter().map(|r| r.e2e_ns as f64 / 1e6).collect();
    let itl: Vec<f64> = raw
        .requests
        .iter()
        .flat_map(|r| r.itl_ns.iter().map(|&n| n as f64 / 1e6))
        .collect();
    // As `vllm bench serve`: the decode time of a request spread over its later tokens.
    let tpot: Vec<f64> = raw
        .requests
        .iter()
        .filter(|r| r.output_tokens > 1)
        .map(|r| r.e2e_ns.saturating_sub(r.ttft_ns) as f64 / 1e6 / (r.output_tokens - 1) as f64)
        .collect();

    // The first token of each request comes from prefill; the rest from decode passes.
    let decode_tokens: u64 = raw
        .requests
        .iter()
        .map(|r| (r.output_tokens as u64).saturating_sub(1))
        .sum();
    let prefill_tokens_per_s =
        (raw.prefill_ns > 0).then(|| input_tokens as f64 / (raw.prefill_ns as f64 / 1e9));
    let decode_tokens_per_s =
        (raw.decode_ns > 0).then(|| decode_tokens as f64 / (raw.decode_ns as f64 / 1e9));

    let energy = energy_totals(raw);
    let j_per_output_token = match (energy.total_j, output_tokens) {
        (Some(j), n) if n > 0 => Some(j / n as f64),
        _ => None,
    };
    let output_tokens_per_j = match energy.total_j {
        Some(j) if j > 0.0 => Some(output_tokens as f64 / j),
        _ => None,
    };
    let flops_total = raw.flops.total();

    JobMetrics {
        cycle: raw.cycle,
        attempt: raw.attempt,
        job_key: raw.job_key.clone(),
        num_requests: raw.requests.len() as u64,
        failed_requests: raw
            .server
            .as_ref()
            .map_or(0, |s| s.failed_requests.len() as u64),
        input_tokens,
        output_tokens,
        wall_s,
        output_tokens_per_s: per_s(output_tokens as f64),
        total_tokens_per_s: per_s((input_tokens + output_tokens) as f64),
        prefill_tokens_per_s,
        decode_tokens_per_s,
        ttft_ms: LatencyPercentiles::of(&ttft),
        itl_ms: LatencyPercentiles::of(&itl),
        e2e_ms: LatencyPercentiles::of(&e2e),
        tpot_ms: LatencyPercentiles::of(&tpot),
        request_throughput_per_s: (wall_s > 0.0).then(|| raw.requests.len() as f64 / wall_s),
        arrivals: arrivals_label(raw),
        achieved_arrival_rate_per_s: achieved_arrival_rate_per_s(raw),
        carbon: Some(carbon_estimate(
            raw,
            energy.total_j,
            energy.total_unavailable_reason.as_deref(),
        )),
        whole_window: Some(window_energy::whole_window(raw, &energy)),
        steady_state: Some(window_energy::steady_state(raw)),
        energy,
        j_per_output_token,
        output_tokens_per_j,
        flops_total,
        flops_per_output_token: (output_tokens > 0).then(|| flops_total / output_tokens as f64),
        flops_per_s: per_s(flops_total),
        peak_memory_bytes: raw.peak_memory_bytes.value,
    }
}

/// Sums energy over distinct physical devices: a device read twice (e.g. by two ranks)
/// counts once. Totals follow `sum_devices`: null unless every device was read.
pub fn energy_totals(raw: &RawResult) -> EnergyTotals {
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    let mut sources = BTreeSet::new();
    let mut devices = Vec::new();
    let mut parts: Vec<(DeviceKind, DevicePart)> = Vec::new();
    for r in &raw.energy {
        if !seen.insert((r.device_kind, r.device_id.clone())) {
            continue;
        }
        parts.push((
            r.device_kind,
            DevicePart {
                device_id: r.device_id.clone(),
                energy_j: r.energy_mj.map(|mj| mj / 1000.0),
                simulated: r.simulated,
                unavailable_reason: r.unavailable_reason.clone(),
            },
        ));
        match r.energy_mj {
            Some(mj) => {
                let source = serde_json::to_value(r.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                sources.insert(source.clone());
                devices.push(DeviceEnergy {
                    device_kind: r.device_kind,
                    device_id: r.device_id.clone(),
                    device_name: r.device_name.clone(),
                    source,
                    gross_j: mj / 1000.0,
                    baseline_power_w: r.baseline_power_w,
                    net_j: r.net_energy_mj.map(|n| n / 1000.0),
                    simulated: r.simulated,
                    phases: r.phases.clone(),
                    mig_mode: r.mig.as_ref().map(|m| m.mode),
                    uncertainty_j: r.uncertainty_mj.map(|u| u / 1000.0),
                });
            }
            None => missing.push(format!(
                "{}: {}",
                r.device_id,
                r.unavailable_reason.as_deref().unwrap_or("unavailable")
            )),
        }
    }
    // A MIG slice's reading is the job's attributed share of its parent, which is then
    // not read as a GPU of this job: slices count as the job's GPU energy.
    let of_kinds = |kinds: &[DeviceKind]| -> Option<Result<f64, String>> {
        let selected: Vec<DevicePart> = parts
            .iter()
            .filter(|(k, _)| kinds.contains(k))
            .map(|(_, p)| p.clone())
            .collect();
        (!selected.is_empty()).then(|| sum_devices(&selected))
    };
    let gpu = of_kinds(&[DeviceKind::Gpu, DeviceKind::MigSlice]);
    let all: Vec<DevicePart> = parts.iter().map(|(_, p)| p.clone()).collect();
    let total = sum_devices(&all);
    let total_j = total.as_ref().ok().copied();
    let readable: Vec<&DevicePart> = all.iter().filter(|p| p.energy_j.is_some()).collect();
    // The readable part is shown only when it is one kind of reading (all simulated or
    // all real); a mix has no sum at all.
    let partial_total_j = (total_j.is_none()
        && !missing.is_empty()
        && !readable.is_empty()
        && readable
            .iter()
            .all(|p| p.simulated == readable[0].simulated))
    .then(|| readable.iter().filter_map(|p| p.energy_j).sum());
    let net_total_j = total_j.and_then(|_| devices.iter().map(|d| d.net_j).sum::<Option<f64>>());
    let phase_sum = |f: fn(&PhaseEnergy) -> f64| -> Option<f64> {
        total_j?;
        devices
            .iter()
            .map(|d| d.phases.as_ref().map(|p| f(p) / 1000.0))
            .sum()
    };
    let prefill_j = phase_sum(|p| p.prefill_mj);
    let decode_j = phase_sum(|p| p.decode_mj);
    EnergyTotals {
        prefill_j,
        decode_j,
        gpu_j: gpu.as_ref().and_then(|r| r.as_ref().ok().copied()),
        cpu_j: of_kinds(&[DeviceKind::CpuPackage]).and_then(Result::ok),
        dram_j: of_kinds(&[DeviceKind::Dram]).and_then(Result::ok),
        total_j,
        total_unavailable_reason: total.err(),
        gpu_unavailable_reason: gpu.and_then(Result::err),
        partial_total_j,
        missing,
        simulated: raw.energy.iter().any(|r| r.simulated),
        sources: sources.into_iter().collect(),
        net_total_j,
        devices,
    }
}

/// Aggregates the accepted attempt of each cycle. Later attempts of a cycle that already
/// has one are ignored (kept in the store for audit).
pub fn aggregate_experiment(
    experiment_id: &str,
    config_name: &str,
    model_name: &str,
    num_cycles_expected: u32,
    raws: &[RawResult],
) -> ExperimentAggregate {
    let mut by_cycle: BTreeMap<u32, &RawResult> = BTreeMap::new();
    for raw in raws {
        by_cycle.entry(raw.cycle).or_insert(raw);
    }
    let cycles: Vec<JobMetrics> = by_cycle.values().map(|r| job_metrics(r)).collect();
    let mut warnings = Vec::new();
    let complete = (0..num_cycles_expected).all(|c| by_cycle.contains_key(&c));
    if !complete {
        warnings.push(format!(
            "partial aggregate: {} of {} cycles have results",
            cycles.len(),
            num_cycles_expected
        ));
    }
    // The same warning from every cycle is said once.
    let mut cycles_by_warning: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for raw in by_cycle.values() {
        for w in &raw.warnings {
            cycles_by_warning.entry(w).or_default().push(raw.cycle + 1);
        }
    }
    for (w, in_cycles) in cycles_by_warning {
        if in_cycles.len() == by_cycle.len() {
            warnings.push(w.to_string());
        } else {
            let list: Vec<String> = in_cycles.iter().map(u32::to_string).collect();
            warnings.push(format!("{w} (cycle {})", list.join(", ")));
        }
    }

    let mut stats = BTreeMap::new();
    for (name, figure) in plain_metrics() {
        // Only when available in every cycle.
        let vals: Vec<f64> = cycles.iter().filter_map(&figure).collect();
        if !vals.is_empty() && vals.len() == cycles.len() {
            if let Some(s) = Summary::of(&vals) {
                stats.insert(name, s);
            }
        }
    }

    // Energy: over the cycles where the figure exists; the others are listed with why.
    let mut energy_cycles_left_out = BTreeMap::new();
    for (name, figure) in energy_metrics() {
        let mut vals = Vec::new();
        let mut left_out = Vec::new();
        for m in &cycles {
            match figure(m) {
                Ok(v) => vals.push(v),
                Err(reason) => left_out.push(CycleLeftOut {
                    cycle: m.cycle + 1,
                    reason,
                }),
            }
        }
        if let Some(s) = Summary::of(&vals) {
            stats.insert(name.to_string(), s);
            if !left_out.is_empty() {
                energy_cycles_left_out.insert(name.to_string(), left_out);
            }
        }
    }

    let simulated = cycles.iter().any(|c| c.energy.simulated);
    ExperimentAggregate {
        experiment_id: experiment_id.to_string(),
        config_name: config_name.to_string(),
        model_name: model_name.to_string(),
        compute_device: by_cycle.values().next().map(|r| r.compute_device.clone()),
        num_cycles_expected,
        cycles,
        complete,
        stats,
        energy_cycles_left_out,
        simulated,
        warnings,
        until_ci: None,
    }
}

/// One non-energy figure of a cycle (`None` when the cycle has none).
type PlainFigure = Box<dyn Fn(&JobMetrics) -> Option<f64>>;

/// The non-energy statistics across cycles: name → figure of one cycle.
fn plain_metrics() -> Vec<(String, PlainFigure)> {
    let mut out: Vec<(String, PlainFigure)> = Vec::new();
    let mut add = |name: &str, f: PlainFigure| out.push((name.to_string(), f));
    add("output_tokens_per_s", Box::new(|m| m.output_tokens_per_s));
    add("total_tokens_per_s", Box::new(|m| m.total_tokens_per_s));
    add("decode_tokens_per_s", Box::new(|m| m.decode_tokens_per_s));
    add("prefill_tokens_per_s", Box::new(|m| m.prefill_tokens_per_s));
    add("wall_s", Box::new(|m| Some(m.wall_s)));
    // Latencies as `vllm bench serve` reports them: `{ttft,tpot,itl,e2e}_{mean,p50,p90,p99}_ms`.
    type Pick = fn(&JobMetrics) -> Option<&LatencyPercentiles>;
    let latencies: [(&str, Pick); 4] = [
        ("ttft", |m| m.ttft_ms.as_ref()),
        ("tpot", |m| m.tpot_ms.as_ref()),
        ("itl", |m| m.itl_ms.as_ref()),
        ("e2e", |m| m.e2e_ms.as_ref()),
    ];
    type Stat = fn(&LatencyPercentiles) -> f64;
    let of_each: [(&str, Stat); 4] = [
        ("mean", |p| p.mean),
        ("p50", |p| p.p50),
        ("p90", |p| p.p90),
        ("p99", |p| p.p99),
    ];
    for (metric, pick) in latencies {
        for (stat, value) in of_each {
            add(
                &format!("{metric}_{stat}_ms"),
                Box::new(move |m| pick(m).map(value)),
            );
        }
    }
    add(
        "request_throughput_per_s",
        Box::new(|m| m.request_throughput_per_s),
    );
    add(
        "achieved_arrival_rate_per_s",
        Box::new(|m| m.achieved_arrival_rate_per_s),
    );
    add("flops_per_s", Box::new(|m| m.flops_per_s));

    out
}

/// Every statistic name an aggregate can hold, non-energy first.
pub fn metric_names() -> Vec<String> {
    let mut names: Vec<String> = plain_metrics().into_iter().map(|(n, _)| n).collect();
    names.extend(energy_metrics().into_iter().map(|(n, _)| n.to_string()));
    names
}

/// The per-cycle values statistic `name` is computed from (as `aggregate_experiment`
/// picks them), or why there are none. `None` for a name that is not a statistic.
pub fn metric_cycle_values(cycles: &[JobMetrics], name: &str) -> Option<Result<Vec<f64>, String>> {
    if cycles.is_empty() {
        return Some(Err("no cycle has results".into()));
    }
    if let Some((_, figure)) = plain_metrics().into_iter().find(|(n, _)| n == name) {
        // Non-energy statistics need every cycle.
        let missing: Vec<String> = cycles
            .iter()
            .filter(|m| figure(m).is_none())
            .map(|m| (m.cycle + 1).to_string())
            .collect();
        return Some(if missing.is_empty() {
            Ok(cycles.iter().filter_map(&figure).collect())
        } else {
            Err(format!("not measured in cycle {}", missing.join(", ")))
        });
    }
    let (_, figure) = energy_metrics().into_iter().find(|(n, _)| *n == name)?;
    // Energy statistics use the cycles that have the figure.
    let mut vals = Vec::new();
    let mut first_reason = None;
    for m in cycles {
        match figure(m) {
            Ok(v) => vals.push(v),
            Err(why) => {
                first_reason.get_or_insert(why);
            }
        }
    }
    Some(if vals.is_empty() {
        Err(first_reason.unwrap_or_else(|| "no cycle has the figure".into()))
    } else {
        Ok(vals)
    })
}

/// One energy figure of a cycle, or why the cycle has none.
type EnergyFigure = fn(&JobMetrics) -> Result<f64, String>;

/// The energy statistics across cycles: name → figure of one cycle.
fn energy_metrics() -> Vec<(&'static str, EnergyFigure)> {
    fn total_reason(m: &JobMetrics) -> String {
        m.energy
            .total_unavailable_reason
            .clone()
            .unwrap_or_else(|| "no energy total".into())
    }
    fn need(v: Option<f64>, why: impl FnOnce() -> String) -> Result<f64, String> {
        v.ok_or_else(why)
    }
    /// A figure of one window's scope; `gpu` picks the GPU scope.
    fn window(
        m: &JobMetrics,
        steady: bool,
        gpu: bool,
        f: fn(&window_energy::ScopeEnergy) -> Option<f64>,
    ) -> Result<f64, String> {
        let w = if steady {
            m.steady_state.as_ref()
        } else {
            m.whole_window.as_ref()
        };
        let Some(w) = w else {
            return Err("not in this aggregate (stored by an older lem)".into());
        };
        let scope = if gpu {
            w.gpu.as_ref().ok_or("no GPU reading")?
        } else {
            &w.all_devices
        };
        f(scope).ok_or_else(|| {
            scope
                .unavailable_reason
                .clone()
                .unwrap_or_else(|| "no output token or request".into())
        })
    }
    vec![
        ("energy_total_j", |m| {
            need(m.energy.total_j, || total_reason(m))
        }),
        ("energy_net_total_j", |m| {
            need(m.energy.net_total_j, || {
                m.energy
                    .total_unavailable_reason
                    .clone()
                    .unwrap_or_else(|| "a reading has no idle baseline".into())
            })
        }),
        ("energy_prefill_j", |m| {
            need(m.energy.prefill_j, || {
                m.energy
                    .total_unavailable_reason
                    .clone()
                    .unwrap_or_else(|| "a reading has no phase split".into())
            })
        }),
        ("energy_decode_j", |m| {
            need(m.energy.decode_j, || {
                m.energy
                    .total_unavailable_reason
                    .clone()
                    .unwrap_or_else(|| "a reading has no phase split".into())
            })
        }),
        ("co2e_g", |m| {
            need(m.carbon.as_ref().and_then(|c| c.co2e_g), || {
                m.carbon
                    .as_ref()
                    .and_then(|c| c.unavailable_reason.clone())
                    .unwrap_or_else(|| "no carbon estimate".into())
            })
        }),
        ("j_per_output_token", |m| {
            need(m.j_per_output_token, || total_reason(m))
        }),
        ("output_tokens_per_j", |m| {
            need(m.output_tokens_per_j, || total_reason(m))
        }),
        ("j_per_request", |m| {
            window(m, false, false, |s| s.j_per_request)
        }),
        ("wh_per_1000_queries", |m| {
            window(m, false, false, |s| s.wh_per_1000_queries)
        }),
        ("gpu_energy_j", |m| window(m, false, true, |s| s.energy_j)),
        ("gpu_j_per_output_token", |m| {
            window(m, false, true, |s| s.j_per_output_token)
        }),
        ("gpu_wh_per_1000_queries", |m| {
            window(m, false, true, |s| s.wh_per_1000_queries)
        }),
        ("steady_state_energy_j", |m| {
            window(m, true, false, |s| s.energy_j)
        }),
        ("steady_state_j_per_output_token", |m| {
            window(m, true, false, |s| s.j_per_output_token)
        }),
        ("steady_state_wh_per_1000_queries", |m| {
            window(m, true, false, |s| s.wh_per_1000_queries)
        }),
        ("steady_state_gpu_j_per_output_token", |m| {
            window(m, true, true, |s| s.j_per_output_token)
        }),
        ("steady_state_gpu_wh_per_1000_queries", |m| {
            window(m, true, true, |s| s.wh_per_1000_queries)
        }),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lem_common::domain::*;

    pub(crate) fn reading(kind: DeviceKind, id: &str, mj: Option<f64>) -> EnergyReading {
        match mj {
            Some(mj) => EnergyReading {
                device_kind: kind,
                device_id: id.into(),
                device_name: id.into(),
                source: EnergySource::Rapl,
                energy_mj: Some(mj),
                unavailable_reason: None,
                window_ns: 2_000_000_000,
                sample_period_ms: Some(1.0),
                estimated: false,
                baseline_power_w: None,
                net_energy_mj: None,
                simulated: false,
                driver_version: None,
                trace: None,
                phases: None,
                mig: None,
                ..EnergyReading::unavailable(kind, "", "", 0)
            },
            None => EnergyReading::unavailable(kind, id, "no powercap", 2_000_000_000),
        }
    }

    pub(crate) fn raw(cycle: u32, wall_ns: u64, energy: Vec<EnergyReading>) -> RawResult {
        let req = |index, input, output: u32| RequestRecord {
            index,
            input_tokens: input,
            output_tokens: output,
            ttft_ns: 100_000_000,
            itl_ns: vec![50_000_000; output.saturating_sub(1) as usize],
            e2e_ns: 100_000_000 + 50_000_000 * output.saturating_sub(1) as u64,
            stop_reason: StopReason::MaxTokens,
            output_text: None,
            arrival_offset_ns: None,
            start_offset_ns: None,
            finish_offset_ns: None,
        };
        RawResult {
            schema_version: RAW_RESULT_SCHEMA_VERSION,
            experiment_id: "exp".into(),
            job_key: format!("k{cycle}"),
            cycle,
            attempt: 0,
            started_at: String::new(),
            finished_at: String::new(),
            effective_config: serde_json::json!({}),
            cli_overrides: Default::default(),
            compute_device: ComputeDevice {
                kind: "cpu".into(),
                name: "test".into(),
                ordinal: None,
                threads: Some(2),
                note: None,
            },
            model: ModelInfo {
                requested: "m".into(),
                resolved_path: "m".into(),
                resolved_from: "local".into(),
                format: "gguf".into(),
                weight_dtype: "Q8_0".into(),
                compute_dtype: "f32".into(),
                num_parameters: None,
                shape: TransformerShape {
                    architecture: "llama".into(),
                    hidden_size: 4,
                    intermediate_size: 8,
                    num_layers: 1,
                    num_attention_heads: 2,
                    num_kv_heads: 1,
                    head_dim: 2,
                    vocab_size: 10,
                    gated_mlp: true,
                    sliding_window: None,
                },
                tokenizer_source: "gguf-metadata".into(),
                eos_token_ids: vec![2],
                context_length: None,
                weights_sha256: None,
            },
            requests: vec![req(0, 10, 4), req(1, 6, 2)],
            wall_ns,
            prefill_ns: 200_000_000,
            decode_ns: 400_000_000,
            energy,
            flops: FlopsBreakdown {
                prefill_flops: 1000.0,
                decode_flops: 500.0,
            },
            peak_memory_bytes: Measured::unavailable("test"),
            warmup_requests: 0,
            warmup: None,
            warnings: vec!["same everywhere".into()],
            server: None,
            hostname: "h".into(),
            lem_version: "0".into(),
        }
    }

    #[test]
    fn a_device_read_twice_counts_once_and_kinds_add_up() {
        let r = raw(
            0,
            2_000_000_000,
            vec![
                reading(DeviceKind::CpuPackage, "package-0", Some(10_000.0)),
                // Same physical device reported again (e.g. by a second rank): not added.
                reading(DeviceKind::CpuPackage, "package-0", Some(10_000.0)),
                reading(DeviceKind::Dram, "package-0/dram", Some(2_000.0)),
            ],
        );
        let e = energy_totals(&r);
        assert_eq!(e.cpu_j, Some(10.0));
        assert_eq!(e.dram_j, Some(2.0));
        assert_eq!(e.gpu_j, None);
        assert_eq!(e.total_j, Some(12.0));
        let m = job_metrics(&r);
        assert_eq!(m.output_tokens, 6);
        assert_eq!(m.input_tokens, 16);
        assert_eq!(m.output_tokens_per_s, Some(3.0));
        assert_eq!(m.total_tokens_per_s, Some(11.0));
        assert_eq!(m.j_per_output_token, Some(2.0));
        assert_eq!(m.output_tokens_per_j, Some(0.5));
        // 16 prompt tokens in 0.2 s; 4 decode tokens (first tokens come from prefill) in 0.4 s.
        assert_eq!(m.prefill_tokens_per_s, Some(80.0));
        assert_eq!(m.decode_tokens_per_s, Some(10.0));
        assert_eq!(m.flops_total, 1500.0);
    }

    #[test]
    fn net_total_needs_a_net_value_on_every_reading() {
        let mut gpu = reading(DeviceKind::Gpu, "gpu-0", Some(500_000.0));
        gpu.apply_baseline(100.0); // 2 s window: net = 500 J − 200 J
        let cpu = reading(DeviceKind::CpuPackage, "package-0", Some(40_000.0));
        let missing = reading(DeviceKind::Dram, "package-0/dram", None);
        let e = energy_totals(&raw(0, 2_000_000_000, vec![gpu.clone()]));
        assert_eq!(e.total_j, Some(500.0));
        assert_eq!(e.net_total_j, Some(300.0));
        assert_eq!(e.devices[0].baseline_power_w, Some(100.0));
        let e = energy_totals(&raw(0, 2_000_000_000, vec![gpu.clone(), cpu]));
        assert_eq!(e.total_j, Some(540.0));
        assert_eq!(e.net_total_j, None, "the CPU reading has no baseline");
        // A device not read: no total and no net total, the readable part labelled.
        let e = energy_totals(&raw(0, 2_000_000_000, vec![gpu, missing]));
        assert_eq!((e.total_j, e.net_total_j), (None, None));
        assert_eq!(e.partial_total_j, Some(500.0));
        assert_eq!(e.devices.len(), 1);
    }

    #[test]
    fn phases_add_up_only_when_every_device_has_a_split() {
        let split = |p, d| {
            Some(PhaseEnergy {
                method: PhaseSplitMethod::CounterAtBoundaries,
                prefill_mj: p,
                decode_mj: d,
                other_mj: 0.0,
            })
        };
        let mut gpu = reading(DeviceKind::Gpu, "gpu-0", Some(500_000.0));
        gpu.phases = split(100_000.0, 400_000.0);
        let mut cpu = reading(DeviceKind::CpuPackage, "package-0", Some(40_000.0));
        cpu.phases = split(10_000.0, 30_000.0);
        let e = energy_totals(&raw(0, 2_000_000_000, vec![gpu.clone(), cpu.clone()]));
        assert_eq!(e.prefill_j, Some(110.0));
        assert_eq!(e.decode_j, Some(430.0));
        cpu.phases = None;
        let e = energy_totals(&raw(0, 2_000_000_000, vec![gpu.clone(), cpu]));
        assert_eq!(e.prefill_j, None);
        assert_eq!(e.decode_j, None);
        // Every readable device split, one device not read: no phase totals either.
        let missing = reading(DeviceKind::Gpu, "gpu-1", None);
        let e = energy_totals(&raw(0, 2_000_000_000, vec![gpu, missing]));
        assert_eq!((e.prefill_j, e.decode_j), (None, None));
    }

    #[test]
    fn a_mig_slice_counts_as_the_jobs_gpu_energy() {
        let mut slice = reading(DeviceKind::MigSlice, "MIG-a", Some(3_000.0));
        slice.mig = Some(
            lem_common::mig::attribute(
                "GPU-0",
                7_000,
                None,
                1_000_000_000,
                7,
                vec![lem_common::mig::SliceInput {
                    slice_id: "MIG-a".into(),
                    profile: "3g.20gb".into(),
                    compute_slices: 3,
                    sm_count: 42,
                    allocated: true,
                    owned_by_job: true,
                    sm_activity: None,
                }],
            )
            .unwrap(),
        );
        let e = energy_totals(&raw(0, 1_000_000_000, vec![slice]));
        assert_eq!(e.gpu_j, Some(3.0));
        assert_eq!(e.devices[0].mig_mode, Some(MigMode::Shared));
    }

    #[test]
    fn carbon_needs_a_grid_intensity_and_says_when_pue_is_assumed() {
        let gpu = reading(DeviceKind::Gpu, "gpu-0", Some(3_600_000.0)); // 3.6 kJ = 1 Wh
        let mut r = raw(0, 2_000_000_000, vec![gpu]);
        let c = job_metrics(&r).carbon.unwrap();
        assert_eq!(c.co2e_g, None);
        assert!(c.unavailable_reason.unwrap().contains("grid intensity"));
        r.effective_config = serde_json::json!({"carbon": {"grid_intensity_gco2e_per_kwh": 400.0}});
        let c = job_metrics(&r).carbon.unwrap();
        assert!(close(c.co2e_g.unwrap(), 0.4), "{c:?}");
        assert!(c.pue_assumed);
        r.effective_config =
            serde_json::json!({"carbon": {"pue": 1.5, "grid_intensity_gco2e_per_kwh": 400.0}});
        let c = job_metrics(&r).carbon.unwrap();
        assert!(close(c.co2e_g.unwrap(), 0.6), "{c:?}");
        assert!(!c.pue_assumed);
        // No energy: no carbon, with the reason.
        r.energy = vec![reading(DeviceKind::Gpu, "gpu-0", None)];
        let c = job_metrics(&r).carbon.unwrap();
        assert_eq!(c.co2e_g, None);
        assert!(c.unavailable_reason.unwrap().contains("no energy"));
    }

    #[test]
    fn unavailable_energy_stays_null_with_reasons() {
        let r = raw(
            0,
            1_000_000_000,
            vec![
                reading(DeviceKind::CpuPackage, "package", None),
                reading(DeviceKind::Dram, "package/dram", None),
            ],
        );
        let m = job_metrics(&r);
        assert_eq!(m.energy.total_j, None);
        assert_eq!(m.j_per_output_token, None);
        assert_eq!(m.output_tokens_per_j, None);
        assert_eq!(m.energy.missing.len(), 2);
        assert!(m.energy.missing[0].contains("no powercap"));
        let agg = aggregate_experiment("exp", "c", "m", 1, &[r]);
        assert!(!agg.stats.contains_key("energy_total_j"));
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn serving_latencies_are_computed_as_vllm_bench_serve_does() {
        let mut r = raw(0, 2_000_000_000, vec![]);
        let m = job_metrics(&r);
        assert_eq!(m.arrivals, "all at once");
        assert_eq!(m.achieved_arrival_rate_per_s, None, "no schedule, no rate");
        assert_eq!(m.request_throughput_per_s, Some(1.0));
        // Both requests: (e2e − ttft) / (n − 1) = 50 ms.
        assert_eq!(m.tpot_ms.as_ref().unwrap().mean, 50.0);

        // Three requests arriving at 0, 0.5 s and 1.5 s under a Poisson schedule; the
        // single-token one has no TPOT.
        r.effective_config = serde_json::json!({
            "random_seed": 3,
            "latency_simulation": {"enabled": true, "mode": "poisson", "target_qps": 2.0}
        });
        r.requests[1].output_tokens = 3;
        r.requests[1].itl_ns = vec![50_000_000, 150_000_000];
        r.requests[1].e2e_ns = 300_000_000; // TPOT (300 − 100) / 2 = 100 ms
        let mut single = r.requests[0].clone();
        single.index = 2;
        single.output_tokens = 1;
        single.itl_ns = vec![];
        single.ttft_ns = 400_000_000;
        single.e2e_ns = 400_000_000;
        r.requests.push(single);
        for (req, at_ns) in r.requests.iter_mut().zip([0, 500_000_000, 1_500_000_000]) {
            req.arrival_offset_ns = Some(at_ns);
        }
        let m = job_metrics(&r);
        assert_eq!(m.arrivals, "poisson 2 req/s (seed 3)");
        assert!(close(m.achieved_arrival_rate_per_s.unwrap(), 2.0 / 1.5));
        assert_eq!(m.request_throughput_per_s, Some(1.5));
        let tpot = m.tpot_ms.as_ref().unwrap();
        assert_eq!((tpot.mean, tpot.p50), (75.0, 75.0));
        assert!(close(tpot.p90, 95.0) && close(tpot.p99, 99.5), "{tpot:?}");
        let ttft = m.ttft_ms.as_ref().unwrap();
        assert_eq!((ttft.mean, ttft.p50), (200.0, 100.0));
        // ITL pools every gap of every request: 50, 50, 50, 50, 150.
        let itl = m.itl_ms.as_ref().unwrap();
        assert_eq!((itl.mean, itl.p50, itl.max), (70.0, 50.0, 150.0));
        assert_eq!(m.e2e_ms.as_ref().unwrap().p50, 300.0);

        let agg = aggregate_experiment("exp", "c", "m", 1, &[r.clone()]);
        for metric in ["ttft", "tpot", "itl", "e2e"] {
            for stat in ["mean", "p50", "p90", "p99"] {
                assert!(agg.stats.contains_key(&format!("{metric}_{stat}_ms")));
            }
        }
        assert!(close(agg.stats["tpot_p99_ms"].mean, 99.5));
        assert_eq!(agg.stats["request_throughput_per_s"].mean, 1.5);
        assert!(agg.stats.contains_key("achieved_arrival_rate_per_s"));

        // Every request single-token: TPOT cannot be computed, so it is absent, not 0.
        for req in &mut r.requests {
            req.output_tokens = 1;
            req.itl_ns.clear();
        }
        let m = job_metrics(&r);
        assert_eq!(m.tpot_ms, None);
        assert_eq!(m.itl_ms, None);
        let agg = aggregate_experiment("exp", "c", "m", 1, &[r]);
        assert!(!agg.stats.contains_key("tpot_p50_ms"));
        assert!(!agg.stats.contains_key("itl_mean_ms"));
    }

    #[test]
    fn aggregates_stored_before_arrivals_still_load() {
        let m = job_metrics(&raw(0, 1_000_000_000, vec![]));
        let mut v = serde_json::to_value(&m).unwrap();
        for field in [
            "tpot_ms",
            "request_throughput_per_s",
            "arrivals",
            "achieved_arrival_rate_per_s",
        ] {
            v.as_object_mut().unwrap().remove(field);
        }
        let old: JobMetrics = serde_json::from_value(v).unwrap();
        assert_eq!(old.arrivals, "all at once");
        assert_eq!(old.tpot_ms, None);
    }

    #[test]
    fn cycles_give_mean_std_ci_and_partial_is_flagged() {
        let raws: Vec<RawResult> = [1.0e9, 2.0e9, 3.0e9]
            .iter()
            .enumerate()
            .map(|(c, &w)| raw(c as u32, w as u64, vec![]))
            .collect();
        let agg = aggregate_experiment("exp", "c", "m", 4, &raws);
        assert!(!agg.complete);
        assert!(agg.warnings[0].contains("3 of 4 cycles"));
        // A warning present in every cycle is said once, without a cycle list.
        assert!(agg.warnings.contains(&"same everywhere".to_string()));
        let wall = &agg.stats["wall_s"];
        assert_eq!(wall.n, 3);
        assert_eq!(wall.mean, 2.0);
        assert_eq!(wall.std, Some(1.0));
        // t(0.975, 2) = 4.302652729911275; half-width = t * s / sqrt(n).
        let hw = wall.ci95_half_width.unwrap();
        assert!((hw - 4.302652729911275 / 3f64.sqrt()).abs() < 1e-9, "{hw}");
        // Re-aggregation is a pure function of the raw results.
        assert_eq!(agg, aggregate_experiment("exp", "c", "m", 4, &raws));
        // A later attempt of the same cycle does not count twice.
        let mut dup = raws[0].clone();
        dup.attempt = 1;
        dup.wall_ns = 99_000_000_000;
        let mut with_dup = raws.clone();
        with_dup.push(dup);
        assert_eq!(
            aggregate_experiment("exp", "c", "m", 4, &with_dup).stats["wall_s"].mean,
            2.0
        );
    }

    /// Two GPUs of `gross_j` each (`None` = not read); 6 output tokens (see `raw`).
    pub(crate) fn two_gpus(cycle: u32, gross_j: [Option<f64>; 2]) -> RawResult {
        let readings = gross_j
            .iter()
            .enumerate()
            .map(|(i, j)| reading(DeviceKind::Gpu, &format!("gpu-{i}"), j.map(|j| j * 1e3)))
            .collect();
        raw(cycle, 2_000_000_000, readings)
    }

    #[test]
    fn a_total_over_two_gpus_with_one_unread_is_null_and_the_read_part_is_labelled() {
        let mut r = two_gpus(0, [Some(300.0), None]);
        r.effective_config = serde_json::json!({"carbon": {"grid_intensity_gco2e_per_kwh": 400.0}});
        let m = job_metrics(&r);
        let e = &m.energy;
        assert_eq!(e.total_j, None);
        assert_eq!(e.gpu_j, None, "the GPU kind is incomplete too");
        assert_eq!(e.partial_total_j, Some(300.0));
        assert_eq!(e.missing, ["gpu-1: no powercap"]);
        let why = e.total_unavailable_reason.as_deref().unwrap();
        assert!(
            why.contains("1 of 2 devices") && why.contains("gpu-1"),
            "{why}"
        );
        // Everything derived from the total is null, with the reason carried along.
        assert_eq!((m.j_per_output_token, m.output_tokens_per_j), (None, None));
        let c = m.carbon.as_ref().unwrap();
        assert_eq!(c.co2e_g, None);
        assert!(c.unavailable_reason.as_deref().unwrap().contains("gpu-1"));
        let whole = m.whole_window.as_ref().unwrap();
        assert_eq!(whole.all_devices.energy_j, None);
        assert_eq!(whole.gpu.as_ref().unwrap().j_per_output_token, None);
        // Both read: the sum, and per-token / per-request figures from it.
        let m = job_metrics(&two_gpus(0, [Some(300.0), Some(180.0)]));
        assert_eq!(m.energy.total_j, Some(480.0));
        assert_eq!(m.energy.partial_total_j, None);
        let gpu = m.whole_window.as_ref().unwrap().gpu.clone().unwrap();
        assert_eq!(gpu.energy_j, Some(480.0));
        assert_eq!(gpu.j_per_output_token, Some(480.0 / 6.0));
        assert_eq!(gpu.j_per_request, Some(480.0 / 2.0));
        assert!(close(
            gpu.wh_per_1000_queries.unwrap(),
            240.0 / 3600.0 * 1000.0
        ));
    }

    #[test]
    fn energy_statistics_use_only_complete_cycles_and_say_which_were_left_out() {
        let raws = vec![
            two_gpus(0, [Some(100.0), Some(200.0)]),
            two_gpus(1, [Some(150.0), Some(250.0)]),
            two_gpus(2, [Some(900.0), None]),
        ];
        let agg = aggregate_experiment("exp", "c", "m", 3, &raws);
        let total = &agg.stats["energy_total_j"];
        assert_eq!(total.n, 2);
        assert!(close(total.mean, (300.0 + 400.0) / 2.0));
        let per_token = &agg.stats["j_per_output_token"];
        assert!(close(per_token.mean, (300.0 / 6.0 + 400.0 / 6.0) / 2.0));
        let left = &agg.energy_cycles_left_out["energy_total_j"];
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].cycle, 3);
        assert!(left[0].reason.contains("gpu-1"), "{}", left[0].reason);
        assert_eq!(
            agg.energy_cycles_left_out["gpu_j_per_output_token"][0].cycle,
            3
        );
        // Metrics that are not energy still cover every cycle.
        assert_eq!(agg.stats["wall_s"].n, 3);
        // Every cycle complete: nothing left out.
        let agg = aggregate_experiment("exp", "c", "m", 2, &raws[..2]);
        assert!(!agg.energy_cycles_left_out.contains_key("energy_total_j"));
        assert_eq!(agg.stats["energy_total_j"].n, 2);
    }

    #[test]
    fn cycle_values_are_the_ones_each_statistic_summarises() {
        let raws = vec![
            two_gpus(0, [Some(100.0), Some(200.0)]),
            two_gpus(1, [Some(150.0), Some(250.0)]),
            two_gpus(2, [Some(900.0), None]),
        ];
        let agg = aggregate_experiment("exp", "c", "m", 3, &raws);
        assert!(agg.stats.len() > 10, "{:?}", agg.stats.keys());
        for (name, summary) in &agg.stats {
            let vals = metric_cycle_values(&agg.cycles, name)
                .unwrap_or_else(|| panic!("{name} is a statistic"))
                .unwrap_or_else(|why| panic!("{name}: {why}"));
            assert_eq!(Summary::of(&vals).as_ref(), Some(summary), "{name}");
        }
        // Energy: the cycles that have the figure (cycle 3 has no gpu-1 reading).
        let total = metric_cycle_values(&agg.cycles, "energy_total_j").unwrap();
        assert_eq!(total, Ok(vec![300.0, 400.0]));
        // Every name the aggregate may hold is known, and nothing else is.
        let names = metric_names();
        assert!(agg.stats.keys().all(|k| names.contains(k)));
        assert_eq!(metric_cycle_values(&agg.cycles, "no_such_metric"), None);
        // A statistic with no value in any cycle says why instead of giving zero.
        let why = metric_cycle_values(&agg.cycles, "co2e_g")
            .unwrap()
            .unwrap_err();
        assert!(!why.is_empty());
        assert!(!agg.stats.contains_key("co2e_g"));
        assert_eq!(
            metric_cycle_values(&[], "wall_s"),
            Some(Err("no cycle has results".into()))
        );
        // A non-energy figure missing in one cycle: no values, and the cycle named.
        let agg = aggregate_experiment(
            "exp",
            "c",
            "m",
            2,
            &[raw(0, 2_000_000_000, vec![]), raw(1, 0, vec![])],
        );
        assert!(!agg.stats.contains_key("output_tokens_per_s"));
        assert_eq!(
            metric_cycle_values(&agg.cycles, "output_tokens_per_s"),
            Some(Err("not measured in cycle 2".into()))
        );
        assert_eq!(
            metric_cycle_values(&agg.cycles, "wall_s"),
            Some(Ok(vec![2.0, 0.0]))
        );
    }

    #[test]
    fn simulated_and_real_readings_are_never_summed() {
        let mut gpu = reading(DeviceKind::Gpu, "gpu-0", Some(500_000.0));
        gpu.simulated = true;
        let cpu = reading(DeviceKind::CpuPackage, "package-0", Some(40_000.0));
        let r = raw(0, 2_000_000_000, vec![gpu, cpu]);
        let e = energy_totals(&r);
        assert!(e.simulated);
        assert_eq!(e.total_j, None);
        assert_eq!(
            e.partial_total_j, None,
            "a mix has no readable-part sum either"
        );
        let why = e.total_unavailable_reason.as_deref().unwrap();
        assert!(
            why.contains("simulated: gpu-0") && why.contains("real: package-0"),
            "{why}"
        );
        // Each kind is one sort of reading, so each keeps its own total.
        assert_eq!((e.gpu_j, e.cpu_j), (Some(500.0), Some(40.0)));
        let agg = aggregate_experiment("exp", "c", "m", 1, std::slice::from_ref(&r));
        assert!(agg.simulated, "marked at the top level");
        assert!(!agg.stats.contains_key("energy_total_j"));
        assert_eq!(agg.stats["gpu_energy_j"].mean, 500.0);
        // Nothing simulated: not marked.
        let real = raw(
            0,
            2_000_000_000,
            vec![reading(DeviceKind::Gpu, "gpu-0", Some(1.0))],
        );
        assert!(!aggregate_experiment("exp", "c", "m", 1, &[real]).simulated);
    }

    #[test]
    fn rates_over_a_zero_length_window_are_null_not_zero() {
        let r = raw(0, 0, vec![]);
        let m = job_metrics(&r);
        assert_eq!(m.output_tokens_per_s, None);
        assert_eq!(m.total_tokens_per_s, None);
        assert_eq!(m.flops_per_s, None);
        assert_eq!(m.request_throughput_per_s, None);
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["output_tokens_per_s"].is_null() && v["flops_per_s"].is_null());
        let agg = aggregate_experiment("exp", "c", "m", 1, &[r]);
        assert!(!agg.stats.contains_key("output_tokens_per_s"));
        assert!(!agg.stats.contains_key("flops_per_s"));
    }
}
