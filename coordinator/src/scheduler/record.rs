//! What the scheduler persists. Every durable state change is one of these records; the
//! live path applies a record right after emitting it, and `recover` applies the stored
//! records in the order they were persisted (the driver keys them by a sequence number),
//! so both paths go through the same transitions.

use super::sweep::SweepCreated;
use super::types::{AgentId, AttemptId, Epoch, JobId, Placement, SweepId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    SweepCreated(SweepCreated),
    /// Written before the lease is sent.
    AttemptStarted {
        attempt: AttemptId,
        job: JobId,
        epoch: Epoch,
        placement: Placement,
    },
    AttemptEnded {
        attempt: AttemptId,
        job: JobId,
        end: AttemptEnd,
        /// Set when the coordinator ended an attempt its agent may still be running
        /// (agent lost, sweep cancelled): how much longer, from this record, its lease
        /// would have lived, so its claims stay fenced that long — also after a
        /// restart, counted from the restart (see `Scheduler::recover`). Absent in
        /// records written before fences were persisted: those release at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence_ms: Option<u64>,
    },
    /// The job's one accepted attempt; written (with the result body) before the Ack.
    ResultAccepted {
        attempt: AttemptId,
        job: JobId,
    },
    /// A result from a fenced attempt, kept for audit and never aggregated.
    ResultSuperseded {
        attempt: AttemptId,
        job: JobId,
        epoch: Epoch,
    },
    /// Retries exhausted; every attempt's error is listed.
    JobFailed {
        job: JobId,
        errors: Vec<String>,
    },
    SweepCancelled {
        sweep: SweepId,
    },
    SweepResumed {
        sweep: SweepId,
    },
    AgentDrained {
        agent: AgentId,
    },
}

/// Why an attempt ended without an accepted result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptEnd {
    /// The runner reported an error.
    Failed { error: String },
    /// The lease ran out: agent lost, no renewal, or not reclaimed after a restart.
    Lost { reason: String },
    /// The agent refused the lease.
    Rejected { reason: String },
    /// Its sweep was cancelled.
    Cancelled,
}

impl AttemptEnd {
    pub fn describe(&self) -> String {
        match self {
            AttemptEnd::Failed { error } => format!("failed: {error}"),
            AttemptEnd::Lost { reason } => format!("lost: {reason}"),
            AttemptEnd::Rejected { reason } => format!("rejected by agent: {reason}"),
            AttemptEnd::Cancelled => "cancelled".into(),
        }
    }
}
