//! Which experiments `lem results export`, `lem results table` and `lem report` take
//! (`SelectionArgs`): named ids (or prefixes), `--all`, or `--sweep S`; each with its
//! aggregate and, where asked for, its raw results. The store is only read. Through a
//! coordinator the same selection tells it which records to send.

use super::{CliError, SelectionArgs};
use crate::aggregate::ExperimentAggregate;
use crate::embedded::StoreHandle;
use crate::store::{ExperimentRecord, Store, StoreError};
use lem_common::domain::RawResult;
use lem_common::wire::cli::{in_sweep, RecordSelection};

/// An experiment with its aggregate and, where asked for, its raw results.
pub(super) struct Selected {
    pub rec: ExperimentRecord,
    pub agg: ExperimentAggregate,
    pub raws: Vec<RawResult>,
}

/// Which experiments a command takes.
pub(super) enum Selection<'a> {
    Ids(&'a [String]),
    All,
    /// The points of a grid: config name `S` or `S__…`, as `lem config generate-grid`
    /// names them from its base config.
    Sweep(&'a str),
}

impl<'a> Selection<'a> {
    /// What the command line asked for (clap lets only one of them through).
    pub(super) fn of(args: &'a SelectionArgs) -> Self {
        match (args.all, args.sweep.as_deref()) {
            (true, _) => Self::All,
            (false, Some(s)) => Self::Sweep(s),
            (false, None) => Self::Ids(&args.ids),
        }
    }

    /// The records a coordinator sends for this selection (ids as prefixes: the private
    /// store then tells a unique prefix from an ambiguous one as a data dir's does).
    pub(super) fn on_the_wire(&self) -> RecordSelection {
        match self {
            Self::All => RecordSelection::default(),
            Self::Sweep(sweep) => RecordSelection {
                sweep: Some((*sweep).to_owned()),
                ..RecordSelection::default()
            },
            Self::Ids(ids) => RecordSelection::ids(ids.iter().cloned()),
        }
    }
}

/// The records `selection` takes from `s`, in store order; a named one each once. An id
/// that matches nothing (or a prefix that matches several) is the store's error.
pub(super) fn resolve(
    s: &Store,
    selection: &Selection,
) -> Result<Vec<ExperimentRecord>, StoreError> {
    Ok(match selection {
        Selection::All => s.experiments()?,
        Selection::Sweep(sweep) => s
            .experiments()?
            .into_iter()
            .filter(|r| in_sweep(&r.config_name, sweep))
            .collect(),
        Selection::Ids(ids) => {
            let mut recs: Vec<ExperimentRecord> = Vec::new();
            for id in *ids {
                let rec = s.find_experiment(id)?;
                // The same experiment named twice (id and prefix) is taken once.
                if !recs.iter().any(|r| r.id == rec.id) {
                    recs.push(rec);
                }
            }
            recs
        }
    })
}

/// The selected experiments (named ones each once) that have an aggregate. A named one
/// without an aggregate is an error that says how to make one; under `--all` or
/// `--sweep` those are named on stderr. None at all is an error.
pub(super) fn select_aggregated(
    store: &StoreHandle,
    selection: Selection,
    need_raw: bool,
) -> Result<Vec<Selected>, CliError> {
    let named = matches!(selection, Selection::Ids(_));
    // One store open for every record, aggregate and raw result.
    let (found, skipped) = store.read(|s| {
        let recs = resolve(s, &selection)?;
        let mut found: Vec<Selected> = Vec::new();
        let mut skipped: Vec<ExperimentRecord> = Vec::new();
        for rec in recs {
            match s.aggregate::<ExperimentAggregate>(&rec.id)? {
                Some(agg) => {
                    let raws = if need_raw {
                        s.raw_results(&rec.id)?
                    } else {
                        Vec::new()
                    };
                    found.push(Selected { rec, agg, raws });
                }
                None => skipped.push(rec),
            }
        }
        Ok((found, skipped))
    })?;
    if named {
        if let Some(rec) = skipped.first() {
            return Err(CliError::failure(format!(
                "experiment {} ({}) has no aggregate; aggregate it first: {}",
                rec.id,
                rec.status.as_str(),
                super::store_hint(store, &format!("aggregate {}", rec.id))
            )));
        }
    }
    for rec in &skipped {
        eprintln!("skipped {} ({}): no aggregate", rec.id, rec.status.as_str());
    }
    if found.is_empty() {
        let which = match selection {
            Selection::Sweep(sweep) => format!(
                " of sweep `{sweep}` (config name `{sweep}` or `{sweep}__…`, as `lem config generate-grid` names its points)"
            ),
            _ => String::new(),
        };
        return Err(CliError::failure(format!(
            "no experiment{which} in {} has an aggregate",
            super::store_place(store)
        )));
    }
    Ok(found)
}
