//! The sans-IO scheduler: sweeps, jobs, agents, leases and results as a pure state
//! machine.
//!
//! `Scheduler::handle(event, now)` returns actions; `poll_timeout()` says when to call it
//! again with `Event::Tick`. It never reads a clock, touches a socket, a thread, a file or
//! randomness (ordered maps only, so even iteration order is a function of the inputs): a
//! driver (the server, or embedded mode with an in-process agent) owns all
//! of those, executes the actions in order — a `Persist` is made durable before anything
//! after it — and feeds replies back in as events.
//!
//! Durable state changes are `Record`s: the live path emits one and applies it, and
//! `Scheduler::recover` rebuilds the state by applying the persisted records in order.
//!
//! Invariants (checked after every step by the seeded simulation in `sim`):
//! - a metered device is never held by two leases (`claims`);
//! - nor, physically, run by two attempts: an attempt ended while its agent may still run
//!   it (agent lost, sweep cancelled, a recovered lease not re-announced within a grace
//!   shorter than the TTL) keeps its claims until its lease would have expired
//!   or the agent says it stopped (`state::FencedRun`), also across a restart (its
//!   `AttemptEnded` record carries what was left of the lease, `fence_ms`);
//! - a job has at most one accepted attempt, and only the attempt holding the job's live
//!   lease with its current epoch can be accepted; anything else is superseded;
//! - a result is acknowledged only after the record that stores it was persisted;
//! - a sweep's jobs are persisted in its `SweepCreated` record before any lease of them.

mod claims;
mod config;
mod dispatch;
mod error;
mod event;
mod handle;
mod pending_reason;
mod placement;
mod query;
mod record;
mod state;
mod sweep;
mod timers;
mod types;

#[cfg(test)]
mod fence_restart_tests;
#[cfg(test)]
mod goodbye_tests;
#[cfg(test)]
mod grace_fence_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use config::SchedulerConfig;
pub use error::SchedulerError;
pub use event::{AckVerdict, Action, Event, Lease, Reply, ToAgent};
pub use pending_reason::describe_needs;
pub use query::{AgentView, JobView, LeaseView, SweepExperimentView, SweepProgress};
pub use record::{AttemptEnd, Record};
pub use state::{JobStatus, RecoverError, Scheduler};
pub use sweep::{ExperimentSubmission, JobRecord, SweepCreated, SweepSubmission};
pub use types::{
    AgentId, AttemptId, Claim, ClaimMode, DeviceKey, DeviceNeeds, Epoch, GpuDevice, HeldAttempt,
    Inventory, JobId, MigSlice, Outcome, Placement, RequestId, SweepId, TimeMs,
};
