//! The simulated world: one coordinator (scheduler + durable log), N agents, a client
//! submitting one sweep, a faulty network and a fault schedule, all driven by one seeded
//! PRNG in virtual time. One step handles one due thing; invariants are checked after
//! every step.

use super::super::{
    Action, AgentId, AttemptEnd, AttemptId, DeviceKey, DeviceNeeds, Event, ExperimentSubmission,
    GpuDevice, Inventory, JobStatus, MigSlice, Record, Reply, RequestId, Scheduler,
    SchedulerConfig, SweepId, SweepSubmission, TimeMs, ToAgent,
};
use super::agent::{LeaseCount, SimAgent};
use super::invariants::{
    check_device_exclusivity, check_physical_exclusivity, check_runs_counted, LogChecker,
};
use super::net::{Msg, Net, NetFaults};
use lem_common::rng::SplitMix64;
use std::collections::BTreeSet;
use std::fmt;

/// Per-seed shape of the run, drawn from the seed.
#[derive(Debug, Clone)]
pub struct SimParams {
    pub agents: usize,
    pub experiments: usize,
    pub cycles: u32,
    /// Faults happen before this time; after it the network is clean and every crashed
    /// node comes back, so the sweep must complete.
    pub faults_until: TimeMs,
    /// The sweep must be complete (and every outcome acked) by this time.
    pub horizon: TimeMs,
    pub net: NetFaults,
    /// Per fault check (once a virtual second).
    pub agent_crash_permille: u64,
    pub partition_permille: u64,
    pub coordinator_restart_permille: u64,
    /// Per fault check while the coordinator holds a fence: restart it, so a fence is
    /// often open across a restart.
    pub fenced_restart_permille: u64,
    /// Per coordinator step during faults: crash after executing only part of its actions.
    pub mid_batch_crash_permille: u64,
    pub clock_step_back_permille: u64,
    pub runner_fail_permille: u64,
    /// One seed in three also cancels the sweep mid-way and resumes it.
    pub cancel_and_resume: bool,
    /// An operator drains this agent during the faults (never one of the first two, so
    /// every need stays placeable).
    pub drain_agent: Option<usize>,
    /// How the agents count a lease's TTL (like the real agent, unless a test shows the
    /// invariants catch another rule).
    pub lease_count: LeaseCount,
    /// Drawn from 0 to twice the lease TTL: a recovered lease not re-announced within a
    /// grace shorter than the TTL is fenced for the rest of the TTL, so any grace is safe.
    pub restart_grace_ms: u64,
    /// Per fault check: an idle agent stops cleanly (says Goodbye) and restarts later.
    pub clean_stop_permille: u64,
}

impl SimParams {
    pub fn for_seed(seed: u64) -> Self {
        let mut r = SplitMix64::new(seed ^ 0x005e_ed0f_5eed);
        let faults_until = TimeMs(60_000 + r.below(120_000));
        let mut p = Self {
            agents: 2 + r.below(6) as usize,
            experiments: 3 + r.below(9) as usize,
            cycles: 1 + r.below(3) as u32,
            faults_until,
            horizon: faults_until.plus_ms(3_600_000),
            net: NetFaults {
                drop_permille: r.below(150),
                duplicate_permille: r.below(150),
                reorder_permille: r.below(300),
            },
            agent_crash_permille: r.below(40),
            partition_permille: r.below(40),
            coordinator_restart_permille: r.below(30),
            fenced_restart_permille: 0,
            mid_batch_crash_permille: r.below(10),
            clock_step_back_permille: r.below(50),
            runner_fail_permille: r.below(100),
            cancel_and_resume: r.below(3) == 0,
            drain_agent: None,
            lease_count: LeaseCount::LikeTheRealAgent,
            restart_grace_ms: 0,
            clean_stop_permille: 0,
        };
        if p.agents > 2 && r.below(2) == 0 {
            p.drain_agent = Some(2 + r.below(p.agents as u64 - 2) as usize);
        }
        // Drawn last, so the draws above keep their values.
        p.fenced_restart_permille = r.below(150);
        p.restart_grace_ms = r.below(2 * LEASE_TTL_MS + 1);
        p.clean_stop_permille = r.below(40);
        p
    }
}

/// What one run did; compared whole to check determinism.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub jobs: usize,
    pub accepted: usize,
    pub failed: usize,
    pub superseded: usize,
    pub requeued: usize,
    pub coordinator_restarts: usize,
    /// Restarts of a coordinator that held a fence still open (its end in the log).
    pub restarts_with_open_fence: usize,
    pub agent_crashes: usize,
    pub partitions: usize,
    pub drains: usize,
    /// Goodbyes sent by agents stopping cleanly while holding nothing.
    pub goodbyes: usize,
    /// Goodbyes the scheduler took (it counted no lease of the agent): listed gone at once.
    pub goodbyes_taken: usize,
    /// Goodbyes that crossed a lease: the scheduler still counted one of the agent's.
    pub goodbyes_crossing_lease: usize,
    /// Messages the old coordinator process had in flight to agents when it crashed.
    pub dropped_at_crash: usize,
    pub steps: u64,
    pub virtual_ms: u64,
    pub trace_hash: u64,
}

impl Summary {
    pub fn add(&mut self, o: &Summary) {
        self.jobs += o.jobs;
        self.accepted += o.accepted;
        self.failed += o.failed;
        self.superseded += o.superseded;
        self.requeued += o.requeued;
        self.coordinator_restarts += o.coordinator_restarts;
        self.restarts_with_open_fence += o.restarts_with_open_fence;
        self.agent_crashes += o.agent_crashes;
        self.partitions += o.partitions;
        self.drains += o.drains;
        self.goodbyes += o.goodbyes;
        self.goodbyes_taken += o.goodbyes_taken;
        self.goodbyes_crossing_lease += o.goodbyes_crossing_lease;
        self.dropped_at_crash += o.dropped_at_crash;
        self.steps += o.steps;
        self.virtual_ms += o.virtual_ms;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jobs {} (accepted {}, failed {}), superseded results {}, requeued attempts {}, \
             coordinator restarts {} ({} with a fence open), agent crashes {}, partitions {}, \
             drains {}, goodbyes {} (taken {}, crossing a lease {}), messages to agents \
             dropped at coordinator crashes {}, steps {}, virtual {} s",
            self.jobs,
            self.accepted,
            self.failed,
            self.superseded,
            self.requeued,
            self.coordinator_restarts,
            self.restarts_with_open_fence,
            self.agent_crashes,
            self.partitions,
            self.drains,
            self.goodbyes,
            self.goodbyes_taken,
            self.goodbyes_crossing_lease,
            self.dropped_at_crash,
            self.steps,
            self.virtual_ms / 1000
        )
    }
}

/// The client's requests, in order; each is retried until its reply arrives.
#[derive(Debug, Clone)]
enum ClientStep {
    Submit,
    Cancel { at: TimeMs },
    Resume,
    Done,
}

const LEASE_TTL_MS: u64 = 15_000;
const CLIENT_RETRY_MS: u64 = 5_000;
/// Agent clocks run at 0.96–1.04× real time.
const MIN_AGENT_CLOCK_PERMILLE: u64 = 960;
const MAX_AGENT_CLOCK_PERMILLE: u64 = 1_040;
const FAULT_CHECK_MS: u64 = 1_000;
const MAX_STEPS: u64 = 5_000_000;

pub struct World {
    p: SimParams,
    rng: SplitMix64,
    now: TimeMs,
    config: SchedulerConfig,
    coordinator: Option<Scheduler>,
    coordinator_up_at: Option<TimeMs>,
    /// How far the coordinator's clock lags (a clock stepped back; the scheduler clamps).
    coordinator_lag_ms: u64,
    /// The fences the last crashed coordinator held, checked against the recovered one.
    fences_at_crash: Option<FencesAtCrash>,
    log: Vec<Record>,
    agents: Vec<SimAgent>,
    net: Net,
    submission: SweepSubmission,
    sweep: Option<SweepId>,
    client: ClientStep,
    client_next_try: TimeMs,
    next_request: u64,
    next_fault_check: TimeMs,
    /// The operator's drain request: sent (and resent) until answered.
    drain_answered: bool,
    /// Agents whose Goodbye the scheduler took, until it hears their next Hello: they
    /// must get no lease and be counted running nothing.
    said_goodbye: BTreeSet<AgentId>,
    checker: LogChecker,
    summary: Summary,
}

fn h100_node(name: &str) -> Inventory {
    Inventory {
        gpus: (0..4)
            .map(|i| GpuDevice {
                key: DeviceKey(format!("gpu:{name}-{i}")),
                model: "H100".into(),
                mig_slices: vec![],
            })
            .collect(),
        cpu_packages: vec![DeviceKey(format!("rapl:{name}:package-0"))],
        runner_slots: vec![],
    }
}

fn a100_mig_node(name: &str) -> Inventory {
    let slices = |gpu: usize, profile: &str, n: usize| {
        (0..n)
            .map(|i| MigSlice {
                key: DeviceKey(format!("mig:{name}-{gpu}-{i}")),
                profile: profile.into(),
            })
            .collect()
    };
    Inventory {
        gpus: vec![
            GpuDevice {
                key: DeviceKey(format!("gpu:{name}-0")),
                model: "A100".into(),
                mig_slices: vec![],
            },
            GpuDevice {
                key: DeviceKey(format!("gpu:{name}-1")),
                model: "A100".into(),
                mig_slices: slices(1, "3g.40gb", 2),
            },
            GpuDevice {
                key: DeviceKey(format!("gpu:{name}-2")),
                model: "A100".into(),
                mig_slices: slices(2, "1g.10gb", 3),
            },
        ],
        cpu_packages: vec![DeviceKey(format!("rapl:{name}:package-0"))],
        runner_slots: vec![],
    }
}

/// Needs cycle through every kind of placement both node types can serve.
fn needs_for(i: usize) -> DeviceNeeds {
    match i % 7 {
        0 => DeviceNeeds::Gpus {
            count: 1,
            model: None,
        },
        1 => DeviceNeeds::Gpus {
            count: 2,
            model: Some("H100".into()),
        },
        2 => DeviceNeeds::CpuPackages,
        3 => DeviceNeeds::MigSlice {
            profile: "3g.40gb".into(),
            exclusive_parent: false,
            model: None,
        },
        // Competes with the shared 3g.40gb jobs for the same parent, held to its model.
        4 => DeviceNeeds::MigSlice {
            profile: "3g.40gb".into(),
            exclusive_parent: true,
            model: Some("A100".into()),
        },
        5 => DeviceNeeds::Gpus {
            count: 1,
            model: Some("A100".into()),
        },
        _ => DeviceNeeds::MigSlice {
            profile: "1g.10gb".into(),
            exclusive_parent: false,
            model: None,
        },
    }
}

impl World {
    pub fn new(seed: u64, p: SimParams) -> Self {
        let mut rng = SplitMix64::new(seed);
        // At least one node of each kind, so every need can be placed.
        let agents = (0..p.agents.max(2))
            .map(|i| {
                let name = format!("node{i}");
                let inventory = if i % 2 == 0 {
                    h100_node(&name)
                } else {
                    a100_mig_node(&name)
                };
                // Within the real agent's premise: its drift margin (5 %) covers less
                // than 5.2 % of clock skew; a clock off by more may stop runs late.
                let rate = MIN_AGENT_CLOCK_PERMILLE
                    + rng.below(MAX_AGENT_CLOCK_PERMILLE - MIN_AGENT_CLOCK_PERMILLE + 1);
                SimAgent::new(
                    AgentId(name),
                    inventory,
                    rate,
                    p.lease_count,
                    p.runner_fail_permille,
                )
            })
            .collect();
        let submission = SweepSubmission {
            idempotency_token: format!("sim-{seed}"),
            name: "sim".into(),
            experiments: (0..p.experiments)
                .map(|i| ExperimentSubmission {
                    name: format!("exp{i}"),
                    config: serde_json::json!({ "experiment": i }),
                    needs: needs_for(i),
                })
                .collect(),
            cycles: p.cycles,
            pin_device_model: true,
        };
        let config = SchedulerConfig {
            lease_ttl_ms: LEASE_TTL_MS,
            agent_timeout_ms: 10_000,
            restart_grace_ms: p.restart_grace_ms,
            max_failures: 3,
            max_attempts: 1_000,
        };
        Self {
            rng,
            now: TimeMs(0),
            coordinator: Some(Scheduler::new(config.clone())),
            config,
            coordinator_up_at: None,
            coordinator_lag_ms: 0,
            fences_at_crash: None,
            log: Vec::new(),
            agents,
            net: Net::default(),
            submission,
            sweep: None,
            client: ClientStep::Submit,
            client_next_try: TimeMs(0),
            next_request: 0,
            next_fault_check: TimeMs(FAULT_CHECK_MS),
            drain_answered: false,
            said_goodbye: BTreeSet::new(),
            checker: LogChecker::default(),
            summary: Summary::default(),
            p,
        }
    }

    fn faults_on(&self) -> bool {
        self.now < self.p.faults_until
    }

    fn coordinator_now(&self) -> TimeMs {
        TimeMs(self.now.0.saturating_sub(self.coordinator_lag_ms))
    }

    /// Runs to completion; `Err` names the first violated invariant.
    pub fn run(&mut self) -> Result<Summary, String> {
        loop {
            self.summary.steps += 1;
            if self.summary.steps > MAX_STEPS || self.now > self.p.horizon {
                return Err(format!(
                    "the sweep did not complete by {} ms ({} steps): {}",
                    self.now.0,
                    self.summary.steps,
                    self.progress()
                ));
            }
            if self.is_complete()? {
                return Ok(self.finish());
            }
            self.step()?;
            self.check()?;
        }
    }

    fn progress(&self) -> String {
        match (&self.coordinator, self.sweep) {
            (Some(c), Some(s)) => format!("{:?}", c.sweep_progress(s)),
            (None, _) => "coordinator down".into(),
            (_, None) => "sweep not created".into(),
        }
    }

    /// Complete: faults over, sweep finished, client done and every outcome acked.
    fn is_complete(&self) -> Result<bool, String> {
        if self.faults_on() || !matches!(self.client, ClientStep::Done) {
            return Ok(false);
        }
        let (Some(c), Some(sweep)) = (&self.coordinator, self.sweep) else {
            return Ok(false);
        };
        let progress = c.sweep_progress(sweep).ok_or("the sweep vanished")?;
        if !progress.is_finished() || self.agents.iter().any(|a| a.has_unacked() || !a.up) {
            return Ok(false);
        }
        if progress.cancelled != 0 {
            return Err(format!("jobs left cancelled after resume: {progress:?}"));
        }
        // Every accepted job in the scheduler is the one accepted in the durable log.
        for job in c.jobs() {
            match job.status {
                JobStatus::Accepted(attempt) => {
                    if self.checker.accepted_jobs().get(&job.job) != Some(&attempt) {
                        return Err(format!(
                            "{} accepted {attempt} but the log says otherwise",
                            job.job
                        ));
                    }
                }
                JobStatus::Failed => {
                    let failures = job
                        .errors
                        .iter()
                        .filter(|e| e.contains(": failed: "))
                        .count();
                    if failures < self.config.max_failures as usize {
                        return Err(format!(
                            "{} failed with only {failures} runner failures: {:?}",
                            job.job, job.errors
                        ));
                    }
                }
                other => return Err(format!("{} ended as {other:?}", job.job)),
            }
        }
        if self.checker.accepted_jobs().len() != progress.accepted {
            return Err("accepted jobs in the log and in the scheduler differ".into());
        }
        Ok(true)
    }

    fn finish(&mut self) -> Summary {
        let c = self.coordinator.as_ref().expect("complete implies up");
        let sweep = self.sweep.expect("complete implies created");
        let progress = c.sweep_progress(sweep).expect("sweep exists");
        let mut s = self.summary.clone();
        s.jobs = progress.total();
        s.accepted = progress.accepted;
        s.failed = progress.failed;
        for r in &self.log {
            match r {
                Record::ResultSuperseded { .. } => s.superseded += 1,
                Record::AgentDrained { .. } => s.drains += 1,
                Record::AttemptEnded {
                    end: AttemptEnd::Lost { .. } | AttemptEnd::Rejected { .. },
                    ..
                } => s.requeued += 1,
                _ => {}
            }
        }
        s.virtual_ms = self.now.0;
        // FNV-1a over the durable log: equal logs from equal seeds.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in format!("{:?}", self.log).bytes() {
            h = (h ^ byte as u64).wrapping_mul(0x100_0000_01b3);
        }
        s.trace_hash = h ^ self.summary.steps;
        s
    }

    /// Advances virtual time to the next due thing and handles exactly one.
    fn step(&mut self) -> Result<(), String> {
        let coordinator_timer = self
            .coordinator
            .as_ref()
            .and_then(|c| c.poll_timeout())
            .map(|t| t.plus_ms(self.coordinator_lag_ms));
        let agent_wake = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.next_wake().map(|t| (t, i)))
            .min();
        let fault_check = self.faults_on().then_some(self.next_fault_check);
        let client = (!matches!(self.client, ClientStep::Done)).then_some(self.client_next_try);
        let candidates = [
            fault_check,
            self.coordinator_up_at,
            self.net.next_time(),
            coordinator_timer,
            agent_wake.map(|(t, _)| t),
            client,
        ];
        let next = candidates
            .iter()
            .flatten()
            .min()
            .copied()
            .ok_or("nothing left to happen but the sweep is not complete")?;
        self.now = self.now.max(next);
        let now = self.now;
        if fault_check.is_some_and(|t| t <= now) {
            self.next_fault_check = now.plus_ms(FAULT_CHECK_MS);
            self.inject_faults();
        } else if self.coordinator_up_at.is_some_and(|t| t <= now) {
            self.coordinator_up_at = None;
            let recovered = Scheduler::recover(
                self.config.clone(),
                self.log.clone(),
                self.coordinator_now(),
            )
            .map_err(|e| format!("recover failed: {e}"))?;
            if let Some(before) = self.fences_at_crash.take() {
                check_fences_survive_restart(&before, &recovered, &self.log)?;
            }
            self.coordinator = Some(recovered);
        } else if let Some(msg) = self.net.pop_due(now) {
            self.deliver(msg)?;
        } else if coordinator_timer.is_some_and(|t| t <= now) {
            self.coordinator_step(Event::Tick, None)?;
        } else if let Some((_, i)) = agent_wake.filter(|(t, _)| *t <= now) {
            let out = self.agents[i].wake(now, &mut self.rng);
            for event in out.to_coordinator {
                self.send_from_agent(i, event);
            }
        } else if client.is_some_and(|t| t <= now) {
            self.client_act();
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        self.checker.advance(&self.log)?;
        if let Some(c) = &self.coordinator {
            check_device_exclusivity(c)?;
            // An agent gone with a goodbye is counted running nothing until it says hello.
            if let Some(l) = c
                .leases
                .values()
                .find(|l| self.said_goodbye.contains(&l.agent))
            {
                return Err(format!(
                    "{} counts a lease of {} after its goodbye, before its next hello",
                    l.job, l.agent
                ));
            }
        }
        // A run is counted by the coordinator while it lasts (when the coordinator is up:
        // while it is down nothing is placed, and the recovered one is checked).
        if let Some(c) = &self.coordinator {
            for a in self.agents.iter().filter(|a| a.up) {
                check_runs_counted(c, &a.id, a.renewed_runs(self.now))?;
            }
        }
        // A crashed agent's runs died with it; every live agent's runs are on its devices.
        let runs = self
            .agents
            .iter()
            .filter(|a| a.up)
            .flat_map(|a| a.running_claims(self.now));
        check_physical_exclusivity(runs)
    }

    fn inject_faults(&mut self) {
        let p = self.p.clone();
        let now = self.now;
        let n = self.agents.len() as u64;
        if let Some(i) = p.drain_agent.filter(|_| !self.drain_answered) {
            if self.rng.below(20) == 0 {
                let event = Event::DrainAgent {
                    request: RequestId(u64::MAX),
                    agent: self.agents[i].id.clone(),
                };
                let msg = Msg::Coordinator {
                    event,
                    sent_by_agent_at: None,
                };
                self.net.send(now, msg, None, &mut SplitMix64::new(0));
            }
        }
        if self.rng.below(1000) < p.agent_crash_permille {
            let i = self.rng.below(n) as usize;
            if self.agents[i].up {
                let down_ms = 2_000 + self.rng.below(40_000);
                self.agents[i].crash(now, down_ms);
                // Its connection died with it: nothing in flight to it is read.
                self.net.drop_to_agent(i);
                self.summary.agent_crashes += 1;
            }
        }
        if self.rng.below(1000) < p.clean_stop_permille {
            let i = self.rng.below(n) as usize;
            if self.agents[i].up && self.agents[i].holds_nothing() {
                let down_ms = 2_000 + self.rng.below(40_000);
                let goodbye = self.agents[i].stop_cleanly(now, down_ms);
                self.send_from_agent(i, goodbye);
                // Its stream is closed: a lease in flight to it is never read.
                self.net.drop_to_agent(i);
                self.summary.goodbyes += 1;
            }
        }
        if self.rng.below(1000) < p.partition_permille {
            let i = self.rng.below(n) as usize;
            self.agents[i].partitioned_until = now.plus_ms(2_000 + self.rng.below(40_000));
            self.summary.partitions += 1;
        }
        if self.coordinator.is_some() && self.rng.below(1000) < p.coordinator_restart_permille {
            self.crash_coordinator();
        }
        let fence_open = self
            .coordinator
            .as_ref()
            .is_some_and(|c| !c.fenced.is_empty());
        if fence_open && self.rng.below(1000) < p.fenced_restart_permille {
            self.crash_coordinator();
        }
        // The clock steps back (the scheduler clamps: it stands still) until it lags by
        // up to 3 s. It never jumps forward while the coordinator lives, as the real
        // driver's monotonic clock cannot; a restart starts it afresh.
        if self.rng.below(1000) < p.clock_step_back_permille {
            let lag_ms = self.rng.below(3_000);
            self.coordinator_lag_ms = self.coordinator_lag_ms.max(lag_ms);
        }
    }

    fn crash_coordinator(&mut self) {
        if let Some(c) = self.coordinator.take() {
            let before = FencesAtCrash::of(&c, &self.log);
            if !before.open.is_empty() {
                self.summary.restarts_with_open_fence += 1;
            }
            self.fences_at_crash = Some(before);
        }
        self.summary.dropped_at_crash += self.net.drop_at_coordinator_crash();
        self.coordinator_lag_ms = 0;
        let down_ms = 500 + self.rng.below(8_000);
        self.coordinator_up_at = Some(self.now.plus_ms(down_ms));
        self.summary.coordinator_restarts += 1;
    }

    fn net_faults(&self) -> Option<NetFaults> {
        self.faults_on().then_some(self.p.net)
    }

    fn partitioned(&self, agent: usize) -> bool {
        self.agents[agent].partitioned_until > self.now
    }

    fn send_from_agent(&mut self, agent: usize, event: Event) {
        if !self.partitioned(agent) {
            let faults = self.net_faults();
            let msg = Msg::Coordinator {
                event,
                sent_by_agent_at: Some(self.now),
            };
            self.net.send(self.now, msg, faults, &mut self.rng);
        }
    }

    fn deliver(&mut self, msg: Msg) -> Result<(), String> {
        match msg {
            Msg::Coordinator {
                event,
                sent_by_agent_at,
            } => self.coordinator_step(event, sent_by_agent_at)?,
            Msg::Agent {
                agent: i,
                msg,
                answers_sent_at,
            } => {
                if self.partitioned(i) {
                    return Ok(());
                }
                let out = self.agents[i].receive(self.now, msg, answers_sent_at, &mut self.rng);
                // The coordinator persisted before it sent; the log must show every ack.
                self.checker.advance(&self.log)?;
                for (held, verdict, outcome) in &out.acks {
                    self.checker.check_ack_received(*held, *verdict, outcome)?;
                }
                for event in out.to_coordinator {
                    self.send_from_agent(i, event);
                }
            }
            Msg::Client(reply) => self.client_receive(reply)?,
        }
        Ok(())
    }

    /// One coordinator step: handle, then execute the actions in order (persist, then
    /// send). Under faults it may crash after executing only a prefix.
    /// `sent_by_agent_at`: when the agent sent `event`, which a renewal it draws answers.
    fn coordinator_step(
        &mut self,
        event: Event,
        sent_by_agent_at: Option<TimeMs>,
    ) -> Result<(), String> {
        let now = self.coordinator_now();
        let Some(c) = self.coordinator.as_mut() else {
            return Ok(());
        };
        // Goodbye and Hello, seen from outside the scheduler (its handling is under test).
        let goodbye_from = match &event {
            Event::AgentGoodbye { agent } => Some(agent.clone()),
            _ => None,
        };
        if let Event::AgentHello { agent, .. } = &event {
            self.said_goodbye.remove(agent);
        }
        let counted_a_lease = goodbye_from
            .as_ref()
            .is_some_and(|g| c.leases.values().any(|l| &l.agent == g));
        let live_before = goodbye_from
            .as_ref()
            .is_some_and(|g| c.live_agents().any(|a| a == g));
        let actions = c.handle(event, now);
        if let Some(agent) = goodbye_from {
            let live = c.live_agents().any(|a| a == &agent);
            if counted_a_lease {
                self.summary.goodbyes_crossing_lease += 1;
                // Changes nothing: the agent timeout ends it, with its leases' fences.
                if live != live_before {
                    return Err(format!(
                        "{agent} said goodbye while a lease of it was counted, and its \
                         liveness changed ({live_before} to {live})"
                    ));
                }
            } else if live {
                return Err(format!(
                    "{agent} said goodbye holding no counted lease but is still live"
                ));
            } else {
                self.summary.goodbyes_taken += 1;
                self.said_goodbye.insert(agent);
            }
        }
        let crash_after = (self.faults_on()
            && self.rng.below(1000) < self.p.mid_batch_crash_permille)
            .then(|| self.rng.below(actions.len() as u64 + 1) as usize);
        for (i, action) in actions.into_iter().enumerate() {
            if crash_after == Some(i) {
                self.crash_coordinator();
                return Ok(());
            }
            match action {
                Action::Persist(record) => self.log.push(record),
                Action::Send { agent, msg } => {
                    self.checker.advance(&self.log)?;
                    match &msg {
                        ToAgent::Ack { attempt, verdict } => {
                            self.checker.check_ack_sent(*attempt, *verdict)?
                        }
                        ToAgent::Lease(l) => {
                            self.checker.check_lease_sent(l.job, l.attempt)?;
                            if self.said_goodbye.contains(&agent) {
                                return Err(format!(
                                    "{} leased to {agent} after its goodbye, before its next hello",
                                    l.attempt
                                ));
                            }
                        }
                        _ => {}
                    }
                    let answers_sent_at = match &msg {
                        ToAgent::Renewed { .. } => Some(sent_by_agent_at.ok_or_else(|| {
                            format!("a renewal for {agent} answers no message of an agent")
                        })?),
                        _ => None,
                    };
                    let i = self.agent_index(&agent);
                    let faults = self.net_faults();
                    let msg = Msg::Agent {
                        agent: i,
                        msg,
                        answers_sent_at,
                    };
                    self.net.send(self.now, msg, faults, &mut self.rng);
                }
                // The client's link is reliable and ordered (a CLI over one stream); it
                // loses only what a coordinator crash cuts off.
                Action::Reply { reply, .. } => {
                    self.net
                        .send(self.now, Msg::Client(reply), None, &mut SplitMix64::new(0));
                }
                Action::SweepFinished { .. } => {}
            }
        }
        if crash_after.is_some() {
            self.crash_coordinator();
        }
        Ok(())
    }

    fn agent_index(&self, agent: &AgentId) -> usize {
        self.agents
            .iter()
            .position(|a| &a.id == agent)
            .expect("the scheduler only addresses agents that said hello")
    }

    fn client_act(&mut self) {
        self.client_next_try = self.now.plus_ms(CLIENT_RETRY_MS);
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let event = match (&self.client, self.sweep) {
            (ClientStep::Submit, _) => Event::SubmitSweep {
                request,
                submission: self.submission.clone(),
            },
            (ClientStep::Cancel { at }, Some(sweep)) => {
                if self.now < *at {
                    self.client_next_try = *at;
                    return;
                }
                Event::CancelSweep { request, sweep }
            }
            (ClientStep::Resume, Some(sweep)) => Event::ResumeSweep { request, sweep },
            _ => return,
        };
        let msg = Msg::Coordinator {
            event,
            sent_by_agent_at: None,
        };
        self.net.send(self.now, msg, None, &mut SplitMix64::new(0));
    }

    fn client_receive(&mut self, reply: Reply) -> Result<(), String> {
        if let Reply::AgentDraining { .. } = reply {
            self.drain_answered = true;
            return Ok(());
        }
        match (&self.client, reply) {
            (ClientStep::Submit, Reply::SweepSubmitted { sweep, jobs, .. }) => {
                let expected = self.p.experiments * self.p.cycles as usize;
                if jobs != expected {
                    return Err(format!("sweep has {jobs} jobs, expected {expected}"));
                }
                if self.sweep.is_some_and(|s| s != sweep) {
                    return Err(format!("resubmission created a second sweep {sweep}"));
                }
                self.sweep = Some(sweep);
                self.client = if self.p.cancel_and_resume {
                    let at = self.now.plus_ms(self.rng.below(self.p.faults_until.0));
                    ClientStep::Cancel { at }
                } else {
                    ClientStep::Done
                };
                self.client_next_try = self.now;
            }
            (ClientStep::Submit, Reply::Refused(e)) => {
                return Err(format!("submission refused: {e}"))
            }
            (ClientStep::Cancel { .. }, Reply::SweepCancelled { .. }) => {
                self.client = ClientStep::Resume;
                self.client_next_try = self.now.plus_ms(10_000);
            }
            (ClientStep::Resume, Reply::SweepResumed { .. }) => self.client = ClientStep::Done,
            // Replies to earlier retries of a finished step.
            _ => {}
        }
        Ok(())
    }
}

/// The fences a coordinator held when it crashed: those still open at its last `now`
/// whose `AttemptEnded` had reached the log (a fence applied in a batch cut short by the
/// crash is not durable: its attempt comes back as a recovered lease instead).
#[derive(Debug)]
struct FencesAtCrash {
    /// (attempt, what was left of its fence at the crash, on the crashed scheduler's clock)
    open: Vec<(AttemptId, u64)>,
}

impl FencesAtCrash {
    fn of(c: &Scheduler, log: &[Record]) -> Self {
        let ended_in_log = |attempt: AttemptId| {
            log.iter()
                .any(|r| matches!(r, Record::AttemptEnded { attempt: a, .. } if *a == attempt))
        };
        let open = c
            .fenced
            .iter()
            .filter(|(attempt, f)| f.until > c.now && ended_in_log(**attempt))
            .map(|(attempt, f)| (*attempt, f.until.0 - c.now.0))
            .collect();
        Self { open }
    }
}

/// A restart never shortens a fence: each fence open at the crash is held by the recovered
/// coordinator for at least what was left of it at the crash, counted from the restart.
/// Both sides are measured on their own scheduler's clock, so this holds whatever the
/// coordinator's clock did across the restart.
fn check_fences_survive_restart(
    before: &FencesAtCrash,
    recovered: &Scheduler,
    log: &[Record],
) -> Result<(), String> {
    for (attempt, left_ms) in &before.open {
        let Some(fence) = recovered.fenced.get(attempt) else {
            return Err(format!(
                "{attempt} was fenced for {left_ms} ms more when the coordinator crashed; \
                 after recovery (from {} records) its devices are not fenced",
                log.len()
            ));
        };
        let held_ms = fence.until.0.saturating_sub(recovered.now.0);
        if held_ms < *left_ms {
            return Err(format!(
                "{attempt} was fenced for {left_ms} ms more when the coordinator crashed; \
                 the recovered coordinator fences it for only {held_ms} ms"
            ));
        }
    }
    Ok(())
}
