//! The stopping rule of `lem experiment --until-ci`: keep adding cycles until the 95% CI
//! half-width of one metric, relative to its mean, is within a target, or a cap on cycles
//! is reached. Pure: the cycles so far in, a decision out; the record of the rule and how
//! it ended is stored with the experiment and its aggregate.

use crate::aggregate::{metric_cycle_values, JobMetrics};
use lem_common::stats::Summary;
use serde::{Deserialize, Serialize};

/// Fewest cycles the rule looks at: a CI needs two, and two cycles' spread is too noisy
/// to stop on (t = 12.7 at one degree of freedom makes stopping there a fluke).
pub const MIN_CYCLES: u32 = 3;

/// The rule as asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UntilCiRule {
    /// A statistic name (`j_per_output_token`, ...).
    pub metric: String,
    /// Target 95% CI half-width ÷ |mean|, e.g. 0.02 for `--until-ci 2%`.
    pub target_relative_half_width: f64,
    /// Cycles run before the rule is first applied (at least [`MIN_CYCLES`]).
    pub min_cycles: u32,
    /// The cap: no more cycles than this.
    pub max_cycles: u32,
}

/// How the rule ended (or `Running` while cycles are being added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntilCiOutcome {
    Running,
    /// The relative half-width reached the target.
    Reached,
    /// The cap was hit first.
    CapHit,
    /// The metric has no values to apply the rule to (e.g. energy not read); stopped at
    /// once rather than run to the cap for nothing.
    MetricUnavailable,
}

/// What is stored with the experiment: the rule, the cycles it took and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UntilCiRecord {
    pub rule: UntilCiRule,
    pub outcome: UntilCiOutcome,
    /// Cycles run when the rule stopped (or so far).
    pub cycles: u32,
    /// The metric's relative 95% CI half-width at the last check; null before two
    /// values or with a zero mean.
    pub relative_half_width: Option<f64>,
    /// The decision in words (why it stopped or goes on).
    pub message: String,
}

/// The rule's verdict after some cycles.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// True: run one more cycle.
    pub go_on: bool,
    pub record: UntilCiRecord,
}

/// Parses `--until-ci`: a percentage, `2%` or `2`, above 0 and below 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim();
    match number.parse::<f64>() {
        Ok(p) if p > 0.0 && p < 100.0 => Ok(p / 100.0),
        Ok(p) => Err(format!(
            "must be a percentage above 0 and below 100, got {p}"
        )),
        Err(_) => Err(format!(
            "must be a percentage such as 2% or 0.5%, got `{s}`"
        )),
    }
}

/// Applies `rule` to the cycles run so far.
pub fn decide(rule: &UntilCiRule, cycles: &[JobMetrics]) -> Decision {
    let n = cycles.len() as u32;
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    let target = pct(rule.target_relative_half_width);
    let at_cap = n >= rule.max_cycles;
    let stop = |outcome, relative_half_width, message: String| Decision {
        go_on: false,
        record: UntilCiRecord {
            rule: rule.clone(),
            outcome,
            cycles: n,
            relative_half_width,
            message,
        },
    };
    let go_on = |relative_half_width, message: String| Decision {
        go_on: true,
        record: UntilCiRecord {
            rule: rule.clone(),
            outcome: UntilCiOutcome::Running,
            cycles: n,
            relative_half_width,
            message,
        },
    };
    let values = match metric_cycle_values(cycles, &rule.metric) {
        Some(Ok(v)) => v,
        Some(Err(why)) if n >= rule.min_cycles || at_cap => {
            return stop(
                UntilCiOutcome::MetricUnavailable,
                None,
                format!(
                    "stopped after {n} cycles: {} has no value to apply the rule to ({why})",
                    rule.metric
                ),
            )
        }
        Some(Err(why)) => return go_on(None, format!("{} not yet available: {why}", rule.metric)),
        None => {
            return stop(
                UntilCiOutcome::MetricUnavailable,
                None,
                format!("{} is not a metric of an aggregate", rule.metric),
            )
        }
    };
    let summary = Summary::of(&values);
    let relative = summary.as_ref().and_then(|s| {
        let hw = s.ci95_half_width?;
        (s.mean != 0.0).then(|| hw / s.mean.abs())
    });
    let over = format!("{} of {n} cycles", values.len());
    match relative {
        Some(r) if r <= rule.target_relative_half_width && n >= rule.min_cycles => stop(
            UntilCiOutcome::Reached,
            Some(r),
            format!(
                "reached: 95% CI half-width of {} is {} of the mean ≤ {target} ({over})",
                rule.metric,
                pct(r)
            ),
        ),
        _ if at_cap => stop(
            UntilCiOutcome::CapHit,
            relative,
            format!(
                "cap of {} cycles hit: 95% CI half-width of {} is {} of the mean, target {target} not reached ({over})",
                rule.max_cycles,
                rule.metric,
                relative.map_or("unknown (zero mean or one value)".into(), pct)
            ),
        ),
        _ => go_on(
            relative,
            format!(
                "95% CI half-width of {} is {} of the mean > {target} ({over}): one more cycle",
                rule.metric,
                relative.map_or("not yet known".into(), pct)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::job_metrics;
    use crate::test_fixtures::raw_result;

    /// Cycles whose wall times are `walls_s` (wall_s is defined for every cycle).
    fn cycles(walls_s: &[f64]) -> Vec<JobMetrics> {
        walls_s
            .iter()
            .enumerate()
            .map(|(c, w)| job_metrics(&raw_result("e", c as u32, 3, (w * 1e9).round() as u64)))
            .collect()
    }

    fn rule(metric: &str, target: f64, max: u32) -> UntilCiRule {
        UntilCiRule {
            metric: metric.into(),
            target_relative_half_width: target,
            min_cycles: MIN_CYCLES,
            max_cycles: max,
        }
    }

    /// Relative half-width computed here: t(0.975, n − 1) · s / √n / |mean|, with t from a
    /// table (df 2: 4.302652729911275, df 3: 3.182446305284263).
    fn relative_hw(xs: &[f64], t: f64) -> f64 {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let s = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        t * s / n.sqrt() / mean.abs()
    }

    #[test]
    fn stops_when_the_relative_half_width_is_within_the_target() {
        let walls = [10.0, 10.1, 9.9];
        let want = relative_hw(&walls, 4.302652729911275);
        // 4.3027 · 0.1 / √3 / 10 = 2.48%: within 3%, not within 2%.
        assert!((want - 0.024841).abs() < 1e-5, "{want}");
        let d = decide(&rule("wall_s", 0.03, 30), &cycles(&walls));
        assert!(!d.go_on);
        assert_eq!(d.record.outcome, UntilCiOutcome::Reached);
        assert_eq!(d.record.cycles, 3);
        assert!((d.record.relative_half_width.unwrap() - want).abs() < 1e-9);
        let d = decide(&rule("wall_s", 0.02, 30), &cycles(&walls));
        assert!(d.go_on, "{}", d.record.message);
        assert_eq!(d.record.outcome, UntilCiOutcome::Running);
    }

    #[test]
    fn never_stops_before_the_minimum_even_on_a_tight_pair() {
        // Two identical cycles have no spread: a half-width of 0, but only two cycles.
        let d = decide(&rule("wall_s", 0.02, 30), &cycles(&[5.0, 5.0]));
        assert!(d.go_on);
    }

    #[test]
    fn the_cap_stops_it_and_says_the_target_was_not_reached() {
        let walls = [10.0, 14.0, 6.0, 12.0];
        let want = relative_hw(&walls, 3.182446305284263);
        let d = decide(&rule("wall_s", 0.02, 4), &cycles(&walls));
        assert!(!d.go_on);
        assert_eq!(d.record.outcome, UntilCiOutcome::CapHit);
        assert!((d.record.relative_half_width.unwrap() - want).abs() < 1e-9);
        assert!(
            d.record.message.starts_with("cap of 4 cycles hit"),
            "{}",
            d.record.message
        );
        assert!(d.record.message.contains("not reached"));
    }

    #[test]
    fn a_metric_without_values_stops_at_the_minimum_with_the_reason() {
        // The fixture's energy is unavailable: no j_per_output_token in any cycle.
        let r = rule("j_per_output_token", 0.02, 30);
        assert!(
            decide(&r, &cycles(&[1.0, 1.0])).go_on,
            "not yet at the minimum"
        );
        let d = decide(&r, &cycles(&[1.0, 1.0, 1.0]));
        assert!(!d.go_on);
        assert_eq!(d.record.outcome, UntilCiOutcome::MetricUnavailable);
        assert!(
            d.record.message.contains("j_per_output_token has no value"),
            "{}",
            d.record.message
        );
    }

    #[test]
    fn percentages_parse_with_or_without_the_sign_and_bad_ones_are_named() {
        assert_eq!(parse_percent("2%"), Ok(0.02));
        assert_eq!(parse_percent(" 0.5 "), Ok(0.005));
        assert!(parse_percent("0%").unwrap_err().contains("above 0"));
        assert!(parse_percent("150").is_err());
        assert!(parse_percent("two").unwrap_err().contains("`two`"));
    }
}
