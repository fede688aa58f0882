//! The report's data: what the page embeds as JSON and draws. Every figure that may be
//! missing is an `Option` with a reason beside it, never a zero.

use crate::aggregate::CycleLeftOut;
use lem_common::stats::Summary;
use serde::Serialize;

/// Everything one report shows.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    /// RFC 3339 UTC, when the report was made.
    pub generated_at: String,
    /// Version of the lem that made the report (each result names its own).
    pub lem_version: String,
    pub experiments: Vec<ExperimentSection>,
    /// Across experiments; `None` for a single experiment (`comparison_absent_reason`).
    pub comparison: Option<Comparison>,
    pub comparison_absent_reason: Option<String>,
}

/// One experiment: its power traces, phase split, latencies, cycle values, provenance.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentSection {
    pub id: String,
    pub config_name: String,
    pub model_name: String,
    pub status: String,
    pub complete: bool,
    pub simulated: bool,
    pub num_cycles_expected: u32,
    pub num_cycles_with_results: usize,
    pub warnings: Vec<String>,
    /// The cycle (1-based) whose traces are drawn: the first with results.
    pub trace_cycle: Option<u32>,
    /// One per device read in `trace_cycle`.
    pub power: Vec<PowerPlot>,
    /// One per device: its prefill/decode/other energy in each cycle.
    pub phase_energy: Vec<PhaseEnergyPlot>,
    pub latency: LatencyDistributions,
    pub cycle_metrics: Vec<CycleMetric>,
    pub provenance: Vec<ProvenanceRow>,
}

/// A device's power over one cycle's window.
#[derive(Debug, Clone, Serialize)]
pub struct PowerPlot {
    pub device_id: String,
    pub device_name: String,
    pub device_kind: String,
    pub simulated: bool,
    /// Seconds since the meters started.
    pub t_s: Vec<f64>,
    /// Gross power at each `t_s`; `None` where the sample has none.
    pub power_w: Vec<Option<f64>>,
    /// Which sensor `power_w` is (`power_avg_w` or `power_instant_w`).
    pub power_field: Option<String>,
    pub baseline_w: Option<f64>,
    pub baseline_unavailable_reason: Option<String>,
    /// The reading's measured window (seconds since the meters started).
    pub window_start_s: f64,
    pub window_end_s: f64,
    /// Prefill and decode spans of each batch, from the request timings.
    pub phases: Vec<PhaseSpan>,
    pub phases_unavailable_reason: Option<String>,
    /// Why there is no trace to draw (`t_s` is then empty).
    pub unavailable_reason: Option<String>,
}

/// One phase of one batch, in seconds since the meters started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSpan {
    pub phase: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// A device's gross energy by phase, per cycle.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseEnergyPlot {
    pub device_id: String,
    pub device_name: String,
    pub simulated: bool,
    /// 1-based cycle numbers; the other vectors run parallel to it.
    pub cycles: Vec<u32>,
    pub prefill_j: Vec<Option<f64>>,
    pub decode_j: Vec<Option<f64>>,
    pub other_j: Vec<Option<f64>>,
    /// The split's method in each cycle (`counter-at-boundaries`, ...).
    pub methods: Vec<Option<String>>,
    /// Why a cycle has no split, one line per such cycle.
    pub gaps: Vec<String>,
}

/// Per-request latencies of every cycle, pooled (milliseconds).
#[derive(Debug, Clone, Serialize)]
pub struct LatencyDistributions {
    pub ttft_ms: Vec<f64>,
    pub itl_ms: Vec<f64>,
    pub e2e_ms: Vec<f64>,
    /// How requests arrived ("all at once" or the schedule); TTFT and E2EL count from it.
    pub arrivals: Vec<String>,
}

/// One statistic's value in each cycle with the summary across cycles.
#[derive(Debug, Clone, Serialize)]
pub struct CycleMetric {
    pub name: String,
    pub label: String,
    pub unit: String,
    /// 1-based cycle numbers; `values` runs parallel.
    pub cycles: Vec<u32>,
    pub values: Vec<Option<f64>>,
    /// Mean, 95% CI over the cycles that have the figure; `None` when none has it.
    pub summary: Option<Summary>,
    pub unavailable_reason: Option<String>,
    /// Energy statistics: the cycles left out, with why.
    pub left_out: Vec<CycleLeftOut>,
}

/// Where one energy reading came from, for a reviewer.
#[derive(Debug, Clone, Serialize)]
pub struct ProvenanceRow {
    /// The figures this row backs, e.g. "cycle 1 · GPU-… energy".
    pub figure: String,
    pub device: String,
    pub driver: Option<String>,
    /// Where inference ran and with what (device, format, dtypes).
    pub engine: String,
    pub model: String,
    pub model_hash: Option<String>,
    pub model_hash_unavailable_reason: Option<String>,
    pub lem_version: String,
    pub simulated: bool,
    /// Source and how the number was obtained (counter, trace, RAPL; sample period).
    pub method: String,
    pub energy_j: Option<f64>,
    pub uncertainty_j: Option<f64>,
    pub uncertainty_method: Option<String>,
    pub baseline: Option<String>,
    pub phase_split: Option<String>,
    pub unavailable_reason: Option<String>,
}

/// Across experiments: each axis that differs, the Pareto front, a heatmap.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The axes whose value differs between experiments; when none does, one axis
    /// `experiment` (the experiments in the order given).
    pub axes: Vec<Axis>,
    /// Axes with one value across all experiments: name → value.
    pub constant_axes: Vec<(String, String)>,
    pub points: Vec<ComparisonPoint>,
    pub pareto: Pareto,
    pub heatmap: Option<Heatmap>,
    pub heatmap_absent_reason: Option<String>,
}

/// A configuration axis and each experiment's value on it (parallel to `points`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Axis {
    pub name: String,
    pub label: String,
    /// True when every value is a number (plotted on a numeric scale).
    pub numeric: bool,
    pub values: Vec<String>,
}

/// One experiment's position in the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonPoint {
    pub experiment_id: String,
    pub label: String,
    pub simulated: bool,
    /// `j_per_output_token` over every device.
    pub j_per_output_token: PointValue,
    /// `gpu_j_per_output_token`: the GPUs only.
    pub gpu_j_per_output_token: PointValue,
    pub output_tokens_per_s: PointValue,
    pub e2e_p90_ms: PointValue,
}

/// A mean across cycles with its 95% CI, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointValue {
    pub mean: Option<f64>,
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    pub n: usize,
    pub unavailable_reason: Option<String>,
}

/// Tokens per joule against p90 end-to-end latency.
#[derive(Debug, Clone, Serialize)]
pub struct Pareto {
    /// `all devices` or `GPUs only`: the energy the tokens per joule count.
    pub scope: String,
    pub scope_reason: String,
    pub points: Vec<ParetoPoint>,
    /// Experiments not on the plot, with why.
    pub left_out: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParetoPoint {
    pub experiment_id: String,
    pub label: String,
    pub tokens_per_j: PointValue,
    pub e2e_p90_ms: PointValue,
    /// No other point has at least as many tokens per joule at no more latency, and
    /// more of one or less of the other.
    pub on_front: bool,
}

/// A metric over two axes.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    pub metric: String,
    pub unit: String,
    pub x_axis: String,
    pub y_axis: String,
    pub x_values: Vec<String>,
    pub y_values: Vec<String>,
    /// `cells[y][x]`: the experiment there, `None` when no experiment has that pair.
    pub cells: Vec<Vec<Option<HeatmapCell>>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeatmapCell {
    pub experiment_id: String,
    pub value: PointValue,
}
