//! Why the scheduler refuses a request. Refusals are replies, never panics, and change
//! nothing persisted.

use super::types::{AgentId, AttemptId, SweepId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error("sweep submission: {reason}")]
    BadSubmission { reason: String },
    #[error("idempotency token {token:?} already created {sweep} from a different submission")]
    TokenReused { token: String, sweep: SweepId },
    #[error("no such sweep: {0}")]
    UnknownSweep(SweepId),
    /// A result for an attempt this coordinator never started: nothing is stored and it
    /// is not acknowledged.
    #[error("agent {agent}: result for unknown {attempt}")]
    UnknownAttempt { agent: AgentId, attempt: AttemptId },
    #[error("agent {agent}: inventory: {reason}")]
    BadInventory { agent: AgentId, reason: String },
}
