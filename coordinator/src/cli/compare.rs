//! `lem results compare A B`: per metric, the means of two experiments, B − A with its
//! 95% CI, and whether the difference is significant by Welch's t-test on the per-cycle
//! values the aggregates hold. With several metrics tested at once, the verdict uses
//! Holm-adjusted p-values, so the chance of any false "significant" stays at 5%.

use super::error::outln;
use super::{store_hint, CliError, Outcome};
use crate::aggregate::{metric_cycle_values, metric_names, ExperimentAggregate};
use crate::embedded::StoreHandle;
use crate::store::ExperimentRecord;
use lem_common::holm::holm_adjust;
use lem_common::welch::{mean_difference, WelchTest};
use serde::Serialize;

/// One experiment of the comparison, with the aggregate its values come from.
struct Side {
    rec: ExperimentRecord,
    agg: ExperimentAggregate,
}

/// Mean of one side for one metric.
#[derive(Debug, Serialize)]
struct SideValue {
    /// Cycles the mean is over (energy statistics leave out cycles without the figure).
    n: usize,
    mean: f64,
}

/// One metric of the comparison (a row of the table, an element of `--json`'s `metrics`).
#[derive(Debug, Serialize)]
struct MetricComparison {
    metric: String,
    a: Option<SideValue>,
    a_unavailable_reason: Option<String>,
    b: Option<SideValue>,
    b_unavailable_reason: Option<String>,
    /// mean B − mean A; null when either side has no value.
    difference: Option<f64>,
    /// (B − A) / |A|; null when A's mean is 0 or either side has no value.
    relative_difference: Option<f64>,
    welch: Option<WelchTest>,
    /// Holm-adjusted p-value over the metrics tested together; null when this metric has
    /// no test or it is the only one.
    holm_p_value: Option<f64>,
    /// The verdict after the correction (holm_p_value < 0.05); null when not applied.
    holm_significant: Option<bool>,
    /// Why there is no verdict (too few cycles, no spread, a side without a value).
    no_verdict_reason: Option<String>,
}

pub fn compare(
    store: &StoreHandle,
    a_id: &str,
    b_id: &str,
    metrics: &[String],
    json: bool,
) -> Result<Outcome, CliError> {
    let a = load(store, a_id)?;
    let b = load(store, b_id)?;
    let known = metric_names();
    let chosen: Vec<String> = if metrics.is_empty() {
        // Every statistic either side has, in the aggregate's order.
        known
            .into_iter()
            .filter(|m| a.agg.stats.contains_key(m) || b.agg.stats.contains_key(m))
            .collect()
    } else {
        for m in metrics {
            if !known.contains(m) {
                return Err(CliError::usage(format!(
                    "--metric {m}: not a metric of an aggregate; known metrics: {}",
                    known.join(", ")
                )));
            }
        }
        metrics.to_vec()
    };
    let mut rows: Vec<MetricComparison> =
        chosen.iter().map(|m| compare_metric(&a, &b, m)).collect();
    apply_holm(&mut rows);
    if json {
        let side = |s: &Side| {
            serde_json::json!({
                "id": s.rec.id, "config_name": s.rec.config_name,
                "model_name": s.rec.model_name, "cycles": s.agg.cycles.len(),
                "complete": s.agg.complete, "simulated": s.agg.simulated,
            })
        };
        let v = serde_json::json!({ "a": side(&a), "b": side(&b), "metrics": rows });
        outln!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return Ok(Outcome::Success);
    }
    print_text(&a, &b, &rows)?;
    Ok(Outcome::Success)
}

/// The experiment and its stored aggregate; an experiment without one is an error that
/// says how to make it.
fn load(store: &StoreHandle, id: &str) -> Result<Side, CliError> {
    let (rec, agg, path) = store.read(|s| {
        let rec = s.find_experiment(id)?;
        let agg: Option<ExperimentAggregate> = s.aggregate(&rec.id)?;
        Ok((rec, agg, s.path().to_path_buf()))
    })?;
    match agg {
        Some(agg) => Ok(Side { rec, agg }),
        None => {
            // An incomplete experiment only aggregates with --force (partial).
            let force = if rec.status.is_finished() {
                ""
            } else {
                " --force"
            };
            let place = match &store.coordinator {
                Some(_) => super::store_place(store),
                None => format!(
                    "the result store at {}",
                    std::path::absolute(&path).unwrap_or(path).display()
                ),
            };
            Err(CliError::usage(format!(
                "experiment {} ({}) in {place} has no aggregate to compare; make one with `{}`",
                rec.id,
                rec.status.as_str(),
                store_hint(store, &format!("aggregate {}{force}", rec.id))
            )))
        }
    }
}

fn compare_metric(a: &Side, b: &Side, metric: &str) -> MetricComparison {
    let values = |s: &Side| {
        metric_cycle_values(&s.agg.cycles, metric)
            .unwrap_or_else(|| Err(format!("`{metric}` is not a metric of this aggregate")))
    };
    let (va, vb) = (values(a), values(b));
    let mut row = MetricComparison {
        metric: metric.to_string(),
        a: None,
        a_unavailable_reason: None,
        b: None,
        b_unavailable_reason: None,
        difference: None,
        relative_difference: None,
        welch: None,
        holm_p_value: None,
        holm_significant: None,
        no_verdict_reason: None,
    };
    let side_value = |v: &[f64]| SideValue {
        n: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
    };
    match &va {
        Ok(v) => row.a = Some(side_value(v)),
        Err(why) => row.a_unavailable_reason = Some(why.clone()),
    }
    match &vb {
        Ok(v) => row.b = Some(side_value(v)),
        Err(why) => row.b_unavailable_reason = Some(why.clone()),
    }
    let (Ok(va), Ok(vb)) = (&va, &vb) else {
        let missing: Vec<&str> = [("A", &va), ("B", &vb)]
            .into_iter()
            .filter(|(_, v)| v.is_err())
            .map(|(side, _)| side)
            .collect();
        row.no_verdict_reason = Some(format!("no value on side {}", missing.join(" and ")));
        return row;
    };
    match mean_difference(va, vb) {
        Ok(d) => {
            // Means from the same samples as the test.
            row.a = Some(SideValue {
                n: d.n_a,
                mean: d.mean_a,
            });
            row.b = Some(SideValue {
                n: d.n_b,
                mean: d.mean_b,
            });
            row.difference = Some(d.difference);
            row.relative_difference = d.relative_difference;
            row.welch = d.welch;
            row.no_verdict_reason = d.no_test_reason;
        }
        Err(e) => row.no_verdict_reason = Some(e.to_string()),
    }
    row
}

/// Sets the Holm-adjusted p-value and verdict of every tested metric when more than one
/// is tested (one test needs no correction).
fn apply_holm(rows: &mut [MetricComparison]) {
    let tested: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].welch.is_some())
        .collect();
    if tested.len() < 2 {
        return;
    }
    let p: Vec<f64> = tested
        .iter()
        .map(|&i| rows[i].welch.as_ref().map_or(f64::NAN, |w| w.p_value))
        .collect();
    for (&i, adjusted) in tested.iter().zip(holm_adjust(&p)) {
        rows[i].holm_p_value = Some(adjusted);
        rows[i].holm_significant = Some(adjusted < 0.05);
    }
}

/// A number with about four significant digits; exponent form when very large or small.
fn num(x: f64) -> String {
    let mag = x.abs();
    if mag == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&mag) {
        format!("{x:.3e}")
    } else {
        // Decimals from the value rounded to four significant digits, so 0.99999 is
        // "1.000", not "1.0000".
        let rounded: f64 = format!("{mag:.3e}").parse().unwrap_or(mag);
        let decimals = (3 - rounded.log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.decimals$}")
    }
}

fn signed(x: f64) -> String {
    if x > 0.0 {
        format!("+{}", num(x))
    } else {
        num(x)
    }
}

fn print_text(a: &Side, b: &Side, rows: &[MetricComparison]) -> std::io::Result<()> {
    for (label, s) in [("A", a), ("B", b)] {
        outln!(
            "{label}: {}  ({}, {}, {} cycle(s){}{})",
            s.rec.id,
            s.rec.config_name,
            s.rec.model_name,
            s.agg.cycles.len(),
            if s.agg.complete { "" } else { ", partial" },
            if s.agg.simulated {
                ", simulated energy"
            } else {
                ""
            }
        );
    }
    outln!();
    let header = ["METRIC", "A", "B", "B − A", "95% CI OF B − A", "VERDICT"].map(String::from);
    let cells: Vec<[String; 6]> = rows.iter().map(row_cells).collect();
    let w = super::table::column_widths(&header, &cells);
    for r in [&header].into_iter().chain(&cells) {
        outln!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:<w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
    }
    // Reasons are long: listed under the table rather than in it.
    let nulls: Vec<&MetricComparison> = rows
        .iter()
        .filter(|r| r.a_unavailable_reason.is_some() || r.b_unavailable_reason.is_some())
        .collect();
    if !nulls.is_empty() {
        outln!();
        outln!("null (no value, not zero):");
        for r in nulls {
            for (side, why) in [
                ("A", &r.a_unavailable_reason),
                ("B", &r.b_unavailable_reason),
            ] {
                if let Some(why) = why {
                    outln!("  {} on {side}: {why}", r.metric);
                }
            }
        }
    }
    outln!();
    outln!(
        "Significant: Welch's t-test on per-cycle values, two-sided p < 0.05 (the 95% CI of B − A excludes 0)."
    );
    let tests = rows.iter().filter(|r| r.holm_p_value.is_some()).count();
    if tests > 0 {
        outln!(
            "{tests} metrics tested at once: the verdict uses Holm-adjusted p < 0.05 (family-wise error 5%); each CI is unadjusted."
        );
    }
    Ok(())
}

fn row_cells(r: &MetricComparison) -> [String; 6] {
    let mean = |v: &Option<SideValue>| v.as_ref().map_or("null".into(), |v| num(v.mean));
    let diff = match (r.difference, r.relative_difference) {
        (Some(d), Some(rel)) => format!("{} ({:+.1}%)", signed(d), rel * 100.0),
        (Some(d), None) => signed(d),
        _ => "null".into(),
    };
    let (ci, verdict) = match &r.welch {
        Some(w) => {
            let word = |s: bool| if s { "significant" } else { "not significant" };
            let verdict = match (r.holm_p_value, r.holm_significant) {
                (Some(hp), Some(hs)) => {
                    format!(
                        "{} (p = {}, Holm p = {})",
                        word(hs),
                        num(w.p_value),
                        num(hp)
                    )
                }
                _ => format!("{} (p = {})", word(w.significant), num(w.p_value)),
            };
            (
                format!("{} to {}", num(w.ci95_low), num(w.ci95_high)),
                verdict,
            )
        }
        None => ("—".into(), r.no_verdict_reason.clone().unwrap_or_default()),
    };
    [r.metric.clone(), mean(&r.a), mean(&r.b), diff, ci, verdict]
}
