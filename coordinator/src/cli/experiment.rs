//! `lem experiment`: resolve the config, find or create the experiment, run its pending
//! cycles as a sweep of one on the embedded driver, aggregate, print the summary. Also
//! the pieces `lem batch` shares: config resolution, the model preflight, the stop flag.

use super::drive;
use super::error::outln;
use super::run_display::{RunDisplay, Shown};
use super::{exit, lem_hint, CliError, ExperimentArgs, Outcome, OverrideArgs};
use crate::embedded::{self, EmbeddedError, StoreHandle};
use crate::embedded_run::{self, ExperimentEnd, Work};
use crate::store::{ExperimentRecord, ExperimentStatus};
use lem_agent::runner::RunContext;
use lem_common::config::{self, CliOverrides, ExperimentConfig, ResolvedConfig};
use std::collections::BTreeMap;
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
/// A `devices.mig_profile` is refused here: embedded mode meters gpu_list's whole GPUs.
pub(super) fn preflight(resolved: &ResolvedConfig, ctx: &RunContext) -> Result<(), CliError> {
    match crate::embedded_run::embedded_device_requirements(&resolved.config) {
        Err(why) => return Err(CliError::usage(why)),
        Ok(Some(note)) => eprintln!("note: {note}"),
        Ok(None) => {}
    }
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
    match super::until_ci_run::run_cycles(&store, &mut rec, &ctx)? {
        ExperimentEnd::Finished => {
            embedded::mark_finished(&store, &mut rec)?;
            finish(&store, rec, args.no_aggregate, args.json)
        }
        ExperimentEnd::Interrupted => {
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
        failed => {
            let e = EmbeddedError::from_end(&rec.id, failed);
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

/// Runs `rec`'s cycles that have no stored result, as a sweep of one experiment: the
/// sweep that holds it alone is resumed; otherwise (a first run, a run stored before
/// experiments ran as sweeps, or one more `--until-ci` cycle) a new sweep is submitted,
/// whose stored cycles are answered with their results instead of a run.
pub(super) fn run_stored_experiment(
    store: &StoreHandle,
    rec: &ExperimentRecord,
    ctx: &RunContext,
) -> Result<ExperimentEnd, CliError> {
    let sweeps = embedded_run::sweeps_of(store, &rec.id)?;
    embedded_run::catch_up_raw_tree(store, &sweeps)?;
    let own = match sweeps.last() {
        Some(last) => store.with(|s| {
            let Some(row) = s.sweep(*last)? else {
                return Ok(None);
            };
            let alone = row.experiment_names == [rec.id.clone()]
                && row.job_count == u64::from(rec.num_cycles);
            Ok(alone.then_some(*last))
        })?,
        None => None,
    };
    let config: ExperimentConfig =
        serde_json::from_value(rec.effective_config.clone()).map_err(|source| {
            EmbeddedError::StoredConfig {
                id: rec.id.clone(),
                source,
            }
        })?;
    let metered = drive::metered_devices(ctx, &[&config]).remove(0);
    let (work, stored) = match own {
        Some(sweep) => (Work::Resume(vec![sweep]), Vec::new()),
        None => {
            let token = format!("{}/{}", rec.id, sweeps.len());
            let subs = drive::submissions(&token, &rec.id, &[(rec, metered.as_slice())]);
            (Work::Submit(subs), store.with(|s| s.raw_results(&rec.id))?)
        }
    };
    let shown = BTreeMap::from([(
        rec.id.clone(),
        Shown {
            prefix: None,
            header: None,
            label: rec.id.clone(),
            num_cycles: rec.num_cycles,
            metered,
        },
    )]);
    let mut on_done = |_: &str, _: &indicatif::MultiProgress| {};
    let mut display = RunDisplay::new(shown, 1, &mut on_done);
    let mut report = drive::drive(store, ctx, &[rec], stored, work, &mut display, 1)?;
    Ok(report
        .ends
        .remove(&rec.id)
        .unwrap_or(ExperimentEnd::Interrupted))
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

#[cfg(test)]
#[path = "experiment_tests.rs"]
mod tests;
