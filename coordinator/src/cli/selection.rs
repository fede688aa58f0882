//! Which experiments `lem results export`, `lem results table` and `lem report` take: named ids (or
//! prefixes), `--all`, or `--sweep S`; each with its aggregate and, where asked for, its
//! raw results. The store is only read.

use super::CliError;
use crate::aggregate::ExperimentAggregate;
use crate::embedded::StoreHandle;
use crate::store::ExperimentRecord;
use lem_common::domain::RawResult;

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
    pub(super) fn from_args(ids: &'a [String], all: bool, sweep: Option<&'a str>) -> Self {
        match (all, sweep) {
            (true, _) => Self::All,
            (false, Some(s)) => Self::Sweep(s),
            (false, None) => Self::Ids(ids),
        }
    }
}

/// True when `config_name` is sweep `sweep`'s base or one of its grid points.
pub(super) fn in_sweep(config_name: &str, sweep: &str) -> bool {
    config_name == sweep
        || config_name
            .strip_prefix(sweep)
            .is_some_and(|rest| rest.starts_with("__"))
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
        let recs: Vec<ExperimentRecord> = match &selection {
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
        };
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

#[cfg(test)]
mod tests {
    use super::in_sweep;

    #[test]
    fn a_sweep_is_its_base_and_the_grid_points_named_after_it() {
        assert!(in_sweep("base-exp", "base-exp"));
        assert!(in_sweep(
            "base-exp__batch_size-4__fp_precision-float16",
            "base-exp"
        ));
        // Another config that only starts with the same letters is not in it.
        assert!(!in_sweep("base-exp2__batch_size-4", "base-exp"));
        assert!(!in_sweep("base", "base-exp"));
    }
}
