//! A simulated agent: runs leased jobs for a while, spools each outcome until it is
//! acknowledged, heartbeats, stops a run whose lease it has not seen renewed, and can
//! crash (runs lost, spool kept) and restart. Its clock may run fast or slow.

use super::super::{
    AckVerdict, AgentId, AttemptId, Claim, DeviceKey, Epoch, Event, HeldAttempt, Inventory, Lease,
    Outcome, TimeMs, ToAgent,
};
use lem_common::lease_ttl;
use lem_common::rng::SplitMix64;
use std::collections::BTreeMap;
use std::time::Duration;

pub const HEARTBEAT_MS: u64 = 3_000;

/// How an agent counts a lease's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseCount {
    /// The real agent's rule (`lem_common::lease_ttl`): a renewal from when the agent sent
    /// the message it answers, a new lease from its arrival, each less the drift margin.
    LikeTheRealAgent,
    /// The rule the simulation used before: the whole TTL from the arrival of the lease
    /// or renewal. Kept only to show that the invariants catch it.
    FromArrival,
}

#[derive(Debug, Clone)]
struct Run {
    epoch: Epoch,
    devices: Vec<DeviceKey>,
    /// The metered devices the lease claimed: what this run physically occupies.
    claims: Vec<Claim>,
    finish_at: TimeMs,
    /// The agent stops the run here unless a renewal arrives (its own clock).
    fence_at: TimeMs,
    /// A renewal arrived for it: its end is counted from a message the agent sent.
    renewed: bool,
}

/// What the agent wants the world to do after it handled something.
#[derive(Debug, Default)]
pub struct AgentOutput {
    pub to_coordinator: Vec<Event>,
    /// Acks it received, for the invariant "no acknowledged result lost".
    pub acks: Vec<(HeldAttempt, AckVerdict, Outcome)>,
}

#[derive(Debug, Clone)]
pub struct SimAgent {
    pub id: AgentId,
    pub inventory: Inventory,
    /// Local duration = real duration × rate / 1000 (skewed clock).
    pub clock_rate_permille: u64,
    pub lease_count: LeaseCount,
    pub up: bool,
    pub restart_at: Option<TimeMs>,
    pub partitioned_until: TimeMs,
    runs: BTreeMap<AttemptId, Run>,
    /// Survives crashes (on disk): outcome until acked.
    spool: BTreeMap<AttemptId, (Epoch, Outcome)>,
    lost_on_restart: Vec<HeldAttempt>,
    /// Every attempt ever leased to it (on disk), so a duplicated lease is not run twice.
    seen: std::collections::BTreeSet<AttemptId>,
    next_heartbeat: TimeMs,
    pub fail_permille: u64,
}

impl SimAgent {
    pub fn new(
        id: AgentId,
        inventory: Inventory,
        clock_rate_permille: u64,
        lease_count: LeaseCount,
        fail_permille: u64,
    ) -> Self {
        Self {
            id,
            inventory,
            clock_rate_permille,
            lease_count,
            up: false,
            restart_at: Some(TimeMs(0)),
            partitioned_until: TimeMs(0),
            runs: BTreeMap::new(),
            spool: BTreeMap::new(),
            lost_on_restart: Vec::new(),
            seen: Default::default(),
            next_heartbeat: TimeMs(0),
            fail_permille,
        }
    }

    fn local(&self, ms: u64) -> u64 {
        ms * self.clock_rate_permille / 1000
    }

    /// When a lease with `ttl_ms` counted from `counted_from` ends, by this agent's clock:
    /// the real agent's rule ([`lease_ttl::counted_ttl`]) timed on the skewed clock.
    fn lease_end(&self, counted_from: TimeMs, ttl_ms: u64) -> TimeMs {
        let counted_ms = match self.lease_count {
            LeaseCount::LikeTheRealAgent => {
                lease_ttl::counted_ttl(Duration::from_millis(ttl_ms)).as_millis() as u64
            }
            LeaseCount::FromArrival => ttl_ms,
        };
        counted_from.plus_ms(self.local(counted_ms))
    }

    pub fn next_wake(&self) -> Option<TimeMs> {
        if !self.up {
            return self.restart_at;
        }
        let runs = self.runs.values().map(|r| r.finish_at.min(r.fence_at));
        runs.chain(std::iter::once(self.next_heartbeat)).min()
    }

    pub fn running_devices(&self) -> impl Iterator<Item = &DeviceKey> {
        self.runs.values().flat_map(|r| r.devices.iter())
    }

    /// What the agent is physically running right now, with the meters each run uses
    /// (whether or not the coordinator still counts the run as leased). A run due to
    /// finish or be fenced by `now` has stopped, even if the agent has not woken yet.
    pub fn running_claims(&self, now: TimeMs) -> impl Iterator<Item = (AttemptId, &[Claim])> {
        self.runs
            .iter()
            .filter(move |(_, r)| r.finish_at.min(r.fence_at) > now)
            .map(|(a, r)| (*a, r.claims.as_slice()))
    }

    /// The runs still going at `now` whose lease was renewed at least once: attempt,
    /// epoch and when the run stops (it finishes or its lease runs out, by this agent's
    /// count). A run never renewed ends a TTL after the lease's arrival, which is safe
    /// only when the lease's trip took less than the drift margin; a lease delayed longer
    /// (this network delays up to 3 s, the margin at the simulation's TTL is 0.75 s)
    /// and then never renewed may outlast the coordinator's count, on a real network too.
    pub fn renewed_runs(
        &self,
        now: TimeMs,
    ) -> impl Iterator<Item = (AttemptId, Epoch, TimeMs)> + '_ {
        self.runs
            .iter()
            .filter(|(_, r)| r.renewed)
            .map(|(a, r)| (*a, r.epoch, r.finish_at.min(r.fence_at)))
            .filter(move |(_, _, stops_at)| *stops_at > now)
    }

    pub fn has_unacked(&self) -> bool {
        !self.spool.is_empty()
    }

    fn held(&self) -> Vec<HeldAttempt> {
        let running = self.runs.iter().map(|(a, r)| HeldAttempt {
            attempt: *a,
            epoch: r.epoch,
            running: true,
        });
        let spooled = self.spool.iter().map(|(a, (epoch, _))| HeldAttempt {
            attempt: *a,
            epoch: *epoch,
            running: false,
        });
        running.chain(spooled).collect()
    }

    fn hello(&mut self, out: &mut AgentOutput) {
        out.to_coordinator.push(Event::AgentHello {
            agent: self.id.clone(),
            inventory: self.inventory.clone(),
            held: self.held(),
            lost: std::mem::take(&mut self.lost_on_restart),
        });
        self.resend_spool(out);
    }

    fn resend_spool(&self, out: &mut AgentOutput) {
        for (attempt, (epoch, outcome)) in &self.spool {
            out.to_coordinator.push(Event::AttemptFinished {
                agent: self.id.clone(),
                attempt: *attempt,
                epoch: *epoch,
                outcome: outcome.clone(),
            });
        }
    }

    /// Holds nothing: no run and no unacknowledged outcome (when the real agent says
    /// Goodbye on stopping).
    pub fn holds_nothing(&self) -> bool {
        self.runs.is_empty() && self.spool.is_empty()
    }

    /// Stops cleanly while holding nothing, like the real agent on SIGTERM: returns the
    /// Goodbye it sends, then ignores everything until it restarts as a new process.
    pub fn stop_cleanly(&mut self, now: TimeMs, down_ms: u64) -> Event {
        debug_assert!(self.holds_nothing());
        self.up = false;
        self.restart_at = Some(now.plus_ms(down_ms));
        Event::AgentGoodbye {
            agent: self.id.clone(),
        }
    }

    pub fn crash(&mut self, now: TimeMs, down_ms: u64) {
        self.up = false;
        self.restart_at = Some(now.plus_ms(down_ms));
        let lost: Vec<HeldAttempt> = std::mem::take(&mut self.runs)
            .into_iter()
            .map(|(attempt, r)| HeldAttempt {
                attempt,
                epoch: r.epoch,
                running: true,
            })
            .collect();
        self.lost_on_restart.extend(lost);
    }

    /// Timers: restart, finished runs, fenced runs, heartbeat.
    pub fn wake(&mut self, now: TimeMs, rng: &mut SplitMix64) -> AgentOutput {
        let mut out = AgentOutput::default();
        if !self.up {
            if self.restart_at.is_some_and(|t| t <= now) {
                self.up = true;
                self.restart_at = None;
                self.next_heartbeat = now.plus_ms(self.local(HEARTBEAT_MS));
                self.hello(&mut out);
            }
            return out;
        }
        let due: Vec<AttemptId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.finish_at.min(r.fence_at) <= now)
            .map(|(a, _)| *a)
            .collect();
        for attempt in due {
            let run = self.runs.remove(&attempt).expect("due run");
            if run.finish_at > run.fence_at {
                continue; // fenced: its lease was not renewed in time; drop it
            }
            let outcome = if rng.below(1000) < self.fail_permille {
                Outcome::Failed {
                    error: format!("simulated runner error in {attempt}"),
                }
            } else {
                Outcome::Succeeded
            };
            self.spool.insert(attempt, (run.epoch, outcome.clone()));
            out.to_coordinator.push(Event::AttemptFinished {
                agent: self.id.clone(),
                attempt,
                epoch: run.epoch,
                outcome,
            });
        }
        if self.next_heartbeat <= now {
            self.next_heartbeat = now.plus_ms(self.local(HEARTBEAT_MS));
            out.to_coordinator.push(Event::Heartbeat {
                agent: self.id.clone(),
                held: self.held(),
            });
            // Unacked outcomes are resent on every heartbeat.
            self.resend_spool(&mut out);
        }
        out
    }

    /// Handles `msg`; a renewal comes with `answers_sent_at`, when this agent sent the
    /// Hello or heartbeat it answers.
    pub fn receive(
        &mut self,
        now: TimeMs,
        msg: ToAgent,
        answers_sent_at: Option<TimeMs>,
        rng: &mut SplitMix64,
    ) -> AgentOutput {
        let mut out = AgentOutput::default();
        if !self.up {
            return out;
        }
        match msg {
            ToAgent::Lease(lease) => self.start(now, lease, rng, &mut out),
            ToAgent::Renewed { attempts, ttl_ms } => {
                // Like the real agent: from when it sent what the renewal answers.
                let counted_from = match self.lease_count {
                    LeaseCount::LikeTheRealAgent => answers_sent_at,
                    LeaseCount::FromArrival => Some(now),
                };
                let Some(counted_from) = counted_from else {
                    return out;
                };
                let fence_at = self.lease_end(counted_from, ttl_ms);
                for h in attempts {
                    if let Some(run) = self.runs.get_mut(&h.attempt) {
                        if run.epoch == h.epoch {
                            run.fence_at = run.fence_at.max(fence_at);
                            run.renewed = true;
                        }
                    }
                }
            }
            ToAgent::Cancel(h) => {
                if self
                    .runs
                    .get(&h.attempt)
                    .is_some_and(|r| r.epoch == h.epoch)
                {
                    self.runs.remove(&h.attempt);
                }
            }
            ToAgent::Ack { attempt, verdict } => {
                let matches = self
                    .spool
                    .get(&attempt.attempt)
                    .is_some_and(|(epoch, _)| *epoch == attempt.epoch);
                if matches {
                    let (_, outcome) = self.spool.remove(&attempt.attempt).expect("spooled");
                    out.acks.push((attempt, verdict, outcome));
                }
            }
            ToAgent::HelloRequired => self.hello(&mut out),
            ToAgent::Drain | ToAgent::Refused(_) => {}
        }
        out
    }

    fn start(&mut self, now: TimeMs, lease: Lease, rng: &mut SplitMix64, out: &mut AgentOutput) {
        if !self.seen.insert(lease.attempt) {
            return; // a duplicate of a lease already taken
        }
        let busy = lease
            .placement
            .devices
            .iter()
            .any(|d| self.running_devices().any(|r| r == d));
        if busy {
            out.to_coordinator.push(Event::LeaseRejected {
                agent: self.id.clone(),
                attempt: lease.attempt,
                epoch: lease.epoch,
                reason: "devices busy".into(),
            });
            return;
        }
        let run_ms = 2_000 + rng.below(18_000);
        self.runs.insert(
            lease.attempt,
            Run {
                epoch: lease.epoch,
                devices: lease.placement.devices.clone(),
                claims: lease.placement.claims.clone(),
                finish_at: now.plus_ms(run_ms),
                fence_at: self.lease_end(now, lease.ttl_ms),
                renewed: false,
            },
        );
    }
}
