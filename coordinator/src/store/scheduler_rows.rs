//! The `sweeps`, `jobs` and `attempts` trees: rows derived from the scheduler's records
//! in the same transaction that appends the record, so status and results commands read
//! them without replaying the log. The log stays the source `recover` rebuilds from.

use super::codec::{from_json, key_u64, u64_key, ATTEMPTS, JOBS, SWEEPS};
use super::error::StoreError;
use super::Store;
use crate::scheduler::{AttemptEnd, AttemptId, Epoch, JobId, Placement, SweepCreated, SweepId};
use serde::{Deserialize, Serialize};

/// A sweep as created: its experiments and the contiguous range of its job ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRow {
    pub sweep: SweepId,
    pub name: String,
    pub experiment_names: Vec<String>,
    pub first_job: JobId,
    pub job_count: u64,
}

/// One job: which experiment and cycle, and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    pub job: JobId,
    pub sweep: SweepId,
    /// Index into the sweep's experiments.
    pub experiment: u32,
    pub experiment_name: String,
    pub cycle: u32,
    pub key: String,
}

/// One attempt: where it ran and, once it ended without a result, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub attempt: AttemptId,
    pub job: JobId,
    pub epoch: Epoch,
    pub placement: Placement,
    pub end: Option<AttemptEnd>,
}

/// The rows a `SweepCreated` record adds. Job ids of a sweep are contiguous (the
/// scheduler mints them densely at expansion).
pub(super) fn rows_of_sweep(created: &SweepCreated) -> (SweepRow, Vec<JobRow>) {
    let jobs: Vec<JobRow> = created
        .jobs
        .iter()
        .map(|j| JobRow {
            job: j.job,
            sweep: created.sweep,
            experiment: j.experiment,
            experiment_name: created
                .experiments
                .get(j.experiment as usize)
                .map(|e| e.name.clone())
                .unwrap_or_default(),
            cycle: j.cycle,
            key: j.key.clone(),
        })
        .collect();
    let sweep = SweepRow {
        sweep: created.sweep,
        name: created.name.clone(),
        experiment_names: created.experiments.iter().map(|e| e.name.clone()).collect(),
        first_job: created.jobs.first().map_or(JobId(0), |j| j.job),
        job_count: created.jobs.len() as u64,
    };
    (sweep, jobs)
}

impl Store {
    pub fn sweep(&self, sweep: SweepId) -> Result<Option<SweepRow>, StoreError> {
        get_row(&self.tree(SWEEPS)?, SWEEPS, sweep.0)
    }

    /// Every sweep, in id order.
    pub fn sweeps(&self) -> Result<Vec<SweepRow>, StoreError> {
        let tree = self.tree(SWEEPS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let id = key_u64(SWEEPS, &k)?;
            out.push(from_json(SWEEPS, &id.to_string(), &v)?);
        }
        Ok(out)
    }

    pub fn job(&self, job: JobId) -> Result<Option<JobRow>, StoreError> {
        get_row(&self.tree(JOBS)?, JOBS, job.0)
    }

    /// A sweep's jobs in id order (experiments in submission order, cycles ascending).
    pub fn jobs_of_sweep(&self, sweep: &SweepRow) -> Result<Vec<JobRow>, StoreError> {
        let tree = self.tree(JOBS)?;
        let end = sweep.first_job.0 + sweep.job_count;
        let mut out = Vec::new();
        for item in tree.range(u64_key(sweep.first_job.0)..u64_key(end)) {
            let (k, v) = item?;
            let id = key_u64(JOBS, &k)?;
            out.push(from_json(JOBS, &id.to_string(), &v)?);
        }
        Ok(out)
    }

    pub fn attempt(&self, attempt: AttemptId) -> Result<Option<AttemptRow>, StoreError> {
        get_row(&self.tree(ATTEMPTS)?, ATTEMPTS, attempt.0)
    }
}

fn get_row<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    name: &'static str,
    id: u64,
) -> Result<Option<T>, StoreError> {
    match tree.get(u64_key(id))? {
        Some(v) => Ok(Some(from_json(name, &id.to_string(), &v)?)),
        None => Ok(None),
    }
}
