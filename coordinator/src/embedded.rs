//! Embedded mode's experiment records: creating them, their status, finding runs to
//! resume, recording failures, and late aggregation from the `raw` tree. The cycles
//! themselves run as sweeps on the driver (`crate::embedded_run`).

use crate::aggregate::{aggregate_experiment, ExperimentAggregate};
use crate::embedded_run::ExperimentEnd;
use crate::store::{ExperimentRecord, ExperimentStatus, Store, StoreError};
use lem_agent::runner::RunError;
use lem_common::config::{ExperimentConfig, ResolvedConfig};
use lem_common::domain::fingerprint;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a command waits for another lem process holding the store.
const STORE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `cycle` counts from 0 as stored; people read cycles from 1.
    #[error("experiment {id} cycle {}: {source}", .cycle + 1)]
    Run {
        id: String,
        cycle: u32,
        source: Box<RunError>,
    },
    /// A job failed without a runner error (the scheduler's account of it).
    #[error("experiment {id} cycle {}: {message}", .cycle + 1)]
    Job {
        id: String,
        cycle: u32,
        message: String,
    },
    #[error("experiment {id}: stored config no longer parses: {source}")]
    StoredConfig {
        id: String,
        source: serde_json::Error,
    },
}

/// The store under a data dir, opened briefly for each operation so other lem processes
/// (e.g. `lem results list` in another terminal) can read between commits.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    pub data_dir: PathBuf,
    /// `Some(HOST:PORT)` when this store is a private copy of a coordinator's records
    /// (`lem --coordinator`): messages and hints then name the coordinator.
    pub coordinator: Option<String>,
}

impl StoreHandle {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            coordinator: None,
        }
    }
    /// Opens the store (creating the data dir if needed) for one operation.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let store = Store::open(&self.data_dir, STORE_WAIT)?;
        f(&store)
    }

    /// Like [`with`](Self::with), but fails with [`StoreError::NoStore`] instead of
    /// creating a data dir: for commands that only read.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let store = Store::open_existing(&self.data_dir, STORE_WAIT)?;
        f(&store)
    }
}

/// The driver reaches the store the way embedded mode does: one open per operation.
impl crate::driver::StoreAccess for StoreHandle {
    fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(f)
    }
}

/// Fingerprint used to find an earlier incomplete run of the same experiment: the
/// effective config without its cycle count.
pub fn config_fingerprint(cfg: &ExperimentConfig) -> String {
    let mut json = cfg.to_json();
    if let Some(obj) = json.as_object_mut() {
        obj.remove("num_cycles");
    }
    fingerprint(&json)
}

pub fn new_experiment_id() -> String {
    let now = chrono::Utc::now();
    // Time-ordered, so ids sort by creation; a random tail keeps parallel starts apart.
    let nanos = now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16);
    format!(
        "exp_{}_{:06x}",
        now.format("%Y%m%d_%H%M%S"),
        nanos & 0xff_ffff
    )
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Creates and stores a new experiment record (status running).
pub fn create_experiment(
    store: &StoreHandle,
    resolved: &ResolvedConfig,
    origin: &str,
) -> Result<ExperimentRecord, EmbeddedError> {
    let cfg = &resolved.config;
    let now = now_rfc3339();
    let mut rec = ExperimentRecord {
        id: new_experiment_id(),
        config_name: cfg.config_name.clone(),
        model_name: cfg.model_name.clone(),
        config_fingerprint: config_fingerprint(cfg),
        effective_config: cfg.to_json(),
        cli_overrides: resolved.cli_overrides.clone(),
        num_cycles: cfg.num_cycles,
        status: ExperimentStatus::Running,
        created_at: now.clone(),
        updated_at: now,
        pid: std::process::id(),
        hostname: lem_agent::sysinfo::hostname(),
        error: None,
        error_chain: Vec::new(),
        origin: origin.to_string(),
        until_ci: None,
    };
    // The store refuses an existing id; a parallel start that drew the same id in the
    // same second draws again (bounded: ids differ by the clock's nanoseconds).
    for _ in 0..3 {
        match store.with(|s| s.create_experiment(&rec)) {
            Err(StoreError::ExperimentExists { .. }) => rec.id = new_experiment_id(),
            other => return other.map(|()| rec).map_err(Into::into),
        }
    }
    store.with(|s| s.create_experiment(&rec))?;
    Ok(rec)
}

/// True when the record says running but its process is gone (killed, crashed).
pub fn is_dead_run(rec: &ExperimentRecord) -> bool {
    rec.status == ExperimentStatus::Running
        && (rec.hostname != lem_agent::sysinfo::hostname() || !pid_alive(rec.pid))
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// True when the run stopped from outside (Ctrl+C, kill, crash) rather than on its own
/// input or an error: only such runs are offered for resuming.
pub fn is_resumable(rec: &ExperimentRecord) -> bool {
    rec.status == ExperimentStatus::Interrupted || is_dead_run(rec)
}

/// Interrupted or killed experiments with the same config, oldest first. Failed runs
/// are not offered: running them again would fail the same way.
pub fn incomplete_matches(
    store: &StoreHandle,
    cfg: &ExperimentConfig,
) -> Result<Vec<(ExperimentRecord, u32)>, EmbeddedError> {
    let fp = config_fingerprint(cfg);
    let mut out = Vec::new();
    // Nothing stored yet means nothing to resume; do not create the data dir for it.
    let recs = match store.read(|s| s.experiments()) {
        Ok(recs) => recs,
        Err(StoreError::NoStore { .. }) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for rec in recs {
        if rec.config_fingerprint == fp && is_resumable(&rec) {
            let done = completed_cycles(store, &rec.id)?.len() as u32;
            out.push((rec, done));
        }
    }
    Ok(out)
}

/// Cycles of an experiment that already have a stored raw result.
pub fn completed_cycles(store: &StoreHandle, id: &str) -> Result<Vec<u32>, EmbeddedError> {
    Ok(store.with(|s| s.raw_cycles(id))?)
}

/// How a run whose every cycle finished ends: `Partial` when an external server failed
/// any request of any cycle, else `Completed`.
pub fn finished_status(
    store: &StoreHandle,
    rec: &ExperimentRecord,
) -> Result<ExperimentStatus, EmbeddedError> {
    let raws = store.with(|s| s.raw_results(&rec.id))?;
    let failed = raws
        .iter()
        .filter_map(|r| r.server.as_ref())
        .any(|s| !s.failed_requests.is_empty());
    Ok(if failed {
        ExperimentStatus::Partial
    } else {
        ExperimentStatus::Completed
    })
}

/// Marks a run whose every cycle finished as `finished_status` says.
pub fn mark_finished(store: &StoreHandle, rec: &mut ExperimentRecord) -> Result<(), EmbeddedError> {
    let status = finished_status(store, rec)?;
    set_status(store, rec, status, None)
}

pub fn set_status(
    store: &StoreHandle,
    rec: &mut ExperimentRecord,
    status: ExperimentStatus,
    error: Option<String>,
) -> Result<(), EmbeddedError> {
    rec.status = status;
    rec.error = error;
    rec.error_chain.clear();
    rec.updated_at = now_rfc3339();
    rec.pid = std::process::id();
    rec.hostname = lem_agent::sysinfo::hostname();
    store.with(|s| s.update_experiment(rec))?;
    Ok(())
}

/// Marks `rec` failed, storing the error and its chain of causes so that
/// `lem results show` can say why later.
pub fn record_failure(
    store: &StoreHandle,
    rec: &mut ExperimentRecord,
    err: &(dyn std::error::Error + 'static),
) -> Result<(), EmbeddedError> {
    set_status(store, rec, ExperimentStatus::Failed, Some(err.to_string()))?;
    rec.error_chain = error_chain(err);
    store.with(|s| s.update_experiment(rec))?;
    Ok(())
}

/// The causes under `err`, outermost first. A cause whose text its parent already
/// includes (wrappers that print `{source}`) is left out, so nothing is said twice.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut chain = Vec::new();
    let mut shown = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !shown.contains(&text) {
            shown.push_str(&text);
            chain.push(text);
        }
        next = cause.source();
    }
    chain
}

impl EmbeddedError {
    /// The error an experiment that did not finish ends with (`Finished` and
    /// `Interrupted` are not errors; they read as an interruption here).
    pub fn from_end(id: &str, end: ExperimentEnd) -> Self {
        match end {
            ExperimentEnd::Failed { cycle, error } => Self::Run {
                id: id.to_string(),
                cycle,
                source: Box::new(error),
            },
            ExperimentEnd::FailedWithout { cycle, message } => Self::Job {
                id: id.to_string(),
                cycle,
                message,
            },
            ExperimentEnd::Finished | ExperimentEnd::Interrupted => Self::Run {
                id: id.to_string(),
                cycle: 0,
                source: Box::new(RunError::Interrupted),
            },
        }
    }
    /// True when the run stopped because of Ctrl+C / SIGTERM.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Self::Run { source, .. } if matches!(**source, RunError::Interrupted))
    }
    /// True when the config asked for something lem cannot run (a usage error).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Run { source, .. } if matches!(**source, RunError::Unsupported(_)))
    }
}

/// Aggregates an experiment from its stored raw results and stores the aggregate.
pub fn aggregate_and_store(
    store: &StoreHandle,
    rec: &ExperimentRecord,
) -> Result<ExperimentAggregate, EmbeddedError> {
    let raws = store.with(|s| s.raw_results(&rec.id))?;
    let mut agg = aggregate_experiment(
        &rec.id,
        &rec.config_name,
        &rec.model_name,
        rec.num_cycles,
        &raws,
    );
    agg.until_ci = rec.until_ci.clone();
    store.with(|s| s.put_aggregate(&rec.id, &agg))?;
    Ok(agg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{raw_result, resolved_config};

    fn handle() -> (tempfile::TempDir, StoreHandle) {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::new(&dir.path().join("results"));
        (dir, handle)
    }

    /// A server record for `experiment`'s raw results: `failed` failed requests.
    fn server_with_failures(failed: u32) -> lem_common::server::ServerRecord {
        use lem_common::server::{FailedRequest, FailureKind, ServerRecord};
        ServerRecord {
            endpoint: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            engine_name: None,
            engine_version: None,
            models_response: None,
            models_unavailable_reason: None,
            response_headers: Default::default(),
            max_concurrency: 1,
            requests_sent: 2 + failed,
            failed_requests: (0..failed)
                .map(|i| FailedRequest {
                    index: 2 + i,
                    kind: FailureKind::HttpStatus,
                    reason: "HTTP 500".into(),
                    http_status: Some(500),
                    arrival_offset_ns: None,
                    start_offset_ns: 0,
                    failed_offset_ns: 1,
                    chunks_received: 0,
                })
                .collect(),
            output_tokens_counted_by_lem: vec![],
            input_tokens_counted_by_lem: vec![],
        }
    }

    #[test]
    fn a_run_whose_server_failed_requests_finishes_partial_and_counts_as_finished() {
        let (_dir, store) = handle();
        let resolved = resolved_config("org/model");
        let mut clean = create_experiment(&store, &resolved, "a").unwrap();
        let mut failing = create_experiment(&store, &resolved, "b").unwrap();
        let mut ok = raw_result(&clean.id, 0, 4, 1_000);
        ok.server = Some(server_with_failures(0));
        store.with(|s| s.put_raw(&ok)).unwrap();
        // Cycle 0 clean, cycle 1 with one failed request: the experiment is partial.
        let mut first = raw_result(&failing.id, 0, 4, 1_000);
        first.server = Some(server_with_failures(0));
        let mut second = raw_result(&failing.id, 1, 4, 1_000);
        second.server = Some(server_with_failures(1));
        store.with(|s| s.put_raw(&first)).unwrap();
        store.with(|s| s.put_raw(&second)).unwrap();

        mark_finished(&store, &mut clean).unwrap();
        mark_finished(&store, &mut failing).unwrap();
        let status = |id: &str| store.with(|s| s.find_experiment(id)).unwrap().status;
        assert_eq!(status(&clean.id), ExperimentStatus::Completed);
        assert_eq!(status(&failing.id), ExperimentStatus::Partial);
        assert_eq!(ExperimentStatus::Partial.as_str(), "partial");
        assert!(
            ExperimentStatus::Partial.is_finished() && ExperimentStatus::Completed.is_finished()
        );
        assert!(!ExperimentStatus::Interrupted.is_finished());
        assert!(!is_resumable(
            &store.with(|s| s.find_experiment(&failing.id)).unwrap()
        ));
        // The per-cycle metrics count the failures beside the successes.
        let m = crate::aggregate::job_metrics(&second);
        assert_eq!(
            (m.num_requests, m.failed_requests),
            (second.requests.len() as u64, 1)
        );
    }

    #[test]
    fn a_new_experiment_is_stored_running_by_this_process() {
        let (_dir, store) = handle();
        let resolved = resolved_config("org/model");
        let rec = create_experiment(&store, &resolved, "preset quick-test").unwrap();
        let back = store.with(|s| s.find_experiment(&rec.id)).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.status, ExperimentStatus::Running);
        assert_eq!(back.pid, std::process::id());
        assert_eq!(back.model_name, "org/model");
        assert_eq!(back.num_cycles, resolved.config.num_cycles);
        assert_eq!(back.effective_config, resolved.config.to_json());
        // Running in this (live) process: not dead, not offered for resume.
        assert!(!is_dead_run(&back));
        assert!(!is_resumable(&back));
    }

    #[test]
    fn only_interrupted_or_killed_runs_of_the_same_config_are_offered_for_resume() {
        let (_dir, store) = handle();
        let resolved = resolved_config("org/model");
        let other = resolved_config("org/other");

        let mut interrupted = create_experiment(&store, &resolved, "a").unwrap();
        store
            .with(|s| s.put_raw(&raw_result(&interrupted.id, 0, 4, 1_000)))
            .unwrap();
        set_status(
            &store,
            &mut interrupted,
            ExperimentStatus::Interrupted,
            None,
        )
        .unwrap();

        let mut failed = create_experiment(&store, &resolved, "b").unwrap();
        let err = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad header");
        record_failure(&store, &mut failed, &err).unwrap();

        // A record that says running, from a process that no longer exists.
        let mut killed = create_experiment(&store, &resolved, "c").unwrap();
        killed.hostname = format!("{}-elsewhere", killed.hostname);
        store.with(|s| s.update_experiment(&killed)).unwrap();

        let mut completed = create_experiment(&store, &resolved, "d").unwrap();
        set_status(&store, &mut completed, ExperimentStatus::Completed, None).unwrap();
        let mut other_cfg = create_experiment(&store, &other, "e").unwrap();
        set_status(&store, &mut other_cfg, ExperimentStatus::Interrupted, None).unwrap();

        let offered: Vec<(String, u32)> = incomplete_matches(&store, &resolved.config)
            .unwrap()
            .into_iter()
            .map(|(r, done)| (r.id, done))
            .collect();
        let mut expected = vec![(interrupted.id.clone(), 1), (killed.id.clone(), 0)];
        expected.sort();
        let mut offered_sorted = offered.clone();
        offered_sorted.sort();
        assert_eq!(offered_sorted, expected);
        assert!(!offered.iter().any(|(id, _)| *id == failed.id));
    }

    #[test]
    fn looking_for_runs_to_resume_does_not_create_the_store() {
        let (dir, store) = handle();
        let resolved = resolved_config("org/model");
        assert!(incomplete_matches(&store, &resolved.config)
            .unwrap()
            .is_empty());
        assert!(!dir.path().join("results").exists());
    }

    #[test]
    fn a_failure_is_stored_with_its_causes_and_cleared_by_a_later_status() {
        #[derive(Debug, thiserror::Error)]
        #[error("model `m`: cannot open m.gguf")]
        struct Outer {
            source: std::io::Error,
        }
        let (_dir, store) = handle();
        let mut rec = create_experiment(&store, &resolved_config("m"), "x").unwrap();
        let err = Outer {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        record_failure(&store, &mut rec, &err).unwrap();
        let back = store.with(|s| s.experiment(&rec.id)).unwrap().unwrap();
        assert_eq!(back.status, ExperimentStatus::Failed);
        assert_eq!(back.error.as_deref(), Some("model `m`: cannot open m.gguf"));
        assert_eq!(back.error_chain, ["no such file"]);

        let mut rec = back;
        set_status(&store, &mut rec, ExperimentStatus::Running, None).unwrap();
        let back = store.with(|s| s.experiment(&rec.id)).unwrap().unwrap();
        assert_eq!((back.error, back.error_chain.len()), (None, 0));
    }

    #[test]
    fn a_cause_already_in_its_parents_text_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cycle 1: {source}")]
        struct Wraps {
            source: std::io::Error,
        }
        let err = Wraps {
            source: std::io::Error::other("disk full"),
        };
        assert!(error_chain(&err).is_empty());
    }

    #[test]
    fn run_errors_count_cycles_from_one() {
        let e = EmbeddedError::Run {
            id: "exp_x".into(),
            cycle: 0,
            source: Box::new(RunError::Interrupted),
        };
        assert_eq!(e.to_string(), "experiment exp_x cycle 1: interrupted");
        assert!(e.is_interrupted());
    }

    #[test]
    fn aggregation_reads_the_stored_cycles() {
        let (_dir, store) = handle();
        let mut resolved = resolved_config("m");
        resolved.config.num_cycles = 3;
        let rec = create_experiment(&store, &resolved, "x").unwrap();
        // Two of three cycles: 8 and 16 output tokens over 1 s each.
        store
            .with(|s| s.put_raw(&raw_result(&rec.id, 0, 4, 1_000_000_000)))
            .unwrap();
        store
            .with(|s| s.put_raw(&raw_result(&rec.id, 2, 8, 1_000_000_000)))
            .unwrap();
        assert_eq!(completed_cycles(&store, &rec.id).unwrap(), [0, 2]);
        let agg = aggregate_and_store(&store, &rec).unwrap();
        assert!(!agg.complete);
        assert_eq!(agg.cycles.len(), 2);
        let outputs: Vec<u64> = agg.cycles.iter().map(|c| c.output_tokens).collect();
        assert_eq!(outputs, [2 * 4, 2 * 8]);
        let stored: ExperimentAggregate = store.with(|s| s.aggregate(&rec.id)).unwrap().unwrap();
        assert_eq!(stored.cycles.len(), 2);
    }
}
