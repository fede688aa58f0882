//! The nouns of the scheduler: ids, time, devices, what a job needs and where an attempt
//! runs. Plain data, serialisable, so persisted records and the wire can carry them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds on the driver's monotonic clock. The scheduler never reads a clock; the
/// driver passes `now` in. After a coordinator restart the clock may start anywhere, so
/// no persisted record holds a `TimeMs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeMs(pub u64);

impl TimeMs {
    pub fn plus_ms(self, ms: u64) -> TimeMs {
        TimeMs(self.0.saturating_add(ms))
    }
}

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "-{}"), self.0)
            }
        }
    };
}

numeric_id!(
    /// A sweep, minted by the scheduler in submission order.
    SweepId,
    "sweep"
);
numeric_id!(
    /// A job (one experiment config × one cycle), minted when its sweep is created.
    JobId,
    "job"
);
numeric_id!(
    /// One try of one job on one placement; unique across the whole coordinator history.
    AttemptId,
    "attempt"
);
numeric_id!(
    /// A job's fencing token: raised on every lease of the job. A result is accepted only
    /// with the epoch of the job's live lease.
    Epoch,
    "epoch"
);
numeric_id!(
    /// A driver-chosen id that ties a reply to the client request that caused it.
    RequestId,
    "request"
);

/// An enrolled agent's id (its certificate's name in the cluster).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AgentId(pub String);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opaque key of a device, as the agent names it (`gpu:<uuid>`, `mig:<uuid>`,
/// `rapl:<host>:package-0`). Keys are global: the same key announced by two agents is
/// the same device, and is never leased twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceKey(pub String);

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an agent has, as it announces it on every (re)connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub gpus: Vec<GpuDevice>,
    /// The host's CPU packages. Announced whether or not RAPL is readable: the key names
    /// the package a CPU-only job meters; readability is the meter's concern.
    pub cpu_packages: Vec<DeviceKey>,
    /// Runner slots of an agent whose runner picks its devices itself (embedded mode's
    /// in-process agents): each runs one [`DeviceNeeds::Pinned`] job at a time. Agents
    /// that take their placement from the lease announce none.
    #[serde(default)]
    pub runner_slots: Vec<DeviceKey>,
}

/// One physical GPU. With MIG slices it is in MIG mode and only takes MIG jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    pub key: DeviceKey,
    /// Product name as NVML reports it ("NVIDIA H100 80GB HBM3").
    pub model: String,
    pub mig_slices: Vec<MigSlice>,
}

/// One MIG GPU instance of a parent GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigSlice {
    pub key: DeviceKey,
    /// MIG profile ("1g.10gb", "3g.40gb").
    pub profile: String,
}

/// What one job needs to run and be metered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeviceNeeds {
    /// Runs on the CPU and meters the host's packages: takes every package of one agent.
    CpuPackages,
    /// Whole GPUs (not in MIG mode) of one agent; `model` restricts the product name.
    Gpus { count: u32, model: Option<String> },
    /// One MIG slice of the given profile. `exclusive_parent` leases the whole parent GPU
    /// so its counter is this job's alone (energy-exact); otherwise the parent is shared
    /// with other slices' jobs and energy is attributed. `model` restricts the parent
    /// GPU's product name.
    MigSlice {
        profile: String,
        exclusive_parent: bool,
        #[serde(default)]
        model: Option<String>,
    },
    /// The runner picks its devices itself, from the config (embedded mode, where the
    /// config's `gpu_list` and the host's packages decide): the lease takes one runner
    /// slot of the agent and exactly these claims, so two jobs never meter one device.
    Pinned { claims: Vec<Claim> },
}

/// How a lease holds a metered device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClaimMode {
    /// No other lease may hold this device in any mode.
    Exclusive,
    /// A MIG parent under shared attribution: other shared claims may coexist, an
    /// exclusive one may not.
    Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Claim {
    pub key: DeviceKey,
    pub mode: ClaimMode,
}

/// Where an attempt runs: the agent, the devices the runner is given, the metered devices
/// the lease claims, and the GPU model (for keeping an experiment's cycles on one model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub agent: AgentId,
    /// Devices the runner selects explicitly (GPU keys, one MIG slice key, or packages).
    pub devices: Vec<DeviceKey>,
    pub claims: Vec<Claim>,
    pub device_model: Option<String>,
}

/// An attempt an agent holds, as it reports it in Hello and heartbeats: still running,
/// or finished with its result spooled and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAttempt {
    pub attempt: AttemptId,
    pub epoch: Epoch,
    /// True while the runner runs it; false once its outcome is spooled.
    pub running: bool,
}

/// How an attempt ended on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A raw result exists; the driver holds its body until the scheduler says where it
    /// goes (accepted or superseded).
    Succeeded,
    /// The runner failed; the error is kept with the job.
    Failed { error: String },
}
