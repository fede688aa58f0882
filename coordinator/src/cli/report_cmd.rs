//! `lem report`: reads stored records, aggregates and raw results, builds the report's
//! data (`crate::report`) and writes one self-contained HTML file atomically.

use super::{CliError, Outcome, ReportArgs};
use crate::aggregate::ExperimentAggregate;
use crate::embedded::StoreHandle;
use crate::report::{self, ExperimentInput};
use crate::store::ExperimentRecord;
use std::io::Write;
use std::path::Path;

pub fn run(data_dir: &Path, args: ReportArgs) -> Result<Outcome, CliError> {
    let store = StoreHandle::new(data_dir);
    let (inputs, skipped) = store.read(|s| {
        let recs: Vec<ExperimentRecord> = if args.all {
            s.experiments()?
        } else {
            let mut recs: Vec<ExperimentRecord> = Vec::new();
            for id in &args.ids {
                let rec = s.find_experiment(id)?;
                if !recs.iter().any(|r| r.id == rec.id) {
                    recs.push(rec);
                }
            }
            recs
        };
        let mut inputs = Vec::new();
        let mut skipped = Vec::new();
        for record in recs {
            match s.aggregate::<ExperimentAggregate>(&record.id)? {
                Some(aggregate) => {
                    let raws = s.raw_results(&record.id)?;
                    inputs.push(ExperimentInput {
                        record,
                        aggregate,
                        raws,
                    });
                }
                None => skipped.push(record),
            }
        }
        Ok((inputs, skipped))
    })?;
    if !args.all {
        if let Some(rec) = skipped.first() {
            return Err(CliError::failure(format!(
                "experiment {} ({}) has no aggregate to report; aggregate it first: {}",
                rec.id,
                rec.status.as_str(),
                super::lem_hint(data_dir, &format!("aggregate {}", rec.id))
            )));
        }
    }
    for rec in &skipped {
        eprintln!("skipped {} ({}): no aggregate", rec.id, rec.status.as_str());
    }
    if inputs.is_empty() {
        return Err(CliError::failure(format!(
            "nothing to report: no experiment in {} has an aggregate",
            data_dir.display()
        )));
    }
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
