//! Event handlers: each turns one input into records (persisted first) and messages.

use super::error::SchedulerError;
use super::event::{AckVerdict, Action, Event, Reply, ToAgent};
use super::placement::check_inventory;
use super::record::{AttemptEnd, Record};
use super::state::{AgentState, JobStatus, Scheduler};
use super::sweep::{expand, submission_fingerprint, validate, SweepSubmission};
use super::timers::Timer;
use super::types::{
    AgentId, AttemptId, Epoch, HeldAttempt, Inventory, JobId, Outcome, RequestId, SweepId, TimeMs,
};

impl Scheduler {
    /// Feeds one event in at `now` and returns what the driver must do, in order. Timers
    /// due at `now` fire first.
    #[must_use = "actions must be executed in order: a Persist before what follows it"]
    pub fn handle(&mut self, event: Event, now: TimeMs) -> Vec<Action> {
        let mut out = Vec::new();
        self.now = self.now.max(now);
        self.fire_timers(&mut out);
        match event {
            Event::SubmitSweep {
                request,
                submission,
            } => self.on_submit(request, submission, &mut out),
            Event::CancelSweep { request, sweep } => self.on_cancel(request, sweep, &mut out),
            Event::ResumeSweep { request, sweep } => self.on_resume(request, sweep, &mut out),
            Event::DrainAgent { request, agent } => self.on_drain(request, agent, &mut out),
            Event::AgentHello {
                agent,
                inventory,
                held,
                lost,
            } => self.on_hello(agent, inventory, held, lost, &mut out),
            Event::Heartbeat { agent, held } => self.on_heartbeat(agent, held, &mut out),
            Event::AttemptFinished {
                agent,
                attempt,
                epoch,
                outcome,
            } => self.on_finished(agent, attempt, epoch, outcome, &mut out),
            Event::LeaseRejected {
                agent,
                attempt,
                epoch,
                reason,
            } => {
                if self.is_live_lease_of(&agent, attempt, epoch) {
                    let end = AttemptEnd::Rejected { reason };
                    self.end_attempt(attempt, end, false, &mut out);
                }
            }
            Event::AgentGoodbye { agent } => self.on_goodbye(&agent),
            Event::Tick => {}
        }
        self.dispatch(&mut out);
        for sweep in std::mem::take(&mut self.newly_finished) {
            let s = self.sweeps.get_mut(&sweep).expect("finished sweep exists");
            if s.open_jobs == 0 && !s.finish_announced {
                s.finish_announced = true;
                out.push(Action::SweepFinished { sweep });
            }
        }
        out
    }

    /// The next time the driver must call `handle(Event::Tick, t)`, if any.
    pub fn poll_timeout(&self) -> Option<TimeMs> {
        self.timers.first()
    }

    fn fire_timers(&mut self, out: &mut Vec<Action>) {
        while let Some(timer) = self.timers.pop_due(self.now) {
            match timer {
                Timer::Lease(attempt) => {
                    let Some(lease) = self.leases.get(&attempt) else {
                        continue;
                    };
                    let reason = if lease.reclaimed {
                        "lease expired without renewal".to_string()
                    } else {
                        "not re-announced within the grace after a coordinator restart".to_string()
                    };
                    self.end_attempt(attempt, AttemptEnd::Lost { reason }, true, out);
                }
                Timer::Fence(attempt) => self.lift_fence(attempt),
                Timer::Agent(agent) => {
                    let Some(a) = self.agents.get_mut(&agent) else {
                        continue;
                    };
                    a.alive = false;
                    a.deadline = None;
                    self.maybe_free.remove(&agent);
                    let held: Vec<AttemptId> = self
                        .leases
                        .iter()
                        .filter(|(_, l)| l.agent == agent)
                        .map(|(a, _)| *a)
                        .collect();
                    for attempt in held {
                        let reason = format!("agent {agent} lost (no heartbeat)");
                        self.end_attempt(attempt, AttemptEnd::Lost { reason }, true, out);
                    }
                }
            }
        }
    }

    /// Ends a live attempt without a result; fails the job when its budget is spent.
    /// `agent_may_run`: the coordinator ended it on its own (agent lost, sweep cancelled,
    /// lease expired, or not re-announced within the restart grace), so its claims stay
    /// fenced until its agent would have stopped it (`LiveLease::agent_stops_by`); false when
    /// the agent said the run is not going (failed, rejected, lost in a restart).
    pub(super) fn end_attempt(
        &mut self,
        attempt: AttemptId,
        end: AttemptEnd,
        agent_may_run: bool,
        out: &mut Vec<Action>,
    ) {
        let job = self.attempts[&attempt].job;
        let fence_ms = self
            .leases
            .get(&attempt)
            .filter(|_| agent_may_run)
            .map(|lease| lease.agent_stops_by.0.saturating_sub(self.now.0))
            .filter(|ms| *ms > 0);
        self.commit(
            Record::AttemptEnded {
                attempt,
                job,
                end,
                fence_ms,
            },
            out,
        );
        let j = &self.jobs[job.0 as usize];
        let exhausted =
            j.failures >= self.config.max_failures || j.ended_attempts >= self.config.max_attempts;
        if j.status == JobStatus::Pending && exhausted {
            let errors = j.errors.clone();
            self.commit(Record::JobFailed { job, errors }, out);
        }
    }

    fn is_live_lease_of(&self, agent: &AgentId, attempt: AttemptId, epoch: Epoch) -> bool {
        self.leases
            .get(&attempt)
            .is_some_and(|l| &l.agent == agent && l.epoch == epoch)
    }

    fn on_submit(
        &mut self,
        request: RequestId,
        submission: SweepSubmission,
        out: &mut Vec<Action>,
    ) {
        let reply = match validate(&submission) {
            Err(e) => Reply::Refused(e),
            Ok(()) => match self.tokens.get(&submission.idempotency_token) {
                Some(&sweep) => {
                    let s = &self.sweeps[&sweep];
                    if s.fingerprint == submission_fingerprint(&submission) {
                        Reply::SweepSubmitted {
                            sweep,
                            created: false,
                            jobs: s.jobs.len(),
                        }
                    } else {
                        Reply::Refused(SchedulerError::TokenReused {
                            token: submission.idempotency_token,
                            sweep,
                        })
                    }
                }
                None => {
                    let sweep = SweepId(self.next_sweep);
                    let created = expand(&submission, sweep, JobId(self.jobs.len() as u64));
                    let jobs = created.jobs.len();
                    self.commit(Record::SweepCreated(created), out);
                    Reply::SweepSubmitted {
                        sweep,
                        created: true,
                        jobs,
                    }
                }
            },
        };
        out.push(Action::Reply { request, reply });
    }

    fn on_cancel(&mut self, request: RequestId, sweep: SweepId, out: &mut Vec<Action>) {
        let Some(s) = self.sweeps.get(&sweep) else {
            let reply = Reply::Refused(SchedulerError::UnknownSweep(sweep));
            out.push(Action::Reply { request, reply });
            return;
        };
        let open_before = s.open_jobs;
        let jobs = s.jobs.clone();
        if !s.cancelled {
            self.commit(Record::SweepCancelled { sweep }, out);
        }
        for job in jobs {
            if let JobStatus::Leased(attempt) = self.jobs[job.0 as usize].status {
                let lease = &self.leases[&attempt];
                let (agent, epoch) = (lease.agent.clone(), lease.epoch);
                self.end_attempt(attempt, AttemptEnd::Cancelled, true, out);
                let msg = ToAgent::Cancel(HeldAttempt {
                    attempt,
                    epoch,
                    running: true,
                });
                out.push(Action::Send { agent, msg });
            }
        }
        let jobs_cancelled = open_before - self.sweeps[&sweep].open_jobs;
        let reply = Reply::SweepCancelled {
            sweep,
            jobs_cancelled,
        };
        out.push(Action::Reply { request, reply });
    }

    fn on_resume(&mut self, request: RequestId, sweep: SweepId, out: &mut Vec<Action>) {
        let Some(s) = self.sweeps.get(&sweep) else {
            let reply = Reply::Refused(SchedulerError::UnknownSweep(sweep));
            out.push(Action::Reply { request, reply });
            return;
        };
        let open_before = s.open_jobs;
        let resumable = s.cancelled
            || s.jobs.iter().any(|j| {
                matches!(
                    self.jobs[j.0 as usize].status,
                    JobStatus::Failed | JobStatus::Cancelled
                )
            });
        // A repeated resume (a client retry) writes nothing.
        if resumable {
            self.commit(Record::SweepResumed { sweep }, out);
        }
        let jobs_requeued = self.sweeps[&sweep].open_jobs - open_before;
        let reply = Reply::SweepResumed {
            sweep,
            jobs_requeued,
        };
        out.push(Action::Reply { request, reply });
    }

    fn on_drain(&mut self, request: RequestId, agent: AgentId, out: &mut Vec<Action>) {
        if !self.drained.contains(&agent) {
            self.commit(
                Record::AgentDrained {
                    agent: agent.clone(),
                },
                out,
            );
        }
        if self.agents.get(&agent).is_some_and(|a| a.alive) {
            out.push(Action::Send {
                agent: agent.clone(),
                msg: ToAgent::Drain,
            });
        }
        out.push(Action::Reply {
            request,
            reply: Reply::AgentDraining { agent },
        });
    }

    fn on_hello(
        &mut self,
        agent: AgentId,
        inventory: Inventory,
        held: Vec<HeldAttempt>,
        lost: Vec<HeldAttempt>,
        out: &mut Vec<Action>,
    ) {
        if let Err(reason) = check_inventory(&inventory) {
            let msg = ToAgent::Refused(SchedulerError::BadInventory {
                agent: agent.clone(),
                reason,
            });
            out.push(Action::Send { agent, msg });
            return;
        }
        self.hello_asked.remove(&agent);
        let previous = self.agents.insert(
            agent.clone(),
            AgentState {
                inventory,
                alive: true,
                deadline: None,
                stale_running: Default::default(),
            },
        );
        if let Some(prev) = previous {
            // Its fenced runs are re-reported below if they still run.
            for keys in prev.stale_running.values() {
                self.claims.clear_stale_busy(keys);
            }
            if let Some(deadline) = prev.deadline {
                self.timers.cancel(Timer::Agent(agent.clone()), deadline);
            }
        }
        self.touch_agent(&agent);
        for l in &lost {
            // It restarted: whatever it ran then is no longer running.
            if self
                .fenced
                .get(&l.attempt)
                .is_some_and(|f| f.agent == agent)
            {
                self.lift_fence(l.attempt);
            }
        }
        for l in &lost {
            if self.is_live_lease_of(&agent, l.attempt, l.epoch) {
                let reason = format!("agent {agent} restarted during the run");
                // Its own word: the run is gone, so its devices need no fence.
                self.end_attempt(l.attempt, AttemptEnd::Lost { reason }, false, out);
            }
        }
        self.release_unannounced(&agent, &held, &lost, out);
        self.lift_fences_not_held(&agent, &held);
        self.renew_held(&agent, &held, out);
        self.mark_maybe_free(&agent);
        if self.drained.contains(&agent) {
            out.push(Action::Send {
                agent,
                msg: ToAgent::Drain,
            });
        }
    }

    /// A Hello lists everything the agent holds (running or spooled), so a lease recovered
    /// after a coordinator restart that its agent's Hello leaves out is not running there:
    /// requeue it and free its devices now rather than at the end of the restart grace.
    fn release_unannounced(
        &mut self,
        agent: &AgentId,
        held: &[HeldAttempt],
        lost: &[HeldAttempt],
        out: &mut Vec<Action>,
    ) {
        let named = |attempt: AttemptId| held.iter().chain(lost).any(|h| h.attempt == attempt);
        let unannounced: Vec<AttemptId> = self
            .leases
            .iter()
            .filter(|(a, l)| &l.agent == agent && !l.reclaimed && !named(**a))
            .map(|(a, _)| *a)
            .collect();
        for attempt in unannounced {
            let reason = format!(
                "agent {agent} reconnected after a coordinator restart without re-announcing it"
            );
            self.end_attempt(attempt, AttemptEnd::Lost { reason }, false, out);
        }
    }

    /// A fence on a lease an earlier coordinator process granted (recovered, or replayed
    /// from the log) is lifted by a Hello of its agent that does not list it: the Hello
    /// lists everything the agent holds, and no message of the dead process can still
    /// bring it that lease. (A lease this process sent might yet arrive, so its fences
    /// wait for their expiry or the agent's own word.)
    fn lift_fences_not_held(&mut self, agent: &AgentId, held: &[HeldAttempt]) {
        let gone: Vec<AttemptId> = self
            .fenced
            .iter()
            .filter(|(attempt, f)| {
                &f.agent == agent
                    && f.granted_before_restart
                    && !held.iter().any(|h| h.attempt == **attempt)
            })
            .map(|(attempt, _)| *attempt)
            .collect();
        for attempt in gone {
            self.lift_fence(attempt);
        }
    }

    /// A stopping agent that holds nothing leaves now. One the scheduler still counts a
    /// lease of (its goodbye crossed a lease, or it lost track of one) is left to the
    /// agent timeout, which ends its leases with their fences as for any lost agent.
    fn on_goodbye(&mut self, agent: &AgentId) {
        if self.leases.values().any(|l| &l.agent == agent) {
            return;
        }
        let Some(a) = self.agents.get_mut(agent).filter(|a| a.alive) else {
            return;
        };
        a.alive = false;
        // Its word that it runs nothing, as a heartbeat listing nothing would say.
        let stale = std::mem::take(&mut a.stale_running);
        if let Some(deadline) = a.deadline.take() {
            self.timers.cancel(Timer::Agent(agent.clone()), deadline);
        }
        for keys in stale.values() {
            self.claims.clear_stale_busy(keys);
        }
        self.maybe_free.remove(agent);
    }

    fn on_heartbeat(&mut self, agent: AgentId, held: Vec<HeldAttempt>, out: &mut Vec<Action>) {
        if !self.agents.get(&agent).is_some_and(|a| a.alive) {
            // Ask once per agent timeout, not once per heartbeat: after a cut shorter
            // than the connection's idle timeout its queued heartbeats all arrive at
            // once. Asking again after the timeout covers an answer lost on the way.
            let asked_recently = self
                .hello_asked
                .get(&agent)
                .is_some_and(|at| self.now < at.plus_ms(self.config.agent_timeout_ms));
            if !asked_recently {
                self.hello_asked.insert(agent.clone(), self.now);
                out.push(Action::Send {
                    agent,
                    msg: ToAgent::HelloRequired,
                });
            }
            return;
        }
        self.touch_agent(&agent);
        self.renew_held(&agent, &held, out);
    }

    /// Resets the agent's loss deadline.
    fn touch_agent(&mut self, agent: &AgentId) {
        let deadline = self.now.plus_ms(self.config.agent_timeout_ms);
        let a = self.agents.get_mut(agent).expect("touched agent exists");
        let old = a.deadline.replace(deadline);
        self.timers
            .reset(Timer::Agent(agent.clone()), old, deadline);
    }

    /// Renews the held attempts that are this agent's live leases; cancels the rest and
    /// keeps their devices out of placement until the agent stops reporting them.
    fn renew_held(&mut self, agent: &AgentId, held: &[HeldAttempt], out: &mut Vec<Action>) {
        let expires = self.now.plus_ms(self.config.lease_ttl_ms);
        let mut renewed = Vec::new();
        let mut stale = std::collections::BTreeMap::new();
        for h in held {
            if self.is_live_lease_of(agent, h.attempt, h.epoch) {
                let lease = self.leases.get_mut(&h.attempt).expect("live lease");
                let old = lease.expires;
                lease.expires = expires;
                lease.agent_stops_by = expires;
                lease.reclaimed = true;
                self.timers
                    .reset(Timer::Lease(h.attempt), Some(old), expires);
                renewed.push(*h);
            } else if h.running {
                // Fenced but still running: stop it, and keep its metered devices
                // (a MIG slice's parent too) out of placement until the agent stops
                // reporting it.
                let devices = self
                    .attempts
                    .get(&h.attempt)
                    .map(|a| a.placement.claims.iter().map(|c| c.key.clone()).collect())
                    .unwrap_or_default();
                stale.insert(h.attempt, devices);
                out.push(Action::Send {
                    agent: agent.clone(),
                    msg: ToAgent::Cancel(*h),
                });
            }
        }
        let a = self.agents.get_mut(agent).expect("agent exists");
        let old_stale = std::mem::replace(&mut a.stale_running, stale);
        for keys in old_stale.values() {
            self.claims.clear_stale_busy(keys);
        }
        for keys in a.stale_running.values() {
            self.claims.mark_stale_busy(keys);
        }
        if old_stale.len() > a.stale_running.len() {
            self.mark_maybe_free(agent);
        }
        if !renewed.is_empty() {
            out.push(Action::Send {
                agent: agent.clone(),
                msg: ToAgent::Renewed {
                    attempts: renewed,
                    ttl_ms: self.config.lease_ttl_ms,
                },
            });
        }
    }

    fn on_finished(
        &mut self,
        agent: AgentId,
        attempt: AttemptId,
        epoch: Epoch,
        outcome: Outcome,
        out: &mut Vec<Action>,
    ) {
        let Some(a) = self.attempts.get(&attempt) else {
            // Never acknowledge what is not ours: nothing is stored for it.
            let msg = ToAgent::Refused(SchedulerError::UnknownAttempt {
                agent: agent.clone(),
                attempt,
            });
            out.push(Action::Send { agent, msg });
            return;
        };
        let job = a.job;
        if self.fenced.get(&attempt).is_some_and(|f| f.agent == agent) {
            // Its outcome is spooled: the run has stopped.
            self.lift_fence(attempt);
        }
        let held = HeldAttempt {
            attempt,
            epoch,
            running: false,
        };
        let verdict = if self.jobs[job.0 as usize].status == JobStatus::Accepted(attempt) {
            // A resend of the accepted result (its ack was lost): ack again.
            AckVerdict::Accepted
        } else if self.superseded.contains(&attempt) {
            AckVerdict::Superseded
        } else if self.is_live_lease_of(&agent, attempt, epoch) {
            match outcome {
                Outcome::Succeeded => {
                    self.commit(Record::ResultAccepted { attempt, job }, out);
                    AckVerdict::Accepted
                }
                Outcome::Failed { error } => {
                    self.end_attempt(attempt, AttemptEnd::Failed { error }, false, out);
                    AckVerdict::FailureRecorded
                }
            }
        } else {
            match outcome {
                Outcome::Succeeded => {
                    self.commit(
                        Record::ResultSuperseded {
                            attempt,
                            job,
                            epoch,
                        },
                        out,
                    );
                    AckVerdict::Superseded
                }
                // The attempt already ended; a late failure changes nothing.
                Outcome::Failed { .. } => AckVerdict::FailureRecorded,
            }
        };
        out.push(Action::Send {
            agent,
            msg: ToAgent::Ack {
                attempt: held,
                verdict,
            },
        });
    }
}
