//! The messages of a session after the handshake: agent → coordinator
//! ([`AgentMessage`]) and coordinator → agent ([`CoordinatorMessage`]).
//!
//! Ids are plain numbers and device keys plain strings: the coordinator converts them to
//! its scheduler's types at the edge. An agent never names itself in a message; its id
//! is the name on its certificate, which the transport supplies.

use crate::domain::RawResult;
use serde::{Deserialize, Serialize};

/// One attempt of one job, with the fencing epoch of its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    pub attempt: u64,
    pub epoch: u64,
}

/// An attempt an agent holds: still running, or finished with its outcome spooled and
/// not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAttempt {
    pub attempt: u64,
    pub epoch: u64,
    pub running: bool,
}

/// What an agent has, announced on every (re)connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub gpus: Vec<Gpu>,
    /// Keys of the host's CPU packages (`rapl:<host>:package-0`).
    pub cpu_packages: Vec<String>,
}

/// One physical GPU; with MIG slices it is in MIG mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Global device key (`gpu:<uuid>`).
    pub key: String,
    /// Product name as NVML reports it.
    pub model: String,
    pub mig_slices: Vec<MigSlice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigSlice {
    /// Global device key (`mig:<uuid>`).
    pub key: String,
    /// MIG profile (`1g.10gb`).
    pub profile: String,
}

/// Agent → coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// First message after the handshake, and after every reconnection. `lost` are
    /// attempts the agent knows it lost (it restarted while running them).
    Hello {
        inventory: Inventory,
        held: Vec<HeldAttempt>,
        lost: Vec<HeldAttempt>,
    },
    /// Periodic: alive, and holding these attempts (running or spooled).
    Heartbeat { held: Vec<HeldAttempt> },
    /// A finished attempt's raw result, sent from the spool and resent until acknowledged.
    AttemptResult {
        attempt: AttemptRef,
        result: Box<RawResult>,
    },
    /// The runner failed; resent until acknowledged like a result.
    AttemptFailed { attempt: AttemptRef, error: String },
    /// The agent could not start a lease (e.g. its devices are still busy).
    LeaseRejected { attempt: AttemptRef, reason: String },
    /// The agent is stopping while it holds nothing (no run, no spooled outcome); its
    /// last message before it closes the connection. Since protocol version 3.
    Goodbye,
}

/// Coordinator → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    Lease(LeaseGrant),
    /// These leases now live `ttl_ms` longer.
    Renew {
        attempts: Vec<AttemptRef>,
        ttl_ms: u64,
    },
    /// Stop this attempt; it is no longer yours.
    Cancel {
        attempt: AttemptRef,
    },
    /// The outcome of this attempt is stored (or deliberately not needed): drop its
    /// spool entry.
    Ack {
        attempt: AttemptRef,
        verdict: AckVerdict,
    },
    /// Take no new work; finish what you hold.
    Drain,
    /// The coordinator does not know this session (it restarted, or declared the agent
    /// lost): send Hello again.
    HelloRequired,
    /// A request was refused; `reason` says why in words.
    Refuse {
        reason: String,
    },
}

/// A grant of one job on one placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub attempt: AttemptRef,
    pub job: u64,
    pub sweep: u64,
    pub experiment_name: String,
    pub cycle: u32,
    pub job_key: String,
    /// The resolved experiment config the runner runs (JSON of `ExperimentConfig`).
    pub config: serde_json::Value,
    /// Devices the runner is given (GPU keys, one MIG slice key, or CPU packages).
    pub devices: Vec<String>,
    /// Metered devices the lease claims, and how.
    pub claims: Vec<DeviceClaim>,
    pub device_model: Option<String>,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaim {
    pub key: String,
    pub mode: ClaimMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimMode {
    /// No other lease holds this device.
    Exclusive,
    /// A MIG parent under attributed energy, shared with other slices' leases.
    Shared,
}

/// What became of an acknowledged outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckVerdict {
    /// The result is the job's accepted one.
    Accepted,
    /// The result came from a fenced attempt: stored for audit, never aggregated.
    Superseded,
    /// A failure outcome was recorded with the job.
    FailureRecorded,
}
