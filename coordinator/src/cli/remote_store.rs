//! A private, temporary store holding a coordinator's results as the embedded store
//! keeps them: the record and stored aggregate of each sweep experiment a command
//! selects (the coordinator sends only those), and (for the ids asked for) its accepted
//! results. `lem --coordinator X results compare|export|table`,
//! `results show --raw` and `report` run the embedded command code on it, so their
//! output is the embedded output by construction.

use super::remote::{unexpected, Remote};
use super::CliError;
use crate::embedded::StoreHandle;
use crate::store::{ExperimentRecord, ExperimentStatus, Store, StoreError};
use lem_common::domain::fingerprint;
use lem_common::wire::cli::{CliReply, CliRequest, RecordSelection, ResultExperiment};
use std::collections::BTreeMap;
use std::time::Duration;

/// Pages of one listing a coordinator may send before lem stops asking: a bound on the
/// request loop (a page carries up to 8 MiB, so this is 64 GiB).
const MAX_PAGES: usize = 8192;

/// The coordinator's records, loaded. The folder is removed when this is dropped.
pub struct RemoteStore {
    _dir: tempfile::TempDir,
    pub handle: StoreHandle,
    /// Each loaded experiment's accepted cycles, as its record says (none from a
    /// coordinator built before records carried them).
    pub cycles_accepted: BTreeMap<String, Option<u32>>,
}

impl RemoteStore {
    /// The experiment records (and, unless `select` leaves them out, stored aggregates)
    /// that `select` takes on the coordinator at `remote`.
    pub fn load_records(remote: &Remote, select: &RecordSelection) -> Result<Self, CliError> {
        let dir = tempfile::Builder::new()
            .prefix("lem-remote-results-")
            .tempdir()
            .map_err(|e| CliError::failure(format!("cannot make a temporary store: {e}")))?;
        let handle = StoreHandle {
            coordinator: Some(remote.target().to_owned()),
            ..StoreHandle::new(dir.path())
        };
        let mut loaded = Self {
            _dir: dir,
            handle,
            cycles_accepted: BTreeMap::new(),
        };
        let store = loaded.open()?;
        for e in fetch_records(remote, select)? {
            loaded
                .cycles_accepted
                .insert(e.id.clone(), e.cycles_accepted);
            store.create_experiment(&record_from_wire(&e)?)?;
            if let Some(agg) = &e.aggregate {
                store.put_aggregate(&e.id, agg)?;
            }
        }
        Ok(loaded)
    }

    /// Adds the accepted results of each experiment in `ids` (exact ids).
    pub fn load_accepted(&self, remote: &Remote, ids: &[String]) -> Result<(), CliError> {
        let store = self.open()?;
        for id in ids {
            let mut after_cycle: Option<u32> = None;
            let mut done = false;
            for _ in 0..MAX_PAGES {
                let request = CliRequest::AcceptedResults {
                    id: id.clone(),
                    after_cycle,
                };
                let (results, more) = match remote.request(&request)? {
                    CliReply::AcceptedResults { results, more, .. } => (results, more),
                    other => return Err(unexpected(request.name(), &other)),
                };
                for raw in &results {
                    if raw.experiment_id != *id {
                        return Err(CliError::failure(format!(
                            "the coordinator at {} sent a result of `{}` when asked for `{id}`",
                            remote.target(),
                            raw.experiment_id
                        )));
                    }
                    store.put_raw(raw)?;
                }
                match (more, results.last()) {
                    (true, Some(last)) => after_cycle = Some(last.cycle),
                    _ => {
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                return Err(too_many_pages(remote, "accepted results"));
            }
        }
        Ok(())
    }

    fn open(&self) -> Result<Store, StoreError> {
        Store::open(&self.handle.data_dir, Duration::from_secs(5))
    }
}

/// The records `select` takes, every page of them. Says on the log (`-v`) how many came:
/// what a selection saved is visible.
pub fn fetch_records(
    remote: &Remote,
    select: &RecordSelection,
) -> Result<Vec<ResultExperiment>, CliError> {
    let mut records: Vec<ResultExperiment> = Vec::new();
    let mut after: Option<String> = None;
    for page in 1..=MAX_PAGES {
        let request = CliRequest::ResultRecords {
            after: after.clone(),
            select: select.clone(),
        };
        let (experiments, more) = match remote.request(&request)? {
            CliReply::ResultRecords { experiments, more } => (experiments, more),
            other => return Err(unexpected(request.name(), &other)),
        };
        records.extend(experiments);
        match (more, records.last()) {
            (true, Some(last)) => after = Some(last.id.clone()),
            _ => {
                tracing::info!(
                    records = records.len(),
                    pages = page,
                    "fetched {} experiment record(s) from the coordinator",
                    records.len()
                );
                return Ok(records);
            }
        }
    }
    Err(too_many_pages(remote, "experiment records"))
}

fn too_many_pages(remote: &Remote, what: &str) -> CliError {
    CliError::failure(format!(
        "the coordinator at {} kept sending pages of {what} ({MAX_PAGES} pages); stopped",
        remote.target()
    ))
}

/// The embedded store's record for a coordinator's experiment. It ran in no process of
/// this machine: no pid or host.
pub fn record_from_wire(e: &ResultExperiment) -> Result<ExperimentRecord, CliError> {
    let status = match e.status.as_str() {
        "completed" => ExperimentStatus::Completed,
        "running" => ExperimentStatus::Running,
        "failed" => ExperimentStatus::Failed,
        "interrupted" => ExperimentStatus::Interrupted,
        "partial" => ExperimentStatus::Partial,
        other => {
            return Err(CliError::failure(format!(
                "the coordinator sent experiment {} with an unknown status `{other}`",
                e.id
            )))
        }
    };
    Ok(ExperimentRecord {
        id: e.id.clone(),
        config_name: e.config_name.clone(),
        model_name: e.model_name.clone(),
        config_fingerprint: fingerprint(&e.config),
        effective_config: e.config.clone(),
        cli_overrides: BTreeMap::new(),
        num_cycles: e.cycles_planned,
        status,
        created_at: e.created_at.clone(),
        updated_at: e.created_at.clone(),
        pid: 0,
        hostname: String::new(),
        error: e.error.clone(),
        error_chain: Vec::new(),
        origin: e.origin.clone(),
        until_ci: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(status: &str) -> ResultExperiment {
        ResultExperiment {
            id: "sweep-2/alpha".into(),
            config_name: "alpha".into(),
            model_name: "m".into(),
            config: serde_json::json!({ "model_name": "m", "batching_options": { "batch_size": 4 } }),
            cycles_planned: 3,
            status: status.into(),
            error: Some("1 of 3 cycles failed; cycle 2: boom".into()),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            origin: "sweep `grid` (sweep-2)".into(),
            aggregate: None,
            cycles_accepted: Some(2),
        }
    }

    #[test]
    fn a_wire_experiment_becomes_the_record_embedded_commands_read() {
        let e = wire("failed");
        let rec = record_from_wire(&e).unwrap();
        assert_eq!(rec.id, e.id);
        assert_eq!(rec.config_name, e.config_name);
        assert_eq!(rec.model_name, e.model_name);
        assert_eq!(rec.effective_config, e.config);
        assert_eq!(rec.config_fingerprint, fingerprint(&e.config));
        assert_eq!(rec.num_cycles, 3);
        assert_eq!(rec.status, ExperimentStatus::Failed);
        assert_eq!(rec.error, e.error);
        assert_eq!(rec.created_at, e.created_at);
        assert_eq!(rec.origin, e.origin);
        // It ran on no process of this machine.
        assert_eq!((rec.pid, rec.hostname.as_str()), (0, ""));
        for (text, status) in [
            ("completed", ExperimentStatus::Completed),
            ("running", ExperimentStatus::Running),
            ("interrupted", ExperimentStatus::Interrupted),
            ("partial", ExperimentStatus::Partial),
        ] {
            assert_eq!(record_from_wire(&wire(text)).unwrap().status, status);
        }
    }

    #[test]
    fn an_unknown_status_is_refused_naming_the_experiment() {
        let err = record_from_wire(&wire("exploded")).unwrap_err().to_string();
        assert!(
            err.contains("sweep-2/alpha") && err.contains("`exploded`"),
            "{err}"
        );
    }
}
