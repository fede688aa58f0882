//! `lem experiment`: resolve the config, find or create the experiment, run its pending
//! cycles in embedded mode, aggregate, print the summary. Also the pieces `lem batch`
//! shares: config resolution, the model preflight, the stop flag, the cycle printer.

use super::error::outln;
use super::results::failed_note;
use super::{exit, lem_hint, CliError, ExperimentArgs, Outcome, OverrideArgs};
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
pub(super) fn stop_flag() -> Arc<AtomicBool> {
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
                std::process::exit(exit::INTERRUPTED.into());
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

/// Resolves a config from file/preset/CLI, printing its warnings.
pub(super) fn resolve_config(
    file: Option<&PathBuf>,
    preset: Option<&str>,
    overrides: &CliOverrides,
) -> Result<ResolvedConfig, CliError> {
    if file.is_none() && preset.is_none() {
        return Err(CliError::usage(
            "give a config file or --preset <name> --model <model> (see `lem presets`)",
        ));
    }
    let loaded = file
        .map(|p| load_file(p))
        .transpose()
        .map_err(|e| CliError::usage(e.to_string()))?;
    let r = config::resolve(preset, loaded.as_ref(), overrides)
        .map_err(|e| CliError::usage(e.to_string()))?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(r)
}

/// Checks that the config's model resolves, opens and has a supported architecture, and
/// that nothing it asks for is refused, before any experiment record is stored: a bad
/// input is a usage error, not a failed experiment.
pub(super) fn preflight(resolved: &ResolvedConfig, ctx: &RunContext) -> Result<(), CliError> {
    lem_agent::runner::preflight(&resolved.config, ctx).map_err(|e| CliError::usage(e.to_string()))
}

pub fn run_experiment(data_dir: &Path, args: ExperimentArgs) -> Result<Outcome, CliError> {
    let store = StoreHandle::new(data_dir);
    let stop = stop_flag();
    let ctx = RunContext::from_env(stop.clone());

    let mut rec = if let Some(id) = &args.resume {
        if args.config.is_some() || args.preset.is_some() {
            eprintln!(
                "warning: --resume runs the stored config; the config file/preset given is ignored"
            );
        }
        let rec = store.read(|s| s.find_experiment(id))?;
        if rec.status.is_finished() {
            outln!("Experiment {} is already complete.", rec.id);
            return finish(&store, rec, args.no_aggregate, args.json);
        }
        if rec.status == ExperimentStatus::Running && !embedded::is_dead_run(&rec) {
            return Err(CliError::failure(format!(
                "experiment {} is running in process {} on {}",
                rec.id, rec.pid, rec.hostname
            )));
        }
        rec
    } else {
        let until_ci = super::until_ci_run::rule_from_args(&args)?;
        // Under --until-ci the experiment starts with the rule's minimum of cycles.
        let cycles = until_ci
            .as_ref()
            .map_or(args.cycles, |r| Some(r.min_cycles));
        let overrides = to_cli_overrides(&args.overrides, cycles);
        let resolved = resolve_config(args.config.as_ref(), args.preset.as_deref(), &overrides)?;
        preflight(&resolved, &ctx)?;
        let origin = match (&args.config, &args.preset) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(p)) => format!("preset {p}"),
            (None, None) => String::new(),
        };
        let mut rec = match check_incomplete(&store, &resolved, args.fresh)? {
            Some(rec) => rec,
            None => embedded::create_experiment(&store, &resolved, &origin)?,
        };
        if let Some(rule) = until_ci {
            rec.until_ci = Some(super::until_ci_run::start(rule));
        }
        rec
    };

    embedded::set_status(&store, &mut rec, ExperimentStatus::Running, None)?;
    eprintln!(
        "Experiment {} — {} on {} ({} cycle{})",
        rec.id,
        rec.config_name,
        rec.model_name,
        rec.num_cycles,
        if rec.num_cycles == 1 { "" } else { "s" }
    );
    // CPU threads are the process's, fixed before the first job runs.
    lem_agent::threads::init(
        rec.effective_config
            .get("cpu_threads")
            .and_then(serde_json::Value::as_u64)
            .map(|t| t as usize),
    );
    let mut runner = JobRunner::new();
    let mut sink = CliSink::new(false);
    let outcome = super::until_ci_run::run_cycles(&store, &mut rec, &mut runner, &ctx, &mut sink);
    sink.bar.finish_and_clear();
    match outcome {
        Ok(()) => {
            embedded::mark_finished(&store, &mut rec)?;
            finish(&store, rec, args.no_aggregate, args.json)
        }
        Err(e) if e.is_interrupted() => {
            let done = embedded::completed_cycles(&store, &rec.id)
                .map(|c| c.len())
                .unwrap_or(0);
            let _ = embedded::set_status(&store, &mut rec, ExperimentStatus::Interrupted, None);
            eprintln!(
                "Interrupted: {done} of {} cycles saved. Resume with:\n  {}",
                rec.num_cycles,
                lem_hint(data_dir, &format!("experiment --resume {}", rec.id))
            );
            Ok(Outcome::Interrupted)
        }
        Err(e) => {
            if let Err(store_err) = embedded::record_failure(&store, &mut rec, &e) {
                eprintln!("warning: the failure could not be stored: {store_err}");
            }
            Err(CliError::failure(format!(
                "{e}\n(stored with the experiment: {})",
                lem_hint(data_dir, &format!("results show {}", rec.id))
            )))
        }
    }
}

/// Looks for an interrupted or killed experiment with the same config. On a terminal,
/// asks whether to resume it; otherwise says how to, and starts fresh.
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
            "Starting a new experiment (not a terminal). To continue that one instead: {}; --fresh silences this.",
            lem_hint(&store.data_dir, &format!("experiment --resume {}", rec.id))
        );
    }
    Ok(None)
}

fn finish(
    store: &StoreHandle,
    rec: ExperimentRecord,
    no_aggregate: bool,
    json: bool,
) -> Result<Outcome, CliError> {
    if no_aggregate {
        outln!(
            "Experiment {} complete; raw results stored. Aggregate with: {}",
            rec.id,
            lem_hint(&store.data_dir, &format!("aggregate {}", rec.id))
        );
        return Ok(Outcome::Success);
    }
    let agg = embedded::aggregate_and_store(store, &rec)
        .map_err(|e| CliError::failure(format!("aggregation failed: {e}")))?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&agg).expect("plain data")
        );
    } else {
        super::results::print_summary(store, &agg, &rec)?;
    }
    Ok(Outcome::Success)
}

/// Prints cycle lines and drives a progress bar (hidden when stderr is not a terminal).
pub(super) struct CliSink {
    pub(super) bar: ProgressBar,
    progress: BarProgress,
    /// Starts every line and the bar (`[2/4 b.yaml]` under `lem batch --parallel`).
    label: Option<String>,
}

impl CliSink {
    fn new(quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(0)
        };
        Self::with_bar(bar, None)
    }

    /// Drives `bar` (e.g. one of a batch's bars); `label` starts every line.
    pub(super) fn with_bar(bar: ProgressBar, label: Option<String>) -> Self {
        if let Some(l) = &label {
            bar.set_prefix(format!("{l} "));
        }
        // A spinner until the number of prompts is known, then a bar.
        bar.set_style(spinner_style());
        Self {
            progress: BarProgress { bar: bar.clone() },
            bar,
            label,
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}{spinner} {msg:12} {elapsed_precise}")
        .expect("valid template")
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
                "{prefix}{spinner} {msg:12} [{bar:30}] {pos}/{len} prompts {elapsed_precise} (eta {eta})",
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
        // Back to a spinner: the previous cycle's full bar must not show during this
        // cycle's model load and idle baseline.
        self.bar.set_style(spinner_style());
        self.bar.set_length(0);
        self.bar.set_position(0);
        self.bar.set_message(format!("cycle {}/{of}", cycle + 1));
    }
    fn cycle_done(&mut self, raw: &RawResult) {
        let m = crate::aggregate::job_metrics(raw);
        let energy = match (m.energy.total_j, m.energy.partial_total_j) {
            (Some(j), _) => format!("{j:.2} J"),
            (None, Some(j)) => format!("no energy total ({j:.2} J over the devices read)"),
            (None, None) => "energy unavailable".to_string(),
        };
        let label = self
            .label
            .as_deref()
            .map_or(String::new(), |l| format!("{l} "));
        self.bar.suspend(|| {
            eprintln!(
                "{label}  cycle {}: {} prompts{}, {} output tokens in {:.2} s ({} tok/s), {energy}",
                raw.cycle + 1,
                m.num_requests,
                failed_note(m.failed_requests),
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

#[cfg(test)]
#[path = "experiment_tests.rs"]
mod tests;
