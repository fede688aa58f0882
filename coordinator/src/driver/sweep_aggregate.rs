//! Aggregates of a finished sweep: one per experiment, from the accepted results only.

use crate::aggregate::{aggregate_experiment, ExperimentAggregate};
use crate::scheduler::SweepId;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;

/// The aggregates of `sweep` worth storing: those of experiments with an accepted cycle.
/// One without (cancelled before it ran) would be an empty summary; embedded `lem
/// aggregate` refuses it as "nothing to aggregate", and so does this.
pub fn aggregates_to_store(
    store: &Store,
    sweep: SweepId,
) -> Result<Vec<ExperimentAggregate>, StoreError> {
    let mut out = aggregate_sweep(store, sweep)?;
    out.retain(|agg| !agg.cycles.is_empty());
    Ok(out)
}

/// The id a sweep experiment's aggregate is stored under.
pub fn sweep_experiment_id(sweep: SweepId, experiment_name: &str) -> String {
    format!("{sweep}/{experiment_name}")
}

/// One aggregate per experiment of `sweep`, in submission order, over each job's
/// accepted result (a job without one is a missing cycle, never another attempt's).
pub fn aggregate_sweep(
    store: &Store,
    sweep: SweepId,
) -> Result<Vec<ExperimentAggregate>, StoreError> {
    let Some(row) = store.sweep(sweep)? else {
        return Ok(Vec::new());
    };
    let mut expected: BTreeMap<u32, u32> = BTreeMap::new();
    for job in store.jobs_of_sweep(&row)? {
        *expected.entry(job.experiment).or_default() += 1;
    }
    let mut raws: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for accepted in store.accepted_results(&row)? {
        raws.entry(accepted.job.experiment)
            .or_default()
            .push(accepted.raw);
    }
    let mut out = Vec::new();
    for (index, name) in row.experiment_names.iter().enumerate() {
        let index = index as u32;
        let raws = raws.remove(&index).unwrap_or_default();
        let model = raws
            .first()
            .map(|r| r.model.requested.clone())
            .unwrap_or_default();
        out.push(aggregate_experiment(
            &sweep_experiment_id(sweep, name),
            name,
            &model,
            expected.get(&index).copied().unwrap_or(0),
            &raws,
        ));
    }
    Ok(out)
}
