//! `lem experiment --until-ci`: runs the experiment one cycle at a time under the
//! stopping rule of `crate::until_ci` (each added cycle a new sweep of one experiment,
//! whose stored cycles are not run again), storing the rule's state with the experiment
//! after every decision (so an interrupted run resumes under the same rule).

use super::experiment::run_stored_experiment;
use super::{CliError, ExperimentArgs};
use crate::aggregate::{aggregate_experiment, metric_names};
use crate::embedded::StoreHandle;
use crate::embedded_run::ExperimentEnd;
use crate::store::ExperimentRecord;
use crate::until_ci::{self, UntilCiOutcome, UntilCiRecord, UntilCiRule};
use lem_agent::runner::RunContext;

/// The rule `args` ask for, checked; `None` without `--until-ci`.
pub(super) fn rule_from_args(args: &ExperimentArgs) -> Result<Option<UntilCiRule>, CliError> {
    let Some(target) = args.until_ci else {
        return Ok(None);
    };
    if !metric_names().contains(&args.metric) {
        return Err(CliError::usage(format!(
            "--metric {}: not a statistic of an aggregate; known: {}",
            args.metric,
            metric_names().join(", ")
        )));
    }
    let min_cycles = args.cycles.unwrap_or(0).max(until_ci::MIN_CYCLES);
    if args.max_cycles < min_cycles {
        return Err(CliError::usage(format!(
            "--max-cycles {} is below the {min_cycles} cycles --until-ci starts with",
            args.max_cycles
        )));
    }
    Ok(Some(UntilCiRule {
        metric: args.metric.clone(),
        target_relative_half_width: target,
        min_cycles,
        max_cycles: args.max_cycles,
    }))
}

/// The record a new experiment starts with.
pub(super) fn start(rule: UntilCiRule) -> UntilCiRecord {
    UntilCiRecord {
        cycles: 0,
        outcome: UntilCiOutcome::Running,
        relative_half_width: None,
        message: format!("{} cycles before the first check", rule.min_cycles),
        rule,
    }
}

/// Runs `rec`'s pending cycles; under `--until-ci` then applies the rule and adds one
/// cycle at a time until it stops. Ends early with the end of a run that did not finish.
pub(super) fn run_cycles(
    store: &StoreHandle,
    rec: &mut ExperimentRecord,
    ctx: &RunContext,
) -> Result<ExperimentEnd, CliError> {
    let Some(rule) = rec.until_ci.as_ref().map(|u| u.rule.clone()) else {
        return run_stored_experiment(store, rec, ctx);
    };
    // Bounded: each pass adds one cycle, and the rule stops at max_cycles.
    loop {
        let end = run_stored_experiment(store, rec, ctx)?;
        if !matches!(end, ExperimentEnd::Finished) {
            return Ok(end);
        }
        let raws = store.with(|s| s.raw_results(&rec.id))?;
        let agg = aggregate_experiment(
            &rec.id,
            &rec.config_name,
            &rec.model_name,
            rec.num_cycles,
            &raws,
        );
        let decision = until_ci::decide(&rule, &agg.cycles);
        eprintln!("  until-ci: {}", decision.record.message);
        rec.until_ci = Some(decision.record);
        if decision.go_on {
            rec.num_cycles += 1;
        }
        store.with(|s| s.update_experiment(rec))?;
        if !decision.go_on {
            return Ok(end);
        }
    }
}

/// One line for the summary: the rule and how it ended.
pub(super) fn describe(u: &UntilCiRecord) -> String {
    let status = match u.outcome {
        UntilCiOutcome::Reached => "target reached",
        UntilCiOutcome::CapHit => "CAP HIT, target not reached",
        UntilCiOutcome::MetricUnavailable => "stopped, metric unavailable",
        UntilCiOutcome::Running => "still running",
    };
    let last = match (u.outcome, u.relative_half_width) {
        // The message holds the reason the metric had no value.
        (UntilCiOutcome::MetricUnavailable, _) => u.message.clone(),
        (_, Some(r)) => format!("last {:.2}%", r * 100.0),
        (_, None) => "last unknown".into(),
    };
    format!(
        "{status} after {} cycles; rule: 95% CI half-width of {} ≤ {:.2}% of the mean, {}–{} cycles; {last}",
        u.cycles,
        u.rule.metric,
        u.rule.target_relative_half_width * 100.0,
        u.rule.min_cycles,
        u.rule.max_cycles,
    )
}
