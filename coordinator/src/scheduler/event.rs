//! What goes into the scheduler (`Event`) and what comes out (`Action`). The driver
//! executes actions in order: a `Persist` must be durable (flushed) before any later
//! action of the same batch is executed, which is what makes "persist, then send" hold.

use super::error::SchedulerError;
use super::record::Record;
use super::sweep::SweepSubmission;
use super::types::{
    AgentId, AttemptId, Epoch, HeldAttempt, Inventory, JobId, Outcome, Placement, RequestId,
    SweepId,
};
use std::sync::Arc;

/// An input, stamped by the driver with `now` when it passes it in.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    SubmitSweep {
        request: RequestId,
        submission: SweepSubmission,
    },
    CancelSweep {
        request: RequestId,
        sweep: SweepId,
    },
    /// Requeues a sweep's cancelled and failed jobs with a fresh retry budget.
    ResumeSweep {
        request: RequestId,
        sweep: SweepId,
    },
    /// The agent finishes what it holds and gets no new leases.
    DrainAgent {
        request: RequestId,
        agent: AgentId,
    },
    /// An agent (re)connected: what it has and which attempts it still holds. `lost` are
    /// attempts it knows it lost (it restarted while running them).
    AgentHello {
        agent: AgentId,
        inventory: Inventory,
        held: Vec<HeldAttempt>,
        lost: Vec<HeldAttempt>,
    },
    /// Periodic: the agent is alive and holds these attempts (running or spooled).
    Heartbeat {
        agent: AgentId,
        held: Vec<HeldAttempt>,
    },
    /// An attempt's outcome, sent (and resent until acknowledged) from the agent's spool.
    AttemptFinished {
        agent: AgentId,
        attempt: AttemptId,
        epoch: Epoch,
        outcome: Outcome,
    },
    /// The agent could not start a lease (e.g. its devices are still busy).
    LeaseRejected {
        agent: AgentId,
        attempt: AttemptId,
        epoch: Epoch,
        reason: String,
    },
    /// The agent is stopping and said it holds nothing: unless the scheduler still counts
    /// a lease of it, it is disconnected at once rather than at the agent timeout.
    AgentGoodbye {
        agent: AgentId,
    },
    /// Nothing happened but time passed (the driver's timer fired at `poll_timeout`).
    Tick,
}

/// An output, to be executed by the driver in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make this record durable before executing anything after it. For
    /// `ResultAccepted`/`ResultSuperseded` the driver stores the result body it holds
    /// for that attempt alongside.
    Persist(Record),
    Send {
        agent: AgentId,
        msg: ToAgent,
    },
    Reply {
        request: RequestId,
        reply: Reply,
    },
    /// Every job of the sweep is terminal (accepted, failed or cancelled): aggregate it.
    SweepFinished {
        sweep: SweepId,
    },
}

/// A message for one agent.
#[derive(Debug, Clone, PartialEq)]
pub enum ToAgent {
    Lease(Lease),
    /// These leases now live `ttl_ms` longer.
    Renewed {
        attempts: Vec<HeldAttempt>,
        ttl_ms: u64,
    },
    /// Stop this attempt; it is no longer yours.
    Cancel(HeldAttempt),
    /// The outcome of this attempt is stored (or deliberately not needed): drop the spool
    /// entry.
    Ack {
        attempt: HeldAttempt,
        verdict: AckVerdict,
    },
    /// Take no new work; finish what you hold.
    Drain,
    /// The coordinator does not know this session (it restarted, or declared the agent
    /// lost): send Hello again.
    HelloRequired,
    Refused(SchedulerError),
}

/// What became of an acknowledged outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckVerdict {
    /// The result is the job's accepted one.
    Accepted,
    /// The result came from a fenced attempt: stored for audit, never aggregated.
    Superseded,
    /// A failure outcome was recorded with the job.
    FailureRecorded,
}

/// A grant of one job on one placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub attempt: AttemptId,
    pub epoch: Epoch,
    pub job: JobId,
    pub sweep: SweepId,
    pub experiment_name: String,
    pub cycle: u32,
    pub job_key: String,
    /// The resolved config the runner runs (shared, so leases are cheap to clone).
    pub config: Arc<serde_json::Value>,
    pub placement: Placement,
    pub ttl_ms: u64,
}

/// The answer to a client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    SweepSubmitted {
        sweep: SweepId,
        /// False when the idempotency token matched an existing sweep.
        created: bool,
        jobs: usize,
    },
    SweepCancelled {
        sweep: SweepId,
        jobs_cancelled: usize,
    },
    SweepResumed {
        sweep: SweepId,
        jobs_requeued: usize,
    },
    AgentDraining {
        agent: AgentId,
    },
    Refused(SchedulerError),
}
