//! `lem results export`: stored aggregates (and, per request or trace sample, the raw
//! results they used) as CSV, JSON Lines or Parquet, to stdout or atomically to a file.
//! The store is only read.

use super::atomic_file::write_atomically;
use super::selection::{select_aggregated, Selection};
use super::{CliError, ExportArgs, Outcome};
use crate::aggregate::ExperimentAggregate;
use crate::embedded::StoreHandle;
use crate::export::{self, ExportFormat, ExportLevel};
use lem_common::domain::RawResult;

pub fn export(store: &StoreHandle, args: ExportArgs) -> Result<Outcome, CliError> {
    use std::io::IsTerminal;
    if args.format == ExportFormat::Parquet && args.out.is_none() && std::io::stdout().is_terminal()
    {
        return Err(CliError::usage(
            "--format parquet is binary: give --out FILE (or redirect stdout to a file)",
        ));
    }
    let need_raw = matches!(args.level, ExportLevel::Request | ExportLevel::Trace);
    let found: Vec<(ExperimentAggregate, Vec<RawResult>)> =
        select_aggregated(store, Selection::of(&args.select), need_raw)?
            .into_iter()
            .map(|s| (s.agg, s.raws))
            .collect();
    let table = export::build_table(args.level, &found)?;
    if table.rows.is_empty() {
        // Only traces can be absent from every cycle (RAPL and counter-only readings
        // have none); other levels have a row per aggregated cycle at least.
        return Err(CliError::failure(format!(
            "nothing to export at --level {}: none of the {} experiment(s) has a row at this level{}",
            level_name(args.level),
            found.len(),
            if args.level == ExportLevel::Trace {
                " (no device of any aggregated cycle recorded a power trace)"
            } else {
                ""
            }
        )));
    }
    match &args.out {
        None => export::write_table(&table, args.format, &mut std::io::stdout().lock())?,
        Some(path) => write_atomically(path, "export", |f| {
            export::write_table(&table, args.format, f)
        })
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))?,
    }
    Ok(Outcome::Success)
}

fn level_name(level: ExportLevel) -> String {
    use clap::ValueEnum;
    level
        .to_possible_value()
        .map_or_else(|| format!("{level:?}"), |v| v.get_name().to_string())
}
