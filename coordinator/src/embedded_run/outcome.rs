//! How each experiment of an embedded run ended, from the scheduler's job states and
//! the runners' typed errors.

use super::Names;
use crate::embedded_agent::RunShared;
use crate::scheduler::{JobStatus, Scheduler, SweepId};
use lem_agent::runner::RunError;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug)]
pub enum ExperimentEnd {
    /// Every cycle is stored.
    Finished,
    /// Stopped by Ctrl+C: its unfinished cycles are cancelled and can be resumed.
    Interrupted,
    /// A cycle failed in the runner (`cycle` counts from 0); the others were not run.
    Failed { cycle: u32, error: RunError },
    /// A job failed without a runner error (the scheduler's account of it).
    FailedWithout { cycle: u32, message: String },
}

/// Each experiment of `sweeps`, by name: finished when all its jobs are accepted; failed
/// when a runner error other than an interruption stopped it; interrupted otherwise.
pub fn classify(
    scheduler: &Scheduler,
    sweeps: &[SweepId],
    names: &Names,
    shared: &Arc<RunShared>,
) -> BTreeMap<String, ExperimentEnd> {
    let mut errors = shared
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut ends = BTreeMap::new();
    for sweep in sweeps {
        for (index, name) in names.get(sweep).into_iter().flatten().enumerate() {
            let jobs: Vec<_> = scheduler
                .jobs()
                .filter(|j| j.sweep == *sweep && j.experiment as usize == index)
                .collect();
            let end = if jobs
                .iter()
                .all(|j| matches!(j.status, JobStatus::Accepted(_)))
            {
                ExperimentEnd::Finished
            } else if let Some((cycle, error)) = errors.remove(name) {
                if matches!(error, RunError::Interrupted) {
                    ExperimentEnd::Interrupted
                } else {
                    ExperimentEnd::Failed { cycle, error }
                }
            } else if let Some(j) = jobs.iter().find(|j| j.status == JobStatus::Failed) {
                ExperimentEnd::FailedWithout {
                    cycle: j.cycle,
                    message: j.errors.last().cloned().unwrap_or_default(),
                }
            } else {
                ExperimentEnd::Interrupted
            };
            ends.insert(name.clone(), end);
        }
    }
    ends
}
