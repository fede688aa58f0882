//! The `raw` tree beside the scheduler's store: embedded mode copies each accepted result
//! there under its experiment (what `lem results` reads), and finds the sweeps that hold
//! an experiment.

use crate::embedded::StoreHandle;
use crate::scheduler::SweepId;
use crate::store::{Store, StoreError};
use lem_common::domain::RawResult;

/// Stores an accepted result under its experiment in the `raw` tree, unless that cycle
/// is there already (a stored cycle answered again, or a copy made before a restart).
pub fn copy_to_raw_tree(store: &Store, raw: &RawResult) -> Result<(), StoreError> {
    if store.raw_cycles(&raw.experiment_id)?.contains(&raw.cycle) {
        return Ok(());
    }
    store.put_raw(raw)
}

/// Copies every accepted result of `sweeps` that the `raw` tree lacks (a run killed
/// between the two writes): called before a resume, so nothing accepted goes unseen.
pub fn catch_up_raw_tree(store: &StoreHandle, sweeps: &[SweepId]) -> Result<(), StoreError> {
    store.with(|s| {
        for sweep in sweeps {
            let Some(row) = s.sweep(*sweep)? else {
                continue;
            };
            for accepted in s.accepted_results(&row)? {
                copy_to_raw_tree(s, &accepted.raw)?;
            }
        }
        Ok(())
    })
}

/// The sweeps (oldest first) that hold `experiment`.
pub fn sweeps_of(store: &StoreHandle, experiment: &str) -> Result<Vec<SweepId>, StoreError> {
    store.with(|s| {
        Ok(s.sweeps()?
            .into_iter()
            .filter(|r| r.experiment_names.iter().any(|n| n == experiment))
            .map(|r| r.sweep)
            .collect())
    })
}
