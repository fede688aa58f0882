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
        &ctx.powercap_root,
        configs.iter().any(|c| may_run_on_gpu(c))
            || lem_agent::meter::nvml::resolve_lib_path(None).is_some(),
    );
    configs
        .iter()
        .map(|cfg| plan_metered_devices(cfg, may_run_on_gpu(cfg), &env))
        .collect()
}

/// Sweeps of stored experiments, in order: one for each run of consecutive experiments
/// with the same number of cycles (a sweep has one cycle count), so the order given is
/// the order of the jobs. `token` makes each submission's idempotency token.
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
        match out.last_mut() {
            Some(s) if s.cycles == rec.num_cycles => s.experiments.push(exp),
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
