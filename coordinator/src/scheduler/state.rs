//! The scheduler's state and the one function that changes its durable part: `apply`.
//! The live path persists a record and applies it (`commit`); `recover` applies stored
//! records in order. Volatile state (agents, renewals, timers) is rebuilt from events.

use super::claims::ClaimTable;
use super::config::SchedulerConfig;
use super::dispatch::JobQueue;
use super::event::Action;
use super::record::{AttemptEnd, Record};
use super::timers::{Timer, Timers};
use super::types::{
    AgentId, AttemptId, Claim, ClaimMode, DeviceKey, DeviceNeeds, Epoch, Inventory, JobId,
    Placement, SweepId, TimeMs,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The sans-IO scheduler. Feed it `handle(event, now)`, execute the actions it returns in
/// order, and call `handle(Event::Tick, now)` when `poll_timeout()` is reached.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub(super) config: SchedulerConfig,
    /// The latest `now` seen; time never moves backwards inside (a driver clock that
    /// steps back is clamped).
    pub(super) now: TimeMs,
    pub(super) sweeps: BTreeMap<SweepId, SweepState>,
    pub(super) tokens: BTreeMap<String, SweepId>,
    /// Indexed by `JobId`: job ids are minted densely from 0.
    pub(super) jobs: Vec<JobState>,
    pub(super) attempts: BTreeMap<AttemptId, AttemptState>,
    pub(super) leases: BTreeMap<AttemptId, LiveLease>,
    /// Attempts whose lease ended while their agent may still run them (agent lost,
    /// sweep cancelled): they keep their claims until the lease would have expired.
    /// Persisted as `fence_ms` on the `AttemptEnded` record, so a restart keeps them.
    pub(super) fenced: BTreeMap<AttemptId, FencedRun>,
    pub(super) claims: ClaimTable,
    pub(super) agents: BTreeMap<AgentId, AgentState>,
    pub(super) drained: BTreeSet<AgentId>,
    pub(super) queue: JobQueue,
    pub(super) timers: Timers,
    pub(super) superseded: BTreeSet<AttemptId>,
    pub(super) next_sweep: u64,
    pub(super) next_attempt: u64,
    /// Agents that may have room; dispatch drops the ones found full.
    pub(super) maybe_free: BTreeSet<AgentId>,
    /// Something that can make a placement possible changed since the last dispatch.
    pub(super) dispatch_needed: bool,
    /// A job was queued in a new class: every live agent is a candidate again.
    pub(super) rescan_agents: bool,
    /// Sweeps whose last open job just became terminal.
    pub(super) newly_finished: Vec<SweepId>,
    /// True while `recover` replays records: leases come back unclaimed, with the grace.
    pub(super) recovering: bool,
    /// When each agent we do not know as alive was last asked for a Hello: heartbeats it
    /// queued while cut off arrive in a burst, and one Hello answers them all.
    pub(super) hello_asked: BTreeMap<AgentId, TimeMs>,
}

#[derive(Debug, Clone)]
pub struct SweepState {
    pub name: String,
    pub fingerprint: String,
    pub pin_device_model: bool,
    pub experiments: Vec<ExperimentState>,
    pub jobs: Vec<JobId>,
    pub cancelled: bool,
    /// Jobs not yet accepted, failed or cancelled.
    pub open_jobs: usize,
    pub finish_announced: bool,
}

#[derive(Debug, Clone)]
pub struct ExperimentState {
    pub name: String,
    pub config: Arc<serde_json::Value>,
    pub needs: DeviceNeeds,
    /// The GPU model this experiment's cycles run on, set by its first lease when the
    /// sweep pins device models.
    pub pinned_model: Option<String>,
    pub jobs: Vec<JobId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Leased(AttemptId),
    Accepted(AttemptId),
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Accepted(_) | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone)]
pub struct JobState {
    pub sweep: SweepId,
    pub experiment: u32,
    pub cycle: u32,
    pub key: String,
    /// Epoch of the latest lease.
    pub epoch: Epoch,
    pub status: JobStatus,
    /// Attempts ended since the sweep was created or last resumed.
    pub ended_attempts: u32,
    pub failures: u32,
    /// Every ended attempt, described.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AttemptState {
    pub job: JobId,
    pub placement: Placement,
    pub ended: bool,
}

#[derive(Debug, Clone)]
pub struct LiveLease {
    pub job: JobId,
    pub epoch: Epoch,
    pub agent: AgentId,
    pub expires: TimeMs,
    /// False for a lease recovered after a restart until its agent re-announces it.
    pub reclaimed: bool,
    /// The latest its agent may still run it if no renewal reaches it: `expires` once
    /// granted or renewed here. A lease recovered after a restart was last renewed by the
    /// old process, before the restart, so its agent stops it by the restart plus the TTL
    /// — later than `expires` when the grace is shorter than the TTL.
    pub agent_stops_by: TimeMs,
    /// Granted by an earlier coordinator process: no message of that process can still
    /// reach its agent, so a Hello that leaves it out proves the agent does not run it.
    pub granted_before_restart: bool,
}

/// An ended attempt that may still be running on its agent: an agent stops a run only
/// when it has not seen a renewal for the lease TTL, so until the lease's own expiry
/// (last renewal + TTL) its devices are physically busy.
#[derive(Debug, Clone)]
pub struct FencedRun {
    pub agent: AgentId,
    pub epoch: Epoch,
    pub claims: Vec<Claim>,
    pub until: TimeMs,
    /// Its lease was granted by an earlier coordinator process (see
    /// `LiveLease::granted_before_restart`): a Hello of its agent that does not list it
    /// lifts the fence.
    pub granted_before_restart: bool,
}

#[derive(Debug, Clone)]
pub struct AgentState {
    pub inventory: Inventory,
    /// False once declared lost; it comes back with a Hello.
    pub alive: bool,
    pub deadline: Option<TimeMs>,
    /// Fenced attempts the agent still reports running, and the metered devices they
    /// occupy (their claims' keys: a MIG slice's parent too).
    pub stale_running: BTreeMap<AttemptId, Vec<DeviceKey>>,
}

/// A persisted record does not fit the state it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    #[error("record {index}: {reason}")]
    Inconsistent { index: usize, reason: String },
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            now: TimeMs(0),
            sweeps: BTreeMap::new(),
            tokens: BTreeMap::new(),
            jobs: Vec::new(),
            attempts: BTreeMap::new(),
            leases: BTreeMap::new(),
            fenced: BTreeMap::new(),
            claims: ClaimTable::default(),
            agents: BTreeMap::new(),
            drained: BTreeSet::new(),
            queue: JobQueue::default(),
            timers: Timers::default(),
            superseded: BTreeSet::new(),
            next_sweep: 0,
            next_attempt: 0,
            maybe_free: BTreeSet::new(),
            dispatch_needed: false,
            rescan_agents: false,
            newly_finished: Vec::new(),
            recovering: false,
            hello_asked: BTreeMap::new(),
        }
    }

    /// Rebuilds the scheduler from its persisted records, in the order they were
    /// persisted. Leases that were live come back unclaimed: their agents have
    /// `restart_grace_ms` from `now` to re-announce them, after which they are requeued,
    /// their devices fenced until `now` plus `lease_ttl_ms` (the old process renewed them
    /// last before the restart) when that is later.
    /// Finished sweeps are not announced again.
    ///
    /// Fences come back too: an attempt ended while its agent may still run it keeps its
    /// claims for the `fence_ms` its `AttemptEnded` record holds, counted from `now`, unless
    /// a later `AttemptStarted` took a claim the fence excluded (so it had been lifted).
    /// That holds a fence at least as long as the live coordinator would have: the record
    /// says how long the lease had left when it was written, measured on the one clock that
    /// also set the lease's expiry, and any time since (the outage) only shortens what is
    /// really left. No reading of the old process's clock is compared with the new one's,
    /// so neither a restart of the driver's clock at 0 nor a clock step, back or forward,
    /// can shorten a fence; a stepped-back `now` is clamped by `handle` and only lengthens
    /// one. The cost is a fence held up to `lease_ttl_ms` past its real expiry after a
    /// restart, while recovered leases wait out `restart_grace_ms` anyway.
    pub fn recover(
        config: SchedulerConfig,
        records: impl IntoIterator<Item = Record>,
        now: TimeMs,
    ) -> Result<Self, RecoverError> {
        let mut s = Self::new(config);
        s.now = now;
        s.recovering = true;
        for (index, record) in records.into_iter().enumerate() {
            s.apply(&record)
                .map_err(|reason| RecoverError::Inconsistent { index, reason })?;
        }
        s.recovering = false;
        for id in s.newly_finished.drain(..) {
            if let Some(sweep) = s.sweeps.get_mut(&id) {
                sweep.finish_announced = sweep.open_jobs == 0;
            }
        }
        s.dispatch_needed = true;
        Ok(s)
    }

    /// Persists `record` (as the next action) and applies it.
    pub(super) fn commit(&mut self, record: Record, out: &mut Vec<Action>) {
        if let Err(reason) = self.apply(&record) {
            // The live path only builds records from its own state; this is a bug.
            debug_assert!(false, "inconsistent live record: {reason}");
            tracing::error!("scheduler: inconsistent live record {record:?}: {reason}");
            return;
        }
        out.push(Action::Persist(record));
    }

    /// The one durable transition function.
    pub(super) fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::SweepCreated(created) => {
                if self.sweeps.contains_key(&created.sweep) {
                    return Err(format!("{} created twice", created.sweep));
                }
                let mut experiments: Vec<ExperimentState> = created
                    .experiments
                    .iter()
                    .map(|e| ExperimentState {
                        name: e.name.clone(),
                        config: Arc::new(e.config.clone()),
                        needs: e.needs.clone(),
                        pinned_model: None,
                        jobs: Vec::new(),
                    })
                    .collect();
                for j in &created.jobs {
                    if j.job.0 != self.jobs.len() as u64 {
                        return Err(format!(
                            "{} out of sequence (expected job-{})",
                            j.job,
                            self.jobs.len()
                        ));
                    }
                    let exp = experiments
                        .get_mut(j.experiment as usize)
                        .ok_or_else(|| format!("{}: no experiment {}", j.job, j.experiment))?;
                    exp.jobs.push(j.job);
                    self.jobs.push(JobState {
                        sweep: created.sweep,
                        experiment: j.experiment,
                        cycle: j.cycle,
                        key: j.key.clone(),
                        epoch: Epoch(0),
                        // Counted open by set_status below.
                        status: JobStatus::Cancelled,
                        ended_attempts: 0,
                        failures: 0,
                        errors: Vec::new(),
                    });
                }
                self.sweeps.insert(
                    created.sweep,
                    SweepState {
                        name: created.name.clone(),
                        fingerprint: created.submission_fingerprint.clone(),
                        pin_device_model: created.pin_device_model,
                        experiments,
                        jobs: created.jobs.iter().map(|j| j.job).collect(),
                        cancelled: false,
                        open_jobs: 0,
                        finish_announced: false,
                    },
                );
                self.tokens
                    .insert(created.idempotency_token.clone(), created.sweep);
                self.next_sweep = self.next_sweep.max(created.sweep.0 + 1);
                for j in &created.jobs {
                    self.set_status(j.job, JobStatus::Pending);
                }
            }
            Record::AttemptStarted {
                attempt,
                job,
                epoch,
                placement,
            } => {
                self.check_job(*job)?;
                if self.attempts.contains_key(attempt) {
                    return Err(format!("{attempt} started twice"));
                }
                self.attempts.insert(
                    *attempt,
                    AttemptState {
                        job: *job,
                        placement: placement.clone(),
                        ended: false,
                    },
                );
                self.next_attempt = self.next_attempt.max(attempt.0 + 1);
                self.jobs[job.0 as usize].epoch = *epoch;
                self.set_status(*job, JobStatus::Leased(*attempt));
                let expires = if self.recovering {
                    self.now.plus_ms(self.config.restart_grace_ms)
                } else {
                    self.now.plus_ms(self.config.lease_ttl_ms)
                };
                self.leases.insert(
                    *attempt,
                    LiveLease {
                        job: *job,
                        epoch: *epoch,
                        agent: placement.agent.clone(),
                        expires,
                        reclaimed: !self.recovering,
                        // Replayed, `now` is the restart (see `recover`).
                        agent_stops_by: self.now.plus_ms(self.config.lease_ttl_ms),
                        granted_before_restart: self.recovering,
                    },
                );
                self.timers.reset(Timer::Lease(*attempt), None, expires);
                if self.recovering {
                    self.drop_replayed_fences_in_the_way(&placement.claims);
                }
                self.claims.acquire(*attempt, &placement.claims);
                self.pin_model(*job, placement.device_model.as_deref());
            }
            Record::AttemptEnded {
                attempt,
                job,
                end,
                fence_ms,
            } => {
                // Live, `now + fence_ms` is the lease's own expiry. Replayed, `now` is
                // the restart, so the fence runs `fence_ms` from there: never shorter
                // than what was left of it, whatever time the coordinator was down.
                let fence_until = fence_ms.filter(|ms| *ms > 0).map(|ms| self.now.plus_ms(ms));
                self.end_attempt_state(*attempt, *job, fence_until)?;
                let j = &mut self.jobs[job.0 as usize];
                j.ended_attempts += 1;
                if matches!(end, AttemptEnd::Failed { .. }) {
                    j.failures += 1;
                }
                j.errors.push(format!("{attempt}: {}", end.describe()));
                if j.status == JobStatus::Leased(*attempt) {
                    let cancelled =
                        self.sweeps[&j.sweep].cancelled || *end == AttemptEnd::Cancelled;
                    let next = if cancelled {
                        JobStatus::Cancelled
                    } else {
                        JobStatus::Pending
                    };
                    self.set_status(*job, next);
                }
            }
            Record::ResultAccepted { attempt, job } => {
                self.end_attempt_state(*attempt, *job, None)?;
                if let JobStatus::Accepted(other) = self.jobs[job.0 as usize].status {
                    return Err(format!("{job} already accepted {other}"));
                }
                self.set_status(*job, JobStatus::Accepted(*attempt));
            }
            Record::ResultSuperseded { attempt, job, .. } => {
                self.check_job(*job)?;
                self.superseded.insert(*attempt);
            }
            Record::JobFailed { job, errors } => {
                self.check_job(*job)?;
                self.jobs[job.0 as usize].errors = errors.clone();
                self.set_status(*job, JobStatus::Failed);
            }
            Record::SweepCancelled { sweep } => {
                let s = self
                    .sweeps
                    .get_mut(sweep)
                    .ok_or_else(|| format!("no {sweep}"))?;
                s.cancelled = true;
                for job in s.jobs.clone() {
                    if self.jobs[job.0 as usize].status == JobStatus::Pending {
                        self.set_status(job, JobStatus::Cancelled);
                    }
                }
            }
            Record::SweepResumed { sweep } => {
                let s = self
                    .sweeps
                    .get_mut(sweep)
                    .ok_or_else(|| format!("no {sweep}"))?;
                s.cancelled = false;
                s.finish_announced = false;
                for job in s.jobs.clone() {
                    let j = &mut self.jobs[job.0 as usize];
                    if matches!(j.status, JobStatus::Failed | JobStatus::Cancelled) {
                        j.ended_attempts = 0;
                        j.failures = 0;
                        self.set_status(job, JobStatus::Pending);
                    }
                }
            }
            Record::AgentDrained { agent } => {
                self.drained.insert(agent.clone());
                self.maybe_free.remove(agent);
            }
        }
        Ok(())
    }

    fn check_job(&self, job: JobId) -> Result<&JobState, String> {
        self.jobs
            .get(job.0 as usize)
            .ok_or_else(|| format!("no {job}"))
    }

    /// Marks an attempt ended and drops its lease. Its claims are released, or, when
    /// `fence_until` is given (its agent may still run it), held until then.
    fn end_attempt_state(
        &mut self,
        attempt: AttemptId,
        job: JobId,
        fence_until: Option<TimeMs>,
    ) -> Result<(), String> {
        self.check_job(job)?;
        let a = self
            .attempts
            .get_mut(&attempt)
            .ok_or_else(|| format!("no {attempt}"))?;
        if a.job != job {
            return Err(format!("{attempt} belongs to {}, not {job}", a.job));
        }
        if a.ended {
            return Err(format!("{attempt} ended twice"));
        }
        a.ended = true;
        let claims = a.placement.claims.clone();
        let agent = a.placement.agent.clone();
        if let Some(lease) = self.leases.remove(&attempt) {
            self.timers.cancel(Timer::Lease(attempt), lease.expires);
            match fence_until {
                Some(until) => {
                    self.timers.reset(Timer::Fence(attempt), None, until);
                    let fence = FencedRun {
                        agent,
                        epoch: lease.epoch,
                        claims,
                        until,
                        granted_before_restart: lease.granted_before_restart,
                    };
                    self.fenced.insert(attempt, fence);
                }
                None => {
                    self.claims.release(attempt, &claims);
                    self.mark_maybe_free(&agent);
                }
            }
        }
        Ok(())
    }

    /// Replay only: a fence restored from the log is proven lifted when a later attempt
    /// was granted a claim that it excluded (the live scheduler granted that claim, so
    /// the fence had ended by then: its expiry passed or its agent said the run stopped).
    fn drop_replayed_fences_in_the_way(&mut self, claims: &[Claim]) {
        let in_the_way: Vec<AttemptId> = self
            .fenced
            .iter()
            .filter(|(_, fence)| {
                claims.iter().any(|new| {
                    fence.claims.iter().any(|held| {
                        held.key == new.key
                            && !(held.mode == ClaimMode::Shared && new.mode == ClaimMode::Shared)
                    })
                })
            })
            .map(|(attempt, _)| *attempt)
            .collect();
        for attempt in in_the_way {
            self.lift_fence(attempt);
        }
    }

    /// Releases a fenced attempt's claims: its lease would have expired, or its agent
    /// said it is no longer running (outcome spooled, or lost in an agent restart).
    pub(super) fn lift_fence(&mut self, attempt: AttemptId) {
        if let Some(fence) = self.fenced.remove(&attempt) {
            self.timers.cancel(Timer::Fence(attempt), fence.until);
            self.claims.release(attempt, &fence.claims);
            self.mark_maybe_free(&fence.agent);
        }
    }

    pub(super) fn mark_maybe_free(&mut self, agent: &AgentId) {
        if self.agents.get(agent).is_some_and(|a| a.alive) && !self.drained.contains(agent) {
            self.maybe_free.insert(agent.clone());
        }
        self.dispatch_needed = true;
    }

    /// Moves a job to `status`, keeping the queue and the sweep's open count in step.
    pub(super) fn set_status(&mut self, job: JobId, status: JobStatus) {
        let j = &mut self.jobs[job.0 as usize];
        let old = j.status;
        j.status = status;
        let sweep_id = j.sweep;
        let experiment = j.experiment as usize;
        if old == JobStatus::Pending {
            self.queue.remove(job);
        }
        if status == JobStatus::Pending {
            let exp = &self.sweeps[&sweep_id].experiments[experiment];
            // Agents dropped from the candidates failed every queued class; only a class
            // new to the queue needs them all tried again.
            let new_class = self
                .queue
                .push(job, exp.needs.clone(), exp.pinned_model.clone());
            self.rescan_agents |= new_class;
            self.dispatch_needed = true;
        }
        let sweep = self
            .sweeps
            .get_mut(&sweep_id)
            .expect("a job's sweep exists");
        match (old.is_terminal(), status.is_terminal()) {
            (true, false) => sweep.open_jobs += 1,
            (false, true) => {
                sweep.open_jobs -= 1;
                if sweep.open_jobs == 0 {
                    self.newly_finished.push(sweep_id);
                }
            }
            _ => {}
        }
    }

    /// The first lease of an experiment in a pinning sweep fixes its GPU model; its
    /// pending siblings are requeued under that model.
    fn pin_model(&mut self, job: JobId, model: Option<&str>) {
        let (Some(model), j) = (model, &self.jobs[job.0 as usize]) else {
            return;
        };
        let sweep = self.sweeps.get_mut(&j.sweep).expect("a job's sweep exists");
        if !sweep.pin_device_model {
            return;
        }
        let exp = &mut sweep.experiments[j.experiment as usize];
        if exp.pinned_model.is_some() {
            return;
        }
        exp.pinned_model = Some(model.to_string());
        for sibling in exp.jobs.clone() {
            if self.jobs[sibling.0 as usize].status == JobStatus::Pending {
                self.queue.remove(sibling);
                // A pinned class is narrower than the unpinned one: no agent that failed
                // the siblings before can fit them now, so no rescan.
                let _ = self
                    .queue
                    .push(sibling, exp.needs.clone(), exp.pinned_model.clone());
            }
        }
        self.dispatch_needed = true;
    }
}
