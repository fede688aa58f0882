//! The scheduler's timing and retry settings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// How long a lease lives without a renewal. Heartbeats renew it; an agent that has
    /// not heard a renewal for this long stops the job itself.
    pub lease_ttl_ms: u64,
    /// An agent not heard from for this long is lost and its leases are requeued.
    pub agent_timeout_ms: u64,
    /// After a coordinator restart, how long a recovered lease waits for its agent to
    /// re-announce it before it is requeued.
    pub restart_grace_ms: u64,
    /// A job whose runs fail (the runner reported an error) this many times is failed.
    pub max_failures: u32,
    /// A job that has ended this many attempts for any reason (failure, lost agent,
    /// expired or refused lease) is failed, so a job can never loop forever.
    pub max_attempts: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 30_000,
            agent_timeout_ms: 20_000,
            restart_grace_ms: 30_000,
            max_failures: 3,
            max_attempts: 10,
        }
    }
}
