//! Small terminal plots for `lem results show` (on a terminal only, `--no-plots` turns
//! them off): a sparkline of each key metric across cycles and a bar of the energy split
//! between prefill and decode. Pure: lines of text out; the caller decides to print.

use crate::aggregate::{metric_cycle_values, ExperimentAggregate};

const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One block character per value, scaled from the smallest (▁) to the largest (█); all
/// equal values draw mid-height. `None` for no values or a non-finite one.
pub fn sparkline(values: &[f64]) -> Option<String> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let top = (LEVELS.len() - 1) as f64;
    Some(
        values
            .iter()
            .map(|v| {
                if hi == lo {
                    LEVELS[LEVELS.len() / 2]
                } else {
                    LEVELS[((v - lo) / (hi - lo) * top).round() as usize]
                }
            })
            .collect(),
    )
}

/// A bar `width` cells wide, the first `fraction` of it filled (clamped to 0..=1).
pub fn bar(fraction: f64, width: usize) -> String {
    let filled = (fraction.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// The metrics drawn, with their labels and units.
const SPARK_METRICS: [(&str, &str, &str); 5] = [
    ("throughput (output)", "output_tokens_per_s", "tok/s"),
    ("TTFT p50", "ttft_p50_ms", "ms"),
    ("E2E p90", "e2e_p90_ms", "ms"),
    ("energy / output token", "j_per_output_token", "J"),
    ("energy", "energy_total_j", "J"),
];

/// The plot lines for an aggregate: a header, one sparkline per metric that has two or
/// more cycle values, and the phase bar where both phase energies exist. Empty with
/// fewer than two cycles and no phase split (nothing a plot would add).
pub fn plot_lines(agg: &ExperimentAggregate) -> Vec<String> {
    let mut lines = Vec::new();
    for (label, metric, unit) in SPARK_METRICS {
        let Some(Ok(values)) = metric_cycle_values(&agg.cycles, metric) else {
            continue;
        };
        if values.len() < 2 {
            continue;
        }
        let Some(line) = sparkline(&values) else {
            continue;
        };
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let of = if values.len() < agg.cycles.len() {
            format!(", {} of {} cycles", values.len(), agg.cycles.len())
        } else {
            String::new()
        };
        lines.push(format!(
            "  {label:<22} {line}  {lo:.4} – {hi:.4} {unit}{of}"
        ));
    }
    if let (Some(p), Some(d)) = (
        agg.stats.get("energy_prefill_j"),
        agg.stats.get("energy_decode_j"),
    ) {
        let total = p.mean + d.mean;
        if total > 0.0 {
            let share = p.mean / total;
            lines.push(format!(
                "  {:<22} prefill {} decode  ({:.0}% / {:.0}% of the mean phase energy)",
                "energy by phase",
                bar(share, 20),
                share * 100.0,
                (1.0 - share) * 100.0
            ));
        }
    }
    if !lines.is_empty() {
        lines.insert(
            0,
            "  per cycle (cycle 1 first; --no-plots hides this)".into(),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate_experiment;
    use crate::test_fixtures::raw_result;

    #[test]
    fn sparkline_scales_from_lowest_to_highest() {
        // 4.5 is halfway: (4.5 − 1) / 7 · 7 = 3.5, rounded to level 4 (▅).
        assert_eq!(sparkline(&[1.0, 8.0, 4.5]).unwrap(), "▁█▅");
        // All equal: mid-height.
        assert_eq!(sparkline(&[2.0, 2.0]).unwrap(), "▅▅");
        assert!(sparkline(&[]).is_none());
        assert!(sparkline(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn bars_fill_their_fraction() {
        assert_eq!(bar(0.25, 8), "██░░░░░░");
        assert_eq!(bar(1.5, 4), "████");
    }

    #[test]
    fn an_aggregate_plots_its_cycles_in_order_and_skips_missing_energy() {
        // Wall times 1, 2, 4 s with 6 output tokens each: throughput 6, 3, 1.5 tok/s.
        let raws: Vec<_> = [1.0, 2.0, 4.0]
            .iter()
            .enumerate()
            .map(|(c, w)| raw_result("e", c as u32, 3, (w * 1e9) as u64))
            .collect();
        let agg = aggregate_experiment("e", "c", "m", 3, &raws);
        let lines = plot_lines(&agg);
        let tput = lines
            .iter()
            .find(|l| l.contains("throughput (output)"))
            .unwrap();
        // 6 → █, 3 → (3 − 1.5)/4.5·7 = 2.33 → ▃, 1.5 → ▁.
        assert!(tput.contains("█▃▁  1.5000 – 6.0000 tok/s"), "{tput}");
        // The fixture reads no energy: no energy line, no phase bar.
        assert!(!lines.iter().any(|l| l.contains("energy")), "{lines:?}");
        // One cycle: nothing to plot.
        let one = aggregate_experiment("e", "c", "m", 1, &raws[..1]);
        assert!(plot_lines(&one).is_empty());
    }
}
