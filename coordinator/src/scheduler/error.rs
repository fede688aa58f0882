//! Why the scheduler refuses a request. Refusals are replies, never panics, and change
//! nothing persisted.

use super::types::{AgentId, SweepId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error("sweep submission: {reason}")]
    BadSubmission { reason: String },
    #[error("idempotency token {token:?} already created {sweep} from a different submission")]
    TokenReused { token: String, sweep: SweepId },
    #[error("no such sweep: {0}")]
    UnknownSweep(SweepId),
    #[error("agent {agent}: inventory: {reason}")]
    BadInventory { agent: AgentId, reason: String },
}
