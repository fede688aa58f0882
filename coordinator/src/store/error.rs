//! Why a store operation failed. Each variant names the tree, key or id involved.

use crate::scheduler::{AgentId, AttemptId, JobId};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the result store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the result store at {path} is in use by another lem process (waited {waited_s} s); try again when it finishes")]
    Locked { path: PathBuf, waited_s: u64 },
    /// Found at once (no wait): the lock is held and the data dir names a server's address.
    #[error(
        "the result store at {path} is held by `lem serve` at {addr}; go through it with \
         `lem --coordinator {addr} results …` (or stop the server)"
    )]
    HeldByServer { path: PathBuf, addr: String },
    #[error("result store IO error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record `{key}` in store tree `{tree}`: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("malformed key `{key}` in store tree `{tree}`")]
    BadKey { tree: &'static str, key: String },
    #[error("raw result {key} already exists; raw results are immutable")]
    RawExists { key: String },
    #[error(
        "experiment `{id}` already exists in the result store; experiment records are created once"
    )]
    ExperimentExists { id: String },
    #[error("no experiment `{id}` in the result store at {}", .path.display())]
    UnknownExperiment { id: String, path: PathBuf },
    #[error("experiment `{id}`: an update may change its status and run fields, not `{field}`")]
    ExperimentIdentityChanged { id: String, field: &'static str },
    #[error(
        "no result store at {}: nothing has run with this data dir yet (--data-dir or LEM_DATA_DIR; default ./results under the current directory)",
        .path.display()
    )]
    NoStore { path: PathBuf },
    #[error("experiment id `{prefix}` is ambiguous: {matches:?}")]
    AmbiguousExperiment {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("{record} for {attempt} needs the result body, and the driver holds none")]
    MissingResultBody {
        record: &'static str,
        attempt: AttemptId,
    },
    #[error("{record} names {attempt}, which the store has no AttemptStarted record for")]
    UnknownAttempt {
        record: &'static str,
        attempt: AttemptId,
    },
    /// Two schedulers wrote one store, or a record was replayed into it: the log would
    /// no longer recover.
    #[error("{record}: {id} already exists in the store; refusing a second record for it (is another scheduler writing this store?)")]
    IdReused { record: &'static str, id: String },
    #[error("AttemptEnded: {attempt} already ended")]
    AttemptAlreadyEnded { attempt: AttemptId },
    #[error("{job} already has accepted {accepted}; refusing to accept {attempt} as well")]
    AcceptedTwice {
        job: JobId,
        accepted: AttemptId,
        attempt: AttemptId,
    },
    #[error("agent `{agent}` is already enrolled")]
    AgentExists { agent: AgentId },
}
