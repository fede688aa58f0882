//! `lem report`: reads stored records, aggregates and raw results, builds the report's
//! data (`crate::report`) and writes one self-contained HTML file atomically.

use super::atomic_file::write_atomically;
use super::selection::{select_aggregated, Selection};
use super::{CliError, Outcome, ReportArgs};
use crate::embedded::StoreHandle;
use crate::report::{self, ExperimentInput};
use std::path::Path;

pub fn run(data_dir: &Path, args: ReportArgs) -> Result<Outcome, CliError> {
    run_on(&StoreHandle::new(data_dir), args)
}

/// The report of `store`'s experiments (a data dir's, or a coordinator's records).
pub fn run_on(store: &StoreHandle, args: ReportArgs) -> Result<Outcome, CliError> {
    let selection = Selection::of(&args.select);
    let inputs: Vec<ExperimentInput> = select_aggregated(store, selection, true)?
        .into_iter()
        .map(|s| ExperimentInput {
            record: s.rec,
            aggregate: s.agg,
            raws: s.raws,
        })
        .collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let html = report::build(&inputs, &now)
        .and_then(|data| report::render(&data))
        .map_err(|e| CliError::failure(format!("cannot build the report: {e}")))?;
    write_atomically(&args.out, "report", |f| f.write_all(html.as_bytes()))
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", args.out.display())))?;
    eprintln!(
        "wrote {} ({} experiment{}, {} KiB)",
        args.out.display(),
        inputs.len(),
        if inputs.len() == 1 { "" } else { "s" },
        html.len() / 1024
    );
    Ok(Outcome::Success)
}
