//! The `records` tree: the scheduler's durable log. `persist` appends one `Record` under
//! the next sequence number and, in the same sled transaction, updates the rows derived
//! from it (sweeps, jobs, attempts, results, accepted); then it flushes. `records`
//! reads the log back in order for `Scheduler::recover`.
//!
//! Result ingest is idempotent: a result record for an attempt whose result is already
//! stored appends nothing and answers `AlreadyCommitted`, so the caller acks again.

use super::codec::{
    from_json, key_u64, to_json, u64_key, ACCEPTED, ATTEMPTS, JOBS, RECORDS, RESULTS, SWEEPS,
};
use super::error::StoreError;
use super::results::{Disposition, StoredResult};
use super::scheduler_rows::{rows_of_sweep, AttemptRow};
use super::Store;
use crate::scheduler::{AttemptId, Epoch, JobId, Record};
use lem_common::domain::RawResult;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

/// What `persist` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// Appended (and flushed) as record `seq`.
    Appended { seq: u64 },
    /// The attempt's result was already stored with this disposition; nothing was
    /// written.
    AlreadyCommitted { disposition: Disposition },
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

impl Store {
    /// Makes `record` durable. `body` is the result a `ResultAccepted` or
    /// `ResultSuperseded` record stores (required for those, ignored otherwise).
    pub fn persist(
        &self,
        record: &Record,
        body: Option<&RawResult>,
    ) -> Result<Persisted, StoreError> {
        let result = ResultWrite::of(record);
        if let (Some(w), None) = (&result, body) {
            return Err(StoreError::MissingResultBody {
                record: w.record,
                attempt: w.attempt,
            });
        }
        let records = self.tree(RECORDS)?;
        let sweeps = self.tree(SWEEPS)?;
        let jobs = self.tree(JOBS)?;
        let attempts = self.tree(ATTEMPTS)?;
        let results = self.tree(RESULTS)?;
        let accepted = self.tree(ACCEPTED)?;
        let _append = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let seq = match records.last()? {
            Some((k, _)) => key_u64(RECORDS, &k)? + 1,
            None => 0,
        };
        let outcome = (&records, &sweeps, &jobs, &attempts, &results, &accepted).transaction(
            |(tx_records, tx_sweeps, tx_jobs, tx_attempts, tx_results, tx_accepted)| {
                if let (Some(w), Some(body)) = (&result, body) {
                    if let Some(bytes) = tx_results.get(u64_key(w.attempt.0))? {
                        let stored: StoredResult =
                            match from_json(RESULTS, &w.attempt.to_string(), &bytes) {
                                Ok(s) => s,
                                Err(e) => return abort(e),
                            };
                        return Ok(Persisted::AlreadyCommitted {
                            disposition: stored.disposition,
                        });
                    }
                    let row = attempt_row(tx_attempts, w.record, w.attempt)?;
                    let stored = StoredResult {
                        attempt: w.attempt,
                        job: w.job,
                        epoch: w.epoch.unwrap_or(row.epoch),
                        disposition: w.disposition,
                        raw: body.clone(),
                    };
                    if w.disposition == Disposition::Accepted {
                        accept(tx_accepted, w.job, w.attempt)?;
                    }
                    tx_results.insert(&u64_key(w.attempt.0), to_json(&stored))?;
                }
                match record {
                    Record::SweepCreated(created) => {
                        let (sweep_row, job_rows) = rows_of_sweep(created);
                        let key = u64_key(sweep_row.sweep.0);
                        if tx_sweeps.insert(&key, to_json(&sweep_row))?.is_some() {
                            return abort(reused("SweepCreated", sweep_row.sweep.to_string()));
                        }
                        for row in &job_rows {
                            if tx_jobs.insert(&u64_key(row.job.0), to_json(row))?.is_some() {
                                return abort(reused("SweepCreated", row.job.to_string()));
                            }
                        }
                    }
                    Record::AttemptStarted {
                        attempt,
                        job,
                        epoch,
                        placement,
                    } => {
                        let row = AttemptRow {
                            attempt: *attempt,
                            job: *job,
                            epoch: *epoch,
                            placement: placement.clone(),
                            end: None,
                        };
                        if tx_attempts
                            .insert(&u64_key(attempt.0), to_json(&row))?
                            .is_some()
                        {
                            return abort(reused("AttemptStarted", attempt.to_string()));
                        }
                    }
                    Record::AttemptEnded { attempt, end, .. } => {
                        let mut row = attempt_row(tx_attempts, "AttemptEnded", *attempt)?;
                        if row.end.is_some() {
                            return abort(StoreError::AttemptAlreadyEnded { attempt: *attempt });
                        }
                        row.end = Some(end.clone());
                        tx_attempts.insert(&u64_key(attempt.0), to_json(&row))?;
                    }
                    _ => {}
                }
                if tx_records.get(u64_key(seq))?.is_some() {
                    // The append lock makes this unreachable within one process.
                    return abort(StoreError::BadKey {
                        tree: RECORDS,
                        key: format!("{seq} (written twice)"),
                    });
                }
                tx_records.insert(&u64_key(seq), to_json(record))?;
                Ok(Persisted::Appended { seq })
            },
        );
        let persisted = match outcome {
            Ok(p) => p,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        };
        if matches!(persisted, Persisted::Appended { .. }) {
            self.db.flush()?;
        }
        Ok(persisted)
    }

    /// The scheduler's records in the order they were persisted.
    pub fn records(&self) -> Result<Vec<Record>, StoreError> {
        let tree = self.tree(RECORDS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let seq = key_u64(RECORDS, &k)?;
            out.push(from_json(RECORDS, &seq.to_string(), &v)?);
        }
        Ok(out)
    }
}

/// The result a `ResultAccepted` / `ResultSuperseded` record stores.
struct ResultWrite {
    /// The record's name, for errors.
    record: &'static str,
    attempt: AttemptId,
    job: JobId,
    /// A superseded result names its (stale) epoch; an accepted one has its attempt's.
    epoch: Option<Epoch>,
    disposition: Disposition,
}

impl ResultWrite {
    fn of(record: &Record) -> Option<ResultWrite> {
        match record {
            Record::ResultAccepted { attempt, job } => Some(ResultWrite {
                record: "ResultAccepted",
                attempt: *attempt,
                job: *job,
                epoch: None,
                disposition: Disposition::Accepted,
            }),
            Record::ResultSuperseded {
                attempt,
                job,
                epoch,
            } => Some(ResultWrite {
                record: "ResultSuperseded",
                attempt: *attempt,
                job: *job,
                epoch: Some(*epoch),
                disposition: Disposition::Superseded,
            }),
            _ => None,
        }
    }
}

fn reused(record: &'static str, id: String) -> StoreError {
    StoreError::IdReused { record, id }
}

fn attempt_row(
    tx_attempts: &TransactionalTree,
    record: &'static str,
    attempt: AttemptId,
) -> TxResult<AttemptRow> {
    match tx_attempts.get(u64_key(attempt.0))? {
        Some(bytes) => match from_json(ATTEMPTS, &attempt.to_string(), &bytes) {
            Ok(row) => Ok(row),
            Err(e) => abort(e),
        },
        None => abort(StoreError::UnknownAttempt { record, attempt }),
    }
}

/// Records `attempt` as `job`'s accepted attempt; a job accepts one attempt only.
fn accept(tx_accepted: &TransactionalTree, job: JobId, attempt: AttemptId) -> TxResult<()> {
    if let Some(bytes) = tx_accepted.get(u64_key(job.0))? {
        let accepted = match key_u64(ACCEPTED, &bytes) {
            Ok(a) => AttemptId(a),
            Err(e) => return abort(e),
        };
        return abort(StoreError::AcceptedTwice {
            job,
            accepted,
            attempt,
        });
    }
    tx_accepted.insert(&u64_key(job.0), &u64_key(attempt.0))?;
    Ok(())
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
