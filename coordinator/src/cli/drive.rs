//! The embedded run as `lem experiment` and `lem batch` start it: the metered devices of
//! each config, one in-process runner per `--parallel` slot, a sweep submission of stored
//! experiment records, and the run itself with its display.

use super::run_display::RunDisplay;
use super::CliError;
use crate::embedded::StoreHandle;
use crate::embedded_agent::{RunShared, RunnerExecutor};
use crate::embedded_run::{self, pinned_needs, RunFailure, RunReport, Work};
use crate::scheduler::{ExperimentSubmission, SweepSubmission};
use crate::store::ExperimentRecord;
use lem_agent::meter::ownership::{
    may_run_on_gpu, plan_metered_devices, MeterEnvironment, MeteredDevice,
};
use lem_agent::runner::{JobRunner, RunContext};
use lem_common::config::ExperimentConfig;
use lem_common::domain::RawResult;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The devices each config meters on this machine (probed once).
pub(super) fn metered_devices(
    ctx: &RunContext,
    configs: &[&ExperimentConfig],
) -> Vec<Vec<MeteredDevice>> {
    let env = MeterEnvironment::probe(
        ctx,
        configs.iter().any(|c| may_run_on_gpu(c)) || ctx.nvml_lib.is_some(),
    );
    configs
        .iter()
        .map(|cfg| plan_metered_devices(cfg, may_run_on_gpu(cfg), &env))
        .collect()
}

/// Sweeps of stored experiments, in order: one for each run of consecutive experiments
/// with the same number of cycles (a sweep has one cycle count) and distinct configs (a
/// config given twice would repeat job keys within a sweep), so the order given is the
/// order of the jobs. `token` makes each submission's idempotency token.
pub(super) fn submissions(
    token: &str,
    name: &str,
    experiments: &[(&ExperimentRecord, &[MeteredDevice])],
) -> Vec<SweepSubmission> {
    let mut out: Vec<SweepSubmission> = Vec::new();
    for (rec, metered) in experiments {
        let exp = ExperimentSubmission {
            name: rec.id.clone(),
            config: rec.effective_config.clone(),
            needs: pinned_needs(&rec.id, metered),
        };
        let fits = |s: &SweepSubmission| {
            s.cycles == rec.num_cycles && s.experiments.iter().all(|e| e.config != exp.config)
        };
        match out.last_mut() {
            Some(s) if fits(s) => s.experiments.push(exp),
            _ => out.push(SweepSubmission {
                idempotency_token: format!("{token}/{}", out.len()),
                name: name.to_string(),
                experiments: vec![exp],
                cycles: rec.num_cycles,
                pin_device_model: true,
            }),
        }
    }
    out
}

/// Runs `work` on `runners` in-process runners. `stored` are cycles already in the `raw`
/// tree that a lease is answered with instead of a run.
pub(super) fn drive(
    store: &StoreHandle,
    ctx: &RunContext,
    records: &[&ExperimentRecord],
    stored: Vec<RawResult>,
    work: Work,
    display: &mut RunDisplay<'_>,
    runners: usize,
) -> Result<RunReport, CliError> {
    let shared = Arc::new(RunShared::default());
    {
        let mut map = shared.stored.lock().expect("fresh lock");
        for raw in stored {
            map.insert((raw.experiment_id.clone(), raw.cycle), raw);
        }
    }
    let overrides: BTreeMap<_, _> = records
        .iter()
        .map(|r| (r.id.clone(), r.cli_overrides.clone()))
        .collect();
    // CPU threads are the process's, fixed before the first job runs: the first
    // experiment's request, as when its load sized candle's pools.
    lem_agent::threads::init(
        records
            .first()
            .and_then(|r| r.effective_config.get("cpu_threads"))
            .and_then(serde_json::Value::as_u64)
            .map(|t| t as usize),
    );
    let executors = (0..runners.max(1))
        .map(|i| RunnerExecutor {
            runner: JobRunner::new(),
            ctx: ctx.clone(),
            cli_overrides: overrides.clone(),
            progress: display.runner_progress(i),
            shared: shared.clone(),
        })
        .collect();
    let stop: &AtomicBool = &ctx.stop;
    let report = embedded_run::run(store, work, executors, &shared, stop, display);
    display.finish();
    report.map_err(|e| match e {
        RunFailure::Refused(e) => CliError::usage(format!("nothing was run: {e}")),
        RunFailure::Store(e) => CliError::Store(e),
        other => CliError::failure(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::resolved_config;

    fn record(id: &str, model: &str, cycles: u32) -> ExperimentRecord {
        let mut resolved = resolved_config(model);
        resolved.config.num_cycles = cycles;
        let cfg = &resolved.config;
        ExperimentRecord {
            id: id.into(),
            config_name: cfg.config_name.clone(),
            model_name: cfg.model_name.clone(),
            config_fingerprint: String::new(),
            effective_config: cfg.to_json(),
            cli_overrides: Default::default(),
            num_cycles: cycles,
            status: crate::store::ExperimentStatus::Running,
            created_at: String::new(),
            updated_at: String::new(),
            pid: 0,
            hostname: String::new(),
            error: None,
            error_chain: Vec::new(),
            origin: String::new(),
            until_ci: None,
        }
    }

    #[test]
    fn a_batch_is_one_sweep_unless_cycle_counts_change_or_a_config_repeats() {
        let same = [record("e1", "m1", 2), record("e2", "m2", 2)];
        let pairs: Vec<_> = same.iter().map(|r| (r, &[][..])).collect();
        let subs = submissions("batch/e1", "batch of 2", &pairs);
        assert_eq!(subs.len(), 1);
        let names: Vec<&str> = subs[0]
            .experiments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!((names, subs[0].cycles), (vec!["e1", "e2"], 2));

        // 2 cycles, 3 cycles, then m1 again at 3 cycles, then m1 once more: the order
        // given is kept, each sweep has one cycle count and distinct configs.
        let mixed = [
            record("e1", "m1", 2),
            record("e2", "m2", 3),
            record("e3", "m1", 3),
            record("e4", "m1", 3),
        ];
        let pairs: Vec<_> = mixed.iter().map(|r| (r, &[][..])).collect();
        let subs = submissions("t", "n", &pairs);
        let shape: Vec<(Vec<&str>, u32)> = subs
            .iter()
            .map(|s| {
                let names = s.experiments.iter().map(|e| e.name.as_str()).collect();
                (names, s.cycles)
            })
            .collect();
        assert_eq!(
            shape,
            [(vec!["e1"], 2), (vec!["e2", "e3"], 3), (vec!["e4"], 3)]
        );
        let tokens: Vec<&str> = subs.iter().map(|s| s.idempotency_token.as_str()).collect();
        assert_eq!(tokens, ["t/0", "t/1", "t/2"]);
    }
}
