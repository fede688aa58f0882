//! The job executor of embedded mode's in-process agent: a lease becomes a `JobSpec`
//! and runs on the agent's `JobRunner` (whose model cache lives across cycles). The
//! runner's own error is kept beside the message the scheduler records, so the CLI can
//! still tell an interruption or a refused config from a failed run.

use crate::driver::JobExecutor;
use crate::scheduler::{AttemptId, Lease};
use lem_agent::runner::{JobRunner, NoProgress, RunContext, RunError, RunProgress};
use lem_common::config::ExperimentConfig;
use lem_common::domain::{JobSpec, OverrideRecord, RawResult};
use std::collections::BTreeMap;

pub struct RunnerExecutor {
    pub runner: JobRunner,
    pub ctx: RunContext,
    /// The CLI overrides recorded with each result (they are already applied in the
    /// leased config).
    pub cli_overrides: BTreeMap<String, OverrideRecord>,
    pub progress: Box<dyn RunProgress + Send>,
    /// The runner's errors by attempt, for the caller to classify.
    pub errors: BTreeMap<AttemptId, RunError>,
}

impl RunnerExecutor {
    pub fn new(runner: JobRunner, ctx: RunContext) -> Self {
        Self {
            runner,
            ctx,
            cli_overrides: BTreeMap::new(),
            progress: Box::new(NoProgress),
            errors: BTreeMap::new(),
        }
    }
}

impl JobExecutor for RunnerExecutor {
    fn execute(&mut self, lease: &Lease) -> Result<RawResult, String> {
        let config: ExperimentConfig = serde_json::from_value((*lease.config).clone())
            .map_err(|e| format!("{}: leased config does not parse: {e}", lease.attempt))?;
        let job = JobSpec {
            experiment_id: lease.experiment_name.clone(),
            job_key: lease.job_key.clone(),
            cycle: lease.cycle,
            // Attempt ids are global in the scheduler; a raw result keeps the low bits
            // only for display (the store keys results by the full id).
            attempt: lease.attempt.0 as u32,
            config,
            cli_overrides: self.cli_overrides.clone(),
        };
        self.runner
            .run(&job, &self.ctx, self.progress.as_mut())
            .map_err(|e| {
                let message = e.to_string();
                self.errors.insert(lease.attempt, e);
                message
            })
    }
}
