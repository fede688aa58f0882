//! Tables for `lem results export`: one row per request, per cycle, per experiment or per
//! power-trace sample, built from stored aggregates and the raw results they used. Column
//! names are stable and carry their unit (docs/export.md lists them); each column has one
//! type, so typed formats (Parquet) get a fixed schema. A value that does not exist stays
//! null (an empty CSV cell, `null` in JSONL and Parquet), never 0.

mod parquet;

use crate::aggregate::{ExperimentAggregate, JobMetrics};
use lem_common::domain::{EnergyReading, PowerSample, PowerTrace, RawResult, StopReason};
use lem_common::stats::LatencyPercentiles;
use serde_json::Value;
use std::io::Write;

/// Which rows a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportLevel {
    /// One row per request of each cycle the aggregate used.
    Request,
    /// One row per cycle (the aggregate's accepted attempt).
    Cycle,
    /// One row per experiment: statistics across cycles.
    Experiment,
    /// One row per power-trace sample of each device of each cycle the aggregate used.
    Trace,
}

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row; null is an empty cell.
    Csv,
    /// One JSON object per line, keys in column order; null is `null`.
    Jsonl,
    /// Apache Parquet, one typed, nullable column per column; null is null.
    Parquet,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write a CSV row: {0}")]
    Csv(#[from] csv::Error),
    #[error("experiment {experiment_id}: the aggregate uses cycle {cycle} attempt {attempt}, but no such raw result is stored")]
    MissingRaw {
        experiment_id: String,
        cycle: u32,
        attempt: u32,
    },
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("column {column}, row {row}: {value} does not fit the column's {kind:?} type")]
    CellType {
        column: String,
        row: usize,
        value: Value,
        kind: ColumnKind,
    },
}

/// The type every non-null cell of a column has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Bool,
    /// A signed 64-bit integer.
    Int,
    Float,
    Text,
}

/// Named, typed columns and rows of cells (null, or a value of the column's kind).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub kinds: Vec<ColumnKind>,
    pub rows: Vec<Vec<Value>>,
}

/// A value a cell can hold, with the kind of column it belongs in.
trait Cell {
    const KIND: ColumnKind;
    fn into_value(self) -> Value;
}

macro_rules! cell_kind {
    ($kind:ident: $($t:ty),*) => {$(
        impl Cell for $t {
            const KIND: ColumnKind = ColumnKind::$kind;
            fn into_value(self) -> Value {
                Value::from(self)
            }
        }
    )*};
}
cell_kind!(Bool: bool);
cell_kind!(Int: u32, u64, usize, i64);
// A non-finite float has no JSON number: `Value::from` makes it null.
cell_kind!(Float: f64);
cell_kind!(Text: &str, String);

impl<T: Cell> Cell for Option<T> {
    const KIND: ColumnKind = T::KIND;
    fn into_value(self) -> Value {
        self.map_or(Value::Null, Cell::into_value)
    }
}

/// The statistics across cycles that the experiment level exports, in column order.
/// Each becomes `{name}_mean`, `{name}_std`, `{name}_ci95_half_width` and `{name}_n`.
pub const EXPERIMENT_STATS: &[&str] = &[
    "wall_s",
    "output_tokens_per_s",
    "total_tokens_per_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "request_throughput_per_s",
    "achieved_arrival_rate_per_s",
    "flops_per_s",
    "ttft_mean_ms",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "tpot_mean_ms",
    "tpot_p50_ms",
    "tpot_p90_ms",
    "tpot_p99_ms",
    "itl_mean_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "e2e_mean_ms",
    "e2e_p50_ms",
    "e2e_p90_ms",
    "e2e_p99_ms",
    "energy_total_j",
    "energy_net_total_j",
    "energy_prefill_j",
    "energy_decode_j",
    "j_per_output_token",
    "output_tokens_per_j",
    "j_per_request",
    "wh_per_1000_queries",
    "gpu_energy_j",
    "gpu_j_per_output_token",
    "gpu_wh_per_1000_queries",
    "steady_state_energy_j",
    "steady_state_j_per_output_token",
    "steady_state_wh_per_1000_queries",
    "steady_state_gpu_j_per_output_token",
    "steady_state_gpu_wh_per_1000_queries",
    "co2e_g",
];

/// Builds rows column by column so names and values cannot drift apart.
struct RowBuilder {
    columns: Vec<String>,
    kinds: Vec<ColumnKind>,
    values: Vec<Value>,
}

impl RowBuilder {
    fn new() -> Self {
        Self {
            columns: Vec::new(),
            kinds: Vec::new(),
            values: Vec::new(),
        }
    }
    fn put<T: Cell>(&mut self, column: &str, value: T) {
        self.columns.push(column.to_string());
        self.kinds.push(T::KIND);
        self.values.push(value.into_value());
    }
    /// A float cell; a non-finite value has no JSON number and becomes null.
    fn num(&mut self, column: &str, value: Option<f64>) {
        self.put(column, value);
    }
}

/// Appends one built row; every row of a table has the same columns.
fn push_row(table: &mut Option<Table>, row: RowBuilder) {
    match table {
        Some(t) => {
            debug_assert_eq!(t.columns, row.columns, "rows of one table share columns");
            debug_assert_eq!(t.kinds, row.kinds, "columns keep their kind");
            t.rows.push(row.values);
        }
        None => {
            *table = Some(Table {
                columns: row.columns,
                kinds: row.kinds,
                rows: vec![row.values],
            })
        }
    }
}

/// How the cycle's energy was measured: its sources joined by `+` (`rapl`,
/// `nvml_counter`, `estimate`, ...); empty sources (nothing read) give null.
fn energy_method(m: &JobMetrics) -> Option<String> {
    (!m.energy.sources.is_empty()).then(|| m.energy.sources.join("+"))
}

fn stop_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Eos => "eos",
        StopReason::MaxTokens => "max_tokens",
    }
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The table of `level` over experiments, each its aggregate with the raw results of its
/// experiment (only needed at the request and trace levels). Without any row there are no
/// columns either: the caller says that there was nothing to export.
pub fn build_table(
    level: ExportLevel,
    experiments: &[(ExperimentAggregate, Vec<RawResult>)],
) -> Result<Table, ExportError> {
    let mut table = None;
    for (agg, raws) in experiments {
        match level {
            ExportLevel::Experiment => push_row(&mut table, experiment_row(agg)),
            ExportLevel::Cycle => {
                for m in &agg.cycles {
                    push_row(&mut table, cycle_row(agg, m));
                }
            }
            ExportLevel::Request => {
                for m in &agg.cycles {
                    for req in &used_raw(agg, m, raws)?.requests {
                        push_row(&mut table, request_row(agg, m, req));
                    }
                }
            }
            ExportLevel::Trace => {
                for m in &agg.cycles {
                    for reading in &used_raw(agg, m, raws)?.energy {
                        let Some(trace) = &reading.trace else {
                            continue;
                        };
                        for (i, sample) in trace.samples.iter().enumerate() {
                            push_row(&mut table, trace_row(agg, m, reading, trace, i, sample));
                        }
                    }
                }
            }
        }
    }
    Ok(table.unwrap_or(Table {
        columns: Vec::new(),
        kinds: Vec::new(),
        rows: Vec::new(),
    }))
}

/// The raw result of the attempt the aggregate used for cycle `m`.
fn used_raw<'a>(
    agg: &ExperimentAggregate,
    m: &JobMetrics,
    raws: &'a [RawResult],
) -> Result<&'a RawResult, ExportError> {
    raws.iter()
        .find(|r| r.cycle == m.cycle && r.attempt == m.attempt)
        .ok_or_else(|| ExportError::MissingRaw {
            experiment_id: agg.experiment_id.clone(),
            cycle: m.cycle,
            attempt: m.attempt,
        })
}

/// A serde enum's name as stored (`cpu_package`, `nvml-counter`).
fn serde_name(v: impl serde::Serialize) -> Option<String> {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn trace_row(
    agg: &ExperimentAggregate,
    m: &JobMetrics,
    reading: &EnergyReading,
    trace: &PowerTrace,
    index: usize,
    sample: &PowerSample,
) -> RowBuilder {
    let mut r = RowBuilder::new();
    r.put("experiment_id", agg.experiment_id.as_str());
    r.put("cycle", m.cycle);
    r.put("attempt", m.attempt);
    r.put("device_kind", serde_name(reading.device_kind));
    r.put("device_id", reading.device_id.as_str());
    r.put("device_name", reading.device_name.as_str());
    r.put("simulated", reading.simulated);
    r.put("energy_source", serde_name(reading.source));
    r.num("trace_period_ms", Some(trace.period_ms));
    r.put("sample_index", index);
    r.num("t_ms", Some(ns_to_ms(sample.t_ns)));
    // The device's window can start up to a counter period away from the job's.
    r.num(
        "window_start_offset_ms",
        reading.window_start_offset_ns.map(|ns| ns as f64 / 1e6),
    );
    r.num("power_avg_w", sample.power_avg_w);
    r.num("power_instant_w", sample.power_instant_w);
    r.put("energy_counter_mj", sample.energy_counter_mj);
    r.put("temperature_c", sample.temperature_c);
    r.put("sm_clock_mhz", sample.sm_clock_mhz);
    r.put("throttle_reasons", sample.throttle_reasons);
    r
}

fn request_row(
    agg: &ExperimentAggregate,
    m: &JobMetrics,
    req: &lem_common::domain::RequestRecord,
) -> RowBuilder {
    let mut r = RowBuilder::new();
    r.put("experiment_id", agg.experiment_id.as_str());
    r.put("cycle", m.cycle);
    r.put("attempt", m.attempt);
    r.put("request_index", req.index);
    r.put("simulated", m.energy.simulated);
    r.put("energy_method", energy_method(m));
    r.put("input_tokens", req.input_tokens);
    r.put("output_tokens", req.output_tokens);
    r.put("stop_reason", stop_reason(req.stop_reason));
    r.num("ttft_ms", Some(ns_to_ms(req.ttft_ns)));
    r.num("e2e_ms", Some(ns_to_ms(req.e2e_ns)));
    // Mean gap between output tokens: none with fewer than two tokens.
    let itl_mean_ms = (!req.itl_ns.is_empty())
        .then(|| req.itl_ns.iter().map(|&g| ns_to_ms(g)).sum::<f64>() / req.itl_ns.len() as f64);
    r.num("itl_mean_ms", itl_mean_ms);
    // As the aggregate defines TPOT: (e2e − TTFT) / (output tokens − 1).
    let tpot_ms = (req.output_tokens > 1)
        .then(|| ns_to_ms(req.e2e_ns.saturating_sub(req.ttft_ns)) / (req.output_tokens - 1) as f64);
    r.num("tpot_ms", tpot_ms);
    r.num("arrival_offset_ms", req.arrival_offset_ns.map(ns_to_ms));
    r.num("start_offset_ms", req.start_offset_ns.map(ns_to_ms));
    r.num("finish_offset_ms", req.finish_offset_ns.map(ns_to_ms));
    r
}

fn latency_cells(r: &mut RowBuilder, name: &str, p: Option<&LatencyPercentiles>) {
    r.num(&format!("{name}_mean_ms"), p.map(|p| p.mean));
    r.num(&format!("{name}_p50_ms"), p.map(|p| p.p50));
    r.num(&format!("{name}_p90_ms"), p.map(|p| p.p90));
    r.num(&format!("{name}_p99_ms"), p.map(|p| p.p99));
}

fn cycle_row(agg: &ExperimentAggregate, m: &JobMetrics) -> RowBuilder {
    let mut r = RowBuilder::new();
    let e = &m.energy;
    r.put("experiment_id", agg.experiment_id.as_str());
    r.put("cycle", m.cycle);
    r.put("attempt", m.attempt);
    r.put("job_key", m.job_key.as_str());
    r.put("simulated", e.simulated);
    r.put("energy_method", energy_method(m));
    r.put("num_requests", m.num_requests);
    r.put("failed_requests", m.failed_requests);
    r.put("input_tokens", m.input_tokens);
    r.put("output_tokens", m.output_tokens);
    r.num("wall_s", Some(m.wall_s));
    r.num("output_tokens_per_s", m.output_tokens_per_s);
    r.num("total_tokens_per_s", m.total_tokens_per_s);
    r.num("prefill_tokens_per_s", m.prefill_tokens_per_s);
    r.num("decode_tokens_per_s", m.decode_tokens_per_s);
    r.num("request_throughput_per_s", m.request_throughput_per_s);
    r.num("achieved_arrival_rate_per_s", m.achieved_arrival_rate_per_s);
    latency_cells(&mut r, "ttft", m.ttft_ms.as_ref());
    latency_cells(&mut r, "tpot", m.tpot_ms.as_ref());
    latency_cells(&mut r, "itl", m.itl_ms.as_ref());
    latency_cells(&mut r, "e2e", m.e2e_ms.as_ref());
    r.num("energy_total_j", e.total_j);
    r.put(
        "energy_unavailable_reason",
        e.total_unavailable_reason.clone(),
    );
    r.num("energy_partial_total_j", e.partial_total_j);
    r.num("energy_gpu_j", e.gpu_j);
    r.num("energy_cpu_j", e.cpu_j);
    r.num("energy_dram_j", e.dram_j);
    r.num("energy_net_total_j", e.net_total_j);
    r.num("energy_prefill_j", e.prefill_j);
    r.num("energy_decode_j", e.decode_j);
    r.num("j_per_output_token", m.j_per_output_token);
    r.num("output_tokens_per_j", m.output_tokens_per_j);
    r.num("co2e_g", m.carbon.as_ref().and_then(|c| c.co2e_g));
    r.num("flops_total", Some(m.flops_total));
    r.num("flops_per_output_token", m.flops_per_output_token);
    r.num("flops_per_s", m.flops_per_s);
    r.put("peak_memory_bytes", m.peak_memory_bytes);
    r
}

fn experiment_row(agg: &ExperimentAggregate) -> RowBuilder {
    let mut r = RowBuilder::new();
    r.put("experiment_id", agg.experiment_id.as_str());
    r.put("config_name", agg.config_name.as_str());
    r.put("model_name", agg.model_name.as_str());
    r.put("simulated", agg.simulated);
    // Every source any cycle used, in first-seen order.
    let mut sources: Vec<&str> = Vec::new();
    for s in agg.cycles.iter().flat_map(|m| &m.energy.sources) {
        if !sources.contains(&s.as_str()) {
            sources.push(s);
        }
    }
    r.put(
        "energy_method",
        (!sources.is_empty()).then(|| sources.join("+")),
    );
    r.put("complete", agg.complete);
    r.put("num_cycles_expected", agg.num_cycles_expected);
    r.put("num_cycles", agg.cycles.len());
    for name in EXPERIMENT_STATS {
        let s = agg.stats.get(*name);
        r.num(&format!("{name}_mean"), s.map(|s| s.mean));
        r.num(&format!("{name}_std"), s.and_then(|s| s.std));
        r.num(
            &format!("{name}_ci95_half_width"),
            s.and_then(|s| s.ci95_half_width),
        );
        r.put(&format!("{name}_n"), s.map(|s| s.n));
    }
    r
}

/// Writes `table` in `format` to `out`.
pub fn write_table(
    table: &Table,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<(), ExportError> {
    match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(&table.columns)?;
            for row in &table.rows {
                w.write_record(row.iter().map(csv_cell))?;
            }
            w.flush()?;
        }
        ExportFormat::Jsonl => {
            for row in &table.rows {
                let fields: Vec<String> = table
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| format!("{}:{}", Value::from(c.as_str()), v))
                    .collect();
                writeln!(out, "{{{}}}", fields.join(","))?;
            }
            out.flush()?;
        }
        ExportFormat::Parquet => parquet::write(table, out)?,
    }
    Ok(())
}

/// A CSV cell: null is empty, strings unquoted (the writer quotes where needed).
fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate_experiment;
    use crate::test_fixtures::raw_result;

    fn cell<'a>(t: &'a Table, row: usize, col: &str) -> &'a Value {
        let i = t
            .columns
            .iter()
            .position(|c| c == col)
            .unwrap_or_else(|| panic!("no column {col}"));
        &t.rows[row][i]
    }

    #[test]
    fn every_statistic_the_aggregate_produces_has_experiment_columns() {
        // Two cycles with energy read (a simulated GPU) so the energy statistics exist too.
        let raws: Vec<RawResult> = [(0, 2_000_000, 5.0), (1, 4_000_000, 9.0)]
            .into_iter()
            .map(|(cycle, wall_ns, energy_mj)| {
                let mut raw = raw_result("e", cycle, 3, wall_ns);
                let r = &mut raw.energy[0];
                r.energy_mj = Some(energy_mj);
                r.unavailable_reason = None;
                r.source = lem_common::domain::EnergySource::NvmlCounter;
                r.simulated = true;
                raw
            })
            .collect();
        let agg = aggregate_experiment("e", "c", "m", 2, &raws);
        assert!(agg.stats.contains_key("energy_total_j"));
        for name in agg.stats.keys() {
            assert!(
                EXPERIMENT_STATS.contains(&name.as_str()),
                "stat {name} is not exported"
            );
        }
    }

    #[test]
    fn request_rows_follow_the_raw_requests_and_keep_nulls() {
        let tokens = 3;
        let raws = vec![raw_result("e", 0, tokens, 2_000_000)];
        let agg = aggregate_experiment("e", "c", "m", 1, &raws);
        let t = build_table(ExportLevel::Request, &[(agg, raws.clone())]).unwrap();
        assert_eq!(t.rows.len(), raws[0].requests.len());
        let req = &raws[0].requests[1];
        assert_eq!(cell(&t, 1, "request_index"), &Value::from(req.index));
        assert_eq!(
            cell(&t, 1, "ttft_ms"),
            &Value::from(req.ttft_ns as f64 / 1e6)
        );
        let tpot = (req.e2e_ns - req.ttft_ns) as f64 / 1e6 / (tokens - 1) as f64;
        assert_eq!(cell(&t, 1, "tpot_ms"), &Value::from(tpot));
        assert_eq!(cell(&t, 1, "arrival_offset_ms"), &Value::Null);
        // The fixture's only reading is unavailable: no method, not simulated.
        assert_eq!(cell(&t, 1, "energy_method"), &Value::Null);
        assert_eq!(cell(&t, 1, "simulated"), &Value::Bool(false));
    }

    #[test]
    fn a_request_of_one_token_has_no_itl_or_tpot() {
        let raws = vec![raw_result("e", 0, 1, 2_000_000)];
        let agg = aggregate_experiment("e", "c", "m", 1, &raws);
        let t = build_table(ExportLevel::Request, &[(agg, raws)]).unwrap();
        assert_eq!(cell(&t, 0, "itl_mean_ms"), &Value::Null);
        assert_eq!(cell(&t, 0, "tpot_ms"), &Value::Null);
    }

    #[test]
    fn trace_rows_are_one_per_sample_of_each_device_with_a_trace() {
        let mut raw = raw_result("e", 0, 2, 2_000_000);
        let mut gpu = lem_common::domain::EnergyReading::unavailable(
            lem_common::domain::DeviceKind::Gpu,
            "GPU-0",
            "H100",
            2_000_000,
        );
        gpu.source = lem_common::domain::EnergySource::NvmlCounter;
        gpu.energy_mj = Some(900.0);
        gpu.unavailable_reason = None;
        gpu.window_start_offset_ns = Some(-250_000);
        let samples: Vec<PowerSample> = [(0u64, 300.0), (1_000_000, 320.5)]
            .into_iter()
            .map(|(t_ns, w)| PowerSample::power_usage_only(t_ns, w))
            .collect();
        gpu.trace = Some(PowerTrace {
            period_ms: 1.0,
            samples: samples.clone(),
            unavailable: Default::default(),
        });
        // The fixture's CPU reading has no trace: it gives no rows.
        raw.energy.push(gpu);
        let agg = aggregate_experiment("e", "c", "m", 1, std::slice::from_ref(&raw));
        let t = build_table(ExportLevel::Trace, &[(agg, vec![raw])]).unwrap();
        assert_eq!(t.rows.len(), samples.len());
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(cell(&t, i, "device_kind"), &Value::from("gpu"));
            assert_eq!(cell(&t, i, "device_id"), &Value::from("GPU-0"));
            assert_eq!(cell(&t, i, "energy_source"), &Value::from("nvml-counter"));
            assert_eq!(cell(&t, i, "sample_index"), &Value::from(i));
            assert_eq!(cell(&t, i, "t_ms"), &Value::from(s.t_ns as f64 / 1e6));
            assert_eq!(
                cell(&t, i, "power_avg_w"),
                &Value::from(s.power_avg_w.unwrap())
            );
            assert_eq!(cell(&t, i, "window_start_offset_ms"), &Value::from(-0.25));
            // Sensors the sample lacks stay null.
            assert_eq!(cell(&t, i, "power_instant_w"), &Value::Null);
            assert_eq!(cell(&t, i, "temperature_c"), &Value::Null);
        }
        let kind = |col: &str| t.kinds[t.columns.iter().position(|c| c == col).unwrap()];
        assert_eq!(kind("energy_counter_mj"), ColumnKind::Int);
        assert_eq!(kind("t_ms"), ColumnKind::Float);
        assert_eq!(kind("simulated"), ColumnKind::Bool);
    }

    #[test]
    fn every_level_has_one_kind_per_column() {
        let raws = vec![raw_result("e", 0, 3, 2_000_000)];
        let agg = aggregate_experiment("e", "c", "m", 1, &raws);
        for level in [
            ExportLevel::Request,
            ExportLevel::Cycle,
            ExportLevel::Experiment,
        ] {
            let t = build_table(level, &[(agg.clone(), raws.clone())]).unwrap();
            assert_eq!(t.kinds.len(), t.columns.len(), "{level:?}");
            // A non-null cell matches its column's kind.
            for row in &t.rows {
                for ((v, k), c) in row.iter().zip(&t.kinds).zip(&t.columns) {
                    let ok = match k {
                        ColumnKind::Bool => v.is_null() || v.is_boolean(),
                        ColumnKind::Int => v.is_null() || v.is_i64() || v.is_u64(),
                        ColumnKind::Float => v.is_null() || v.is_f64(),
                        ColumnKind::Text => v.is_null() || v.is_string(),
                    };
                    assert!(ok, "{level:?} column {c}: {v} is not {k:?}");
                }
            }
        }
    }

    #[test]
    fn a_missing_raw_result_is_an_error_naming_the_cycle() {
        let raws = vec![raw_result("e", 0, 2, 2_000_000)];
        let agg = aggregate_experiment("e", "c", "m", 1, &raws);
        let err = build_table(ExportLevel::Request, &[(agg, Vec::new())]).unwrap_err();
        assert!(err.to_string().contains("cycle 0 attempt 0"), "{err}");
    }

    #[test]
    fn csv_leaves_null_empty_and_jsonl_writes_null() {
        let t = Table {
            columns: vec!["a_j".into(), "b".into(), "c".into()],
            kinds: vec![ColumnKind::Float, ColumnKind::Int, ColumnKind::Text],
            rows: vec![vec![Value::from(1.5), Value::Null, Value::from("x,y")]],
        };
        let mut csv_out = Vec::new();
        write_table(&t, ExportFormat::Csv, &mut csv_out).unwrap();
        assert_eq!(
            String::from_utf8(csv_out).unwrap(),
            "a_j,b,c\n1.5,,\"x,y\"\n"
        );
        let mut jsonl = Vec::new();
        write_table(&t, ExportFormat::Jsonl, &mut jsonl).unwrap();
        assert_eq!(
            String::from_utf8(jsonl).unwrap(),
            "{\"a_j\":1.5,\"b\":null,\"c\":\"x,y\"}\n"
        );
    }
}
