//! The records `lem --coordinator X results compare|export|table`, `results show --raw`
//! and `report` read, in pages: each sweep experiment as the embedded store keeps an
//! experiment (record + stored aggregate), and its accepted results. The CLI loads them
//! into a store of its own and runs the embedded commands on it, so the output is the
//! embedded output. Only accepted results are sent: a superseded one (a fenced
//! attempt's) never leaves the store.

use crate::driver::sweep_experiment_id;
use crate::scheduler::{JobStatus, Scheduler, SweepExperimentView, SweepId};
use crate::store::{Store, StoreError};
use lem_common::domain::RawResult;
use lem_common::wire::cli::{CliReply, RecordSelection, ResultExperiment};
use lem_common::wire::{encode_frame, MAX_FRAME_BYTES};
use serde::Serialize;

/// Why a page cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no experiment `{id}` on the coordinator (ids as `lem results list` shows them)")]
    UnknownExperiment { id: String },
    #[error("{what} is {bytes} bytes encoded, more than one frame may carry ({MAX_FRAME_BYTES})")]
    TooLarge { what: String, bytes: usize },
}

/// The experiments `select` takes after `after` (ids in byte order, as a store lists
/// them), as many as fit `page_bytes` (at least one). Only those are read from the
/// store: a command that names one experiment never costs every record.
pub fn experiment_page(
    scheduler: &Scheduler,
    store: &Store,
    after: Option<&str>,
    select: &RecordSelection,
    page_bytes: usize,
) -> Result<CliReply, PageError> {
    let mut ids: Vec<(String, SweepId, usize)> = Vec::new();
    for sweep in scheduler.sweep_ids() {
        for (index, e) in scheduler.sweep_experiments(sweep).enumerate() {
            let id = sweep_experiment_id(sweep, e.name);
            if after.is_none_or(|a| id.as_str() > a) && select.takes(&id, e.name) {
                ids.push((id, sweep, index));
            }
        }
    }
    ids.sort();
    let mut page = Page::new(page_bytes);
    for (id, sweep, index) in &ids {
        let Some(view) = scheduler.sweep_experiments(*sweep).nth(*index) else {
            continue;
        };
        let with_aggregate = !select.without_aggregates;
        let item = result_experiment(scheduler, store, id, *sweep, &view, with_aggregate)?;
        if !page.push(item, || format!("the record of {id}"))? {
            break;
        }
    }
    let more = page.items.len() < ids.len();
    Ok(CliReply::ResultRecords {
        experiments: page.items,
        more,
    })
}

/// The accepted results of experiment `id` after cycle `after_cycle`, in cycle order, as
/// many as fit `page_bytes` (at least one). Each result's `experiment_id` is `id`: the
/// agent names only the experiment, which is unique within its sweep alone.
pub fn accepted_page(
    scheduler: &Scheduler,
    store: &Store,
    id: &str,
    after_cycle: Option<u32>,
    page_bytes: usize,
) -> Result<CliReply, PageError> {
    let found = scheduler.sweep_ids().find_map(|sweep| {
        scheduler
            .sweep_experiments(sweep)
            .find(|e| sweep_experiment_id(sweep, e.name) == id)
    });
    let Some(view) = found else {
        return Err(PageError::UnknownExperiment { id: id.to_owned() });
    };
    // (cycle, accepted attempt), cycles ascending.
    let mut accepted: Vec<_> = view
        .jobs
        .iter()
        .filter_map(|job| scheduler.job(*job))
        .filter_map(|job| match job.status {
            JobStatus::Accepted(attempt) => Some((job.cycle, attempt)),
            _ => None,
        })
        .filter(|(cycle, _)| after_cycle.is_none_or(|after| *cycle > after))
        .collect();
    accepted.sort();
    let mut page = Page::new(page_bytes);
    for (cycle, attempt) in &accepted {
        let stored = store.result(*attempt)?.ok_or_else(|| StoreError::BadKey {
            tree: "results",
            key: format!("{attempt} (accepted for {id} cycle {cycle}, no stored body)"),
        })?;
        let mut raw: RawResult = stored.raw;
        raw.experiment_id = id.to_owned();
        if !page.push(raw, || format!("the result of {id} cycle {}", cycle + 1))? {
            break;
        }
    }
    let more = page.items.len() < accepted.len();
    Ok(CliReply::AcceptedResults {
        id: id.to_owned(),
        results: page.items,
        more,
    })
}

/// One experiment as the results commands read it (its stored aggregate only when
/// `with_aggregate`). Its status comes from its jobs:
/// every cycle accepted → completed; any open → running; any failed → failed (with the
/// first failed cycle's last error); else cancelled → interrupted.
fn result_experiment(
    scheduler: &Scheduler,
    store: &Store,
    id: &str,
    sweep: SweepId,
    view: &SweepExperimentView<'_>,
    with_aggregate: bool,
) -> Result<ResultExperiment, StoreError> {
    let jobs: Vec<_> = view.jobs.iter().filter_map(|j| scheduler.job(*j)).collect();
    let accepted: Vec<_> = jobs
        .iter()
        .filter_map(|j| match j.status {
            JobStatus::Accepted(attempt) => Some((j.cycle, attempt)),
            _ => None,
        })
        .collect();
    let first_accepted = accepted.iter().min().copied();
    let first_raw = match first_accepted {
        Some((_, attempt)) => store.result(attempt)?.map(|s| s.raw),
        None => None,
    };
    let open = jobs
        .iter()
        .any(|j| matches!(j.status, JobStatus::Pending | JobStatus::Leased(_)));
    let failed: Vec<_> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Failed)
        .collect();
    let (status, error) = if jobs
        .iter()
        .all(|j| matches!(j.status, JobStatus::Accepted(_)))
    {
        ("completed", None)
    } else if open {
        ("running", None)
    } else if let Some(first) = failed.iter().min_by_key(|j| j.cycle) {
        let why = first.errors.last().map_or("no error was recorded", |e| e);
        (
            "failed",
            Some(format!(
                "{} of {} cycles failed; cycle {}: {why}",
                failed.len(),
                jobs.len(),
                first.cycle + 1
            )),
        )
    } else {
        ("interrupted", None)
    };
    let model_name = view
        .config
        .get("model_name")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or_else(|| first_raw.as_ref().map(|r| r.model.requested.clone()))
        .unwrap_or_default();
    Ok(ResultExperiment {
        id: id.to_owned(),
        config_name: view.name.to_owned(),
        model_name,
        config: view.config.clone(),
        cycles_planned: jobs.len() as u32,
        status: status.to_owned(),
        error,
        created_at: first_raw.map(|r| r.started_at).unwrap_or_default(),
        origin: format!(
            "sweep `{}` ({sweep})",
            scheduler.sweep_name(sweep).unwrap_or_default()
        ),
        aggregate: if with_aggregate {
            store.aggregate::<serde_json::Value>(id)?
        } else {
            None
        },
        cycles_accepted: Some(accepted.len() as u32),
    })
}

/// Items up to a byte budget, measured as the wire encodes them.
struct Page<T> {
    items: Vec<T>,
    bytes: usize,
    budget: usize,
}

impl<T: Serialize> Page<T> {
    fn new(budget: usize) -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            budget,
        }
    }

    /// Adds `item` if it fits (the first always does, unless it exceeds a frame); false
    /// when the page is full and `item` was left for the next.
    fn push(&mut self, item: T, what: impl FnOnce() -> String) -> Result<bool, PageError> {
        let bytes = encode_frame(&item, u32::MAX).map_or(usize::MAX, |v| v.len());
        // Room for the reply around it.
        if bytes > MAX_FRAME_BYTES as usize / 2 {
            return Err(PageError::TooLarge {
                what: what(),
                bytes,
            });
        }
        if !self.items.is_empty() && self.bytes + bytes > self.budget {
            return Ok(false);
        }
        self.bytes += bytes;
        self.items.push(item);
        Ok(true)
    }
}

#[cfg(test)]
#[path = "result_pages_tests.rs"]
mod tests;
