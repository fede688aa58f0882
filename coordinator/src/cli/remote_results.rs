//! `lem --coordinator X results ...`, `report` and `aggregate`. `results list` prints the
//! coordinator's records with the embedded listing code. `aggregate` decides and prints
//! as embedded `lem aggregate` does; the coordinator aggregates and stores. `results show` (summary,
//! `--json`, `--raw`), `results compare|export|table` and `report` load the records they
//! select (the coordinator sends only those) into a private store (`remote_store.rs`)
//! and run the embedded commands on it; an experiment without a stored aggregate is
//! shown from the aggregate the coordinator computes from its accepted results so far.

use super::error::outln;
use super::remote::{unexpected, Remote};
use super::remote_store::{fetch_records, record_from_wire, RemoteStore};
use super::results::{
    aggregate_each, print_aggregate, print_list, AggregateCandidate, AggregateMade, ListRow,
};
use super::selection::{resolve, Selection};
use super::sweep_cmd::parse_sweep_id;
use super::{AggregateArgs, CliError, ExportArgs, Outcome, ReportArgs, ResultsCommand, TableArgs};
use crate::aggregate::ExperimentAggregate;
use crate::embedded::StoreHandle;
use crate::store::{ExperimentRecord, StoreError};
use lem_common::domain::ModelInfo;
use lem_common::wire::cli::{CliReply, CliRequest, RecordSelection, ResultExperiment};
use std::collections::BTreeMap;
use std::path::Path;

/// `results list [--all] [--json]`: the coordinator's records (without their
/// aggregates), printed by the embedded listing.
pub fn list(remote: &Remote, all: bool, json: bool) -> Result<Outcome, CliError> {
    let select = RecordSelection {
        without_aggregates: true,
        ..RecordSelection::default()
    };
    let records = fetch_records(remote, &select)?;
    // A coordinator built before records carried their accepted count: its listing has it.
    let older_counts = if records.iter().any(|r| r.cycles_accepted.is_none()) {
        accepted_counts(remote)?
    } else {
        BTreeMap::new()
    };
    // Nothing is read from a store: the handle only makes messages name the coordinator.
    let store = StoreHandle {
        coordinator: Some(remote.target().to_owned()),
        ..StoreHandle::new(Path::new(""))
    };
    let mut rows = Vec::with_capacity(records.len());
    for e in &records {
        let cycles_done = cycles_accepted(e, &older_counts, remote.target())?;
        rows.push(ListRow::new(&store, record_from_wire(e)?, cycles_done));
    }
    print_list(&store, rows, None, all, json)
}

/// `e`'s accepted cycles: from its record, or (an older coordinator's record has none)
/// from `older_counts`, its `ListResults` counts.
fn cycles_accepted(
    e: &ResultExperiment,
    older_counts: &BTreeMap<String, u64>,
    target: &str,
) -> Result<usize, CliError> {
    match e.cycles_accepted {
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        None => older_count(older_counts, &e.id, target),
    }
}

/// Experiment `id`'s accepted cycles from an older coordinator's listing.
fn older_count(
    older_counts: &BTreeMap<String, u64>,
    id: &str,
    target: &str,
) -> Result<usize, CliError> {
    let accepted = older_counts.get(id).copied().ok_or_else(|| {
        CliError::failure(format!(
            "the coordinator at {target} listed {id} without its accepted cycles"
        ))
    })?;
    Ok(usize::try_from(accepted).unwrap_or(usize::MAX))
}

/// Accepted cycles by experiment id, from `ListResults`.
fn accepted_counts(remote: &Remote) -> Result<BTreeMap<String, u64>, CliError> {
    match remote.request(&CliRequest::ListResults)? {
        CliReply::Results(rows) => Ok(rows
            .into_iter()
            .map(|r| (r.id, r.cycles_accepted))
            .collect()),
        other => Err(unexpected("results list", &other)),
    }
}

/// `results show ID` (not `--raw`): an experiment with a stored aggregate is shown by
/// the embedded code, as embedded mode shows it; one without (its sweep still running,
/// or ended incomplete) gets the aggregate the coordinator computes from its accepted
/// results so far, printed with the same summary.
pub fn show(remote: &Remote, cmd: ResultsCommand) -> Result<Outcome, CliError> {
    let ResultsCommand::Show { id, json, .. } = &cmd else {
        unreachable!("show is called with `results show`");
    };
    let loaded = RemoteStore::load_records(remote, &RecordSelection::ids([id.clone()]))?;
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

/// `aggregate [ID] [--all] [--force] [--json]`: the embedded command's decisions and
/// printing (`results::aggregate_each`) on the coordinator's records; each experiment it
/// aggregates, the coordinator aggregates from its accepted results and stores.
pub fn aggregate(remote: &Remote, args: AggregateArgs) -> Result<Outcome, CliError> {
    let target = remote.target();
    let select = match (&args.id, args.all) {
        (Some(id), false) => RecordSelection::ids([id.clone()]),
        _ => RecordSelection::default(),
    };
    let loaded = RemoteStore::load_records(remote, &select)?;
    let recs = loaded
        .handle
        .read(|s| match (&args.id, args.all) {
            (Some(id), false) => Ok(vec![s.find_experiment(id)?]),
            _ => s.experiments(),
        })
        .map_err(|e| name_the_coordinator(e.into(), target))?;
    // A coordinator built before records carried their accepted count: its listing has it.
    let older_counts = if loaded.cycles_accepted.values().any(Option::is_none) {
        accepted_counts(remote)?
    } else {
        BTreeMap::new()
    };
    let mut candidates = Vec::with_capacity(recs.len());
    for rec in recs {
        let accepted = loaded.cycles_accepted.get(&rec.id).copied().flatten();
        let cycles_with_results = match accepted {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => older_count(&older_counts, &rec.id, target)?,
        };
        let has_aggregate = loaded
            .handle
            .read(|s| s.aggregate::<serde_json::Value>(&rec.id))?
            .is_some();
        candidates.push(AggregateCandidate {
            rec,
            cycles_with_results,
            has_aggregate,
        });
    }
    aggregate_each(candidates, &args, |rec| aggregate_one(remote, &rec.id))
}

/// Has the coordinator aggregate and store experiment `id` (a full id) alone.
fn aggregate_one(remote: &Remote, id: &str) -> Result<AggregateMade, CliError> {
    let sweep_part = id.split('/').next().unwrap_or(id);
    let sweep = parse_sweep_id(sweep_part).map_err(CliError::usage)?.0;
    let request = CliRequest::AggregateSweep {
        sweep,
        experiments: Some(vec![id.to_owned()]),
    };
    let experiments = match remote.request(&request)? {
        CliReply::Aggregated { experiments, .. } => experiments,
        other => return Err(unexpected(request.name(), &other)),
    };
    let made = experiments.iter().find(|e| e.id == id).ok_or_else(|| {
        CliError::failure(format!(
            "the coordinator at {} did not say what it aggregated of {id} (a coordinator \
             older than this lem aggregates whole sweeps: upgrade it)",
            remote.target()
        ))
    })?;
    Ok(AggregateMade {
        cycles: usize::try_from(made.cycles).unwrap_or(usize::MAX),
        complete: made.complete,
    })
}

/// `results show ID --raw`, `results compare`, `results export`, `results table` and
/// `report` (given as `report`) on the coordinator's records, with the embedded code.
pub fn read_command(remote: &Remote, command: ReadCommand) -> Result<Outcome, CliError> {
    let loaded = RemoteStore::load_records(remote, &record_selection(&command))?;
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

/// The records `command` reads, so the coordinator sends only those: the ids (or
/// prefixes) it names, a config-name sweep's, or every one.
fn record_selection(command: &ReadCommand) -> RecordSelection {
    match command {
        ReadCommand::Results(ResultsCommand::Show { id, .. }) => RecordSelection::ids([id.clone()]),
        ReadCommand::Results(ResultsCommand::Compare { a, b, .. }) => {
            RecordSelection::ids([a.clone(), b.clone()])
        }
        ReadCommand::Results(ResultsCommand::Export(ExportArgs { select, .. }))
        | ReadCommand::Results(ResultsCommand::Table(TableArgs { select, .. }))
        | ReadCommand::Report(ReportArgs { select, .. }) => Selection::of(select).on_the_wire(),
        // Listing has its own path (`list`); every record should it ever come here.
        ReadCommand::Results(ResultsCommand::List { .. }) => RecordSelection::default(),
    }
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
    let ids: Vec<String>;
    // Export and report read the raw results of aggregated experiments only.
    let (selection, aggregated_only) = match command {
        ReadCommand::Results(ResultsCommand::Show { id, raw: true, .. }) => {
            ids = vec![id.clone()];
            (Selection::Ids(&ids), false)
        }
        ReadCommand::Results(ResultsCommand::Export(ExportArgs {
            select,
            level: ExportLevel::Request | ExportLevel::Trace,
            ..
        }))
        | ReadCommand::Report(ReportArgs { select, .. }) => (Selection::of(select), true),
        ReadCommand::Results(_) => return Ok(Vec::new()),
    };
    let records: Vec<ExperimentRecord> = store.read(|s| {
        let mut kept = Vec::new();
        for rec in resolve(s, &selection)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, cycles_accepted: Option<u32>) -> ResultExperiment {
        ResultExperiment {
            id: id.into(),
            config_name: "a".into(),
            model_name: "m".into(),
            config: serde_json::json!({}),
            cycles_planned: 3,
            status: "running".into(),
            error: None,
            created_at: String::new(),
            origin: String::new(),
            aggregate: None,
            cycles_accepted,
        }
    }

    #[test]
    fn an_older_coordinators_record_takes_its_count_from_the_listing() {
        let older: BTreeMap<String, u64> = [("sweep-0/a".to_string(), 2)].into();
        // A record's own count wins; the listing is read only where it has none.
        assert_eq!(
            cycles_accepted(&record("sweep-0/a", Some(1)), &older, "h:1").unwrap(),
            1
        );
        assert_eq!(
            cycles_accepted(&record("sweep-0/a", None), &older, "h:1").unwrap(),
            2
        );
        // Neither: an error naming the coordinator and the experiment, not a zero.
        let err = cycles_accepted(&record("sweep-0/b", None), &older, "h:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("h:1") && err.contains("sweep-0/b"), "{err}");
    }
}
