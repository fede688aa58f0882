//! How values and keys are laid out in sled: JSON values, big-endian integer keys (so
//! sled's byte order is numeric order), and the tree names.

use super::error::StoreError;
use serde::{Deserialize, Serialize};

pub(super) const EXPERIMENTS: &str = "experiments";
pub(super) const RAW: &str = "raw";
pub(super) const AGGREGATES: &str = "aggregates";
/// The scheduler's durable log: sequence number → `Record`.
pub(super) const RECORDS: &str = "records";
pub(super) const SWEEPS: &str = "sweeps";
pub(super) const JOBS: &str = "jobs";
pub(super) const ATTEMPTS: &str = "attempts";
/// Result bodies by attempt, accepted or superseded.
pub(super) const RESULTS: &str = "results";
/// Job → its one accepted attempt.
pub(super) const ACCEPTED: &str = "accepted";
pub(super) const AGENTS: &str = "agents";
pub(super) const JOIN_TOKENS: &str = "join_tokens";

pub(super) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records are plain data and always serialise")
}

pub(super) fn from_json<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: key.to_string(),
        source,
    })
}

pub(super) fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub(super) fn key_u64(tree: &'static str, key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::BadKey {
        tree,
        key: format!("{key:02x?}"),
    })?;
    Ok(u64::from_be_bytes(bytes))
}
