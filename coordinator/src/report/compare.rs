//! Across experiments: the configuration axes that differ, each experiment's energy per
//! output token, throughput and p90 latency with 95% CIs, the Pareto front of tokens per
//! joule against p90 latency, and a heatmap over two axes.

use super::model::{
    Axis, Comparison, ComparisonPoint, Heatmap, HeatmapCell, Pareto, ParetoPoint, PointValue,
};
use super::ExperimentInput;
use crate::aggregate::{metric_cycle_values, ExperimentAggregate};
use lem_common::stats::Summary;
use serde_json::Value;

/// Candidate axes: name, label, the value of one experiment.
type AxisValue = fn(&ExperimentInput) -> String;
const AXES: [(&str, &str, AxisValue); 8] = [
    ("batch_size", "batch size", |e| {
        config_str(e, &["batching_options", "batch_size"])
    }),
    ("fp_precision", "precision", |e| {
        config_str(e, &["fp_precision"])
    }),
    ("quantization", "quantisation", quantization),
    ("weight_dtype", "weights as loaded", |e| {
        first_raw(e, |r| r.model.weight_dtype.clone())
    }),
    ("arrival_rate", "arrival rate (req/s)", arrival_rate),
    ("max_output_tokens", "max output tokens", |e| {
        config_str(e, &["max_output_tokens"])
    }),
    ("model", "model", |e| e.record.model_name.clone()),
    ("compute_device", "compute device", |e| {
        first_raw(e, |r| {
            format!("{} {}", r.compute_device.kind, r.compute_device.name)
        })
    }),
];

fn config_str(e: &ExperimentInput, path: &[&str]) -> String {
    let mut v = &e.record.effective_config;
    for key in path {
        v = match v.get(key) {
            Some(next) => next,
            None => return "unset".into(),
        };
    }
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn first_raw(e: &ExperimentInput, f: impl Fn(&lem_common::domain::RawResult) -> String) -> String {
    e.raws.first().map(f).unwrap_or_else(|| "unknown".into())
}

fn quantization(e: &ExperimentInput) -> String {
    let q = e
        .record
        .effective_config
        .get("quantization_config")
        .cloned()
        .unwrap_or(Value::Null);
    let on = |k: &str| q.get(k).and_then(Value::as_bool).unwrap_or(false);
    match (on("quantization"), on("load_in_4bit"), on("load_in_8bit")) {
        (false, _, _) => "none".into(),
        (true, true, _) => "4-bit".into(),
        (true, _, true) => "8-bit".into(),
        (true, false, false) => "on".into(),
    }
}

/// The target rate when arrivals are simulated, else "all at once".
fn arrival_rate(e: &ExperimentInput) -> String {
    let sim = e.record.effective_config.get("latency_simulation");
    let enabled = sim
        .and_then(|s| s.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match sim
        .and_then(|s| s.get("target_qps"))
        .and_then(Value::as_f64)
    {
        Some(qps) if enabled => qps.to_string(),
        _ => "all at once".into(),
    }
}

/// The comparison of two or more experiments, in the order given.
pub fn comparison(inputs: &[ExperimentInput]) -> Comparison {
    let (mut axes, constant_axes) = differing_axes(inputs);
    if axes.is_empty() {
        axes.push(Axis {
            name: "experiment".into(),
            label: "experiment (no configuration axis differs)".into(),
            numeric: false,
            values: inputs.iter().map(|e| short_id(&e.record.id)).collect(),
        });
    }
    let points: Vec<ComparisonPoint> = inputs
        .iter()
        .map(|e| {
            let agg = &e.aggregate;
            ComparisonPoint {
                experiment_id: e.record.id.clone(),
                label: label(e),
                simulated: agg.simulated,
                j_per_output_token: point_value(agg, "j_per_output_token"),
                gpu_j_per_output_token: point_value(agg, "gpu_j_per_output_token"),
                output_tokens_per_s: point_value(agg, "output_tokens_per_s"),
                e2e_p90_ms: point_value(agg, "e2e_p90_ms"),
            }
        })
        .collect();
    let pareto = pareto(inputs, &points);
    let (heatmap, heatmap_absent_reason) = match heatmap(&axes, &points) {
        Ok(h) => (Some(h), None),
        Err(why) => (None, Some(why)),
    };
    Comparison {
        axes,
        constant_axes,
        points,
        pareto,
        heatmap,
        heatmap_absent_reason,
    }
}

/// The random tail of an id (`exp_20261201_192710_e9c3be` → `e9c3be`).
fn short_id(id: &str) -> String {
    match id.rsplit_once('_') {
        Some((_, tail)) if !tail.is_empty() => tail.to_string(),
        _ => id.chars().take(8).collect(),
    }
}

fn label(e: &ExperimentInput) -> String {
    format!("{} ({})", e.record.config_name, short_id(&e.record.id))
}

/// Axes whose value differs between experiments, and those that do not (name, value).
pub fn differing_axes(inputs: &[ExperimentInput]) -> (Vec<Axis>, Vec<(String, String)>) {
    let mut differ = Vec::new();
    let mut constant = Vec::new();
    for (name, label, value) in AXES {
        let values: Vec<String> = inputs.iter().map(value).collect();
        if values.iter().all(|v| *v == values[0]) {
            if let Some(v) = values.first() {
                constant.push((label.to_string(), v.clone()));
            }
            continue;
        }
        let numeric = values.iter().all(|v| v.parse::<f64>().is_ok());
        differ.push(Axis {
            name: name.into(),
            label: label.into(),
            numeric,
            values,
        });
    }
    (differ, constant)
}

/// The stored statistic `name` of an experiment, or why it has none.
pub fn point_value(agg: &ExperimentAggregate, name: &str) -> PointValue {
    match agg.stats.get(name) {
        Some(s) => from_summary(s),
        None => PointValue {
            mean: None,
            ci95_low: None,
            ci95_high: None,
            n: 0,
            unavailable_reason: Some(match metric_cycle_values(&agg.cycles, name) {
                Some(Err(why)) => why,
                _ => format!("{name} is not in this aggregate"),
            }),
        },
    }
}

fn from_summary(s: &Summary) -> PointValue {
    PointValue {
        mean: Some(s.mean),
        ci95_low: s.ci95_low,
        ci95_high: s.ci95_high,
        n: s.n,
        unavailable_reason: None,
    }
}

/// Tokens per joule per experiment: over every device when any experiment has that
/// figure, else over the GPUs (the reciprocal of each cycle's GPU J/token, then its
/// mean and CI), so a CPU package that could not be read does not empty the plot.
fn pareto(inputs: &[ExperimentInput], points: &[ComparisonPoint]) -> Pareto {
    let any_all = points.iter().any(|p| p.j_per_output_token.mean.is_some());
    let any_gpu = points
        .iter()
        .any(|p| p.gpu_j_per_output_token.mean.is_some());
    let (scope, scope_reason) = if any_all || !any_gpu {
        (
            "all devices",
            "output tokens per joule of every metered device (statistic output_tokens_per_j)"
                .to_string(),
        )
    } else {
        let why = points
            .iter()
            .find_map(|p| p.j_per_output_token.unavailable_reason.clone())
            .unwrap_or_default();
        (
            "GPUs only",
            format!("no experiment has an energy total over every device ({why}); tokens per joule of the GPUs, per cycle 1 / gpu_j_per_output_token"),
        )
    };
    let mut out = Vec::new();
    let mut left_out = Vec::new();
    for (e, p) in inputs.iter().zip(points) {
        let tokens_per_j = if scope == "all devices" {
            point_value(&e.aggregate, "output_tokens_per_j")
        } else {
            gpu_tokens_per_j(&e.aggregate)
        };
        match (&tokens_per_j.mean, &p.e2e_p90_ms.mean) {
            (Some(_), Some(_)) => out.push(ParetoPoint {
                experiment_id: p.experiment_id.clone(),
                label: p.label.clone(),
                tokens_per_j,
                e2e_p90_ms: p.e2e_p90_ms.clone(),
                on_front: false,
            }),
            _ => left_out.push(format!(
                "{}: {}",
                p.label,
                tokens_per_j
                    .unavailable_reason
                    .or_else(|| p.e2e_p90_ms.unavailable_reason.clone())
                    .unwrap_or_default()
            )),
        }
    }
    mark_front(&mut out);
    Pareto {
        scope: scope.into(),
        scope_reason,
        points: out,
        left_out,
    }
}

fn gpu_tokens_per_j(agg: &ExperimentAggregate) -> PointValue {
    let missing = |why: String| PointValue {
        mean: None,
        ci95_low: None,
        ci95_high: None,
        n: 0,
        unavailable_reason: Some(why),
    };
    match metric_cycle_values(&agg.cycles, "gpu_j_per_output_token") {
        Some(Ok(v)) => {
            let per_j: Vec<f64> = v.iter().filter(|j| **j > 0.0).map(|j| 1.0 / j).collect();
            match Summary::of(&per_j) {
                Some(s) if per_j.len() == v.len() => from_summary(&s),
                _ => missing("a cycle has no positive GPU energy per token".into()),
            }
        }
        Some(Err(why)) => missing(why),
        None => missing("gpu_j_per_output_token is not a statistic".into()),
    }
}

/// A point is on the front when no other has at least its tokens per joule at no more
/// p90 latency and is better in one of them.
pub fn mark_front(points: &mut [ParetoPoint]) {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|p| {
            (
                p.tokens_per_j.mean.unwrap_or(f64::NAN),
                p.e2e_p90_ms.mean.unwrap_or(f64::NAN),
            )
        })
        .collect();
    for (i, p) in points.iter_mut().enumerate() {
        let (tpj, lat) = xy[i];
        p.on_front = !xy
            .iter()
            .enumerate()
            .any(|(j, &(t, l))| j != i && t >= tpj && l <= lat && (t > tpj || l < lat));
    }
}

/// Energy per output token (else throughput) over the first two differing axes.
fn heatmap(axes: &[Axis], points: &[ComparisonPoint]) -> Result<Heatmap, String> {
    if axes.len() < 2 {
        return Err(format!(
            "a heatmap needs two configuration axes that differ; {} differs here",
            match axes.first() {
                Some(a) if a.name != "experiment" => format!("only {}", a.label),
                _ => "none".into(),
            }
        ));
    }
    let (xa, ya) = (&axes[0], &axes[1]);
    let pick: (&str, &str, fn(&ComparisonPoint) -> &PointValue) =
        if points.iter().any(|p| p.j_per_output_token.mean.is_some()) {
            ("energy per output token, all devices", "J/token", |p| {
                &p.j_per_output_token
            })
        } else if points
            .iter()
            .any(|p| p.gpu_j_per_output_token.mean.is_some())
        {
            ("energy per output token, GPUs", "J/token", |p| {
                &p.gpu_j_per_output_token
            })
        } else {
            (
                "output throughput (no experiment has energy)",
                "tokens/s",
                |p| &p.output_tokens_per_s,
            )
        };
    let x_values = ordered_values(xa);
    let y_values = ordered_values(ya);
    let mut cells: Vec<Vec<Option<HeatmapCell>>> = vec![vec![None; x_values.len()]; y_values.len()];
    for (i, p) in points.iter().enumerate() {
        let x = x_values
            .iter()
            .position(|v| *v == xa.values[i])
            .unwrap_or(0);
        let y = y_values
            .iter()
            .position(|v| *v == ya.values[i])
            .unwrap_or(0);
        if let Some(other) = &cells[y][x] {
            return Err(format!(
                "{} and {} share {} = {}, {} = {}: more than two axes differ ({})",
                other.experiment_id,
                p.experiment_id,
                xa.label,
                xa.values[i],
                ya.label,
                ya.values[i],
                axes.iter()
                    .map(|a| a.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        cells[y][x] = Some(HeatmapCell {
            experiment_id: p.experiment_id.clone(),
            value: pick.2(p).clone(),
        });
    }
    Ok(Heatmap {
        metric: pick.0.into(),
        unit: pick.1.into(),
        x_axis: xa.label.clone(),
        y_axis: ya.label.clone(),
        x_values,
        y_values,
        cells,
    })
}

/// An axis's distinct values: ascending for numbers, else in order of appearance.
pub fn ordered_values(axis: &Axis) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in &axis.values {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    if axis.numeric {
        out.sort_by(|a, b| {
            let (a, b) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            a.total_cmp(&b)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(mean: f64) -> PointValue {
        PointValue {
            mean: Some(mean),
            ci95_low: None,
            ci95_high: None,
            n: 1,
            unavailable_reason: None,
        }
    }

    fn point(id: &str, tokens_per_j: f64, p90_ms: f64) -> ParetoPoint {
        ParetoPoint {
            experiment_id: id.into(),
            label: id.into(),
            tokens_per_j: value(tokens_per_j),
            e2e_p90_ms: value(p90_ms),
            on_front: false,
        }
    }

    #[test]
    fn front_keeps_points_nothing_beats_on_both_axes() {
        // b is beaten by a (more tokens/J, less latency); d ties a on latency with fewer
        // tokens/J; c is slower but the most efficient; e is the fastest.
        let mut pts = vec![
            point("a", 10.0, 100.0),
            point("b", 8.0, 120.0),
            point("c", 12.0, 300.0),
            point("d", 9.0, 100.0),
            point("e", 2.0, 50.0),
        ];
        mark_front(&mut pts);
        let front: Vec<&str> = pts
            .iter()
            .filter(|p| p.on_front)
            .map(|p| p.experiment_id.as_str())
            .collect();
        assert_eq!(front, vec!["a", "c", "e"]);
    }

    #[test]
    fn numeric_axis_values_sort_as_numbers() {
        let axis = Axis {
            name: "batch_size".into(),
            label: "batch size".into(),
            numeric: true,
            values: vec!["16".into(), "2".into(), "8".into(), "2".into()],
        };
        assert_eq!(ordered_values(&axis), vec!["2", "8", "16"]);
        let cat = Axis {
            numeric: false,
            values: vec!["float32".into(), "bfloat16".into(), "float32".into()],
            ..axis
        };
        assert_eq!(ordered_values(&cat), vec!["float32", "bfloat16"]);
    }
}
