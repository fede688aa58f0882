//! `lem experiment` and `lem batch`: resolve the config, find or create the experiment,
//! run its pending cycles in embedded mode, aggregate, print the summary.

use super::{exit, BatchArgs, ExperimentArgs, OverrideArgs};
use crate::embedded::{self, CycleSink, EmbeddedError, StoreHandle};
use crate::store::{ExperimentRecord, ExperimentStatus};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lem_agent::runner::{JobRunner, RunContext, RunProgress};
use lem_common::config::{self, CliOverrides, ResolvedConfig};
use lem_common::domain::RawResult;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The process-wide stop flag, set by Ctrl+C / SIGTERM.
fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let presses = Arc::new(AtomicUsize::new(0));
        let f = flag.clone();
        // A second Ctrl+C exits at once; the first lets the current token finish so
        // the experiment's state is saved consistently.
        let installed = ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\nlem: second interrupt, exiting now");
                std::process::exit(exit::INTERRUPTED);
            }
            eprintln!("\nlem: interrupt received, stopping after the current token (Ctrl+C again to force)");
            f.store(true, Ordering::SeqCst);
        });
        if let Err(e) = installed {
            tracing::warn!("cannot install the Ctrl+C handler: {e}");
        }
        flag
    })
    .clone()
}

pub(crate) fn to_cli_overrides(o: &OverrideArgs, cycles: Option<u32>) -> CliOverrides {
    CliOverrides {
        model: o.model.clone(),
        dataset: o.dataset.clone(),
        num_prompts: o.num_prompts,
        batch_size: o.batch_size,
        precision: o.precision.clone(),
        max_tokens: o.max_tokens,
        seed: o.seed,
        num_processes: o.num_processes,
        gpu_list: o.gpu_list.clone(),
        temperature: o.temperature,
        quantization: if o.quantization {
            Some(true)
        } else if o.no_quantization {
            Some(false)
        } else {
            None
        },
        cycles,
    }
}

/// Loads a config file from disk (inheritance resolved relative to it).
pub(crate) fn load_file(path: &Path) -> Result<config::LoadedConfig, config::ConfigError> {
    config::load_config(path, &|p: &Path| std::fs::read_to_string(p))
}

/// Resolves a config from file/preset/CLI, printing errors. `Err(code)` on failure.
fn resolve_config(
    file: Option<&PathBuf>,
    preset: Option<&str>,
    overrides: &CliOverrides,
) -> Result<ResolvedConfig, i32> {
    if file.is_none() && preset.is_none() {
        eprintln!(
            "error: give a config file or --preset <name> --model <model> (see `lem presets`)"
        );
        return Err(exit::USAGE);
    }
    let loaded = match file.map(|p| load_file(p)).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(exit::USAGE);
        }
    };
    match config::resolve(preset, loaded.as_ref(), overrides) {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            Ok(r)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::USAGE)
        }
    }
}

pub fn run_experiment(data_dir: &Path, args: ExperimentArgs) -> i32 {
    let store = StoreHandle::new(data_dir);
    let stop = stop_flag();
    let ctx = RunContext::from_env(stop.clone());

    let mut rec = if let Some(id) = &args.resume {
        if args.config.is_some() || args.preset.is_some() {
            eprintln!(
                "warning: --resume runs the stored config; the config file/preset given is ignored"
            );
        }
        match store.with(|s| s.find_experiment(id)) {
            Ok(rec) => {
                if rec.status == ExperimentStatus::Completed {
                    println!("Experiment {} is already complete.", rec.id);
                    return finish(&store, rec, args.no_aggregate, args.json);
                }
                if rec.status == ExperimentStatus::Running && !embedded::is_dead_run(&rec) {
                    eprintln!(
                        "error: experiment {} is running in process {} on {}",
                        rec.id, rec.pid, rec.hostname
                    );
                    return exit::FAILURE;
                }
                rec
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        }
    } else {
        let overrides = to_cli_overrides(&args.overrides, args.cycles);
        let resolved =
            match resolve_config(args.config.as_ref(), args.preset.as_deref(), &overrides) {
                Ok(r) => r,
                Err(code) => return code,
            };
        let origin = match (&args.config, &args.preset) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(p)) => format!("preset {p}"),
            (None, None) => String::new(),
        };
        match check_incomplete(&store, &resolved, args.fresh) {
            Ok(Some(rec)) => rec,
            Ok(None) => match embedded::create_experiment(&store, &resolved, &origin) {
                Ok(rec) => rec,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILURE;
            }
        }
    };

    if let Err(e) = embedded::set_status(&store, &mut rec, ExperimentStatus::Running, None) {
        eprintln!("error: {e}");
        return exit::FAILURE;
    }
    eprintln!(
        "Experiment {} — {} on {} ({} cycle{})",
        rec.id,
        rec.config_name,
        rec.model_name,
        rec.num_cycles,
        if rec.num_cycles == 1 { "" } else { "s" }
    );
    let mut runner = JobRunner::new();
    let mut sink = CliSink::new(false);
    let outcome = embedded::run_pending_cycles(&store, &rec, &mut runner, &ctx, &mut sink);
    sink.bar.finish_and_clear();
    match outcome {
        Ok(()) => {
            if let Err(e) =
                embedded::set_status(&store, &mut rec, ExperimentStatus::Completed, None)
            {
                eprintln!("error: {e}");
                return exit::FAILURE;
            }
            finish(&store, rec, args.no_aggregate, args.json)
        }
        Err(e) if e.is_interrupted() => {
            let done = embedded::completed_cycles(&store, &rec.id)
                .map(|c| c.len())
                .unwrap_or(0);
            let _ = embedded::set_status(&store, &mut rec, ExperimentStatus::Interrupted, None);
            eprintln!(
                "Interrupted: {done} of {} cycles saved. Resume with:\n  lem --data-dir {} experiment --resume {}",
                rec.num_cycles,
                data_dir.display(),
                rec.id
            );
            exit::INTERRUPTED
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = embedded::set_status(
                &store,
                &mut rec,
                ExperimentStatus::Failed,
                Some(msg.clone()),
            );
            eprintln!("error: {msg}");
            if e.is_unsupported() {
                exit::USAGE
            } else {
                exit::FAILURE
            }
        }
    }
}

/// Looks for an incomplete experiment with the same config. On a terminal, asks whether
/// to resume it; otherwise says how to, and starts fresh.
fn check_incomplete(
    store: &StoreHandle,
    resolved: &ResolvedConfig,
    fresh: bool,
) -> Result<Option<ExperimentRecord>, EmbeddedError> {
    if fresh {
        return Ok(None);
    }
    let mut matches = embedded::incomplete_matches(store, &resolved.config)?;
    let Some((rec, done)) = matches.pop() else {
        return Ok(None);
    };
    eprintln!(
        "Found incomplete experiment {} ({} of {} cycles done, status {}).",
        rec.id,
        done,
        rec.num_cycles,
        if embedded::is_dead_run(&rec) {
            "killed"
        } else {
            rec.status.as_str()
        }
    );
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!("Resume it? [Y/n] ");
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_ok() {
            let a = answer.trim().to_ascii_lowercase();
            if a.is_empty() || a == "y" || a == "yes" {
                return Ok(Some(rec));
            }
        }
        eprintln!("Starting a new experiment.");
    } else {
        eprintln!(
            "Starting a new experiment (not a terminal). To continue that one instead: lem experiment --resume {}; --fresh silences this.",
            rec.id
        );
    }
    Ok(None)
}

fn finish(store: &StoreHandle, rec: ExperimentRecord, no_aggregate: bool, json: bool) -> i32 {
    if no_aggregate {
        println!(
            "Experiment {} complete; raw results stored. Aggregate with: lem aggregate {}",
            rec.id, rec.id
        );
        return exit::OK;
    }
    match embedded::aggregate_and_store(store, &rec) {
        Ok(agg) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&agg).expect("plain data")
                );
            } else {
                super::results::print_aggregate(&agg, &rec);
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: aggregation failed: {e}");
            exit::FAILURE
        }
    }
}

pub fn run_batch(data_dir: &Path, args: BatchArgs) -> i32 {
    let overrides = to_cli_overrides(&args.overrides, args.cycles);
    // Validate every config first: a typo in the tenth file should not surface after
    // nine experiments have run.
    let mut resolved = Vec::new();
    for path in &args.configs {
        match resolve_config(Some(path), None, &overrides) {
            Ok(r) => resolved.push((path.clone(), r)),
            Err(code) => {
                eprintln!("error: {}: invalid; nothing was run", path.display());
                return code;
            }
        }
    }
    let store = StoreHandle::new(data_dir);
    let stop = stop_flag();
    let parallel = args.parallel.max(1);
    let queue = std::sync::Mutex::new(resolved.into_iter().enumerate().collect::<Vec<_>>());
    let failures = AtomicUsize::new(0);
    let total = args.configs.len();
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(total) {
            scope.spawn(|| {
                let ctx = RunContext::from_env(stop.clone());
                let mut runner = JobRunner::new();
                loop {
                    let next = queue.lock().expect("queue lock").pop();
                    let Some((i, (path, resolved))) = next else {
                        break;
                    };
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    eprintln!("[{}/{}] {}", i + 1, total, path.display());
                    let ok = run_one(
                        &store,
                        &resolved,
                        &path,
                        &mut runner,
                        &ctx,
                        args.no_aggregate,
                        parallel > 1,
                    );
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
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

fn run_one(
    store: &StoreHandle,
    resolved: &ResolvedConfig,
    path: &Path,
    runner: &mut JobRunner,
    ctx: &RunContext,
    no_aggregate: bool,
    quiet: bool,
) -> bool {
    let mut rec = match embedded::create_experiment(store, resolved, &path.display().to_string()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return false;
        }
    };
    let mut sink = CliSink::new(quiet);
    let outcome = embedded::run_pending_cycles(store, &rec, runner, ctx, &mut sink);
    sink.bar.finish_and_clear();
    match outcome {
        Ok(()) => {
            let _ = embedded::set_status(store, &mut rec, ExperimentStatus::Completed, None);
            if !no_aggregate {
                match embedded::aggregate_and_store(store, &rec) {
                    Ok(agg) => super::results::print_aggregate(&agg, &rec),
                    Err(e) => eprintln!("error: {}: aggregation failed: {e}", path.display()),
                }
            }
            true
        }
        Err(e) => {
            let status = if e.is_interrupted() {
                ExperimentStatus::Interrupted
            } else {
                ExperimentStatus::Failed
            };
            let _ = embedded::set_status(store, &mut rec, status, Some(e.to_string()));
            eprintln!("error: {}: {e}", path.display());
            false
        }
    }
}

/// Prints cycle lines and drives a progress bar (hidden when stderr is not a terminal).
struct CliSink {
    bar: ProgressBar,
    progress: BarProgress,
}

impl CliSink {
    fn new(quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(0)
        };
        // A spinner until the number of prompts is known, then a bar.
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:12} {elapsed_precise}")
                .expect("valid template"),
        );
        Self {
            progress: BarProgress { bar: bar.clone() },
            bar,
        }
    }
}

struct BarProgress {
    bar: ProgressBar,
}

impl RunProgress for BarProgress {
    fn phase(&mut self, message: &str) {
        self.bar.set_message(message.to_string());
        self.bar.tick();
    }
    fn prompts_total(&mut self, n: u64) {
        self.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:12} [{bar:30}] {pos}/{len} prompts {elapsed_precise} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        self.bar.set_length(n);
        self.bar.set_position(0);
    }
    fn prompts_done(&mut self, n: u64) {
        self.bar.inc(n);
    }
}

impl CycleSink for CliSink {
    fn cycle_started(&mut self, cycle: u32, of: u32) {
        self.bar.set_message(format!("cycle {}/{of}", cycle + 1));
    }
    fn cycle_done(&mut self, raw: &RawResult) {
        let m = crate::aggregate::job_metrics(raw);
        let energy = match (m.energy.total_j, m.energy.partial_total_j) {
            (Some(j), _) => format!("{j:.2} J"),
            (None, Some(j)) => format!("no energy total ({j:.2} J over the devices read)"),
            (None, None) => "energy unavailable".to_string(),
        };
        self.bar.suspend(|| {
            eprintln!(
                "  cycle {}: {} prompts, {} output tokens in {:.2} s ({} tok/s), {energy}",
                raw.cycle + 1,
                m.num_requests,
                m.output_tokens,
                m.wall_s,
                m.output_tokens_per_s
                    .map_or("—".into(), |r| format!("{r:.1}"))
            )
        });
    }
    fn progress(&mut self) -> &mut dyn RunProgress {
        &mut self.progress
    }
}
