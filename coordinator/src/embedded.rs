//! Embedded mode: the coordinator's experiment lifecycle and a local agent runner in one
//! process. Creates experiment records, runs the cycles that have no result yet, commits
//! each raw result (flushed) before reporting it, and aggregates late.

use crate::aggregate::{aggregate_experiment, ExperimentAggregate};
use crate::store::{ExperimentRecord, ExperimentStatus, Store, StoreError};
use lem_agent::runner::{JobRunner, RunContext, RunError, RunProgress};
use lem_common::config::{ExperimentConfig, ResolvedConfig};
use lem_common::domain::{fingerprint, job_key, JobSpec, RawResult};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a command waits for another lem process holding the store.
const STORE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("experiment {id} cycle {cycle}: {source}")]
    Run {
        id: String,
        cycle: u32,
        source: Box<RunError>,
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
}

impl StoreHandle {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
        }
    }
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let store = Store::open(&self.data_dir, STORE_WAIT)?;
        f(&store)
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
    let rec = ExperimentRecord {
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
        origin: origin.to_string(),
    };
    store.with(|s| s.put_experiment(&rec))?;
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

/// Experiments with the same config that did not complete and are not running now.
pub fn incomplete_matches(
    store: &StoreHandle,
    cfg: &ExperimentConfig,
) -> Result<Vec<(ExperimentRecord, u32)>, EmbeddedError> {
    let fp = config_fingerprint(cfg);
    let mut out = Vec::new();
    for rec in store.with(|s| s.experiments())? {
        let resumable = matches!(
            rec.status,
            ExperimentStatus::Interrupted | ExperimentStatus::Failed
        ) || is_dead_run(&rec);
        if rec.config_fingerprint == fp && resumable {
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

pub fn set_status(
    store: &StoreHandle,
    rec: &mut ExperimentRecord,
    status: ExperimentStatus,
    error: Option<String>,
) -> Result<(), EmbeddedError> {
    rec.status = status;
    rec.error = error;
    rec.updated_at = now_rfc3339();
    rec.pid = std::process::id();
    rec.hostname = lem_agent::sysinfo::hostname();
    store.with(|s| s.put_experiment(rec))?;
    Ok(())
}

/// Reports each stored cycle to the caller (e.g. to print a line).
pub trait CycleSink {
    fn cycle_started(&mut self, _cycle: u32, _of: u32) {}
    fn cycle_done(&mut self, _raw: &RawResult) {}
    fn progress(&mut self) -> &mut dyn RunProgress;
}

/// Runs every cycle of `rec` that has no stored result. Each raw result is committed
/// (flushed) before the next cycle starts; completed cycles are never re-run.
pub fn run_pending_cycles(
    store: &StoreHandle,
    rec: &ExperimentRecord,
    runner: &mut JobRunner,
    ctx: &RunContext,
    sink: &mut dyn CycleSink,
) -> Result<(), EmbeddedError> {
    let cfg: ExperimentConfig =
        serde_json::from_value(rec.effective_config.clone()).map_err(|source| {
            EmbeddedError::StoredConfig {
                id: rec.id.clone(),
                source,
            }
        })?;
    let done = completed_cycles(store, &rec.id)?;
    for cycle in 0..rec.num_cycles {
        if done.contains(&cycle) {
            continue;
        }
        let job = JobSpec {
            experiment_id: rec.id.clone(),
            job_key: job_key(&rec.effective_config, cycle),
            cycle,
            attempt: 0,
            config: cfg.clone(),
            cli_overrides: rec.cli_overrides.clone(),
        };
        sink.cycle_started(cycle, rec.num_cycles);
        let raw = runner
            .run(&job, ctx, sink.progress())
            .map_err(|source| EmbeddedError::Run {
                id: rec.id.clone(),
                cycle,
                source: Box::new(source),
            })?;
        store.with(|s| s.put_raw(&raw))?;
        sink.cycle_done(&raw);
    }
    Ok(())
}

/// Aggregates an experiment from its stored raw results and stores the aggregate.
impl EmbeddedError {
    /// True when the run stopped because of Ctrl+C / SIGTERM.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Self::Run { source, .. } if matches!(**source, RunError::Interrupted))
    }
    /// True when the config asked for something lem cannot run (a usage error).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Run { source, .. } if matches!(**source, RunError::Unsupported(_)))
    }
}

pub fn aggregate_and_store(
    store: &StoreHandle,
    rec: &ExperimentRecord,
) -> Result<ExperimentAggregate, EmbeddedError> {
    let raws = store.with(|s| s.raw_results(&rec.id))?;
    let agg = aggregate_experiment(
        &rec.id,
        &rec.config_name,
        &rec.model_name,
        rec.num_cycles,
        &raws,
    );
    store.with(|s| s.put_aggregate(&rec.id, &agg))?;
    Ok(agg)
}
