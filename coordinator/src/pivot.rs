//! The pivot behind `lem results table`: one statistic of many experiments laid out by two
//! config fields (rows × columns), each cell the statistic's mean with its 95% CI
//! half-width. A cell without a value is empty and points at a note that says why (no
//! experiment has that combination, or its experiment has no such figure), never 0.
//! Pure: experiments in, a [`Pivot`] out; `render` writes it as text, CSV or Markdown.

pub mod render;

use crate::aggregate::{metric_cycle_values, ExperimentAggregate};
use serde::Serialize;
use serde_json::Value;
use std::cmp::Ordering;

/// Short names for the axes a sweep usually varies; any other dotted config path
/// (`batching_options.batch_size`, `decoder_config.temperature`) works as it is.
pub const AXIS_SHORT_NAMES: &[(&str, &str)] = &[
    ("batch_size", "batching_options.batch_size"),
    ("precision", "fp_precision"),
    ("quantization", "quantization_config.quantization"),
    ("load_in_4bit", "quantization_config.load_in_4bit"),
    ("load_in_8bit", "quantization_config.load_in_8bit"),
    ("arrival_rate", "latency_simulation.target_qps"),
    ("arrival_mode", "latency_simulation.mode"),
    ("temperature", "decoder_config.temperature"),
    ("strategy", "batching_options.strategy"),
    ("model", "model_name"),
];

/// The config path an axis name stands for.
pub fn axis_path(axis: &str) -> &str {
    AXIS_SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == axis)
        .map_or(axis, |(_, path)| path)
}

/// One experiment offered to the pivot.
#[derive(Debug, Clone, Copy)]
pub struct PivotInput<'a> {
    pub experiment_id: &'a str,
    /// When the experiment was created (RFC 3339): the newest wins a crowded cell.
    pub created_at: &'a str,
    /// Its effective config, as stored with the record.
    pub config: &'a Value,
    pub aggregate: &'a ExperimentAggregate,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PivotError {
    #[error("no experiment to tabulate")]
    NoExperiments,
    #[error("--{flag} {axis}: no selected experiment has the config field `{path}`; fields that differ between them: {differing}")]
    UnknownAxis {
        flag: &'static str,
        axis: String,
        path: String,
        differing: String,
    },
}

/// A filled cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellValue {
    pub mean: f64,
    /// Null over one cycle (no spread to estimate).
    pub ci95_half_width: Option<f64>,
    /// Cycles the mean is over.
    pub n: usize,
    pub experiment_id: String,
}

/// One cell: a value, a note, or both (a value chosen among several experiments).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PivotCell {
    pub value: Option<CellValue>,
    /// 1-based index into [`Pivot::notes`].
    pub note: Option<usize>,
}

/// A metric tabulated over two axes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pivot {
    pub metric: String,
    /// The config paths of the axes.
    pub row_axis: String,
    pub col_axis: String,
    /// Axis values in order (numbers ascending, then text), as labels.
    pub row_values: Vec<String>,
    pub col_values: Vec<String>,
    /// `cells[row][col]`.
    pub cells: Vec<Vec<PivotCell>>,
    /// Why cells are empty or which experiment a crowded cell shows; numbered from 1.
    pub notes: Vec<String>,
}

/// The value at a dotted path of a config, `None` where the path does not exist.
fn lookup<'v>(config: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(config, |v, key| v.get(key))
}

/// An axis value as shown: strings bare, everything else as JSON.
fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Numbers in numeric order, before anything else in label order.
fn order(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => label(a).cmp(&label(b)),
    }
}

/// Every leaf path whose value is not the same in all `configs` (`config_name` aside).
pub fn differing_fields(configs: &[&Value]) -> Vec<String> {
    fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(child, &path, out);
                }
            }
            leaf => out.push((prefix.to_string(), leaf.clone())),
        }
    }
    let mut paths: Vec<String> = Vec::new();
    for c in configs {
        let mut l = Vec::new();
        leaves(c, "", &mut l);
        for (p, _) in l {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    paths
        .into_iter()
        .filter(|p| p != "config_name")
        .filter(|p| {
            let first = lookup(configs[0], p);
            configs.iter().any(|c| lookup(c, p) != first)
        })
        .collect()
}

/// Distinct values of `path` over the inputs, in display order.
fn axis_values(inputs: &[PivotInput], path: &str) -> Vec<Value> {
    let mut values: Vec<Value> = Vec::new();
    for i in inputs {
        let v = lookup(i.config, path).cloned().unwrap_or(Value::Null);
        if !values.contains(&v) {
            values.push(v);
        }
    }
    values.sort_by(order);
    values
}

/// Notes, each text once, numbered from 1.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, text: String) -> usize {
        match self.0.iter().position(|n| *n == text) {
            Some(i) => i + 1,
            None => {
                self.0.push(text);
                self.0.len()
            }
        }
    }
}

/// Tabulates `metric` of `inputs` by the config fields `rows` and `cols` (short names or
/// dotted paths). The caller has checked that `metric` is a statistic name.
pub fn build_pivot(
    inputs: &[PivotInput],
    rows: &str,
    cols: &str,
    metric: &str,
) -> Result<Pivot, PivotError> {
    if inputs.is_empty() {
        return Err(PivotError::NoExperiments);
    }
    let (row_axis, col_axis) = (axis_path(rows), axis_path(cols));
    for (flag, axis, path) in [("rows", rows, row_axis), ("cols", cols, col_axis)] {
        if !inputs.iter().any(|i| lookup(i.config, path).is_some()) {
            let configs: Vec<&Value> = inputs.iter().map(|i| i.config).collect();
            let differing = differing_fields(&configs);
            return Err(PivotError::UnknownAxis {
                flag,
                axis: axis.to_string(),
                path: path.to_string(),
                differing: if differing.is_empty() {
                    "none".into()
                } else {
                    differing.join(", ")
                },
            });
        }
    }
    let row_vals = axis_values(inputs, row_axis);
    let col_vals = axis_values(inputs, col_axis);
    let mut notes = Notes::default();
    let mut cells = Vec::with_capacity(row_vals.len());
    for rv in &row_vals {
        let mut line = Vec::with_capacity(col_vals.len());
        for cv in &col_vals {
            let at = format!("{row_axis}={}, {col_axis}={}", label(rv), label(cv));
            let mut here: Vec<&PivotInput> = inputs
                .iter()
                .filter(|i| {
                    lookup(i.config, row_axis).unwrap_or(&Value::Null) == rv
                        && lookup(i.config, col_axis).unwrap_or(&Value::Null) == cv
                })
                .collect();
            // Newest first; the id breaks ties so the choice does not depend on order.
            here.sort_by(|a, b| {
                b.created_at
                    .cmp(a.created_at)
                    .then(a.experiment_id.cmp(b.experiment_id))
            });
            let Some(chosen) = here.first() else {
                let note = notes.add(format!("{at}: no selected experiment has this combination"));
                line.push(PivotCell {
                    value: None,
                    note: Some(note),
                });
                continue;
            };
            let cell = match chosen.aggregate.stats.get(metric) {
                Some(s) => {
                    let value = Some(CellValue {
                        mean: s.mean,
                        ci95_half_width: s.ci95_half_width,
                        n: s.n,
                        experiment_id: chosen.experiment_id.to_string(),
                    });
                    let note = (here.len() > 1).then(|| {
                        let others: Vec<&str> = here[1..].iter().map(|i| i.experiment_id).collect();
                        notes.add(format!(
                            "{at}: {} experiments; shows the newest, {}, not {}",
                            here.len(),
                            chosen.experiment_id,
                            others.join(", ")
                        ))
                    });
                    PivotCell { value, note }
                }
                None => {
                    let why = match metric_cycle_values(&chosen.aggregate.cycles, metric) {
                        Some(Err(why)) => why,
                        _ => "the aggregate has no such statistic".to_string(),
                    };
                    let note = notes.add(format!(
                        "{at}: experiment {} has no {metric}: {why}",
                        chosen.experiment_id
                    ));
                    PivotCell {
                        value: None,
                        note: Some(note),
                    }
                }
            };
            line.push(cell);
        }
        cells.push(line);
    }
    Ok(Pivot {
        metric: metric.to_string(),
        row_axis: row_axis.to_string(),
        col_axis: col_axis.to_string(),
        row_values: row_vals.iter().map(label).collect(),
        col_values: col_vals.iter().map(label).collect(),
        cells,
        notes: notes.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate_experiment;
    use crate::test_fixtures::raw_result;
    use serde_json::json;

    /// An aggregate whose cycles took `walls_s` seconds each (wall_s is a statistic of
    /// every aggregate, so the expected mean is the mean of `walls_s`).
    fn agg(id: &str, walls_s: &[f64]) -> ExperimentAggregate {
        let raws: Vec<_> = walls_s
            .iter()
            .enumerate()
            .map(|(c, w)| raw_result(id, c as u32, 3, (w * 1e9) as u64))
            .collect();
        aggregate_experiment(id, "cfg", "m", walls_s.len() as u32, &raws)
    }

    fn config(batch: u32, precision: &str) -> Value {
        json!({"config_name": "x", "fp_precision": precision,
               "batching_options": {"batch_size": batch, "strategy": "static"}})
    }

    #[test]
    fn cells_hold_mean_and_ci_by_axis_values_and_gaps_have_notes() {
        let aggs = [
            agg("a", &[1.0, 3.0]),
            agg("b", &[2.0]),
            agg("c", &[5.0, 7.0]),
        ];
        let configs = [
            config(1, "float32"),
            config(1, "float16"),
            config(10, "float32"),
        ];
        let inputs: Vec<PivotInput> = aggs
            .iter()
            .zip(&configs)
            .map(|(a, c)| PivotInput {
                experiment_id: &a.experiment_id,
                created_at: "2026-01-01T00:00:00Z",
                config: c,
                aggregate: a,
            })
            .collect();
        let p = build_pivot(&inputs, "batch_size", "precision", "wall_s").unwrap();
        assert_eq!(p.row_axis, "batching_options.batch_size");
        // Numeric order (10 after 1, though "10" < "2" as text), text order for columns.
        assert_eq!(p.row_values, ["1", "10"]);
        assert_eq!(p.col_values, ["float16", "float32"]);
        let a = p.cells[0][1].value.as_ref().unwrap();
        assert_eq!(a.experiment_id, "a");
        assert!((a.mean - 2.0).abs() < 1e-12);
        // Student t (df 1, 97.5%) = 12.706 × s/√n with s = √2, n = 2.
        let hw = 12.706_204_736 * 2f64.sqrt() / 2f64.sqrt();
        assert!((a.ci95_half_width.unwrap() - hw).abs() < 1e-6, "{a:?}");
        // One cycle: a mean without a CI.
        let b = p.cells[0][0].value.as_ref().unwrap();
        assert_eq!((b.n, b.ci95_half_width), (1, None));
        // batch 10 × float16 was never run: empty, with a note saying so.
        let gap = &p.cells[1][0];
        assert!(gap.value.is_none());
        let note = &p.notes[gap.note.unwrap() - 1];
        assert!(
            note.contains("batching_options.batch_size=10, fp_precision=float16")
                && note.contains("no selected experiment"),
            "{note}"
        );
    }

    #[test]
    fn a_missing_statistic_is_an_empty_cell_with_the_reason() {
        // The fixture's energy is unavailable, so there is no j_per_output_token.
        let a = agg("a", &[1.0]);
        let c = config(1, "float32");
        let inputs = [PivotInput {
            experiment_id: "a",
            created_at: "2026-01-01T00:00:00Z",
            config: &c,
            aggregate: &a,
        }];
        let p = build_pivot(&inputs, "batch_size", "precision", "j_per_output_token").unwrap();
        let cell = &p.cells[0][0];
        assert!(cell.value.is_none());
        let note = &p.notes[cell.note.unwrap() - 1];
        assert!(
            note.contains("experiment a has no j_per_output_token: "),
            "{note}"
        );
    }

    #[test]
    fn the_newest_of_several_experiments_fills_a_cell_and_the_note_names_the_others() {
        let (old, new) = (agg("old", &[1.0]), agg("new", &[4.0]));
        let c = config(1, "float32");
        let inputs = [
            PivotInput {
                experiment_id: "old",
                created_at: "2026-01-01T00:00:00Z",
                config: &c,
                aggregate: &old,
            },
            PivotInput {
                experiment_id: "new",
                created_at: "2026-02-01T00:00:00Z",
                config: &c,
                aggregate: &new,
            },
        ];
        let p = build_pivot(&inputs, "batch_size", "precision", "wall_s").unwrap();
        let cell = &p.cells[0][0];
        assert_eq!(cell.value.as_ref().unwrap().experiment_id, "new");
        assert!((cell.value.as_ref().unwrap().mean - 4.0).abs() < 1e-12);
        assert!(p.notes[cell.note.unwrap() - 1].contains("shows the newest, new, not old"));
    }

    #[test]
    fn an_unknown_axis_names_the_fields_that_differ() {
        let a = agg("a", &[1.0]);
        let (c1, c2) = (config(1, "float32"), config(4, "float32"));
        let inputs = [
            PivotInput {
                experiment_id: "a",
                created_at: "",
                config: &c1,
                aggregate: &a,
            },
            PivotInput {
                experiment_id: "b",
                created_at: "",
                config: &c2,
                aggregate: &a,
            },
        ];
        let err = build_pivot(&inputs, "batch_sise", "precision", "wall_s").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--rows batch_sise: no selected experiment has the config field `batch_sise`; fields that differ between them: batching_options.batch_size"
        );
    }
}
