//! `lem --coordinator X results list` and `aggregate`: the coordinator's sweep results,
//! listed with the same table columns as embedded mode. `results show` (summary,
//! `--json`, `--raw`), `results compare|export|table` and `report` load the
//! coordinator's records into a private store (`remote_store.rs`) and run the embedded
//! commands on it; an experiment without a stored aggregate is shown from the aggregate
//! the coordinator computes from its accepted results so far.

use super::error::outln;
use super::remote::{unexpected, Remote};
use super::remote_store::RemoteStore;
use super::results::print_aggregate;
use super::selection::in_sweep;
use super::sweep_cmd::parse_sweep_id;
use super::{CliError, ExportArgs, Outcome, ReportArgs, ResultsCommand};
use crate::aggregate::ExperimentAggregate;
use crate::store::{ExperimentRecord, StoreError};
use lem_common::domain::ModelInfo;
use lem_common::wire::cli::{CliReply, CliRequest, ResultSummary};

pub fn list(remote: &Remote, all: bool, json: bool) -> Result<Outcome, CliError> {
    let rows = match remote.request(&CliRequest::ListResults)? {
        CliReply::Results(rows) => rows,
        other => return Err(unexpected("results list", &other)),
    };
    let (shown, hidden): (Vec<ResultSummary>, Vec<ResultSummary>) = rows
        .into_iter()
        .partition(|r| all || r.status == "completed");
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&shown).expect("plain data")
        );
        return Ok(Outcome::Success);
    }
    if shown.is_empty() {
        outln!(
            "No {}experiments on the coordinator.",
            if all { "" } else { "completed " }
        );
    } else {
        let header = ["ID", "STATUS", "CYCLES", "CONFIG", "MODEL"].map(String::from);
        let cells: Vec<[String; 5]> = shown
            .iter()
            .map(|r| {
                [
                    r.id.clone(),
                    r.status.clone(),
                    format!("{}/{}", r.cycles_accepted, r.cycles_total),
                    r.experiment_name.clone(),
                    r.model.clone(),
                ]
            })
            .collect();
        let [w0, w1, w2, w3, _] = super::table::column_widths(&header, &cells);
        for r in [&header].into_iter().chain(&cells) {
            outln!(
                "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4]
            );
        }
    }
    if !hidden.is_empty() {
        outln!(
            "({} more not shown: running or incomplete; `results list --all` lists them)",
            hidden.len()
        );
    }
    Ok(Outcome::Success)
}

/// `results show ID` (not `--raw`): an experiment with a stored aggregate is shown by
/// the embedded code, as embedded mode shows it; one without (its sweep still running,
/// or ended incomplete) gets the aggregate the coordinator computes from its accepted
/// results so far, printed with the same summary.
pub fn show(remote: &Remote, cmd: ResultsCommand) -> Result<Outcome, CliError> {
    let ResultsCommand::Show { id, json, .. } = &cmd else {
        unreachable!("show is called with `results show`");
    };
    let loaded = RemoteStore::load_records(remote)?;
    let stored = loaded
        .handle
        .read(|s| {
            let rec = s.find_experiment(id)?;
            let stored = s.aggregate::<serde_json::Value>(&rec.id)?.is_some();
            Ok(stored.then_some(rec.id))
        })
        .map_err(|e| name_the_coordinator(e.into(), remote.target()))?;
    match stored {
        Some(full) => {
            // The summary's model line reads the first accepted result.
            let result = loaded
                .load_accepted(remote, &[full])
                .and_then(|()| super::results::run_on(&loaded.handle, cmd));
            result.map_err(|e| name_the_coordinator(e, remote.target()))
        }
        None => show_live(remote, &id.clone(), *json),
    }
}

/// The coordinator's aggregate of an experiment that has no stored one.
fn show_live(remote: &Remote, id: &str, json: bool) -> Result<Outcome, CliError> {
    let (id, aggregate, model_info) =
        match remote.request(&CliRequest::ShowResult { id: id.to_owned() })? {
            CliReply::Aggregate {
                id,
                aggregate,
                model_info,
            } => (id, aggregate, model_info),
            other => return Err(unexpected("results show", &other)),
        };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&aggregate).expect("plain data")
        );
        return Ok(Outcome::Success);
    }
    let agg: ExperimentAggregate = serde_json::from_value(aggregate).map_err(|e| {
        CliError::failure(format!(
            "{id}: the coordinator's aggregate does not parse as this build's: {e}"
        ))
    })?;
    let model: Option<ModelInfo> = model_info.and_then(|m| serde_json::from_value(m).ok());
    let config_name = id.split_once('/').map_or(id.as_str(), |(_, name)| name);
    print_aggregate(&agg, config_name, model.as_ref())?;
    Ok(Outcome::Success)
}

/// `aggregate sweep-N` (or `--all`): the coordinator aggregates the sweep again from its
/// accepted results and stores the result.
pub fn aggregate(remote: &Remote, id: Option<&str>, all: bool) -> Result<Outcome, CliError> {
    let sweeps: Vec<u64> = if all {
        match remote.request(&CliRequest::ListSweeps)? {
            CliReply::Sweeps(sweeps) => sweeps.iter().map(|s| s.sweep).collect(),
            other => return Err(unexpected("sweep list", &other)),
        }
    } else {
        let id = id.unwrap_or_default();
        let sweep = id.split('/').next().unwrap_or(id);
        vec![parse_sweep_id(sweep).map_err(CliError::usage)?.0]
    };
    for sweep in sweeps {
        match remote.request(&CliRequest::AggregateSweep { sweep })? {
            CliReply::Aggregated { sweep, ids } => {
                outln!("sweep-{sweep}: aggregated {}", ids.join(", "));
            }
            other => return Err(unexpected("aggregate", &other)),
        }
    }
    Ok(Outcome::Success)
}

/// `results show ID --raw`, `results compare`, `results export`, `results table` and
/// `report` (given as `report`) on the coordinator's records, with the embedded code.
pub fn read_command(remote: &Remote, command: ReadCommand) -> Result<Outcome, CliError> {
    let loaded = RemoteStore::load_records(remote)?;
    let store = &loaded.handle;
    let result = (|| {
        let raw_ids = raw_ids(store, &command)?;
        loaded.load_accepted(remote, &raw_ids)?;
        match command {
            ReadCommand::Results(cmd) => super::results::run_on(store, cmd),
            ReadCommand::Report(args) => super::report_cmd::run_on(store, args),
        }
    })();
    result.map_err(|e| name_the_coordinator(e, remote.target()))
}

/// A command `read_command` runs.
pub enum ReadCommand {
    Results(ResultsCommand),
    Report(ReportArgs),
}

/// The experiments whose accepted results `command` reads: those it selects (an id it
/// cannot find is the error the command itself would give), none when it reads only
/// records and aggregates.
fn raw_ids(
    store: &crate::embedded::StoreHandle,
    command: &ReadCommand,
) -> Result<Vec<String>, CliError> {
    use crate::export::ExportLevel;
    // Export and report read the raw results of aggregated experiments only.
    let aggregated_only = !matches!(command, ReadCommand::Results(ResultsCommand::Show { .. }));
    let (ids, all, sweep): (&[String], bool, Option<&str>) = match command {
        ReadCommand::Results(ResultsCommand::Show { id, raw: true, .. }) => {
            (std::slice::from_ref(id), false, None)
        }
        ReadCommand::Results(ResultsCommand::Export(ExportArgs {
            ids,
            all,
            sweep,
            level: ExportLevel::Request | ExportLevel::Trace,
            ..
        })) => (ids, *all, sweep.as_deref()),
        ReadCommand::Report(a) => (&a.ids, a.all, a.sweep.as_deref()),
        ReadCommand::Results(_) => return Ok(Vec::new()),
    };
    let records: Vec<ExperimentRecord> = store.read(|s| {
        let selected: Vec<ExperimentRecord> = if ids.is_empty() {
            s.experiments()?
                .into_iter()
                .filter(|r| all || sweep.is_some_and(|name| in_sweep(&r.config_name, name)))
                .collect()
        } else {
            ids.iter()
                .map(|id| s.find_experiment(id))
                .collect::<Result<_, _>>()?
        };
        let mut kept = Vec::new();
        for rec in selected {
            if !aggregated_only || s.aggregate::<serde_json::Value>(&rec.id)?.is_some() {
                kept.push(rec);
            }
        }
        Ok(kept)
    })?;
    let mut out: Vec<String> = records.into_iter().map(|r| r.id).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// An unknown experiment is looked for on the coordinator, not in the private store's
/// folder: say so, with the same exit code as embedded.
fn name_the_coordinator(error: CliError, target: &str) -> CliError {
    match error {
        CliError::Store(StoreError::UnknownExperiment { id, .. }) => CliError::usage(format!(
            "no experiment `{id}` on the coordinator at {target} (`lem --coordinator {target} \
             results list --all` lists them)"
        )),
        other => other,
    }
}
