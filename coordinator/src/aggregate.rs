//! Late aggregation: derived numbers computed from stored raw results only.
//!
//! Within a job: energy summed over distinct physical devices, tokens summed, wall time
//! is the window's length, throughput = tokens / wall time. Across cycles: mean, sample
//! std, Student-t 95% CI and CV per metric. Pure functions of the raw results: running
//! them again gives identical numbers.

use lem_common::domain::{ComputeDevice, DeviceKind, RawResult};
use lem_common::stats::{LatencyPercentiles, Summary};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Energy of one job by device kind. `None` = no reading of that kind was available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyTotals {
    pub gpu_j: Option<f64>,
    pub cpu_j: Option<f64>,
    pub dram_j: Option<f64>,
    /// Sum of the available kinds; `None` when nothing was measured.
    pub total_j: Option<f64>,
    /// One line per device whose reading was unavailable: "device: reason".
    pub missing: Vec<String>,
    /// Sources that contributed, e.g. ["rapl"].
    pub sources: Vec<String>,
}

/// Metrics of one job (one cycle's accepted attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    pub cycle: u32,
    pub attempt: u32,
    pub job_key: String,
    pub num_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub wall_s: f64,
    pub output_tokens_per_s: f64,
    pub total_tokens_per_s: f64,
    /// Prompt tokens / time in prefill passes.
    pub prefill_tokens_per_s: Option<f64>,
    /// Output tokens produced by decode passes / time in decode passes.
    pub decode_tokens_per_s: Option<f64>,
    pub ttft_ms: Option<LatencyPercentiles>,
    pub itl_ms: Option<LatencyPercentiles>,
    pub e2e_ms: Option<LatencyPercentiles>,
    pub energy: EnergyTotals,
    pub j_per_output_token: Option<f64>,
    pub output_tokens_per_j: Option<f64>,
    pub flops_total: f64,
    pub flops_per_output_token: Option<f64>,
    pub flops_per_s: f64,
    pub peak_memory_bytes: Option<u64>,
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
    /// Metric name → summary across cycles (only metrics available in every cycle).
    pub stats: BTreeMap<String, Summary>,
    pub warnings: Vec<String>,
}

/// Metrics of one raw result.
pub fn job_metrics(raw: &RawResult) -> JobMetrics {
    let input_tokens = raw.input_tokens();
    let output_tokens = raw.output_tokens();
    let wall_s = raw.wall_ns as f64 / 1e9;
    let per_s = |n: f64| if wall_s > 0.0 { n / wall_s } else { 0.0 };

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
/// counts once.
pub fn energy_totals(raw: &RawResult) -> EnergyTotals {
    let mut seen = BTreeSet::new();
    let (mut gpu, mut cpu, mut dram) = (None::<f64>, None::<f64>, None::<f64>);
    let mut missing = Vec::new();
    let mut sources = BTreeSet::new();
    for r in &raw.energy {
        if !seen.insert((r.device_kind, r.device_id.clone())) {
            continue;
        }
        match r.energy_mj {
            Some(mj) => {
                let slot = match r.device_kind {
                    DeviceKind::Gpu => &mut gpu,
                    DeviceKind::CpuPackage => &mut cpu,
                    DeviceKind::Dram => &mut dram,
                };
                *slot = Some(slot.unwrap_or(0.0) + mj / 1000.0);
                sources.insert(
                    serde_json::to_value(r.source)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                );
            }
            None => missing.push(format!(
                "{}: {}",
                r.device_id,
                r.unavailable_reason.as_deref().unwrap_or("unavailable")
            )),
        }
    }
    let total_j = [gpu, cpu, dram]
        .into_iter()
        .flatten()
        .fold(None, |acc: Option<f64>, j| Some(acc.unwrap_or(0.0) + j));
    EnergyTotals {
        gpu_j: gpu,
        cpu_j: cpu,
        dram_j: dram,
        total_j,
        missing,
        sources: sources.into_iter().collect(),
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
    for raw in by_cycle.values() {
        warnings.extend(
            raw.warnings
                .iter()
                .map(|w| format!("cycle {}: {w}", raw.cycle)),
        );
    }

    let mut stats = BTreeMap::new();
    let mut add = |name: &str, f: &dyn Fn(&JobMetrics) -> Option<f64>| {
        let vals: Vec<f64> = cycles.iter().filter_map(f).collect();
        if !vals.is_empty() && vals.len() == cycles.len() {
            if let Some(s) = Summary::of(&vals) {
                stats.insert(name.to_string(), s);
            }
        }
    };
    add("output_tokens_per_s", &|m| Some(m.output_tokens_per_s));
    add("total_tokens_per_s", &|m| Some(m.total_tokens_per_s));
    add("decode_tokens_per_s", &|m| m.decode_tokens_per_s);
    add("prefill_tokens_per_s", &|m| m.prefill_tokens_per_s);
    add("wall_s", &|m| Some(m.wall_s));
    add("ttft_p50_ms", &|m| m.ttft_ms.as_ref().map(|p| p.p50));
    add("itl_p50_ms", &|m| m.itl_ms.as_ref().map(|p| p.p50));
    add("e2e_p50_ms", &|m| m.e2e_ms.as_ref().map(|p| p.p50));
    add("energy_total_j", &|m| m.energy.total_j);
    add("j_per_output_token", &|m| m.j_per_output_token);
    add("output_tokens_per_j", &|m| m.output_tokens_per_j);
    add("flops_per_s", &|m| Some(m.flops_per_s));

    ExperimentAggregate {
        experiment_id: experiment_id.to_string(),
        config_name: config_name.to_string(),
        model_name: model_name.to_string(),
        compute_device: by_cycle.values().next().map(|r| r.compute_device.clone()),
        num_cycles_expected,
        cycles,
        complete,
        stats,
        warnings,
    }
}
