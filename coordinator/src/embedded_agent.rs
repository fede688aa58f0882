//! The job executor of embedded mode's in-process agents: a lease becomes a `JobSpec`
//! and runs on the agent's `JobRunner` (whose model cache lives across cycles). The
//! runner's own error is kept beside the message the scheduler records, so the CLI can
//! still tell an interruption or a refused config from a failed run.

use crate::driver::JobExecutor;
use crate::scheduler::Lease;
use lem_agent::runner::{JobRunner, NoProgress, RunContext, RunError, RunProgress};
use lem_common::config::ExperimentConfig;
use lem_common::domain::{JobSpec, OverrideRecord, RawResult};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The progress display of one runner: told when a job starts, then driven by the run.
pub trait LeaseProgress: RunProgress + Send {
    /// Called on the runner thread just before `experiment`'s `cycle` runs.
    fn job_started(&mut self, _experiment: &str, _cycle: u32) {}
}

impl LeaseProgress for NoProgress {}

/// What the runners of one embedded run share with the thread that drives it.
#[derive(Default)]
pub struct RunShared {
    /// The first runner error of each experiment (its cycle and the typed error); after
    /// one, the experiment's other cycles are not run (an experiment fails fast).
    pub errors: Mutex<BTreeMap<String, (u32, RunError)>>,
    /// Cycles already stored (experiment, cycle) → raw result: a lease of one is answered
    /// with it instead of a run (an experiment stored before it ran as a sweep, or the
    /// earlier cycles of an `--until-ci` experiment that grows one cycle at a time).
    pub stored: Mutex<BTreeMap<(String, u32), RawResult>>,
}

pub struct RunnerExecutor {
    pub runner: JobRunner,
    pub ctx: RunContext,
    /// The CLI overrides recorded with each experiment's results (they are already
    /// applied in the leased config), by experiment name.
    pub cli_overrides: BTreeMap<String, BTreeMap<String, OverrideRecord>>,
    pub progress: Box<dyn LeaseProgress>,
    pub shared: Arc<RunShared>,
}

impl RunnerExecutor {
    pub fn new(runner: JobRunner, ctx: RunContext) -> Self {
        Self {
            runner,
            ctx,
            cli_overrides: BTreeMap::new(),
            progress: Box::new(NoProgress),
            shared: Arc::default(),
        }
    }
}

impl JobExecutor for RunnerExecutor {
    fn execute(&mut self, lease: &Lease) -> Result<RawResult, String> {
        let name = &lease.experiment_name;
        if self.ctx.stop.load(Ordering::SeqCst) {
            lock(&self.shared.errors)
                .entry(name.clone())
                .or_insert((lease.cycle, RunError::Interrupted));
            return Err(RunError::Interrupted.to_string());
        }
        if let Some((cycle, e)) = lock(&self.shared.errors).get(name) {
            return Err(format!("not run: cycle {} failed: {e}", cycle + 1));
        }
        let stored = lock(&self.shared.stored).remove(&(name.clone(), lease.cycle));
        if let Some(raw) = stored.filter(|r| r.job_key == lease.job_key) {
            return Ok(raw);
        }
        let config: ExperimentConfig = serde_json::from_value((*lease.config).clone())
            .map_err(|e| format!("{}: leased config does not parse: {e}", lease.attempt))?;
        let job = JobSpec {
            experiment_id: name.clone(),
            job_key: lease.job_key.clone(),
            cycle: lease.cycle,
            // Attempt ids are global in the scheduler; a raw result keeps the low bits
            // only for display (the store keys results by the full id).
            attempt: lease.attempt.0 as u32,
            config,
            cli_overrides: self.cli_overrides.get(name).cloned().unwrap_or_default(),
        };
        self.progress.job_started(name, lease.cycle);
        self.runner
            .run(&job, &self.ctx, self.progress.as_mut())
            .map_err(|e| {
                let message = e.to_string();
                lock(&self.shared.errors)
                    .entry(name.clone())
                    .or_insert((lease.cycle, e));
                message
            })
    }
}

/// A poisoned lock only means another runner panicked; its data is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
