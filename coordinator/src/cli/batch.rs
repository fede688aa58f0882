//! `lem batch`: validate every config, then run the experiments in the order given,
//! `--parallel N` at a time where their metered devices are disjoint
//! ([`crate::batch_schedule`]), with a progress display for the batch.
//!
//! Sequential output is the experiment's own (`[2/4] path`, cycle lines, summary).
//! Under `--parallel` every line starts with its experiment (`[2/4 b.yaml]`) and the
//! summaries are printed one after another when the batch ends, so they never interleave.

use super::experiment::{resolve_config, stop_flag, to_cli_overrides, CliSink};
use super::{exit, BatchArgs};
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

pub fn run_batch(data_dir: &Path, args: BatchArgs) -> i32 {
    let overrides = to_cli_overrides(&args.overrides, args.cycles);
    let total = args.configs.len();
    let parallel = args.parallel.max(1).min(total.max(1));
    // Validate every config first: a typo in the tenth file should not surface after
    // nine experiments have run.
    let mut entries = Vec::new();
    for (i, path) in args.configs.iter().enumerate() {
        match resolve_config(Some(path), None, &overrides) {
            Ok(resolved) => entries.push(Entry {
                label: label(i, total, path, parallel > 1),
                path: path.clone(),
                resolved,
            }),
            Err(code) => {
                eprintln!("error: {}: invalid; nothing was run", path.display());
                return code;
            }
        }
    }
    let store = StoreHandle::new(data_dir);
    let stop = stop_flag();
    let ctx = RunContext::from_env(stop.clone());
    let env = MeterEnvironment::probe(
        &ctx.powercap_root,
        entries.iter().any(|e| may_run_on_gpu(&e.resolved.config))
            || lem_agent::meter::nvml::resolve_lib_path(None).is_some(),
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
                        Outcome::Failed => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Outcome::Done(Some(done)) => {
                            let (agg, rec) = *done;
                            if parallel > 1 {
                                say(format!("{} done: experiment {}", entry.label, rec.id));
                                s.summaries.push((i, agg, rec));
                            } else {
                                multi.suspend(|| super::results::print_aggregate(&agg, &rec));
                            }
                        }
                        Outcome::Done(None) => {}
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
        super::results::print_aggregate(agg, rec);
    }
    let failed = failures.load(Ordering::Relaxed);
    if stop.load(Ordering::Relaxed) {
        eprintln!("Interrupted; see `lem results list --all` for experiments to resume.");
        return exit::INTERRUPTED;
    }
    eprintln!(
        "Batch done: {} of {total} experiments succeeded.",
        total - failed
    );
    if failed == 0 {
        exit::OK
    } else {
        exit::PARTIAL
    }
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

enum Outcome {
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
) -> Outcome {
    let name = entry.path.display();
    let mut rec = match embedded::create_experiment(store, &entry.resolved, &name.to_string()) {
        Ok(r) => r,
        Err(e) => {
            say(format!("{} error: {name}: {e}", entry.label));
            return Outcome::Failed;
        }
    };
    let outcome = embedded::run_pending_cycles(store, &rec, runner, ctx, sink);
    match outcome {
        Ok(()) => {
            let _ = embedded::set_status(store, &mut rec, ExperimentStatus::Completed, None);
            if no_aggregate {
                return Outcome::Done(None);
            }
            match embedded::aggregate_and_store(store, &rec) {
                Ok(agg) => Outcome::Done(Some(Box::new((agg, rec)))),
                Err(e) => {
                    say(format!(
                        "{} error: {name}: aggregation failed: {e}",
                        entry.label
                    ));
                    Outcome::Done(None)
                }
            }
        }
        Err(e) => {
            let status = if e.is_interrupted() {
                ExperimentStatus::Interrupted
            } else {
                ExperimentStatus::Failed
            };
            let _ = embedded::set_status(store, &mut rec, status, Some(e.to_string()));
            say(format!("{} error: {name}: {e}", entry.label));
            Outcome::Failed
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
