//! CLI requests answered on the driver thread: the ones that change state go through the
//! scheduler as events (their replies come back from the same call); the read-only ones
//! are answered from the scheduler's views and the store.

use super::result_pages::{accepted_page, experiment_page};
use super::QuicLink;
use crate::driver::{
    aggregate_sweep, aggregates_to_store, sweep_experiment_id, Driver, DriverError, Executed,
};
use crate::scheduler::{AgentId, Event, JobStatus, RequestId, Scheduler, SweepId, TimeMs};
use crate::store::{Store, StoreError, SweepRow};
use crate::wire_cli_edge::{
    agent_to_wire, job_status_name, lease_to_wire, progress_to_wire, reply_to_wire,
    submission_from_wire,
};
use lem_common::wire::cli::{
    AggregatedExperiment, CliReply, CliRequest, JobSummary, ResultSummary, StatusSnapshot,
    SweepDetail, SweepSummary, RESULTS_PAGE_BYTES,
};
use std::sync::Arc;

type ServerDriver = Driver<QuicLink, Arc<Store>>;

/// The reply to `request`, and what the driver did (an error means it must be rebuilt).
pub fn answer(
    driver: &mut ServerDriver,
    request: CliRequest,
    next_request: &mut u64,
    now: TimeMs,
) -> (CliReply, Result<Executed, DriverError>) {
    let mut via_scheduler = |make: &dyn Fn(RequestId) -> Event| {
        *next_request += 1;
        let request = RequestId(*next_request);
        match driver.handle(make(request), None, now) {
            Ok(done) => {
                let reply = done
                    .replies
                    .iter()
                    .find(|(r, _)| *r == request)
                    .map(|(_, reply)| reply_to_wire(reply.clone()))
                    .unwrap_or_else(|| refused("the scheduler gave no answer"));
                (reply, Ok(done))
            }
            Err(error) => (refused(&error.to_string()), Err(error)),
        }
    };
    match request {
        CliRequest::SubmitSweep(submission) => {
            let submission = submission_from_wire(submission);
            via_scheduler(&|request| Event::SubmitSweep {
                request,
                submission: submission.clone(),
            })
        }
        CliRequest::CancelSweep { sweep } => via_scheduler(&|request| Event::CancelSweep {
            request,
            sweep: SweepId(sweep),
        }),
        CliRequest::ResumeSweep { sweep } => via_scheduler(&|request| Event::ResumeSweep {
            request,
            sweep: SweepId(sweep),
        }),
        CliRequest::DrainAgent { agent } => via_scheduler(&|request| Event::DrainAgent {
            request,
            agent: AgentId(agent.clone()),
        }),
        read_only => (
            read(driver, read_only).unwrap_or_else(|e| refused(&e.to_string())),
            Ok(Executed::default()),
        ),
    }
}

/// Pending jobs counted by sweep and reason, one line per group, in sweep order.
fn waiting_lines(scheduler: &Scheduler) -> Vec<String> {
    let sweep_of: std::collections::BTreeMap<_, _> = scheduler
        .jobs()
        .filter(|j| j.status == JobStatus::Pending)
        .map(|j| (j.job, j.sweep))
        .collect();
    let mut groups: std::collections::BTreeMap<(SweepId, String), usize> = Default::default();
    for (job, reason) in scheduler.pending_reasons(sweep_of.keys().copied()) {
        *groups.entry((sweep_of[&job], reason)).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((sweep, reason), n)| format!("{sweep}: {n} job(s): {reason}"))
        .collect()
}

fn refused(reason: &str) -> CliReply {
    CliReply::Refused {
        reason: reason.to_owned(),
    }
}

fn read(driver: &ServerDriver, request: CliRequest) -> Result<CliReply, StoreError> {
    let scheduler = driver.scheduler();
    let store: &Store = driver.store();
    let summary = |sweep: SweepId| {
        scheduler.sweep_progress(sweep).map(|p| SweepSummary {
            sweep: sweep.0,
            name: scheduler.sweep_name(sweep).unwrap_or_default().to_owned(),
            progress: progress_to_wire(p),
        })
    };
    let sweeps = || -> Vec<SweepSummary> { scheduler.sweep_ids().filter_map(summary).collect() };
    Ok(match request {
        CliRequest::ListSweeps => CliReply::Sweeps(sweeps()),
        CliRequest::ShowSweep { sweep } => {
            let (Some(summary), Some(row)) =
                (summary(SweepId(sweep)), store.sweep(SweepId(sweep))?)
            else {
                return Ok(refused(&format!("no such sweep: sweep-{sweep}")));
            };
            let mut reasons = scheduler.pending_reasons(
                scheduler
                    .jobs()
                    .filter(|j| j.sweep == row.sweep && j.status == JobStatus::Pending)
                    .map(|j| j.job),
            );
            let jobs = scheduler
                .jobs()
                .filter(|j| j.sweep == row.sweep)
                .map(|j| JobSummary {
                    job: j.job.0,
                    experiment_name: row
                        .experiment_names
                        .get(j.experiment as usize)
                        .cloned()
                        .unwrap_or_default(),
                    cycle: j.cycle,
                    status: job_status_name(j.status).to_owned(),
                    errors: j.errors.to_vec(),
                    pending_reason: reasons.remove(&j.job),
                })
                .collect();
            CliReply::Sweep(SweepDetail { summary, jobs })
        }
        CliRequest::Status => CliReply::Status(StatusSnapshot {
            agents: scheduler.agents().map(agent_to_wire).collect(),
            leases: scheduler.leases().map(lease_to_wire).collect(),
            queued_jobs: scheduler.queued_jobs() as u64,
            sweeps: sweeps(),
            waiting: waiting_lines(scheduler),
        }),
        CliRequest::ListAgents => CliReply::Agents(scheduler.agents().map(agent_to_wire).collect()),
        CliRequest::ListResults => {
            let mut out = Vec::new();
            for row in store.sweeps()? {
                let finished = scheduler
                    .sweep_progress(row.sweep)
                    .is_none_or(|p| p.is_finished());
                out.extend(result_summaries(store, &row, finished)?);
            }
            CliReply::Results(out)
        }
        CliRequest::ShowResult { id } => show_result(store, &id)?,
        CliRequest::ResultRecords { after, select } => experiment_page(
            scheduler,
            store,
            after.as_deref(),
            &select,
            RESULTS_PAGE_BYTES,
        )
        .unwrap_or_else(|e| refused(&e.to_string())),
        CliRequest::AcceptedResults { id, after_cycle } => {
            accepted_page(scheduler, store, &id, after_cycle, RESULTS_PAGE_BYTES)
                .unwrap_or_else(|e| refused(&e.to_string()))
        }
        CliRequest::AggregateSweep { sweep, experiments } => {
            aggregate_and_store(store, SweepId(sweep), experiments.as_deref())?
        }
        // The CLI session answers join-token requests from the store's token book.
        CliRequest::ListJoinTokens => refused("join tokens are answered by the CLI session"),
        // Changes go through the scheduler (`answer`), never here.
        CliRequest::SubmitSweep(_)
        | CliRequest::CancelSweep { .. }
        | CliRequest::ResumeSweep { .. }
        | CliRequest::DrainAgent { .. }
        | CliRequest::CreateJoinToken { .. }
        | CliRequest::RevokeJoinToken { .. } => refused("not a read-only request"),
    })
}

/// `AggregateSweep`: the aggregates of `sweep` (of only `experiments`, when given)
/// computed again from its accepted results and stored. Experiments without an accepted
/// cycle get none; one asked for by id is refused, naming it.
fn aggregate_and_store(
    store: &Store,
    sweep: SweepId,
    experiments: Option<&[String]>,
) -> Result<CliReply, StoreError> {
    if store.sweep(sweep)?.is_none() {
        return Ok(refused(&format!("no such sweep: {sweep}")));
    }
    let mut made = aggregates_to_store(store, sweep)?;
    if let Some(wanted) = experiments {
        for id in wanted {
            if !made.iter().any(|agg| &agg.experiment_id == id) {
                return Ok(refused(&format!(
                    "{id}: nothing to aggregate in {sweep} (no such experiment, or no accepted cycle)"
                )));
            }
        }
        made.retain(|agg| wanted.contains(&agg.experiment_id));
    }
    let mut ids = Vec::with_capacity(made.len());
    let mut entries = Vec::with_capacity(made.len());
    for agg in made {
        store.put_aggregate(&agg.experiment_id, &agg)?;
        entries.push(AggregatedExperiment {
            id: agg.experiment_id.clone(),
            cycles: u32::try_from(agg.cycles.len()).unwrap_or(u32::MAX),
            complete: agg.complete,
        });
        ids.push(agg.experiment_id);
    }
    Ok(CliReply::Aggregated {
        sweep: sweep.0,
        ids,
        experiments: entries,
    })
}

/// One row per experiment of `row`, counting each job's accepted result once.
fn result_summaries(
    store: &Store,
    row: &SweepRow,
    sweep_finished: bool,
) -> Result<Vec<ResultSummary>, StoreError> {
    let jobs = store.jobs_of_sweep(row)?;
    let accepted = store.accepted_results(row)?;
    Ok(row
        .experiment_names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let index = index as u32;
            let total = jobs.iter().filter(|j| j.experiment == index).count() as u64;
            let mine: Vec<_> = accepted
                .iter()
                .filter(|a| a.job.experiment == index)
                .collect();
            let done = mine.len() as u64;
            let status = if done == total {
                "completed"
            } else if sweep_finished {
                "incomplete"
            } else {
                "running"
            };
            ResultSummary {
                id: sweep_experiment_id(row.sweep, name),
                sweep: row.sweep.0,
                experiment_name: name.clone(),
                model: mine
                    .first()
                    .map(|a| a.raw.model.requested.clone())
                    .unwrap_or_default(),
                cycles_accepted: done,
                cycles_total: total,
                status: status.to_owned(),
            }
        })
        .collect())
}

/// The stored aggregate of the experiment `id` names (or uniquely starts), computed from
/// its accepted results when the sweep has not finished yet (not stored then).
fn show_result(store: &Store, id: &str) -> Result<CliReply, StoreError> {
    let mut matches = Vec::new();
    for row in store.sweeps()? {
        for name in &row.experiment_names {
            let full = sweep_experiment_id(row.sweep, name);
            if full == id {
                matches = vec![(row.sweep, full)];
                break;
            }
            if full.starts_with(id) {
                matches.push((row.sweep, full));
            }
        }
    }
    let (sweep, full) = match matches.as_slice() {
        [one] => one.clone(),
        [] => {
            return Ok(refused(&format!(
                "no experiment {id:?} (see `lem results list`)"
            )))
        }
        many => {
            let ids: Vec<&str> = many.iter().map(|(_, f)| f.as_str()).collect();
            return Ok(refused(&format!("{id:?} is ambiguous: {}", ids.join(", "))));
        }
    };
    let aggregate = match store.aggregate::<serde_json::Value>(&full)? {
        Some(stored) => stored,
        None => match aggregate_sweep(store, sweep)?
            .into_iter()
            .find(|a| a.experiment_id == full)
        {
            Some(fresh) => serde_json::to_value(&fresh).expect("an aggregate serialises"),
            None => return Ok(refused(&format!("{full} has no results yet"))),
        },
    };
    let model_info = match store.sweep(sweep)? {
        Some(row) => store
            .accepted_results(&row)?
            .into_iter()
            .find(|a| sweep_experiment_id(sweep, &a.job.experiment_name) == full)
            .map(|a| serde_json::to_value(&a.raw.model).expect("model info serialises")),
        None => None,
    };
    Ok(CliReply::Aggregate {
        id: full,
        aggregate,
        model_info,
    })
}
