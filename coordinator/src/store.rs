//! The embedded store (sled): experiments, immutable raw results, derived aggregates.
//!
//! Layout (one sled tree each):
//! - `experiments`: experiment id → [`ExperimentRecord`] (JSON)
//! - `raw`: `"{experiment}/{cycle:04}/{attempt:04}"` → [`RawResult`] (JSON); written once,
//!   never overwritten
//! - `aggregates`: experiment id → aggregate (JSON); derived, may be recomputed
//!
//! Every write is flushed before the call returns, so a run reported done is on disk.
//! sled holds an exclusive lock on the directory while open, so embedded runs open the
//! store briefly for each commit; readers in another terminal then wait at most a moment.

use lem_common::domain::{OverrideRecord, RawResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the result store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the result store at {path} is in use by another lem process (waited {waited_s} s); try again when it finishes")]
    Locked { path: PathBuf, waited_s: u64 },
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
    #[error("no experiment `{id}` in the result store at {}", .path.display())]
    UnknownExperiment { id: String, path: PathBuf },
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
}

/// Lifecycle of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentStatus {
    /// A process is (or was, if it died) running it.
    Running,
    /// Stopped by Ctrl+C / SIGTERM with its state saved.
    Interrupted,
    Completed,
    /// Every cycle ran, but an external server (`engine: openai`) failed some requests:
    /// the results cover the successful ones (`RawResult::server` lists the failures).
    Partial,
    Failed,
}

impl ExperimentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Completed => "completed",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }

    /// Every cycle has its result (some requests may have failed: `Partial`).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Partial)
    }
}

/// Everything needed to resume an experiment and to label its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    pub id: String,
    pub config_name: String,
    pub model_name: String,
    /// Hash of the effective config without cycle count; finds matching incomplete runs.
    pub config_fingerprint: String,
    pub effective_config: serde_json::Value,
    pub cli_overrides: BTreeMap<String, OverrideRecord>,
    pub num_cycles: u32,
    pub status: ExperimentStatus,
    pub created_at: String,
    pub updated_at: String,
    /// PID and host of the process that last ran it (to tell a live run from a dead one).
    pub pid: u32,
    pub hostname: String,
    /// Why it failed: the top-level message.
    pub error: Option<String>,
    /// The causes under `error`, outermost first (empty for records written before
    /// lem stored them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_chain: Vec<String>,
    /// Where the config came from (file path or preset), for display.
    pub origin: String,
}

pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

/// The sled directory inside a data dir.
const STORE_DIR: &str = "lem.sled";
const EXPERIMENTS: &str = "experiments";
const RAW: &str = "raw";
const AGGREGATES: &str = "aggregates";

pub fn raw_key(experiment_id: &str, cycle: u32, attempt: u32) -> String {
    format!("{experiment_id}/{cycle:04}/{attempt:04}")
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`, waiting up to `wait` for
    /// another lem process to release it.
    pub fn open(data_dir: &Path, wait: Duration) -> Result<Store, StoreError> {
        let path = data_dir.join(STORE_DIR);
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: sled::Error::Io(e),
        })?;
        Self::open_path(path, wait)
    }

    /// Opens the store under `data_dir` only if it exists: read-only commands never
    /// create a data dir.
    pub fn open_existing(data_dir: &Path, wait: Duration) -> Result<Store, StoreError> {
        let path = data_dir.join(STORE_DIR);
        if !path.is_dir() {
            return Err(StoreError::NoStore {
                path: display_path(data_dir),
            });
        }
        Self::open_path(path, wait)
    }

    fn open_path(path: PathBuf, wait: Duration) -> Result<Store, StoreError> {
        let started = Instant::now();
        loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => return Ok(Store { db, path }),
                Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                    if started.elapsed() >= wait {
                        return Err(StoreError::Locked {
                            path,
                            waited_s: wait.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => return Err(StoreError::Open { path, source }),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn put_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        let tree = self.db.open_tree(EXPERIMENTS)?;
        tree.insert(rec.id.as_bytes(), to_json(rec))?;
        tree.flush()?;
        Ok(())
    }

    pub fn experiment(&self, id: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        let tree = self.db.open_tree(EXPERIMENTS)?;
        match tree.get(id.as_bytes())? {
            Some(v) => Ok(Some(from_json(EXPERIMENTS, id, &v)?)),
            None => Ok(None),
        }
    }

    /// Finds an experiment by full id or unique prefix.
    pub fn find_experiment(&self, id_or_prefix: &str) -> Result<ExperimentRecord, StoreError> {
        if let Some(rec) = self.experiment(id_or_prefix)? {
            return Ok(rec);
        }
        let tree = self.db.open_tree(EXPERIMENTS)?;
        let mut matches = Vec::new();
        for item in tree.scan_prefix(id_or_prefix.as_bytes()) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            matches.push(from_json::<ExperimentRecord>(EXPERIMENTS, &key, &v)?);
        }
        match matches.len() {
            0 => Err(StoreError::UnknownExperiment {
                id: id_or_prefix.to_string(),
                path: display_path(&self.path),
            }),
            1 => Ok(matches.remove(0)),
            _ => Err(StoreError::AmbiguousExperiment {
                prefix: id_or_prefix.to_string(),
                matches: matches.into_iter().map(|m| m.id).collect(),
            }),
        }
    }

    /// All experiments, oldest first (ids sort by creation time).
    pub fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError> {
        let tree = self.db.open_tree(EXPERIMENTS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(from_json(EXPERIMENTS, &key, &v)?);
        }
        Ok(out)
    }

    /// Stores one attempt's raw result. Refuses to overwrite: raw results are immutable.
    pub fn put_raw(&self, raw: &RawResult) -> Result<(), StoreError> {
        let tree = self.db.open_tree(RAW)?;
        let key = raw_key(&raw.experiment_id, raw.cycle, raw.attempt);
        let swapped =
            tree.compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(to_json(raw)))?;
        if swapped.is_err() {
            return Err(StoreError::RawExists { key });
        }
        tree.flush()?;
        Ok(())
    }

    /// Raw results of one experiment in (cycle, attempt) order.
    pub fn raw_results(&self, experiment_id: &str) -> Result<Vec<RawResult>, StoreError> {
        let tree = self.db.open_tree(RAW)?;
        let prefix = format!("{experiment_id}/");
        let mut out = Vec::new();
        for item in tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(from_json(RAW, &key, &v)?);
        }
        Ok(out)
    }

    /// Cycles with at least one stored attempt, ascending. Read from the keys alone,
    /// without deserialising the results.
    pub fn raw_cycles(&self, experiment_id: &str) -> Result<Vec<u32>, StoreError> {
        let tree = self.db.open_tree(RAW)?;
        let prefix = format!("{experiment_id}/");
        let mut cycles = Vec::new();
        for key in tree.scan_prefix(prefix.as_bytes()).keys() {
            let key = key?;
            let rest = &key[prefix.len()..];
            // Key layout: see `raw_key`.
            let cycle = std::str::from_utf8(rest)
                .ok()
                .and_then(|r| r.split('/').next())
                .and_then(|c| c.parse::<u32>().ok());
            match cycle {
                Some(c) => cycles.push(c),
                None => {
                    return Err(StoreError::BadKey {
                        tree: RAW,
                        key: String::from_utf8_lossy(&key).into_owned(),
                    })
                }
            }
        }
        cycles.dedup();
        Ok(cycles)
    }

    pub fn put_aggregate<T: Serialize>(
        &self,
        experiment_id: &str,
        agg: &T,
    ) -> Result<(), StoreError> {
        let tree = self.db.open_tree(AGGREGATES)?;
        tree.insert(experiment_id.as_bytes(), to_json(agg))?;
        tree.flush()?;
        Ok(())
    }

    pub fn aggregate<T: for<'de> Deserialize<'de>>(
        &self,
        experiment_id: &str,
    ) -> Result<Option<T>, StoreError> {
        let tree = self.db.open_tree(AGGREGATES)?;
        match tree.get(experiment_id.as_bytes())? {
            Some(v) => Ok(Some(from_json(AGGREGATES, experiment_id, &v)?)),
            None => Ok(None),
        }
    }
}

/// `path` made absolute (without resolving links) so a message names the store
/// whatever directory the user stands in.
fn display_path(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn is_lock_error(e: &std::io::Error) -> bool {
    // sled reports a held `flock` as WouldBlock ("could not acquire lock").
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.raw_os_error() == Some(libc::EWOULDBLOCK)
        || e.to_string().contains("lock")
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records are plain data and always serialise")
}

fn from_json<T: for<'de> Deserialize<'de>>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::raw_result;

    const WAIT: Duration = Duration::from_secs(5);

    fn record(id: &str, status: ExperimentStatus) -> ExperimentRecord {
        ExperimentRecord {
            id: id.to_string(),
            config_name: "c".into(),
            model_name: "m".into(),
            config_fingerprint: "fp".into(),
            effective_config: serde_json::json!({"model_name": "m"}),
            cli_overrides: BTreeMap::new(),
            num_cycles: 2,
            status,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            pid: 1,
            hostname: "h".into(),
            error: None,
            error_chain: Vec::new(),
            origin: "test".into(),
        }
    }

    #[test]
    fn raw_results_are_written_once_and_read_back_in_cycle_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        // Stored out of order; read back by cycle.
        for cycle in [1, 0] {
            store
                .put_raw(&raw_result("exp_a", cycle, 4, 1_000))
                .unwrap();
        }
        store.put_raw(&raw_result("exp_b", 0, 4, 1_000)).unwrap();
        let again = store
            .put_raw(&raw_result("exp_a", 1, 9, 2_000))
            .unwrap_err();
        assert!(
            matches!(&again, StoreError::RawExists { key } if key == &raw_key("exp_a", 1, 0)),
            "{again}"
        );
        let back = store.raw_results("exp_a").unwrap();
        let cycles: Vec<u32> = back.iter().map(|r| r.cycle).collect();
        assert_eq!(cycles, [0, 1]);
        // The refused overwrite left the first value.
        assert_eq!(back[1].wall_ns, 1_000);
        assert_eq!(store.raw_cycles("exp_a").unwrap(), [0, 1]);
        assert_eq!(store.raw_cycles("exp_b").unwrap(), [0]);
        assert!(store.raw_cycles("exp_c").unwrap().is_empty());
    }

    #[test]
    fn experiments_are_found_by_id_or_unique_prefix_and_misses_name_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        store
            .put_experiment(&record(
                "exp_20260101_000000_aaaaaa",
                ExperimentStatus::Completed,
            ))
            .unwrap();
        store
            .put_experiment(&record(
                "exp_20260101_000000_aabbbb",
                ExperimentStatus::Failed,
            ))
            .unwrap();
        assert_eq!(
            store.find_experiment("exp_20260101_000000_aab").unwrap().id,
            "exp_20260101_000000_aabbbb"
        );
        let ambiguous = store.find_experiment("exp_20260101_000000_aa").unwrap_err();
        assert!(
            matches!(ambiguous, StoreError::AmbiguousExperiment { ref matches, .. } if matches.len() == 2)
        );
        let missing = store.find_experiment("exp_nope").unwrap_err().to_string();
        let store_path = std::path::absolute(dir.path().join("lem.sled")).unwrap();
        assert_eq!(
            missing,
            format!(
                "no experiment `exp_nope` in the result store at {}",
                store_path.display()
            )
        );
        let ids: Vec<String> = store
            .experiments()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            ids,
            ["exp_20260101_000000_aaaaaa", "exp_20260101_000000_aabbbb"]
        );
    }

    #[test]
    fn a_failed_record_keeps_its_error_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        let mut rec = record("exp_f", ExperimentStatus::Failed);
        rec.error = Some("experiment exp_f cycle 1: model `m`: bad".into());
        rec.error_chain = vec!["unexpected end of file".into()];
        store.put_experiment(&rec).unwrap();
        assert_eq!(store.experiment("exp_f").unwrap(), Some(rec));
    }

    #[test]
    fn records_from_before_error_chains_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        let mut old = serde_json::to_value(record("exp_old", ExperimentStatus::Failed)).unwrap();
        old.as_object_mut().unwrap().remove("error_chain");
        let tree = store.db.open_tree(EXPERIMENTS).unwrap();
        tree.insert("exp_old", serde_json::to_vec(&old).unwrap())
            .unwrap();
        let back = store.experiment("exp_old").unwrap().unwrap();
        assert!(back.error_chain.is_empty());
    }

    #[test]
    fn opening_for_reading_never_creates_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("results");
        let err = Store::open_existing(&data, WAIT)
            .err()
            .expect("no store yet");
        assert!(
            matches!(&err, StoreError::NoStore { path } if path.ends_with("results")),
            "{err}"
        );
        assert!(!data.exists(), "a read created {}", data.display());
        // Once a run created it, readers open it.
        drop(Store::open(&data, WAIT).unwrap());
        assert!(Store::open_existing(&data, WAIT).is_ok());
    }

    #[test]
    fn aggregates_are_replaced_when_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        assert_eq!(store.aggregate::<serde_json::Value>("exp").unwrap(), None);
        store
            .put_aggregate("exp", &serde_json::json!({"n": 1}))
            .unwrap();
        store
            .put_aggregate("exp", &serde_json::json!({"n": 2}))
            .unwrap();
        assert_eq!(
            store.aggregate::<serde_json::Value>("exp").unwrap(),
            Some(serde_json::json!({"n": 2}))
        );
    }
}
