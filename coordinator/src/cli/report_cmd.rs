//! `lem report`: reads stored records, aggregates and raw results, builds the report's
//! data (`crate::report`) and writes one self-contained HTML file atomically.

use super::selection::{select_aggregated, Selection};
use super::{CliError, Outcome, ReportArgs};
use crate::embedded::StoreHandle;
use crate::report::{self, ExperimentInput};
use std::io::Write;
use std::path::Path;

pub fn run(data_dir: &Path, args: ReportArgs) -> Result<Outcome, CliError> {
    run_on(&StoreHandle::new(data_dir), args)
}

/// The report of `store`'s experiments (a data dir's, or a coordinator's records).
pub fn run_on(store: &StoreHandle, args: ReportArgs) -> Result<Outcome, CliError> {
    let selection = Selection::from_args(&args.ids, args.all, args.sweep.as_deref());
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
    write_atomically(&args.out, html.as_bytes())
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

/// Writes `path` through a temporary file beside it and a rename, so a browser never
/// opens half a report and a failed write leaves an earlier report as it was.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.lem-report-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
