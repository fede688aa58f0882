//! The `experiments` tree: one record per experiment, created once; later calls update
//! only its status and run fields, never its identity.

use super::codec::{from_json, to_json, EXPERIMENTS};
use super::error::StoreError;
use super::{display_path, Store};
use lem_common::domain::OverrideRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// `--until-ci`: the stopping rule and how it ended; `num_cycles` is then the
    /// cycles run so far, grown one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ci: Option<crate::until_ci::UntilCiRecord>,
}

impl ExperimentRecord {
    /// The first field that identifies the experiment and differs in `other`.
    fn identity_change(&self, other: &ExperimentRecord) -> Option<&'static str> {
        if self.config_fingerprint != other.config_fingerprint {
            Some("config_fingerprint")
        } else if self.effective_config != other.effective_config {
            Some("effective_config")
        } else if self.created_at != other.created_at {
            Some("created_at")
        } else {
            None
        }
    }
}

impl Store {
    /// Stores a new experiment. Refuses an id that exists: ids are minted once and a
    /// record is never replaced by another experiment's.
    pub fn create_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        let tree = self.tree(EXPERIMENTS)?;
        let swapped =
            tree.compare_and_swap(rec.id.as_bytes(), None as Option<&[u8]>, Some(to_json(rec)))?;
        if swapped.is_err() {
            return Err(StoreError::ExperimentExists { id: rec.id.clone() });
        }
        tree.flush()?;
        Ok(())
    }

    /// Replaces an existing experiment's status and run fields (status, error, pid,
    /// host, `updated_at`). Refuses an unknown id and a change of its config or creation
    /// time.
    pub fn update_experiment(&self, rec: &ExperimentRecord) -> Result<(), StoreError> {
        let tree = self.tree(EXPERIMENTS)?;
        loop {
            let Some(old_bytes) = tree.get(rec.id.as_bytes())? else {
                return Err(StoreError::UnknownExperiment {
                    id: rec.id.clone(),
                    path: display_path(&self.path),
                });
            };
            let old: ExperimentRecord = from_json(EXPERIMENTS, &rec.id, &old_bytes)?;
            if let Some(field) = old.identity_change(rec) {
                return Err(StoreError::ExperimentIdentityChanged {
                    id: rec.id.clone(),
                    field,
                });
            }
            // Compare-and-swap against what was read, so a concurrent update is not lost
            // silently: reread and check again.
            let swapped =
                tree.compare_and_swap(rec.id.as_bytes(), Some(old_bytes), Some(to_json(rec)))?;
            if swapped.is_ok() {
                tree.flush()?;
                return Ok(());
            }
        }
    }

    pub fn experiment(&self, id: &str) -> Result<Option<ExperimentRecord>, StoreError> {
        let tree = self.tree(EXPERIMENTS)?;
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
        let tree = self.tree(EXPERIMENTS)?;
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
        let tree = self.tree(EXPERIMENTS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(from_json(EXPERIMENTS, &key, &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            until_ci: None,
        }
    }

    #[test]
    fn experiments_are_found_by_id_or_unique_prefix_and_misses_name_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        store
            .create_experiment(&record(
                "exp_20260101_000000_aaaaaa",
                ExperimentStatus::Completed,
            ))
            .unwrap();
        store
            .create_experiment(&record(
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
    fn an_experiment_is_created_once_and_a_second_create_leaves_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        let first = record("exp_a", ExperimentStatus::Running);
        store.create_experiment(&first).unwrap();
        let mut other = record("exp_a", ExperimentStatus::Completed);
        other.config_name = "another".into();
        let err = store.create_experiment(&other).unwrap_err();
        assert!(
            matches!(&err, StoreError::ExperimentExists { id } if id == "exp_a"),
            "{err}"
        );
        assert_eq!(store.experiment("exp_a").unwrap(), Some(first));
    }

    #[test]
    fn an_update_changes_status_but_never_identity_and_needs_an_existing_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        let mut rec = record("exp_u", ExperimentStatus::Running);
        let missing = store.update_experiment(&rec).unwrap_err();
        assert!(
            matches!(&missing, StoreError::UnknownExperiment { id, .. } if id == "exp_u"),
            "{missing}"
        );
        store.create_experiment(&rec).unwrap();
        rec.status = ExperimentStatus::Completed;
        rec.updated_at = "2026-01-01T00:05:00.000Z".into();
        store.update_experiment(&rec).unwrap();
        assert_eq!(store.experiment("exp_u").unwrap(), Some(rec.clone()));

        let mut changed = rec.clone();
        changed.effective_config = serde_json::json!({"model_name": "other"});
        let err = store.update_experiment(&changed).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::ExperimentIdentityChanged {
                    field: "effective_config",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.experiment("exp_u").unwrap(), Some(rec));
    }

    #[test]
    fn a_failed_record_keeps_its_error_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), WAIT).unwrap();
        let mut rec = record("exp_f", ExperimentStatus::Failed);
        rec.error = Some("experiment exp_f cycle 1: model `m`: bad".into());
        rec.error_chain = vec!["unexpected end of file".into()];
        store.create_experiment(&rec).unwrap();
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
}
