//! Composition tests: a real store in a temp dir, the driver, and in-process fake agents
//! that "run" a lease instantly and return a RawResult whose wall time encodes the
//! attempt, so an aggregate shows which attempt it counted.

use super::*;
use crate::aggregate::ExperimentAggregate;
use crate::scheduler::{
    AckVerdict, AgentId, AttemptEnd, DeviceKey, DeviceNeeds, Epoch, ExperimentSubmission,
    GpuDevice, HeldAttempt, Inventory, JobId, JobStatus, SweepSubmission, ToAgent,
};
use crate::test_fixtures::raw_result;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// Virtual time between heartbeats when nothing else happens.
const HEARTBEAT_MS: u64 = 5_000;
/// Bound on pump rounds: far more than any test sweep needs.
const MAX_ROUNDS: usize = 10_000;

fn wall_ns(attempt: AttemptId) -> u64 {
    1_000_000_000 + attempt.0 * 1_000_000
}

/// A link that checks, at every send, that what the message announces is already in the
/// store: a lease's attempt, an ack's result.
struct CheckingLink {
    inner: ChannelLink,
    store: Arc<Store>,
    violations: Rc<RefCell<Vec<String>>>,
}

impl AgentLink for CheckingLink {
    fn send(&mut self, agent: &AgentId, msg: ToAgent) -> Result<(), LinkError> {
        let problem = match &msg {
            ToAgent::Lease(l) => match self.store.attempt(l.attempt).unwrap() {
                Some(_) => None,
                None => Some(format!("{} sent before it was persisted", l.attempt)),
            },
            ToAgent::Ack {
                attempt,
                verdict: verdict @ (AckVerdict::Accepted | AckVerdict::Superseded),
            } => {
                let want = if *verdict == AckVerdict::Accepted {
                    Disposition::Accepted
                } else {
                    Disposition::Superseded
                };
                match self.store.result(attempt.attempt).unwrap() {
                    Some(r) if r.disposition == want => None,
                    other => Some(format!(
                        "ack {verdict:?} of {} with stored {other:?}",
                        attempt.attempt
                    )),
                }
            }
            _ => None,
        };
        if let Some(p) = problem {
            self.violations.borrow_mut().push(p);
        }
        self.inner.send(agent, msg)
    }
}

struct FakeAgent {
    id: AgentId,
    inventory: Inventory,
    rx: Option<Receiver<ToAgent>>,
    /// Finished attempts whose ack has not arrived.
    spool: BTreeMap<AttemptId, (Epoch, RawResult)>,
    acks: Vec<(AttemptId, AckVerdict)>,
    /// Acks still to lose on the way.
    acks_to_lose: usize,
}

impl FakeAgent {
    fn new(name: &str, gpus: usize) -> Self {
        Self {
            id: AgentId(name.into()),
            inventory: Inventory {
                gpus: (0..gpus)
                    .map(|i| GpuDevice {
                        key: DeviceKey(format!("gpu:{name}-{i}")),
                        model: "H100".into(),
                        mig_slices: vec![],
                    })
                    .collect(),
                cpu_packages: vec![DeviceKey(format!("rapl:{name}:package-0"))],
                runner_slots: vec![],
            },
            rx: None,
            spool: BTreeMap::new(),
            acks: Vec::new(),
            acks_to_lose: 0,
        }
    }

    fn held(&self) -> Vec<HeldAttempt> {
        self.spool
            .iter()
            .map(|(a, (e, _))| HeldAttempt {
                attempt: *a,
                epoch: *e,
                running: false,
            })
            .collect()
    }

    /// A (re)connection: Hello with the spool, then every spooled result again.
    fn reconnect(&mut self, link: &mut ChannelLink) -> Vec<(Event, Option<RawResult>)> {
        self.rx = Some(link.connect(self.id.clone()));
        let mut out = vec![(
            Event::AgentHello {
                agent: self.id.clone(),
                inventory: self.inventory.clone(),
                held: self.held(),
                lost: vec![],
            },
            None,
        )];
        for (attempt, (epoch, raw)) in &self.spool {
            out.push((self.finished(*attempt, *epoch), Some(raw.clone())));
        }
        out
    }

    fn finished(&self, attempt: AttemptId, epoch: Epoch) -> Event {
        Event::AttemptFinished {
            agent: self.id.clone(),
            attempt,
            epoch,
            outcome: Outcome::Succeeded,
        }
    }

    /// Reads what arrived and answers: a lease runs at once and its result is spooled
    /// and sent.
    fn respond(&mut self) -> Vec<(Event, Option<RawResult>)> {
        let Some(rx) = &self.rx else {
            return Vec::new();
        };
        let msgs: Vec<ToAgent> = rx.try_iter().collect();
        let mut out = Vec::new();
        for msg in msgs {
            match msg {
                ToAgent::Lease(l) => {
                    let mut raw = raw_result(&l.experiment_name, l.cycle, 4, wall_ns(l.attempt));
                    raw.attempt = l.attempt.0 as u32;
                    raw.job_key = l.job_key.clone();
                    self.spool.insert(l.attempt, (l.epoch, raw.clone()));
                    out.push((self.finished(l.attempt, l.epoch), Some(raw)));
                }
                ToAgent::Ack { attempt, verdict } => {
                    if self.acks_to_lose > 0 {
                        self.acks_to_lose -= 1;
                    } else {
                        self.spool.remove(&attempt.attempt);
                        self.acks.push((attempt.attempt, verdict));
                    }
                }
                ToAgent::HelloRequired => out.push((
                    Event::AgentHello {
                        agent: self.id.clone(),
                        inventory: self.inventory.clone(),
                        held: self.held(),
                        lost: vec![],
                    },
                    None,
                )),
                ToAgent::Renewed { .. }
                | ToAgent::Cancel(_)
                | ToAgent::Drain
                | ToAgent::Refused(_) => {}
            }
        }
        out
    }

    fn heartbeat(&self) -> Event {
        Event::Heartbeat {
            agent: self.id.clone(),
            held: self.held(),
        }
    }
}

struct Harness {
    driver: Driver<CheckingLink>,
    agents: Vec<FakeAgent>,
    now: u64,
    violations: Rc<RefCell<Vec<String>>>,
    finished: Vec<SweepId>,
}

impl Harness {
    fn start(dir: &Path, agents: Vec<FakeAgent>, now: u64) -> Self {
        let store = Arc::new(Store::open(dir, Duration::from_secs(5)).unwrap());
        let violations = Rc::new(RefCell::new(Vec::new()));
        let link = CheckingLink {
            inner: ChannelLink::new(),
            store: Arc::clone(&store),
            violations: Rc::clone(&violations),
        };
        let driver = Driver::start(store, link, SchedulerConfig::default(), TimeMs(now)).unwrap();
        let mut h = Self {
            driver,
            agents,
            now,
            violations,
            finished: Vec::new(),
        };
        for i in 0..h.agents.len() {
            let events = h.agents[i].reconnect(&mut h.driver.link_mut().inner);
            h.feed(events);
        }
        h
    }

    fn feed(&mut self, events: Vec<(Event, Option<RawResult>)>) -> Executed {
        let mut all = Executed::default();
        for (event, body) in events {
            let done = self.driver.handle(event, body, TimeMs(self.now)).unwrap();
            all.persisted += done.persisted;
            all.replies.extend(done.replies);
            self.finished.extend(&done.finished);
        }
        all
    }

    /// Delivers messages both ways, advancing virtual time by heartbeats when idle,
    /// until `sweep` finished and nothing is in flight.
    fn run_until_finished(&mut self, sweep: SweepId) {
        for _ in 0..MAX_ROUNDS {
            let mut events = Vec::new();
            for a in &mut self.agents {
                events.extend(a.respond());
            }
            if !events.is_empty() {
                self.feed(events);
                continue;
            }
            if self.finished.contains(&sweep) {
                return;
            }
            self.now += HEARTBEAT_MS;
            let beats: Vec<_> = self.agents.iter().map(|a| (a.heartbeat(), None)).collect();
            self.feed(beats);
        }
        panic!("{sweep} did not finish in {MAX_ROUNDS} rounds");
    }

    fn submit(&mut self, submission: SweepSubmission) -> SweepId {
        let done = self.feed(vec![(
            Event::SubmitSweep {
                request: RequestId(1),
                submission,
            },
            None,
        )]);
        match &done.replies[..] {
            [(_, Reply::SweepSubmitted { sweep, .. })] => *sweep,
            other => panic!("unexpected replies {other:?}"),
        }
    }

    /// The driver is dropped (the process died); the agents keep their spools.
    fn kill(self) -> (Vec<FakeAgent>, u64, Vec<String>) {
        let violations = self.violations.borrow().clone();
        (self.agents, self.now, violations)
    }
}

fn submission(experiments: usize, cycles: u32) -> SweepSubmission {
    SweepSubmission {
        idempotency_token: "sweep-token".into(),
        name: "driver test".into(),
        experiments: (0..experiments)
            .map(|i| ExperimentSubmission {
                name: format!("exp{i}"),
                config: serde_json::json!({ "model_name": "m", "i": i }),
                needs: DeviceNeeds::Gpus {
                    count: 1,
                    model: None,
                },
            })
            .collect(),
        cycles,
        pin_device_model: true,
    }
}

/// Every job of the sweep is accepted exactly once, the store agrees with the scheduler,
/// and each stored aggregate counts exactly the accepted attempt of each cycle.
fn assert_accepted_once(driver: &Driver<CheckingLink>, sweep: SweepId, jobs: usize) {
    let s = driver.scheduler();
    let mut accepted: BTreeMap<(u32, u32), AttemptId> = BTreeMap::new();
    for j in s.jobs().filter(|j| j.sweep == sweep) {
        let JobStatus::Accepted(a) = j.status else {
            panic!("{} ended {:?}", j.job, j.status);
        };
        accepted.insert((j.experiment, j.cycle), a);
    }
    assert_eq!(accepted.len(), jobs);
    let store = driver.store();
    let records = store.records().unwrap();
    let accept_records = records
        .iter()
        .filter(|r| matches!(r, Record::ResultAccepted { .. }))
        .count();
    assert_eq!(accept_records, jobs, "one ResultAccepted record per job");
    let row = store.sweep(sweep).unwrap().unwrap();
    let stored = store.accepted_results(&row).unwrap();
    assert_eq!(stored.len(), jobs);
    for r in &stored {
        assert_eq!(
            accepted[&(r.job.experiment, r.job.cycle)],
            r.attempt,
            "{}",
            r.job.job
        );
    }
    for (index, name) in row.experiment_names.iter().enumerate() {
        let agg: ExperimentAggregate = store
            .aggregate(&sweep_experiment_id(sweep, name))
            .unwrap()
            .unwrap_or_else(|| panic!("no aggregate for {name}"));
        assert!(agg.complete, "{name}: {:?}", agg.warnings);
        let counted: Vec<(u32, u32, f64)> = agg
            .cycles
            .iter()
            .map(|c| (c.cycle, c.attempt, c.wall_s))
            .collect();
        let expected: Vec<(u32, u32, f64)> = accepted
            .iter()
            .filter(|((e, _), _)| *e == index as u32)
            .map(|((_, c), a)| (*c, a.0 as u32, wall_ns(*a) as f64 / 1e9))
            .collect();
        assert_eq!(counted, expected, "{name}");
    }
    // The log replays into the same outcome.
    let replayed = Scheduler::recover(SchedulerConfig::default(), records, TimeMs(0)).unwrap();
    for j in s.jobs() {
        assert_eq!(replayed.job(j.job).unwrap().status, j.status);
    }
}

#[test]
fn a_sweep_of_jobs_times_cycles_completes_with_one_accepted_result_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let agents = vec![FakeAgent::new("a", 2), FakeAgent::new("b", 2)];
    let mut h = Harness::start(dir.path(), agents, 0);
    let sweep = h.submit(submission(3, 2));
    h.run_until_finished(sweep);
    assert_accepted_once(&h.driver, sweep, 3 * 2);
    assert!(h.violations.borrow().is_empty(), "{:?}", h.violations);
    // Every result was acknowledged as accepted, and nothing is left spooled.
    let acks: usize = h.agents.iter().map(|a| a.acks.len()).sum();
    assert_eq!(acks, 6);
    assert!(h.agents.iter().all(|a| a.spool.is_empty()));
}

#[test]
fn a_driver_killed_between_persist_and_send_restarts_and_completes_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let agents = vec![FakeAgent::new("a", 1), FakeAgent::new("b", 1)];
    let mut h = Harness::start(dir.path(), agents, 0);
    let event = Event::SubmitSweep {
        request: RequestId(1),
        submission: submission(2, 2),
    };
    // Killed right before the first lease goes out: its attempt is durable, unsent.
    h.driver
        .handle_until(event, None, TimeMs(h.now), |a| {
            matches!(
                a,
                Action::Send {
                    msg: ToAgent::Lease(_),
                    ..
                }
            )
        })
        .unwrap();
    let (agents, now, violations) = h.kill();
    assert!(violations.is_empty(), "{violations:?}");
    {
        let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
        let records = store.records().unwrap();
        assert!(matches!(
            records[..],
            [Record::SweepCreated(_), Record::AttemptStarted { .. }]
        ));
    }
    let unsent = AttemptId(0);

    let mut h = Harness::start(dir.path(), agents, now + 1_000);
    let sweep = SweepId(0);
    // A client that timed out resubmits: the sweep is not created again.
    let done = h.feed(vec![(
        Event::SubmitSweep {
            request: RequestId(2),
            submission: submission(2, 2),
        },
        None,
    )]);
    assert!(matches!(
        done.replies[..],
        [(
            _,
            Reply::SweepSubmitted {
                created: false,
                jobs: 4,
                ..
            }
        )]
    ));
    h.run_until_finished(sweep);
    assert_accepted_once(&h.driver, sweep, 2 * 2);
    assert!(h.violations.borrow().is_empty(), "{:?}", h.violations);
    // The unsent lease's agent reconnected without re-announcing it, so it was requeued
    // at that Hello, not at the end of the grace.
    let row = h.driver.store().attempt(unsent).unwrap().unwrap();
    assert!(
        matches!(&row.end, Some(AttemptEnd::Lost { reason }) if reason.contains("without re-announcing")),
        "{row:?}"
    );
    let created = h
        .driver
        .store()
        .records()
        .unwrap()
        .iter()
        .filter(|r| matches!(r, Record::SweepCreated(_)))
        .count();
    assert_eq!(created, 1, "a sweep is expanded once");
}

#[test]
fn an_epoch_issued_before_a_kill_is_never_reissued_and_its_late_result_is_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), vec![FakeAgent::new("a", 1)], 0);
    let sweep = h.submit(submission(1, 1));
    // Agent a ran the lease; its result is still on the way when the driver dies.
    let mut late = h.agents[0].respond();
    assert_eq!(late.len(), 1, "one lease, one result");
    let (late_event, late_body) = late.remove(0);
    let Event::AttemptFinished {
        attempt: old_attempt,
        epoch: old_epoch,
        ..
    } = late_event.clone()
    else {
        panic!("{late_event:?}");
    };
    let (mut agents, now, violations) = h.kill();
    assert!(violations.is_empty(), "{violations:?}");
    let mut cut_off = agents.remove(0);

    // Restarted; a stays away past the grace, b takes the job.
    let mut h = Harness::start(dir.path(), vec![FakeAgent::new("b", 1)], now + 1_000);
    h.run_until_finished(sweep);
    let records = h.driver.store().records().unwrap();
    let epochs: Vec<Epoch> = records
        .iter()
        .filter_map(|r| match r {
            Record::AttemptStarted { job, epoch, .. } if *job == JobId(0) => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs.len(), 2, "{records:?}");
    assert_eq!(epochs[0], old_epoch);
    assert!(
        epochs[1] > old_epoch,
        "epoch reissued after the restart: {epochs:?}"
    );
    let new_attempt = h
        .driver
        .store()
        .accepted_attempt(JobId(0))
        .unwrap()
        .unwrap();
    assert_ne!(new_attempt, old_attempt);

    // a comes back and resends the pre-restart result: stored superseded, acked so.
    let mut events = cut_off.reconnect(&mut h.driver.link_mut().inner);
    assert!(events.contains(&(late_event, late_body)));
    events.retain(|(e, _)| matches!(e, Event::AttemptFinished { .. }));
    let done = h.feed(events);
    assert_eq!(done.persisted, 1, "the superseded result is stored once");
    let _ = cut_off.respond();
    assert_eq!(cut_off.acks, vec![(old_attempt, AckVerdict::Superseded)]);
    let stored = h.driver.store().result(old_attempt).unwrap().unwrap();
    assert_eq!(stored.disposition, Disposition::Superseded);
    assert_eq!(stored.epoch, old_epoch);
    // The aggregate counts the new attempt only.
    assert_accepted_once(&h.driver, sweep, 1);
    assert!(h.violations.borrow().is_empty(), "{:?}", h.violations);
}

#[test]
fn a_result_resent_after_a_lost_ack_is_acked_again_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = FakeAgent::new("a", 1);
    agent.acks_to_lose = 1;
    let mut h = Harness::start(dir.path(), vec![agent], 0);
    let sweep = h.submit(submission(1, 2));
    h.run_until_finished(sweep);
    // The first ack was lost: that result is still spooled on the agent.
    let lost: Vec<AttemptId> = h.agents[0].spool.keys().copied().collect();
    assert_eq!(lost.len(), 1);
    let records_before = h.driver.store().records().unwrap().len();

    // The agent reconnects and resends its spool.
    let events = h.agents[0].reconnect(&mut h.driver.link_mut().inner);
    let done = h.feed(events);
    assert_eq!(done.persisted, 0, "a resend writes nothing");
    let _ = h.agents[0].respond();
    assert!(h.agents[0].spool.is_empty());
    assert_eq!(
        h.agents[0].acks.last(),
        Some(&(lost[0], AckVerdict::Accepted))
    );
    assert_eq!(h.driver.store().records().unwrap().len(), records_before);
    assert_accepted_once(&h.driver, sweep, 2);
    assert!(h.violations.borrow().is_empty(), "{:?}", h.violations);
}

#[test]
fn a_driver_killed_after_a_commit_and_before_its_ack_acks_the_resend_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), vec![FakeAgent::new("a", 1)], 0);
    let sweep = h.submit(submission(1, 1));
    let mut events = h.agents[0].respond();
    assert_eq!(events.len(), 1, "one lease, one result");
    let (event, body) = events.remove(0);
    // Killed after the result is committed, before the ack is sent.
    h.driver
        .handle_until(event, body, TimeMs(h.now), |a| {
            matches!(
                a,
                Action::Send {
                    msg: ToAgent::Ack { .. },
                    ..
                }
            )
        })
        .unwrap();
    let (agents, now, violations) = h.kill();
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(agents[0].spool.len(), 1, "no ack reached the agent");

    let mut h = Harness::start(dir.path(), agents, now + 1_000);
    let _ = h.agents[0].respond();
    assert!(h.agents[0].spool.is_empty(), "the resend was acked");
    assert_eq!(h.agents[0].acks[0].1, AckVerdict::Accepted);
    // The committed result finished the sweep before the crash; recovery does not
    // announce it again, so aggregate on demand as a status command would.
    for agg in aggregate_sweep(h.driver.store(), sweep).unwrap() {
        h.driver
            .store()
            .put_aggregate(&agg.experiment_id, &agg)
            .unwrap();
    }
    assert_accepted_once(&h.driver, sweep, 1);
    assert!(h.violations.borrow().is_empty(), "{:?}", h.violations);
}

#[test]
fn a_success_without_its_body_is_refused_before_the_scheduler_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), vec![FakeAgent::new("a", 1)], 0);
    let _ = h.submit(submission(1, 1));
    let mut events = h.agents[0].respond();
    let (event, _) = events.remove(0);
    let records_before = h.driver.store().records().unwrap().len();
    let err = h.driver.handle(event, None, TimeMs(h.now)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attempt-0 reported success without a result body"
    );
    assert_eq!(h.driver.store().records().unwrap().len(), records_before);
}

#[test]
fn after_a_failed_persist_the_driver_executes_nothing_until_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), vec![FakeAgent::new("a", 1)], 0);
    let _ = h.submit(submission(1, 1));
    let mut events = h.agents[0].respond();
    let (event, body) = events.remove(0);
    let Event::AttemptFinished { attempt, .. } = &event else {
        panic!("{event:?}");
    };
    // Someone else's result already sits under this attempt as superseded: the store
    // answers the scheduler's ResultAccepted with a mismatch.
    let stale = Record::ResultSuperseded {
        attempt: *attempt,
        job: JobId(0),
        epoch: Epoch(0),
    };
    h.driver.store().persist(&stale, body.as_ref()).unwrap();
    let err = h.driver.handle(event, body, TimeMs(h.now)).unwrap_err();
    assert!(
        matches!(err, DriverError::DispositionMismatch { .. }),
        "{err}"
    );
    // No ack went out for a result the store does not hold as accepted.
    let _ = h.agents[0].respond();
    assert!(h.agents[0].acks.is_empty());
    let beat = h.agents[0].heartbeat();
    let err = h.driver.handle(beat, None, TimeMs(h.now)).unwrap_err();
    assert!(matches!(err, DriverError::MustRestart), "{err}");
}

#[test]
fn a_cancelled_sweep_stores_no_aggregate_for_an_experiment_without_an_accepted_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), vec![FakeAgent::new("a", 1)], 0);
    let sweep = h.submit(submission(2, 1));
    // One GPU: exp0's job runs and is accepted; exp1's is then cancelled before any
    // result of it arrives.
    let events = h.agents[0].respond();
    h.feed(events);
    h.feed(vec![(
        Event::CancelSweep {
            request: RequestId(2),
            sweep,
        },
        None,
    )]);
    assert!(h.finished.contains(&sweep), "the cancelled sweep finished");
    let store = h.driver.store();
    let ran: Option<ExperimentAggregate> = store
        .aggregate(&sweep_experiment_id(sweep, "exp0"))
        .unwrap();
    assert_eq!(ran.expect("exp0 has an aggregate").cycles.len(), 1);
    // Not an empty summary: no aggregate at all, as embedded `lem aggregate` refuses it.
    let never_ran: Option<serde_json::Value> = store
        .aggregate(&sweep_experiment_id(sweep, "exp1"))
        .unwrap();
    assert!(never_ran.is_none(), "exp1 stored {never_ran:?}");
}
