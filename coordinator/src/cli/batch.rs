//! `lem batch`: validate every config, store an experiment record for each, and run
//! them as ONE sweep on the embedded driver with `--parallel N` in-process runners. The
//! scheduler never runs two jobs on one metered device, so experiments that share a
//! device run one after another whatever `--parallel` says, and the batch says so.
//!
//! Sequential output is the experiment's own (`[2/4] path`, cycle lines, summary).
//! Under `--parallel` every line starts with its experiment (`[2/4 b.yaml]`) and the
//! summaries are printed one after another when the batch ends, so they never interleave.

use super::drive;
use super::experiment::{preflight, resolve_config, stop_flag, to_cli_overrides};
use super::run_display::{RunDisplay, Shown};
use super::{lem_hint, BatchArgs, CliError, Outcome};
use crate::aggregate::ExperimentAggregate;
use crate::embedded::{self, EmbeddedError, StoreHandle};
use crate::embedded_run::{ExperimentEnd, Work};
use crate::store::{ExperimentRecord, ExperimentStatus};
use indicatif::MultiProgress;
use lem_agent::runner::RunContext;
use lem_common::config::ResolvedConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// One experiment of the batch.
struct Entry {
    path: PathBuf,
    resolved: ResolvedConfig,
    /// `[2/4]` sequentially, `[2/4 b.yaml]` under `--parallel`.
    label: String,
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
    let configs: Vec<_> = entries.iter().map(|e| &e.resolved.config).collect();
    let metered = drive::metered_devices(&ctx, &configs);
    // Every record first: the sweep names its experiments by their ids.
    let mut recs = Vec::new();
    for e in &entries {
        recs.push(embedded::create_experiment(
            &store,
            &e.resolved,
            &e.path.display().to_string(),
        )?);
    }
    let shown: BTreeMap<String, Shown> = entries
        .iter()
        .zip(&recs)
        .zip(&metered)
        .map(|((e, rec), metered)| {
            let header = if parallel > 1 {
                format!("{} started ({})", e.label, e.path.display())
            } else {
                format!("{} {}", e.label, e.path.display())
            };
            let shown = Shown {
                prefix: (parallel > 1).then(|| e.label.clone()),
                header: Some(header),
                label: e.label.clone(),
                num_cycles: rec.num_cycles,
                metered: metered.clone(),
            };
            (rec.id.clone(), shown)
        })
        .collect();
    let pairs: Vec<_> = recs
        .iter()
        .zip(&metered)
        .map(|(r, m)| (r, m.as_slice()))
        .collect();
    let submissions = drive::submissions(
        &format!("batch/{}", recs[0].id),
        &format!("batch of {total}"),
        &pairs,
    );

    let mut finisher = Finisher {
        store: &store,
        entries: &entries,
        recs: recs.clone(),
        parallel: parallel > 1,
        no_aggregate: args.no_aggregate,
        summaries: Vec::new(),
    };
    let mut on_done = |id: &str, multi: &MultiProgress| finisher.done(id, multi);
    let mut display = RunDisplay::new(shown, parallel, &mut on_done).with_overall(total);
    let rec_refs: Vec<&ExperimentRecord> = recs.iter().collect();
    let report = drive::drive(
        &store,
        &ctx,
        &rec_refs,
        Vec::new(),
        Work::Submit(submissions),
        &mut display,
        parallel,
    )?;
    drop(display);
    let mut report = report;
    let mut failed = 0;
    for (entry, rec) in entries.iter().zip(recs.iter_mut()) {
        match report.ends.remove(&rec.id) {
            Some(ExperimentEnd::Finished) => {}
            Some(ExperimentEnd::Interrupted) | None => {
                failed += 1;
                let _ = embedded::set_status(&store, rec, ExperimentStatus::Interrupted, None);
            }
            Some(end) => {
                failed += 1;
                let e = EmbeddedError::from_end(&rec.id, end);
                let _ = embedded::record_failure(&store, rec, &e);
                eprintln!("{} error: {}: {e}", entry.label, entry.path.display());
            }
        }
    }
    let mut summaries = std::mem::take(&mut finisher.summaries);
    summaries.sort_by_key(|(i, _, _)| *i);
    for (_, agg, rec) in &summaries {
        super::results::print_summary(&store, agg, rec)?;
    }
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

/// What happens when an experiment's last cycle is stored: its status, its aggregate,
/// and its summary (at once sequentially; held until the end under `--parallel`).
struct Finisher<'a> {
    store: &'a StoreHandle,
    entries: &'a [Entry],
    recs: Vec<ExperimentRecord>,
    parallel: bool,
    no_aggregate: bool,
    summaries: Vec<(usize, ExperimentAggregate, ExperimentRecord)>,
}

impl Finisher<'_> {
    fn done(&mut self, id: &str, multi: &MultiProgress) {
        let Some(i) = self.recs.iter().position(|r| r.id == id) else {
            return;
        };
        let entry = &self.entries[i];
        let say = |line: String| multi.suspend(|| eprintln!("{line}"));
        let rec = &mut self.recs[i];
        if let Err(e) = embedded::mark_finished(self.store, rec) {
            say(format!("{} error: {e}", entry.label));
        }
        if self.no_aggregate {
            return;
        }
        let agg = match embedded::aggregate_and_store(self.store, rec) {
            Ok(agg) => agg,
            Err(e) => {
                let name = entry.path.display();
                say(format!(
                    "{} error: {name}: aggregation failed: {e}",
                    entry.label
                ));
                return;
            }
        };
        if self.parallel {
            say(format!("{} done: experiment {}", entry.label, rec.id));
            self.summaries.push((i, agg, rec.clone()));
        } else if let Err(e) =
            multi.suspend(|| super::results::print_summary(self.store, &agg, rec))
        {
            say(format!("{} error: {e}", entry.label));
        }
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
