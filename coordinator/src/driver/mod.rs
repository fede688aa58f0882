//! The driver: the thin executor of the scheduler's actions. It owns the IO the
//! scheduler must not touch — the store, the agent links, the clock's readings — and
//! keeps three promises:
//!
//! - every `Persist(record)` is written and flushed before any later action runs, so a
//!   lease is never sent before its attempt is durable (persist, then send);
//! - a result body is stored with its `ResultAccepted`/`ResultSuperseded` record in one
//!   transaction, and the `Ack` that follows is sent only after (ack after flush);
//! - startup is `Scheduler::recover(store.records())`: a restarted driver rebuilds
//!   exactly the durable state.
//!
//! Result bodies never enter the scheduler: `handle` holds a body until the scheduler
//! says where it goes, and drops it when the result was already committed (a resend).

mod link;
mod local_agent;
mod run_sweep;
mod store_access;
mod sweep_aggregate;

#[cfg(test)]
mod fence_tests;
#[cfg(test)]
mod tests;

pub use link::{AgentLink, ChannelLink, LinkError};
pub use local_agent::{in_process_scheduler_config, spawn_local_agent, AgentEvent, JobExecutor};
pub use run_sweep::{drive_sweep, MonotonicClock};
pub use store_access::StoreAccess;
pub use sweep_aggregate::{aggregate_sweep, aggregates_to_store, sweep_experiment_id};

use crate::scheduler::{
    Action, AttemptId, Event, JobId, Outcome, Record, RecoverError, Reply, RequestId, Scheduler,
    SchedulerConfig, SweepId, TimeMs,
};
use crate::store::{Disposition, Persisted, Store, StoreError};
use lem_common::domain::RawResult;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot rebuild the scheduler from the store's records: {0}")]
    Recover(#[from] RecoverError),
    #[error("{attempt} reported success without a result body")]
    MissingBody { attempt: AttemptId },
    #[error("a result body came with an event that is not a success: {event}")]
    UnexpectedBody { event: String },
    #[error("an earlier action failed after the scheduler had applied it; restart the driver from the store")]
    MustRestart,
    #[error("every agent left before {sweep} finished")]
    AgentsGone { sweep: SweepId },
    #[error(
        "the scheduler {expected:?} the result of {attempt}, but the store holds it {stored:?}"
    )]
    DispositionMismatch {
        attempt: AttemptId,
        expected: Disposition,
        stored: Disposition,
    },
}

/// What one call did besides persisting and sending.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Executed {
    /// Replies to client requests, in order.
    pub replies: Vec<(RequestId, Reply)>,
    /// Sweeps that finished; their aggregates are stored.
    pub finished: Vec<SweepId>,
    /// Results accepted by this call (job, attempt), stored before the call returned.
    pub accepted: Vec<(JobId, AttemptId)>,
    /// Records appended to the store.
    pub persisted: usize,
    /// Messages for agents that were not connected (they catch up on Hello).
    pub undelivered: usize,
}

pub struct Driver<L: AgentLink, S: StoreAccess = Arc<Store>> {
    scheduler: Scheduler,
    store: S,
    link: L,
    /// The body of the success being handled, until its record stores it.
    body: Option<(AttemptId, RawResult)>,
    /// An action failed: the scheduler's state may be ahead of the store, so nothing
    /// more is executed until a restart recovers from the store.
    failed: bool,
}

impl<L: AgentLink, S: StoreAccess> Driver<L, S> {
    /// Rebuilds the scheduler from the store's records, at `now` on the driver's clock.
    pub fn start(
        store: S,
        link: L,
        config: SchedulerConfig,
        now: TimeMs,
    ) -> Result<Self, DriverError> {
        let records = store.with_store(Store::records)?;
        let scheduler = Scheduler::recover(config, records, now)?;
        Ok(Self {
            scheduler,
            store,
            link,
            body: None,
            failed: false,
        })
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// When to call [`tick`](Self::tick) next, if ever.
    pub fn poll_timeout(&self) -> Option<TimeMs> {
        self.scheduler.poll_timeout()
    }

    pub fn tick(&mut self, now: TimeMs) -> Result<Executed, DriverError> {
        self.handle(Event::Tick, None, now)
    }

    /// Feeds one event to the scheduler and executes its actions in order. `body` is the
    /// raw result of an `AttemptFinished` success, and only that.
    pub fn handle(
        &mut self,
        event: Event,
        body: Option<RawResult>,
        now: TimeMs,
    ) -> Result<Executed, DriverError> {
        self.handle_until(event, body, now, |_| false)
    }

    /// `handle`, stopping before the first action `stop` picks: what a coordinator killed
    /// at that point leaves behind (the tests' crash).
    fn handle_until(
        &mut self,
        event: Event,
        body: Option<RawResult>,
        now: TimeMs,
        mut stop: impl FnMut(&Action) -> bool,
    ) -> Result<Executed, DriverError> {
        if self.failed {
            return Err(DriverError::MustRestart);
        }
        self.body = match (&event, body) {
            (
                Event::AttemptFinished {
                    attempt,
                    outcome: Outcome::Succeeded,
                    ..
                },
                Some(body),
            ) => Some((*attempt, body)),
            (
                Event::AttemptFinished {
                    attempt,
                    outcome: Outcome::Succeeded,
                    ..
                },
                None,
            ) => return Err(DriverError::MissingBody { attempt: *attempt }),
            (_, Some(_)) => {
                return Err(DriverError::UnexpectedBody {
                    event: format!("{event:?}"),
                })
            }
            (_, None) => None,
        };
        let actions = self.scheduler.handle(event, now);
        let mut done = Executed::default();
        let result = actions
            .into_iter()
            .take_while(|action| !stop(action))
            .try_for_each(|action| self.execute(action, &mut done));
        // A body no record took was a resend of a committed result: acked, not stored.
        self.body = None;
        self.failed = result.is_err();
        result.map(|()| done)
    }

    /// Executes one action; a `Persist` returns only once the record is flushed.
    fn execute(&mut self, action: Action, done: &mut Executed) -> Result<(), DriverError> {
        match action {
            Action::Persist(record) => {
                let expected = match &record {
                    Record::ResultAccepted { attempt, .. } => {
                        Some((*attempt, Disposition::Accepted))
                    }
                    Record::ResultSuperseded { attempt, .. } => {
                        Some((*attempt, Disposition::Superseded))
                    }
                    _ => None,
                };
                let body = match (expected, &self.body) {
                    (Some((attempt, _)), Some((held, body))) if *held == attempt => Some(body),
                    _ => None,
                };
                match self.store.with_store(|s| s.persist(&record, body))? {
                    Persisted::Appended { .. } => {
                        done.persisted += 1;
                        if let Record::ResultAccepted { attempt, job } = record {
                            done.accepted.push((job, attempt));
                        }
                    }
                    Persisted::AlreadyCommitted { disposition } => {
                        if let Some((attempt, expected)) = expected {
                            if expected != disposition {
                                return Err(DriverError::DispositionMismatch {
                                    attempt,
                                    expected,
                                    stored: disposition,
                                });
                            }
                        }
                    }
                }
            }
            Action::Send { agent, msg } => {
                if let Err(e) = self.link.send(&agent, msg) {
                    tracing::warn!(%agent, "message not delivered: {e}");
                    done.undelivered += 1;
                }
            }
            Action::Reply { request, reply } => done.replies.push((request, reply)),
            Action::SweepFinished { sweep } => {
                self.store.with_store(|s| {
                    for agg in aggregates_to_store(s, sweep)? {
                        s.put_aggregate(&agg.experiment_id, &agg)?;
                    }
                    Ok(())
                })?;
                done.finished.push(sweep);
            }
        }
        Ok(())
    }
}
