//! `lem report`: one self-contained HTML file with plots of stored results. The data
//! comes from the stored aggregates and the raw results they were computed from; the
//! page embeds it as JSON and draws it with the vendored uPlot (`assets/uplot`, from
//! `scripts/vendor-report-js.sh`). Nothing is fetched when the page is viewed.

mod compare;
mod experiment;
mod html;
pub mod model;
mod provenance;

use crate::aggregate::ExperimentAggregate;
use crate::store::ExperimentRecord;
pub use html::render;
use lem_common::domain::RawResult;
pub use model::ReportData;

/// One experiment to report: its record, stored aggregate and raw results.
#[derive(Debug, Clone)]
pub struct ExperimentInput {
    pub record: ExperimentRecord,
    pub aggregate: ExperimentAggregate,
    pub raws: Vec<RawResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("a report needs at least one experiment")]
    NoExperiments,
    #[error("cannot serialise the report data: {0}")]
    Json(#[from] serde_json::Error),
}

/// The report's data for `inputs`, in the order given. `generated_at` is RFC 3339.
pub fn build(inputs: &[ExperimentInput], generated_at: &str) -> Result<ReportData, ReportError> {
    if inputs.is_empty() {
        return Err(ReportError::NoExperiments);
    }
    let (comparison, comparison_absent_reason) = if inputs.len() >= 2 {
        (Some(compare::comparison(inputs)), None)
    } else {
        (
            None,
            Some("one experiment: name two or more to compare them".to_string()),
        )
    };
    Ok(ReportData {
        generated_at: generated_at.to_string(),
        lem_version: env!("CARGO_PKG_VERSION").to_string(),
        experiments: inputs.iter().map(experiment::section).collect(),
        comparison,
        comparison_absent_reason,
    })
}

#[cfg(test)]
mod tests;
