//! `lem results table`: one statistic of the selected experiments pivoted over two config
//! fields (`crate::pivot`), printed as text, CSV, Markdown or JSON.

use super::error::outln;
use super::selection::{select_aggregated, Selection};
use super::{CliError, Outcome, TableArgs, TableFormat};
use crate::aggregate::metric_names;
use crate::embedded::StoreHandle;
use crate::pivot::{self, render, PivotInput};

pub fn table(store: &StoreHandle, args: TableArgs) -> Result<Outcome, CliError> {
    let known = metric_names();
    if !known.contains(&args.metric) {
        return Err(CliError::usage(format!(
            "--metric {}: not a statistic of an aggregate; known: {}",
            args.metric,
            known.join(", ")
        )));
    }
    let selection = Selection::of(&args.select);
    let selected = select_aggregated(store, selection, false)?;
    let inputs: Vec<PivotInput> = selected
        .iter()
        .map(|s| PivotInput {
            experiment_id: &s.rec.id,
            created_at: &s.rec.created_at,
            config: &s.rec.effective_config,
            aggregate: &s.agg,
        })
        .collect();
    let p = pivot::build_pivot(&inputs, &args.rows, &args.cols, &args.metric)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&p).expect("plain data"));
        return Ok(Outcome::Success);
    }
    match args.format {
        TableFormat::Text => outln!("{}", render::text(&p).trim_end()),
        TableFormat::Markdown => outln!("{}", render::markdown(&p).trim_end()),
        TableFormat::Csv => {
            let csv = render::csv(&p)
                .map_err(|e| CliError::failure(format!("cannot write the CSV: {e}")))?;
            outln!("{}", csv.trim_end());
            // Stdout stays a clean table for tools; the notes go beside it.
            for (i, n) in p.notes.iter().enumerate() {
                eprintln!("[{}] {n}", i + 1);
            }
        }
    }
    Ok(Outcome::Success)
}
