//! `lem batch`: validate every config, then run the experiments in the order given,
//! `--parallel N` at a time where their metered devices are disjoint
//! ([`crate::batch_schedule`]), with a progress display for the batch.
//!
//! Sequential output is the experiment's own (`[2/4] path`, cycle lines, summary).
//! Under `--parallel` every line starts with its experiment (`[2/4 b.yaml]`) and the
//! summaries are printed one after another when the batch ends, so they never interleave.

use super::experiment::{preflight, resolve_config, stop_flag, to_cli_overrides, CliSink};
use super::{lem_hint, BatchArgs, CliError, Outcome};
use crate::aggregate::ExperimentAggregate;
use crate::batch_schedule::{BatchSchedule, Turn};
use crate::embedded::{self, StoreHandle};
use crate::store::{ExperimentRecord, ExperimentStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lem_agent::meter::ownership::{may_run_on_gpu, plan_metered_devices, MeterEnvironment};
use lem_agent::runner::{JobRunner, RunContext};
use lem_common::config::ResolvedConfig;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How often a worker waiting for its turn looks at the stop flag.
const TURN_CHECK: Duration = Duration::from_millis(200);

/// One experiment of the batch.
struct Entry {
    path: PathBuf,
    resolved: ResolvedConfig,
    /// `[2/4]` sequentially, `[2/4 b.yaml]` under `--parallel`.
    label: String,
}

/// The shared state of the workers.
struct Shared {
    schedule: BatchSchedule,
    /// Experiments whose wait was already said.
    announced: BTreeSet<usize>,
    /// Summaries held back until the batch ends (`--parallel`).
    summaries: Vec<(usize, ExperimentAggregate, ExperimentRecord)>,
}

pub fn run_batch(data_dir: &Path, args: BatchArgs) -> Result<Outcome, CliError> {
    let overrides = to_cli_overrides(&args.overrides, args.cycles);
    let total = args.configs.len();
    let parallel = args.parallel.max(1).min(total.max(1));
    let stop = stop_flag();
    let ctx = RunContext::from_env(stop.clone());
    // Validate every config and its model first: a typo in the tenth file should not
    // surface after nine experiments have run.
    let invalid = |path: &Path, msg: String| {
        CliError::usage(format!(
            "{msg}\n{}: invalid; nothing was run",
            path.display()
        ))
    };
    let mut entries = Vec::new();
    for (i, path) in args.configs.iter().enumerate() {
        // Config errors name the file already; model errors get it in front.
        let resolved = resolve_config(Some(path), None, &overrides)
            .map_err(|e| invalid(path, e.to_string()))?;
        preflight(&resolved, &ctx)
            .map_err(|e| invalid(path, format!("{}: {e}", path.display())))?;
        entries.push(Entry {
            label: label(i, total, path, parallel > 1),
            path: path.clone(),
            resolved,
        });
    }
    let store = StoreHandle::new(data_dir);
    let env = MeterEnvironment::probe(
        &ctx,
        entries.iter().any(|e| may_run_on_gpu(&e.resolved.config)) || ctx.nvml_lib.is_some(),
    );
    let devices = entries
        .iter()
        .map(|e| {
            let cfg = &e.resolved.config;
            plan_metered_devices(cfg, may_run_on_gpu(cfg), &env)
        })
        .collect();
    let shared = Mutex::new(Shared {
        schedule: BatchSchedule::new(devices),
        announced: BTreeSet::new(),
        summaries: Vec::new(),
    });
    let turn_changed = Condvar::new();
    let failures = AtomicUsize::new(0);
    let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = multi.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template("batch [{bar:20}] {pos}/{len} experiments done {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let say = |line: String| multi.suspend(|| eprintln!("{line}"));

    // CPU threads are the process's, fixed before any job runs: the first experiment's
    // request, as when its load sized candle's pools.
    lem_agent::threads::init(
        entries
            .first()
            .and_then(|e| e.resolved.config.cpu_threads)
            .map(|t| t as usize),
    );
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| {
                let mut runner = JobRunner::new();
                while let Some(i) = next_turn(&shared, &turn_changed, &entries, &stop, &say) {
                    let entry = &entries[i];
                    if parallel == 1 {
                        say(format!("{} {}", entry.label, entry.path.display()));
                    } else {
                        say(format!(
                            "{} started ({})",
                            entry.label,
                            entry.path.display()
                        ));
                    }
                    let bar = multi.insert_before(&overall, ProgressBar::new(0));
                    let mut sink =
                        CliSink::with_bar(bar, (parallel > 1).then(|| entry.label.clone()));
                    let outcome = run_one(
                        &store,
                        entry,
                        &mut runner,
                        &ctx,
                        &mut sink,
                        args.no_aggregate,
                        &say,
                    );
                    sink.bar.finish_and_clear();
                    multi.remove(&sink.bar);
                    overall.inc(1);
                    let mut s = shared.lock().expect("batch lock");
                    match outcome {
                        RunOutcome::Failed => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        RunOutcome::Done(Some(done)) => {
                            let (agg, rec) = *done;
                            if parallel > 1 {
                                say(format!("{} done: experiment {}", entry.label, rec.id));
                                s.summaries.push((i, agg, rec));
                            } else if let Err(e) =
                                multi.suspend(|| super::results::print_summary(&store, &agg, &rec))
                            {
                                say(format!("{} error: {e}", entry.label));
                            }
                        }
                        RunOutcome::Done(None) => {}
                    }
                    s.schedule.finish(i);
                    drop(s);
                    turn_changed.notify_all();
                }
            });
        }
    });
    overall.finish_and_clear();
    let mut s = shared.into_inner().expect("batch lock");
    s.summaries.sort_by_key(|(i, _, _)| *i);
    for (_, agg, rec) in &s.summaries {
        super::results::print_summary(&store, agg, rec)?;
    }
    let failed = failures.load(Ordering::Relaxed);
    if stop.load(Ordering::Relaxed) {
        eprintln!(
            "Interrupted; `{}` lists the experiments to resume.",
            lem_hint(data_dir, "results list --all")
        );
        return Ok(Outcome::Interrupted);
    }
    eprintln!(
        "Batch done: {} of {total} experiments succeeded.",
        total - failed
    );
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

/// `[2/4]`, or with the file name under `--parallel`: `[2/4 b.yaml]`.
fn label(i: usize, total: usize, path: &Path, parallel: bool) -> String {
    if parallel {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!("[{}/{total} {name}]", i + 1)
    } else {
        format!("[{}/{total}]", i + 1)
    }
}

/// Waits for the next experiment's turn and claims it; `None` when every experiment has
/// started or the batch is stopped. A wait for another experiment's device is said once.
fn next_turn(
    shared: &Mutex<Shared>,
    turn_changed: &Condvar,
    entries: &[Entry],
    stop: &std::sync::atomic::AtomicBool,
    say: &dyn Fn(String),
) -> Option<usize> {
    let mut s = shared.lock().expect("batch lock");
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match s.schedule.turn() {
            Turn::AllStarted => return None,
            Turn::Start(i) => {
                s.schedule.start(i);
                return Some(i);
            }
            Turn::Wait { next, running, key } => {
                if s.announced.insert(next) {
                    say(format!(
                        "{} waits for {} to finish: both meter {key}, and one device's energy cannot be split between experiments running at once",
                        entries[next].label, entries[running].label
                    ));
                }
                s = turn_changed
                    .wait_timeout(s, TURN_CHECK)
                    .expect("batch lock")
                    .0;
            }
        }
    }
}

enum RunOutcome {
    Failed,
    /// Done; the aggregate unless `--no-aggregate` (or its aggregation failed).
    Done(Option<Box<(ExperimentAggregate, ExperimentRecord)>>),
}

fn run_one(
    store: &StoreHandle,
    entry: &Entry,
    runner: &mut JobRunner,
    ctx: &RunContext,
    sink: &mut CliSink,
    no_aggregate: bool,
    say: &dyn Fn(String),
) -> RunOutcome {
    let name = entry.path.display();
    let mut rec = match embedded::create_experiment(store, &entry.resolved, &name.to_string()) {
        Ok(r) => r,
        Err(e) => {
            say(format!("{} error: {name}: {e}", entry.label));
            return RunOutcome::Failed;
        }
    };
    let outcome = embedded::run_pending_cycles(store, &rec, runner, ctx, sink);
    match outcome {
        Ok(()) => {
            let _ = embedded::mark_finished(store, &mut rec);
            if no_aggregate {
                return RunOutcome::Done(None);
            }
            match embedded::aggregate_and_store(store, &rec) {
                Ok(agg) => RunOutcome::Done(Some(Box::new((agg, rec)))),
                Err(e) => {
                    say(format!(
                        "{} error: {name}: aggregation failed: {e}",
                        entry.label
                    ));
                    RunOutcome::Done(None)
                }
            }
        }
        Err(e) => {
            let _ = if e.is_interrupted() {
                embedded::set_status(store, &mut rec, ExperimentStatus::Interrupted, None)
            } else {
                embedded::record_failure(store, &mut rec, &e)
            };
            say(format!("{} error: {name}: {e}", entry.label));
            RunOutcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_count_from_one_and_name_the_file_under_parallel() {
        let p = Path::new("configs/b.yaml");
        assert_eq!(label(1, 4, p, false), "[2/4]");
        assert_eq!(label(1, 4, p, true), "[2/4 b.yaml]");
    }
}
