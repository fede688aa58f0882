//! The messages of a CLI session (`lem-cli/1`): the operator's or viewer's `lem` sends
//! one [`CliRequest`] per exchange on the session's stream and reads one [`CliReply`].
//!
//! A sweep submission here is the wire's own copy of the scheduler's, converted at the
//! coordinator's edge. Viewers may send only the read-only requests
//! ([`CliRequest::is_read_only`]); the coordinator refuses the others before anything is
//! stored.

use serde::{Deserialize, Serialize};

/// CLI → coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CliRequest {
    SubmitSweep(SweepSubmission),
    ListSweeps,
    ShowSweep {
        sweep: u64,
    },
    CancelSweep {
        sweep: u64,
    },
    ResumeSweep {
        sweep: u64,
    },
    Status,
    ListAgents,
    DrainAgent {
        agent: String,
    },
    ListResults,
    /// One stored aggregate by its id (`sweep-3/name`) or a unique prefix.
    ShowResult {
        id: String,
    },
    /// Aggregates one sweep again from its accepted results, and stores them: every
    /// experiment with an accepted result, or only those in `experiments` (full ids,
    /// `sweep-3/name`). An older coordinator ignores `experiments` and does the whole
    /// sweep.
    AggregateSweep {
        sweep: u64,
        #[serde(default)]
        experiments: Option<Vec<String>>,
    },
    /// A join token valid `ttl_ms` that admits `uses` agents (only its hash is stored).
    /// A peer that sends no `uses` asks for a single-use token.
    CreateJoinToken {
        ttl_ms: u64,
        #[serde(default = "one_use")]
        uses: u32,
    },
    /// Every join token the coordinator has made, as [`JoinTokenSummary`] rows (never a
    /// secret).
    ListJoinTokens,
    /// Revokes the join token whose short id starts with `id`: from then on it admits
    /// no one. Revoking a revoked token changes nothing and is not an error.
    RevokeJoinToken {
        id: String,
    },
    /// One page of the selected sweep experiments' records and stored aggregates, in id
    /// order, starting after the experiment `after` (from the start when `None`). A peer
    /// that sends no `select` asks for every experiment with its aggregate.
    ResultRecords {
        after: Option<String>,
        #[serde(default)]
        select: RecordSelection,
    },
    /// One page of the accepted results of the experiment `id` (exact), in cycle order,
    /// starting after cycle `after_cycle`. Superseded results are never sent.
    AcceptedResults {
        id: String,
        after_cycle: Option<u32>,
    },
}

fn one_use() -> u32 {
    1
}

impl CliRequest {
    /// True for requests that change nothing: the only ones a viewer may send.
    pub fn is_read_only(&self) -> bool {
        match self {
            CliRequest::ListSweeps
            | CliRequest::ShowSweep { .. }
            | CliRequest::Status
            | CliRequest::ListAgents
            | CliRequest::ListResults
            | CliRequest::ShowResult { .. }
            | CliRequest::ResultRecords { .. }
            | CliRequest::AcceptedResults { .. }
            | CliRequest::ListJoinTokens => true,
            CliRequest::SubmitSweep(_)
            | CliRequest::CancelSweep { .. }
            | CliRequest::ResumeSweep { .. }
            | CliRequest::DrainAgent { .. }
            | CliRequest::AggregateSweep { .. }
            | CliRequest::CreateJoinToken { .. }
            | CliRequest::RevokeJoinToken { .. } => false,
        }
    }

    /// How a refusal names the request.
    pub fn name(&self) -> &'static str {
        match self {
            CliRequest::SubmitSweep(_) => "sweep submit",
            CliRequest::ListSweeps => "sweep list",
            CliRequest::ShowSweep { .. } => "sweep show",
            CliRequest::CancelSweep { .. } => "sweep cancel",
            CliRequest::ResumeSweep { .. } => "sweep resume",
            CliRequest::Status => "status",
            CliRequest::ListAgents => "agent list",
            CliRequest::DrainAgent { .. } => "agent drain",
            CliRequest::ListResults => "results list",
            CliRequest::ShowResult { .. } => "results show",
            CliRequest::AggregateSweep { .. } => "results aggregate",
            CliRequest::CreateJoinToken { .. } => "token create",
            CliRequest::ListJoinTokens => "token list",
            CliRequest::RevokeJoinToken { .. } => "token revoke",
            CliRequest::ResultRecords { .. } => "results (experiment records)",
            CliRequest::AcceptedResults { .. } => "results (accepted results)",
        }
    }
}

/// A sweep as the CLI submits it: configs resolved on the submitting machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSubmission {
    /// Made by the client once and reused on a retry: a resubmission creates nothing.
    pub idempotency_token: String,
    pub name: String,
    pub experiments: Vec<ExperimentSubmission>,
    pub cycles: u32,
    /// Keep every cycle of one experiment on one GPU model.
    pub pin_device_model: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSubmission {
    pub name: String,
    /// The resolved experiment config (JSON of `ExperimentConfig`).
    pub config: serde_json::Value,
    pub needs: DeviceNeeds,
}

/// What one job of an experiment needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceNeeds {
    /// CPU inference, metering every CPU package of one agent.
    CpuPackages,
    /// Whole GPUs of one agent; `model` restricts the product name.
    Gpus { count: u32, model: Option<String> },
    /// One MIG slice of `profile`; `exclusive_parent` leases the whole parent GPU;
    /// `model` restricts the parent's product name (absent from older peers: any).
    MigSlice {
        profile: String,
        exclusive_parent: bool,
        #[serde(default)]
        model: Option<String>,
    },
}

/// Coordinator → CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CliReply {
    SweepSubmitted {
        sweep: u64,
        /// False when the idempotency token matched an existing sweep.
        created: bool,
        jobs: u64,
    },
    SweepCancelled {
        sweep: u64,
        jobs_cancelled: u64,
    },
    SweepResumed {
        sweep: u64,
        jobs_requeued: u64,
    },
    AgentDraining {
        agent: String,
    },
    Sweeps(Vec<SweepSummary>),
    Sweep(SweepDetail),
    Status(StatusSnapshot),
    Agents(Vec<AgentSummary>),
    Results(Vec<ResultSummary>),
    /// One experiment's stored aggregate, as JSON (the coordinator's aggregate type).
    Aggregate {
        id: String,
        aggregate: serde_json::Value,
        /// What ran, from the first accepted result (`ModelInfo` as JSON), if any.
        model_info: Option<serde_json::Value>,
    },
    /// The sweep's aggregates were computed again and stored.
    Aggregated {
        sweep: u64,
        ids: Vec<String>,
        /// What each stored aggregate covers, in the order of `ids` (empty from an
        /// older coordinator).
        #[serde(default)]
        experiments: Vec<AggregatedExperiment>,
    },
    /// The token's text (its only copy), when it expires and how many enrollments it
    /// admits.
    JoinToken {
        token: String,
        expires_unix_ms: u64,
        #[serde(default = "one_use")]
        uses: u32,
    },
    /// Every join token, oldest first.
    JoinTokens(Vec<JoinTokenSummary>),
    /// The token is revoked; `newly_revoked` is false when it already was (at the time
    /// given, which a second revoke keeps).
    JoinTokenRevoked {
        id: String,
        revoked_unix_ms: u64,
        newly_revoked: bool,
    },
    /// A page of experiment records; `more` when a later page follows (ask again
    /// `after` the last one's id).
    ResultRecords {
        experiments: Vec<ResultExperiment>,
        more: bool,
    },
    /// A page of one experiment's accepted results (`RawResult`s); `more` when a later
    /// page follows (ask again after the last one's cycle).
    AcceptedResults {
        id: String,
        results: Vec<crate::domain::RawResult>,
        more: bool,
    },
    /// The request was not carried out; `reason` says why in words.
    Refused {
        reason: String,
    },
}

/// A join token as `lem token list` shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenSummary {
    /// The first hex digits of the secret's SHA-256 (`lem token revoke ID` takes it).
    pub id: String,
    /// `None` for a token made before tokens recorded it.
    pub created_unix_ms: Option<u64>,
    pub expires_unix_ms: u64,
    /// Enrollments made with it so far, of `max_uses`.
    pub uses: u32,
    pub max_uses: u32,
    /// `active`, `expired`, `used_up` or `revoked`, when the coordinator answered.
    pub state: String,
    pub revoked_unix_ms: Option<u64>,
}

/// Counts of a sweep's jobs by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SweepProgress {
    pub pending: u64,
    pub leased: u64,
    pub accepted: u64,
    pub failed: u64,
    pub cancelled: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSummary {
    pub sweep: u64,
    pub name: String,
    pub progress: SweepProgress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepDetail {
    pub summary: SweepSummary,
    pub jobs: Vec<JobSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job: u64,
    pub experiment_name: String,
    pub cycle: u32,
    /// `pending`, `leased`, `accepted`, `failed` or `cancelled`.
    pub status: String,
    /// Each ended attempt, described.
    pub errors: Vec<String>,
    /// Why a pending job waits (`no connected agent has a MIG slice of profile 7g.80gb`);
    /// `None` for jobs that are not pending (and from older coordinators).
    #[serde(default)]
    pub pending_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// The id on the agent's certificate.
    pub id: String,
    /// Heard from within the agent timeout.
    pub alive: bool,
    /// Takes no new leases.
    pub draining: bool,
    /// GPU keys with their model (`gpu:<uuid> NVIDIA H100`), MIG slices under them.
    pub gpus: Vec<GpuSummary>,
    pub cpu_packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSummary {
    pub key: String,
    pub model: String,
    /// `mig:<uuid> 1g.10gb`.
    pub mig_slices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSummary {
    pub attempt: u64,
    pub job: u64,
    pub agent: String,
    pub devices: Vec<String>,
    /// False while a lease recovered after a coordinator restart waits for its agent.
    pub reclaimed: bool,
}

/// What `lem status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub agents: Vec<AgentSummary>,
    pub leases: Vec<LeaseSummary>,
    /// Jobs waiting for a placement.
    pub queued_jobs: u64,
    pub sweeps: Vec<SweepSummary>,
    /// Pending jobs grouped by why they wait, one line each
    /// (`sweep-2: 3 job(s): no connected agent has a MIG slice of profile 7g.80gb`).
    #[serde(default)]
    pub waiting: Vec<String>,
}

/// One experiment of a sweep, as `lem results list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSummary {
    /// `sweep-<n>/<experiment name>`: the id its aggregate is stored under.
    pub id: String,
    pub sweep: u64,
    pub experiment_name: String,
    pub model: String,
    /// Jobs (cycles) with an accepted result, and all the experiment's jobs.
    pub cycles_accepted: u64,
    pub cycles_total: u64,
    /// `completed` when every job has its accepted result, `running` while some are
    /// open, `incomplete` when the sweep ended without some.
    pub status: String,
}

/// How many bytes of records or results one reply page carries at most (a single item
/// larger than this goes alone, up to the frame limit): far below
/// [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES), so a page never nears it.
pub const RESULTS_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// One experiment of a sweep as the results commands read it: what the embedded store
/// keeps in its experiment record, and the stored aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultExperiment {
    /// `sweep-<n>/<experiment name>`.
    pub id: String,
    pub config_name: String,
    pub model_name: String,
    /// The resolved experiment config (JSON of `ExperimentConfig`).
    pub config: serde_json::Value,
    /// The experiment's jobs (one per cycle).
    pub cycles_planned: u32,
    /// `completed`, `running`, `failed` or `interrupted` (cancelled).
    pub status: String,
    /// Why it failed, from its jobs' errors.
    pub error: Option<String>,
    /// When its first accepted cycle started (RFC 3339), empty without one.
    pub created_at: String,
    /// Where it came from, for display.
    pub origin: String,
    /// The stored aggregate (the coordinator's aggregate type, as JSON), if any; always
    /// `None` when the request's selection left aggregates out.
    pub aggregate: Option<serde_json::Value>,
    /// Cycles with an accepted result. `None` from a coordinator built before it was
    /// sent (not zero: unknown).
    #[serde(default)]
    pub cycles_accepted: Option<u32>,
}

/// Which experiments a `ResultRecords` listing carries, so a command that reads a few
/// does not fetch every record. The default takes every experiment with its aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecordSelection {
    /// Experiment ids or id prefixes: an experiment is taken when its id starts with one
    /// of them (so the CLI can tell a unique prefix from an ambiguous one). Empty: any id.
    #[serde(default)]
    pub id_prefixes: Vec<String>,
    /// Only the experiments of this config-name sweep ([`in_sweep`]).
    #[serde(default)]
    pub sweep: Option<String>,
    /// Leave every stored aggregate out (`results list` reads none).
    #[serde(default)]
    pub without_aggregates: bool,
}

impl RecordSelection {
    /// The experiments whose ids start with one of `prefixes` (an exact id is a prefix
    /// of itself), with their aggregates.
    pub fn ids(prefixes: impl IntoIterator<Item = String>) -> Self {
        Self {
            id_prefixes: prefixes.into_iter().collect(),
            ..Self::default()
        }
    }

    /// True when the experiment `id` with config name `config_name` is selected.
    pub fn takes(&self, id: &str, config_name: &str) -> bool {
        let id_taken = self.id_prefixes.is_empty()
            || self.id_prefixes.iter().any(|p| id.starts_with(p.as_str()));
        id_taken
            && self
                .sweep
                .as_deref()
                .is_none_or(|sweep| in_sweep(config_name, sweep))
    }
}

/// True when `config_name` is config-name sweep `sweep`'s base or one of its grid points
/// (`sweep__…`, as `lem config generate-grid` names them).
pub fn in_sweep(config_name: &str, sweep: &str) -> bool {
    config_name == sweep
        || config_name
            .strip_prefix(sweep)
            .is_some_and(|rest| rest.starts_with("__"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_its_base_and_the_grid_points_named_after_it() {
        assert!(in_sweep("base-exp", "base-exp"));
        assert!(in_sweep(
            "base-exp__batch_size-4__fp_precision-float16",
            "base-exp"
        ));
        // Another config that only starts with the same letters is not in it.
        assert!(!in_sweep("base-exp2__batch_size-4", "base-exp"));
        assert!(!in_sweep("base", "base-exp"));
    }

    #[test]
    fn a_selection_takes_ids_by_prefix_within_its_sweep() {
        let every = RecordSelection::default();
        assert!(every.takes("sweep-0/a", "a"));
        let prefixes = RecordSelection {
            id_prefixes: vec!["sweep-0/c00".into(), "sweep-1/x".into()],
            ..RecordSelection::default()
        };
        assert!(prefixes.takes("sweep-0/c001", "c001"));
        assert!(prefixes.takes("sweep-1/x", "x"));
        assert!(!prefixes.takes("sweep-0/c010", "c010"));
        assert!(!prefixes.takes("sweep-2/x", "x"));
        let grid = RecordSelection {
            sweep: Some("base".into()),
            ..RecordSelection::default()
        };
        assert!(grid.takes("sweep-3/base__batch_size-2", "base__batch_size-2"));
        assert!(!grid.takes("sweep-3/base2", "base2"));
        // Both filters hold at once.
        let both = RecordSelection {
            id_prefixes: vec!["sweep-3/".into()],
            sweep: Some("base".into()),
            without_aggregates: true,
        };
        assert!(both.takes("sweep-3/base", "base"));
        assert!(!both.takes("sweep-4/base", "base"));
    }
}

/// One aggregate an `AggregateSweep` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatedExperiment {
    pub id: String,
    /// Accepted cycles it covers.
    pub cycles: u32,
    /// Whether it covers every planned cycle.
    pub complete: bool,
}
