//! Embedded mode on the scheduler: `lem experiment` and `lem batch` submit their
//! experiments as one sweep (or resume the sweeps that hold them) to a driver with
//! in-process agents, one per `--parallel` runner, and drive it to the end. Accepted
//! results are copied into the `raw` tree under their experiment (what `lem results`
//! reads) before they are reported; Ctrl+C cancels the sweeps' unfinished jobs, and a
//! resume requeues them (`ResumeSweep`).

mod device_requirements;
mod lock;
mod needs;
mod outcome;
mod raw_copy;

pub use device_requirements::embedded_device_requirements;
pub use lock::{DriverLock, LockError, LOCK_FILE};
pub use needs::{experiment_claim_key, pinned_needs};
pub use outcome::{classify, ExperimentEnd};
pub use raw_copy::{catch_up_raw_tree, copy_to_raw_tree, sweeps_of};

use crate::driver::{
    drive_sweep, in_process_scheduler_config, spawn_local_agent, ChannelLink, Driver, DriverError,
    Executed, MonotonicClock,
};
use crate::embedded::StoreHandle;
use crate::embedded_agent::{RunShared, RunnerExecutor};
use crate::scheduler::{
    AgentId, DeviceKey, Event, Inventory, JobStatus, Reply, RequestId, SchedulerError, SweepId,
    SweepSubmission,
};
use crate::store::StoreError;
use lem_common::domain::RawResult;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// An embedded run fails only when lem itself cannot go on; an experiment's own failure
/// is an [`ExperimentEnd`].
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the scheduler refused the sweep: {0}")]
    Refused(SchedulerError),
    #[error("the scheduler did not answer a sweep submission as it should: {0}")]
    Unanswered(String),
    #[error("cannot start a runner thread: {0}")]
    Thread(std::io::Error),
}

/// What to drive.
pub enum Work {
    /// Submit new sweeps, in order (their experiments' records are stored already, named
    /// by id).
    Submit(Vec<SweepSubmission>),
    /// Requeue these sweeps' cancelled and failed jobs and drive them.
    Resume(Vec<SweepId>),
}

/// What the CLI shows while the sweeps run. Called on the driving thread, after the
/// store holds what is reported.
pub trait RunObserver {
    /// `experiment`'s `cycle` was leased to runner `runner` (0-based).
    fn leased(&mut self, _runner: usize, _experiment: &str, _cycle: u32) {}
    /// A cycle's result is stored (flushed) under its experiment.
    fn stored(&mut self, _raw: &RawResult) {}
    /// Every cycle of `experiment` in the driven sweeps is stored.
    fn experiment_done(&mut self, _experiment: &str) {}
    /// Experiments with leased jobs, and experiments whose jobs all wait (none leased).
    fn queue(&mut self, _running: &BTreeSet<String>, _waiting: &BTreeSet<String>) {}
}

/// The end of an embedded run: each driven experiment's end, by name (none when the run
/// was stopped before it could start).
#[derive(Debug)]
pub struct RunReport {
    pub sweeps: Vec<SweepId>,
    pub ends: BTreeMap<String, ExperimentEnd>,
}

/// Drives `work` to its end on `executors.len()` in-process agents (at least one).
/// `stop` (Ctrl+C) cancels the unfinished jobs of the driven sweeps.
pub fn run(
    store: &StoreHandle,
    work: Work,
    executors: Vec<RunnerExecutor>,
    shared: &Arc<RunShared>,
    stop: &AtomicBool,
    observer: &mut dyn RunObserver,
) -> Result<RunReport, RunFailure> {
    // Ctrl+C while another process holds the data dir: nothing ran, nothing to cancel.
    let _lock = match DriverLock::acquire(&store.data_dir, stop) {
        Err(LockError::Interrupted { .. }) => {
            return Ok(RunReport {
                sweeps: Vec::new(),
                ends: BTreeMap::new(),
            })
        }
        other => other?,
    };
    let clock = MonotonicClock::starting_at(0);
    let mut link = ChannelLink::new();
    let (events_tx, events) = mpsc::channel();
    let agents: Vec<AgentId> = (0..executors.len())
        .map(|i| AgentId(format!("local-{i}")))
        .collect();
    let inboxes: Vec<_> = agents.iter().map(|a| link.connect(a.clone())).collect();
    let mut driver = Driver::start(
        store.clone(),
        link,
        in_process_scheduler_config(1),
        clock.now(),
    )?;
    let mut threads = Vec::new();
    for ((agent, executor), messages) in agents.iter().zip(executors).zip(inboxes) {
        let inventory = Inventory {
            runner_slots: vec![DeviceKey(format!("runner:{agent}"))],
            ..Inventory::default()
        };
        // A fence the store kept for this agent covers a run of an earlier process,
        // which died with it: reported lost, its devices are free at once.
        let lost = driver.scheduler().fenced_runs_of(agent);
        let thread = spawn_local_agent(
            agent.clone(),
            inventory,
            lost,
            executor,
            messages,
            events_tx.clone(),
        )
        .map_err(RunFailure::Thread)?;
        threads.push(thread);
    }
    drop(events_tx);
    let result = submit_and_drive(&mut driver, &events, &clock, work, &agents, stop, observer);
    // Closing the links ends each runner thread once its current run returns (a stop
    // flag ends a run at its next token).
    for agent in &agents {
        driver.link_mut().disconnect(agent);
    }
    for t in threads {
        let _ = t.join();
    }
    let (sweeps, names) = result?;
    let ends = classify(driver.scheduler(), &sweeps, &names, shared);
    Ok(RunReport { sweeps, ends })
}

type Names = BTreeMap<SweepId, Vec<String>>;

fn submit_and_drive(
    driver: &mut Driver<ChannelLink, StoreHandle>,
    events: &mpsc::Receiver<crate::driver::AgentEvent>,
    clock: &MonotonicClock,
    work: Work,
    agents: &[AgentId],
    stop: &AtomicBool,
    observer: &mut dyn RunObserver,
) -> Result<(Vec<SweepId>, Names), RunFailure> {
    let mut request = 0u64;
    let sweeps = match work {
        Work::Submit(submissions) => {
            let mut sweeps = Vec::new();
            for submission in submissions {
                request += 1;
                let done = driver.handle(
                    Event::SubmitSweep {
                        request: RequestId(request),
                        submission,
                    },
                    None,
                    clock.now(),
                )?;
                match done.replies.first() {
                    Some((_, Reply::SweepSubmitted { sweep, created, .. })) => {
                        if !*created {
                            resume(driver, *sweep, &mut request, clock)?;
                        }
                        sweeps.push(*sweep);
                    }
                    Some((_, Reply::Refused(e))) => return Err(RunFailure::Refused(e.clone())),
                    other => return Err(RunFailure::Unanswered(format!("{other:?}"))),
                }
            }
            sweeps
        }
        Work::Resume(sweeps) => {
            for sweep in &sweeps {
                resume(driver, *sweep, &mut request, clock)?;
            }
            sweeps
        }
    };
    let mut names = Names::new();
    for sweep in &sweeps {
        let row = driver.store().with(|s| s.sweep(*sweep))?;
        names.insert(*sweep, row.map(|r| r.experiment_names).unwrap_or_default());
    }
    let mut seen_leases = BTreeSet::new();
    let mut cancelled = false;
    // What the first events did (the submission's leases) is shown before any waits.
    show(
        driver,
        &Executed::default(),
        &sweeps,
        &names,
        agents,
        &mut seen_leases,
        observer,
    )?;
    drive_sweep(driver, events, &sweeps, clock, |driver, done| {
        show(
            driver,
            done,
            &sweeps,
            &names,
            agents,
            &mut seen_leases,
            observer,
        )?;
        if stop.load(Ordering::SeqCst) && !cancelled {
            cancelled = true;
            for sweep in &sweeps {
                request += 1;
                let request = RequestId(request);
                let sweep = *sweep;
                driver.handle(Event::CancelSweep { request, sweep }, None, clock.now())?;
            }
        }
        Ok(())
    })?;
    Ok((sweeps, names))
}

fn resume(
    driver: &mut Driver<ChannelLink, StoreHandle>,
    sweep: SweepId,
    request: &mut u64,
    clock: &MonotonicClock,
) -> Result<(), RunFailure> {
    *request += 1;
    let done = driver.handle(
        Event::ResumeSweep {
            request: RequestId(*request),
            sweep,
        },
        None,
        clock.now(),
    )?;
    match done.replies.first() {
        Some((_, Reply::Refused(e))) => Err(RunFailure::Refused(e.clone())),
        _ => Ok(()),
    }
}

/// Copies what `done` accepted into the `raw` tree and tells the observer; then reports
/// new leases and the queue.
fn show(
    driver: &Driver<ChannelLink, StoreHandle>,
    done: &Executed,
    sweeps: &[SweepId],
    names: &Names,
    agents: &[AgentId],
    seen_leases: &mut BTreeSet<crate::scheduler::AttemptId>,
    observer: &mut dyn RunObserver,
) -> Result<(), StoreError> {
    let scheduler = driver.scheduler();
    let name_of = |sweep: SweepId, experiment: u32| {
        names
            .get(&sweep)
            .and_then(|n| n.get(experiment as usize))
            .cloned()
            .unwrap_or_default()
    };
    for (job, attempt) in &done.accepted {
        let raw = driver.store().with(|s| {
            let stored = s.result(*attempt)?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            copy_to_raw_tree(s, &stored.raw)?;
            Ok(Some(stored.raw))
        })?;
        let Some(raw) = raw else { continue };
        observer.stored(&raw);
        let Some(view) = scheduler.job(*job) else {
            continue;
        };
        let all_accepted = scheduler
            .jobs()
            .filter(|j| j.sweep == view.sweep && j.experiment == view.experiment)
            .all(|j| matches!(j.status, JobStatus::Accepted(_)));
        if all_accepted {
            observer.experiment_done(&name_of(view.sweep, view.experiment));
        }
    }
    let mut running = BTreeSet::new();
    for lease in scheduler.leases() {
        let Some(view) = scheduler.job(lease.job) else {
            continue;
        };
        if !sweeps.contains(&view.sweep) {
            continue;
        }
        let name = name_of(view.sweep, view.experiment);
        if seen_leases.insert(lease.attempt) {
            let runner = agents
                .iter()
                .position(|a| *a == lease.placement.agent)
                .unwrap_or(0);
            observer.leased(runner, &name, view.cycle);
        }
        running.insert(name);
    }
    let waiting: BTreeSet<String> = scheduler
        .jobs()
        .filter(|j| sweeps.contains(&j.sweep) && j.status == JobStatus::Pending)
        .map(|j| name_of(j.sweep, j.experiment))
        .filter(|n| !running.contains(n))
        .collect();
    observer.queue(&running, &waiting);
    Ok(())
}
