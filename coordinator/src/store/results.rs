//! The `results` and `accepted` trees: result bodies by attempt, and each job's one
//! accepted attempt, recorded explicitly. Aggregation reads a job's result through
//! `accepted`, never by scanning for the first key, so a superseded result (a fenced
//! attempt's) is stored for audit and never aggregated.

use super::codec::{from_json, key_u64, u64_key, ACCEPTED, RESULTS};
use super::error::StoreError;
use super::scheduler_rows::{JobRow, SweepRow};
use super::Store;
use crate::scheduler::{AttemptId, Epoch, JobId};
use lem_common::domain::RawResult;
use serde::{Deserialize, Serialize};

/// What the scheduler decided about a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// The job's accepted result.
    Accepted,
    /// From a fenced (stale-epoch) attempt: kept for audit, never aggregated.
    Superseded,
}

/// A result body as stored, with the attempt it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub attempt: AttemptId,
    pub job: JobId,
    pub epoch: Epoch,
    pub disposition: Disposition,
    pub raw: RawResult,
}

/// A job with its accepted result.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedResult {
    pub job: JobRow,
    pub attempt: AttemptId,
    pub raw: RawResult,
}

impl Store {
    /// The stored result of `attempt`, accepted or superseded.
    pub fn result(&self, attempt: AttemptId) -> Result<Option<StoredResult>, StoreError> {
        let tree = self.tree(RESULTS)?;
        match tree.get(u64_key(attempt.0))? {
            Some(v) => Ok(Some(from_json(RESULTS, &attempt.to_string(), &v)?)),
            None => Ok(None),
        }
    }

    /// Every stored result body, accepted or superseded, in attempt order.
    pub fn stored_results(&self) -> Result<Vec<StoredResult>, StoreError> {
        let tree = self.tree(RESULTS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let attempt = key_u64(RESULTS, &k)?;
            out.push(from_json(RESULTS, &attempt.to_string(), &v)?);
        }
        Ok(out)
    }

    /// The job's accepted attempt, if it has one.
    pub fn accepted_attempt(&self, job: JobId) -> Result<Option<AttemptId>, StoreError> {
        let tree = self.tree(ACCEPTED)?;
        match tree.get(u64_key(job.0))? {
            Some(v) => Ok(Some(AttemptId(key_u64(ACCEPTED, &v)?))),
            None => Ok(None),
        }
    }

    /// The accepted result of every job of `sweep` that has one, in job order. What
    /// aggregation reads: one result per job at most, superseded ones never.
    pub fn accepted_results(&self, sweep: &SweepRow) -> Result<Vec<AcceptedResult>, StoreError> {
        let mut out = Vec::new();
        for job in self.jobs_of_sweep(sweep)? {
            let Some(attempt) = self.accepted_attempt(job.job)? else {
                continue;
            };
            let stored = self.result(attempt)?.ok_or_else(|| StoreError::BadKey {
                tree: ACCEPTED,
                key: format!("{} → {attempt} (no stored result)", job.job),
            })?;
            out.push(AcceptedResult {
                job,
                attempt,
                raw: stored.raw,
            });
        }
        Ok(out)
    }
}
