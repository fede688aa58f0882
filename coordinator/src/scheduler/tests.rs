//! Scenario tests of the scheduler: each builds a small cluster by events and checks the
//! actions against values derived in the test.

use super::*;
use lem_common::domain::job_key;
use serde_json::json;

pub(super) fn agent(name: &str) -> AgentId {
    AgentId(name.into())
}

pub(super) fn gpus(name: &str, n: usize, model: &str) -> Inventory {
    Inventory {
        gpus: (0..n)
            .map(|i| GpuDevice {
                key: DeviceKey(format!("gpu:{name}-{i}")),
                model: model.into(),
                mig_slices: vec![],
            })
            .collect(),
        cpu_packages: vec![DeviceKey(format!("rapl:{name}:package-0"))],
        runner_slots: vec![],
    }
}

pub(super) fn mig_node(name: &str, profile: &str, slices: usize) -> Inventory {
    Inventory {
        gpus: vec![GpuDevice {
            key: DeviceKey(format!("gpu:{name}-0")),
            model: "A100".into(),
            mig_slices: (0..slices)
                .map(|i| MigSlice {
                    key: DeviceKey(format!("mig:{name}-0-{i}")),
                    profile: profile.into(),
                })
                .collect(),
        }],
        cpu_packages: vec![],
        runner_slots: vec![],
    }
}

pub(super) fn submission(token: &str, needs: &[DeviceNeeds], cycles: u32) -> SweepSubmission {
    SweepSubmission {
        idempotency_token: token.into(),
        name: "test".into(),
        experiments: needs
            .iter()
            .enumerate()
            .map(|(i, n)| ExperimentSubmission {
                name: format!("exp{i}"),
                config: json!({ "model": "m", "i": i }),
                needs: n.clone(),
            })
            .collect(),
        cycles,
        pin_device_model: true,
    }
}

pub(super) fn one_gpu() -> DeviceNeeds {
    DeviceNeeds::Gpus {
        count: 1,
        model: None,
    }
}

pub(super) fn hello(s: &mut Scheduler, name: &str, inventory: Inventory, now: u64) -> Vec<Action> {
    s.handle(
        Event::AgentHello {
            agent: agent(name),
            inventory,
            held: vec![],
            lost: vec![],
        },
        TimeMs(now),
    )
}

pub(super) fn submit(s: &mut Scheduler, sub: SweepSubmission, now: u64) -> Vec<Action> {
    s.handle(
        Event::SubmitSweep {
            request: RequestId(1),
            submission: sub,
        },
        TimeMs(now),
    )
}

pub(super) fn leases(actions: &[Action]) -> Vec<Lease> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                msg: ToAgent::Lease(l),
                ..
            } => Some(l.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn persisted(actions: &[Action]) -> Vec<Record> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn reply(actions: &[Action]) -> Reply {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Reply { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .expect("a reply")
}

fn finish(s: &mut Scheduler, l: &Lease, outcome: Outcome, now: u64) -> Vec<Action> {
    s.handle(
        Event::AttemptFinished {
            agent: l.placement.agent.clone(),
            attempt: l.attempt,
            epoch: l.epoch,
            outcome,
        },
        TimeMs(now),
    )
}

fn ack_verdicts(actions: &[Action]) -> Vec<AckVerdict> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                msg: ToAgent::Ack { verdict, .. },
                ..
            } => Some(*verdict),
            _ => None,
        })
        .collect()
}

pub(super) fn heartbeat(s: &mut Scheduler, name: &str, held: &[&Lease], now: u64) -> Vec<Action> {
    let held = held
        .iter()
        .map(|l| HeldAttempt {
            attempt: l.attempt,
            epoch: l.epoch,
            running: true,
        })
        .collect();
    s.handle(
        Event::Heartbeat {
            agent: agent(name),
            held,
        },
        TimeMs(now),
    )
}

#[test]
fn a_sweep_is_persisted_with_its_job_keys_before_any_lease() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 2, "H100"), 0);
    let sub = submission("t1", &[one_gpu()], 3);
    let out = submit(&mut s, sub.clone(), 1);
    let Action::Persist(Record::SweepCreated(created)) = &out[0] else {
        panic!("first action must persist the sweep: {out:?}");
    };
    let expected: Vec<(u32, String)> = (0..3)
        .map(|c| (c, job_key(&sub.experiments[0].config, c)))
        .collect();
    let got: Vec<(u32, String)> = created
        .jobs
        .iter()
        .map(|j| (j.cycle, j.key.clone()))
        .collect();
    assert_eq!(got, expected);
    // Two GPUs: two leases, each after its own AttemptStarted record.
    let granted = leases(&out);
    assert_eq!(granted.len(), 2);
    for l in &granted {
        let persist_at = out
            .iter()
            .position(|a| matches!(a, Action::Persist(Record::AttemptStarted { attempt, .. }) if *attempt == l.attempt))
            .expect("attempt persisted");
        let send_at = out
            .iter()
            .position(|a| matches!(a, Action::Send { msg: ToAgent::Lease(x), .. } if x.attempt == l.attempt))
            .unwrap();
        assert!(persist_at < send_at);
    }
    assert_ne!(granted[0].placement.devices, granted[1].placement.devices);
    assert_eq!(
        reply(&out),
        Reply::SweepSubmitted {
            sweep: SweepId(0),
            created: true,
            jobs: 3
        }
    );
}

#[test]
fn resubmitting_with_the_same_token_creates_nothing_and_a_changed_one_is_refused() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let sub = submission("t1", &[one_gpu(), DeviceNeeds::CpuPackages], 2);
    let _ = submit(&mut s, sub.clone(), 0);
    let again = submit(&mut s, sub.clone(), 1);
    assert!(persisted(&again).is_empty());
    assert_eq!(
        reply(&again),
        Reply::SweepSubmitted {
            sweep: SweepId(0),
            created: false,
            jobs: 4
        }
    );
    let mut changed = sub;
    changed.cycles = 3;
    let out = submit(&mut s, changed, 2);
    assert!(persisted(&out).is_empty());
    assert!(matches!(
        reply(&out),
        Reply::Refused(SchedulerError::TokenReused { .. })
    ));
    assert_eq!(s.jobs().count(), 4);
}

#[test]
fn bad_submissions_are_refused_naming_the_experiment() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut dup = submission("t", &[one_gpu(), one_gpu()], 1);
    dup.experiments[1].config = dup.experiments[0].config.clone();
    let out = submit(&mut s, dup, 0);
    let Reply::Refused(e) = reply(&out) else {
        panic!()
    };
    assert!(
        e.to_string()
            .contains("experiments[1] (exp1): same config as experiments[0]"),
        "{e}"
    );
    let zero = submission(
        "t",
        &[DeviceNeeds::Gpus {
            count: 0,
            model: None,
        }],
        1,
    );
    let Reply::Refused(e) = reply(&submit(&mut s, zero, 0)) else {
        panic!()
    };
    assert!(
        e.to_string()
            .contains("experiments[0] (exp0): `needs.count`"),
        "{e}"
    );
    let Reply::Refused(e) = reply(&submit(&mut s, submission("t", &[one_gpu()], 0), 0)) else {
        panic!()
    };
    assert!(e.to_string().contains("`cycles`"), "{e}");
    assert_eq!(s.jobs().count(), 0);
}

#[test]
fn mig_shared_slices_run_together_and_an_exclusive_parent_waits_for_them() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "m", mig_node("m", "3g.40gb", 2), 0);
    let shared = DeviceNeeds::MigSlice {
        profile: "3g.40gb".into(),
        exclusive_parent: false,
        model: None,
    };
    let exclusive = DeviceNeeds::MigSlice {
        profile: "3g.40gb".into(),
        exclusive_parent: true,
        model: None,
    };
    let out = submit(&mut s, submission("t", &[shared, exclusive], 1), 1);
    let granted = leases(&out);
    // Only the shared job fits while it holds a slice; the exclusive one needs the parent.
    assert_eq!(granted.len(), 1);
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("mig:m-0-0".into())]
    );
    let out = finish(&mut s, &granted[0], Outcome::Succeeded, 2);
    let next = leases(&out);
    assert_eq!(next.len(), 1);
    assert!(next[0].placement.claims.contains(&Claim {
        key: DeviceKey("gpu:m-0".into()),
        mode: ClaimMode::Exclusive
    }));
}

#[test]
fn cpu_jobs_meter_the_package_one_at_a_time() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let out = submit(
        &mut s,
        submission("t", &[DeviceNeeds::CpuPackages, one_gpu()], 2),
        1,
    );
    let granted = leases(&out);
    let cpu: Vec<_> = granted
        .iter()
        .filter(|l| l.placement.devices[0].0.starts_with("rapl:"))
        .collect();
    assert_eq!(cpu.len(), 1, "two CPU jobs on one package: {granted:?}");
    assert_eq!(granted.len(), 2, "the GPU job runs beside the CPU job");
}

#[test]
fn cycles_of_an_experiment_stay_on_the_model_of_their_first_lease() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let _ = hello(&mut s, "b", gpus("b", 1, "A100"), 0);
    let out = submit(&mut s, submission("t", &[one_gpu()], 3), 1);
    let granted = leases(&out);
    assert_eq!(granted.len(), 1, "the A100 must stay idle: {granted:?}");
    let model = granted[0].placement.device_model.clone();
    let out = finish(&mut s, &granted[0], Outcome::Succeeded, 2);
    assert_eq!(leases(&out)[0].placement.device_model, model);

    // Without pinning both nodes are used.
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let _ = hello(&mut s, "b", gpus("b", 1, "A100"), 0);
    let mut sub = submission("t", &[one_gpu()], 3);
    sub.pin_device_model = false;
    assert_eq!(leases(&submit(&mut s, sub, 1)).len(), 2);
}

#[test]
fn an_expired_lease_requeues_with_a_new_attempt_and_a_higher_epoch() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let first = leases(&submit(&mut s, submission("t", &[one_gpu()], 1), 0)).remove(0);
    assert_eq!(s.poll_timeout(), Some(TimeMs(cfg.agent_timeout_ms)));
    // The agent stays alive but never renews this lease.
    let mut t = 0;
    let mut out = Vec::new();
    while t <= cfg.lease_ttl_ms {
        t += cfg.agent_timeout_ms / 4;
        out.extend(heartbeat(&mut s, "a", &[], t));
    }
    let ended = persisted(&out);
    assert!(ended.iter().any(|r| matches!(r, Record::AttemptEnded { attempt, end: AttemptEnd::Lost { .. }, .. } if *attempt == first.attempt)));
    let second = leases(&out).remove(0);
    assert_ne!(second.attempt, first.attempt);
    assert_eq!(second.epoch.0, first.epoch.0 + 1);
    assert_eq!(second.job, first.job);
}

#[test]
fn a_result_is_accepted_once_and_its_resend_is_acked_again() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let l = leases(&submit(&mut s, submission("t", &[one_gpu()], 1), 0)).remove(0);
    let out = finish(&mut s, &l, Outcome::Succeeded, 5);
    assert_eq!(
        persisted(&out),
        vec![Record::ResultAccepted {
            attempt: l.attempt,
            job: l.job
        }]
    );
    let persist_at = out
        .iter()
        .position(|a| matches!(a, Action::Persist(_)))
        .unwrap();
    let ack_at = out
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    msg: ToAgent::Ack { .. },
                    ..
                }
            )
        })
        .unwrap();
    assert!(persist_at < ack_at, "persist, then ack");
    assert!(out.contains(&Action::SweepFinished { sweep: SweepId(0) }));
    let resend = finish(&mut s, &l, Outcome::Succeeded, 6);
    assert!(persisted(&resend).is_empty());
    assert_eq!(ack_verdicts(&resend), vec![AckVerdict::Accepted]);
    assert_eq!(s.job(l.job).unwrap().status, JobStatus::Accepted(l.attempt));
}

#[test]
fn a_result_from_a_fenced_epoch_is_superseded_and_never_accepted() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let old = leases(&submit(&mut s, submission("t", &[one_gpu()], 1), 0)).remove(0);
    // Agent a goes silent and is lost; b takes the job.
    let out = hello(&mut s, "b", gpus("b", 1, "H100"), cfg.agent_timeout_ms + 1);
    let new = leases(&out).remove(0);
    assert_eq!(new.placement.agent, agent("b"));
    assert!(new.epoch > old.epoch);
    // a comes back and delivers its old result.
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), cfg.agent_timeout_ms + 2);
    let out = finish(&mut s, &old, Outcome::Succeeded, cfg.agent_timeout_ms + 3);
    assert_eq!(
        persisted(&out),
        vec![Record::ResultSuperseded {
            attempt: old.attempt,
            job: old.job,
            epoch: old.epoch
        }]
    );
    assert_eq!(ack_verdicts(&out), vec![AckVerdict::Superseded]);
    assert_eq!(
        s.job(old.job).unwrap().status,
        JobStatus::Leased(new.attempt)
    );
    let out = finish(&mut s, &new, Outcome::Succeeded, cfg.agent_timeout_ms + 4);
    assert_eq!(ack_verdicts(&out), vec![AckVerdict::Accepted]);
}

#[test]
fn a_job_failing_every_time_is_failed_after_max_failures_with_each_error() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let mut out = submit(&mut s, submission("t", &[one_gpu()], 1), 0);
    for n in 0..cfg.max_failures {
        let l = leases(&out).remove(0);
        out = finish(
            &mut s,
            &l,
            Outcome::Failed {
                error: format!("oom {n}"),
            },
            1 + n as u64,
        );
    }
    assert!(leases(&out).is_empty());
    let failed = persisted(&out)
        .into_iter()
        .find_map(|r| match r {
            Record::JobFailed { errors, .. } => Some(errors),
            _ => None,
        })
        .expect("job failed");
    assert_eq!(failed.len(), cfg.max_failures as usize);
    assert!(failed[2].ends_with("failed: oom 2"), "{failed:?}");
    assert_eq!(s.sweep_progress(SweepId(0)).unwrap().failed, 1);
}

#[test]
fn recovery_rebuilds_the_state_and_unclaimed_leases_requeue_after_the_grace() {
    // Agents outlive the grace here, so only the grace decides.
    let cfg = SchedulerConfig {
        agent_timeout_ms: 60_000,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg.clone());
    let mut log = Vec::new();
    log.extend(persisted(&hello(&mut s, "a", gpus("a", 1, "H100"), 0)));
    log.extend(persisted(&hello(&mut s, "b", gpus("b", 1, "H100"), 0)));
    let out = submit(&mut s, submission("t", &[one_gpu()], 3), 0);
    log.extend(persisted(&out));
    let granted = leases(&out);
    assert_eq!(granted.len(), 2, "one GPU on each agent");
    let on_a = granted
        .iter()
        .find(|l| l.placement.agent == agent("a"))
        .unwrap();
    let on_b = granted
        .iter()
        .find(|l| l.placement.agent == agent("b"))
        .unwrap();
    log.extend(persisted(&finish(&mut s, on_a, Outcome::Succeeded, 1)));
    // a's freed GPU took the third cycle.
    let (third, third_epoch) = s
        .leases()
        .find(|l| l.placement.agent == agent("a"))
        .map(|l| (l.attempt, l.epoch))
        .unwrap();

    // Restart: a fresh clock, only the log survives.
    let mut r = Scheduler::recover(cfg.clone(), log, TimeMs(1_000)).unwrap();
    let p = r.sweep_progress(SweepId(0)).unwrap();
    assert_eq!((p.accepted, p.leased, p.pending), (1, 2, 0));
    assert!(r.leases().all(|l| !l.reclaimed));
    // Agent a re-announces its attempt; b never comes back, so its lease waits out the grace.
    let out = r.handle(
        Event::AgentHello {
            agent: agent("a"),
            inventory: gpus("a", 1, "H100"),
            held: vec![HeldAttempt {
                attempt: third,
                epoch: third_epoch,
                running: true,
            }],
            lost: vec![],
        },
        TimeMs(2_000),
    );
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Send {
            msg: ToAgent::Renewed { .. },
            ..
        }
    )));
    assert!(persisted(&out).is_empty(), "{out:?}");
    let renewed_a = Lease {
        attempt: third,
        epoch: third_epoch,
        ..on_a.clone()
    };
    let _ = heartbeat(&mut r, "a", &[&renewed_a], 1_000 + cfg.restart_grace_ms - 1);
    assert!(
        r.leases().any(|l| l.attempt == on_b.attempt),
        "requeued before the grace ran out"
    );
    let out = heartbeat(&mut r, "a", &[&renewed_a], 1_000 + cfg.restart_grace_ms);
    assert!(persisted(&out).iter().any(
        |rec| matches!(rec, Record::AttemptEnded { attempt, .. } if *attempt == on_b.attempt)
    ));
    // b is not connected and a's GPU is busy: the job waits in the queue.
    assert!(leases(&out).is_empty());
    let p = r.sweep_progress(SweepId(0)).unwrap();
    assert_eq!((p.accepted, p.leased, p.pending), (1, 1, 1));
    assert!(r.leases().any(|l| l.attempt == third && l.reclaimed));
}

/// A recovered cluster: agent a (two GPUs) held two leases of one experiment when the
/// coordinator restarted at 1 s. Returns the recovered scheduler and the two leases.
fn recovered_with_two_leases_on_a(cfg: &SchedulerConfig) -> (Scheduler, Vec<Lease>, Vec<Action>) {
    let mut s = Scheduler::new(cfg.clone());
    let mut log = persisted(&hello(&mut s, "a", gpus("a", 2, "H100"), 0));
    let sub = submission("t", &[one_gpu()], 2);
    let out = submit(&mut s, sub, 0);
    log.extend(persisted(&out));
    let granted = leases(&out);
    assert_eq!(granted.len(), 2);
    let r = Scheduler::recover(cfg.clone(), log, TimeMs(1_000)).unwrap();
    (r, granted, out)
}

#[test]
fn a_recovered_lease_its_agents_hello_leaves_out_is_requeued_at_once() {
    let cfg = SchedulerConfig {
        agent_timeout_ms: 60_000,
        ..SchedulerConfig::default()
    };
    let (mut r, granted, _) = recovered_with_two_leases_on_a(&cfg);
    let (kept, dropped) = (&granted[0], &granted[1]);
    // Well inside the grace, a reconnects holding only the first attempt.
    let hello_at = 1_000 + cfg.restart_grace_ms / 10;
    let out = r.handle(
        Event::AgentHello {
            agent: agent("a"),
            inventory: gpus("a", 2, "H100"),
            held: vec![HeldAttempt {
                attempt: kept.attempt,
                epoch: kept.epoch,
                running: true,
            }],
            lost: vec![],
        },
        TimeMs(hello_at),
    );
    let ended_at = out
        .iter()
        .position(|a| {
            matches!(a, Action::Persist(Record::AttemptEnded { attempt, end: AttemptEnd::Lost { .. }, .. })
                if *attempt == dropped.attempt)
        })
        .unwrap_or_else(|| panic!("the left-out attempt was not ended: {out:?}"));
    // Its job runs again at once, on the GPU the dropped attempt held, as a new attempt
    // with a higher epoch; the re-announced one keeps its lease.
    let again = leases(&out);
    assert_eq!(again.len(), 1, "{out:?}");
    assert_eq!(again[0].job, dropped.job);
    assert_eq!(again[0].job_key, dropped.job_key);
    assert!(again[0].attempt > dropped.attempt);
    assert!(again[0].epoch > dropped.epoch);
    assert_eq!(again[0].placement.devices, dropped.placement.devices);
    let lease_at = out
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    msg: ToAgent::Lease(_),
                    ..
                }
            )
        })
        .unwrap();
    assert!(ended_at < lease_at);
    let live: Vec<AttemptId> = r.leases().map(|l| l.attempt).collect();
    assert_eq!(live, vec![kept.attempt, again[0].attempt]);
    // A late result of the dropped attempt is superseded, never accepted.
    let out = finish(&mut r, dropped, Outcome::Succeeded, hello_at + 1);
    assert_eq!(ack_verdicts(&out), vec![AckVerdict::Superseded]);
}

#[test]
fn a_spooled_attempt_in_the_hello_keeps_its_recovered_lease_until_its_result() {
    let cfg = SchedulerConfig::default();
    let (mut r, granted, _) = recovered_with_two_leases_on_a(&cfg);
    // One finished during the outage (spooled, not running), one still runs.
    let held = vec![
        HeldAttempt {
            attempt: granted[0].attempt,
            epoch: granted[0].epoch,
            running: false,
        },
        HeldAttempt {
            attempt: granted[1].attempt,
            epoch: granted[1].epoch,
            running: true,
        },
    ];
    let out = r.handle(
        Event::AgentHello {
            agent: agent("a"),
            inventory: gpus("a", 2, "H100"),
            held,
            lost: vec![],
        },
        TimeMs(2_000),
    );
    assert!(persisted(&out).is_empty(), "{out:?}");
    assert!(leases(&out).is_empty());
    let out = finish(&mut r, &granted[0], Outcome::Succeeded, 2_001);
    assert_eq!(ack_verdicts(&out), vec![AckVerdict::Accepted]);
}

#[test]
fn an_attempt_lost_in_an_agent_restart_frees_its_gpu_at_once() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let l = leases(&submit(&mut s, submission("t", &[one_gpu()], 2), 0)).remove(0);
    // The agent restarted mid-run: well before the lease's TTL, it says the run is gone.
    let now = cfg.lease_ttl_ms / 10;
    let out = s.handle(
        Event::AgentHello {
            agent: agent("a"),
            inventory: gpus("a", 1, "H100"),
            held: vec![],
            lost: vec![HeldAttempt {
                attempt: l.attempt,
                epoch: l.epoch,
                running: true,
            }],
        },
        TimeMs(now),
    );
    let again = leases(&out);
    assert_eq!(again.len(), 1, "the only GPU was not freed: {out:?}");
    assert_eq!(again[0].placement.devices, l.placement.devices);
}

#[test]
fn a_drained_agent_gets_no_new_leases() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let out = s.handle(
        Event::DrainAgent {
            request: RequestId(7),
            agent: agent("a"),
        },
        TimeMs(0),
    );
    assert_eq!(
        persisted(&out),
        vec![Record::AgentDrained { agent: agent("a") }]
    );
    assert!(leases(&submit(&mut s, submission("t", &[one_gpu()], 2), 1)).is_empty());
    // Drain outlives a reconnect.
    assert!(s.is_drained(&agent("a")));
    assert!(leases(&hello(&mut s, "a", gpus("a", 1, "H100"), 2)).is_empty());
}

#[test]
fn cancel_stops_leases_and_resume_requeues_what_was_cancelled() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let l = leases(&submit(&mut s, submission("t", &[one_gpu()], 3), 0)).remove(0);
    let out = s.handle(
        Event::CancelSweep {
            request: RequestId(2),
            sweep: SweepId(0),
        },
        TimeMs(1),
    );
    assert_eq!(
        reply(&out),
        Reply::SweepCancelled {
            sweep: SweepId(0),
            jobs_cancelled: 3
        }
    );
    assert!(out.iter().any(
        |a| matches!(a, Action::Send { msg: ToAgent::Cancel(h), .. } if h.attempt == l.attempt)
    ));
    assert!(leases(&out).is_empty());
    // The cancelled attempt's late result is superseded.
    let late = finish(&mut s, &l, Outcome::Succeeded, 2);
    assert_eq!(ack_verdicts(&late), vec![AckVerdict::Superseded]);
    let out = s.handle(
        Event::ResumeSweep {
            request: RequestId(3),
            sweep: SweepId(0),
        },
        TimeMs(3),
    );
    assert_eq!(
        reply(&out),
        Reply::SweepResumed {
            sweep: SweepId(0),
            jobs_requeued: 3
        }
    );
    assert_eq!(leases(&out).len(), 1);
    let again = s.handle(
        Event::ResumeSweep {
            request: RequestId(4),
            sweep: SweepId(0),
        },
        TimeMs(4),
    );
    assert!(
        persisted(&again).is_empty(),
        "a repeated resume wrote {again:?}"
    );
    assert_eq!(
        reply(&again),
        Reply::SweepResumed {
            sweep: SweepId(0),
            jobs_requeued: 0
        }
    );
}

#[test]
fn a_clock_stepping_back_does_not_move_deadlines_back() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 10_000);
    let _ = heartbeat(&mut s, "a", &[], 5_000);
    // The agent deadline is still measured from 10 s, not from the earlier 5 s.
    assert_eq!(
        s.poll_timeout(),
        Some(TimeMs(10_000 + cfg.agent_timeout_ms))
    );
    assert_eq!(s.live_agents().count(), 1);
}

#[test]
fn a_result_for_an_unknown_attempt_is_refused_and_not_acked() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let out = s.handle(
        Event::AttemptFinished {
            agent: agent("a"),
            attempt: AttemptId(41),
            epoch: Epoch(1),
            outcome: Outcome::Succeeded,
        },
        TimeMs(1),
    );
    assert_eq!(
        out,
        vec![Action::Send {
            agent: agent("a"),
            msg: ToAgent::Refused(SchedulerError::UnknownAttempt {
                agent: agent("a"),
                attempt: AttemptId(41)
            }),
        }]
    );
}

#[test]
fn an_inventory_with_a_repeated_key_is_refused() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut inv = gpus("a", 2, "H100");
    inv.gpus[1].key = inv.gpus[0].key.clone();
    let out = hello(&mut s, "a", inv, 0);
    assert!(matches!(
        &out[..],
        [Action::Send {
            msg: ToAgent::Refused(SchedulerError::BadInventory { .. }),
            ..
        }]
    ));
    assert_eq!(s.live_agents().count(), 0);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn needs_strategy() -> impl Strategy<Value = DeviceNeeds> {
        prop_oneof![
            Just(DeviceNeeds::CpuPackages),
            (1u32..4).prop_map(|count| DeviceNeeds::Gpus { count, model: None }),
            any::<bool>().prop_map(|exclusive_parent| DeviceNeeds::MigSlice {
                profile: "3g.40gb".into(),
                exclusive_parent,
                model: None,
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Expansion is a function of the submission: experiments × cycles jobs, each
        /// keyed by job_key(config, cycle), in the same order every time.
        #[test]
        fn expansion_is_deterministic_and_keyed_by_spec_and_cycle(
            needs in proptest::collection::vec(needs_strategy(), 1..6),
            cycles in 1u32..5,
        ) {
            let sub = submission("p", &needs, cycles);
            let mut a = Scheduler::new(SchedulerConfig::default());
            let mut b = Scheduler::new(SchedulerConfig::default());
            let ra = persisted(&submit(&mut a, sub.clone(), 0));
            let rb = persisted(&submit(&mut b, sub.clone(), 99));
            prop_assert_eq!(&ra, &rb);
            let Record::SweepCreated(created) = &ra[0] else { panic!() };
            prop_assert_eq!(created.jobs.len(), needs.len() * cycles as usize);
            for j in &created.jobs {
                let cfg = &sub.experiments[j.experiment as usize].config;
                prop_assert_eq!(&j.key, &job_key(cfg, j.cycle));
            }
        }

        /// Whatever the event sequence, recovering from the persisted records gives the
        /// same jobs (status, epoch) and the same leases as the live scheduler.
        #[test]
        fn recovery_matches_the_live_state(ops in proptest::collection::vec(0u8..6, 1..60)) {
            let cfg = SchedulerConfig::default();
            let mut s = Scheduler::new(cfg.clone());
            let mut log = Vec::new();
            let mut now = 0u64;
            log.extend(persisted(&hello(&mut s, "a", gpus("a", 2, "H100"), now)));
            log.extend(persisted(&hello(&mut s, "m", mig_node("m", "3g.40gb", 2), now)));
            let needs = [one_gpu(), DeviceNeeds::CpuPackages, DeviceNeeds::MigSlice { profile: "3g.40gb".into(), exclusive_parent: false, model: None }];
            log.extend(persisted(&submit(&mut s, submission("p", &needs, 3), now)));
            for op in ops {
                now += 1_000;
                let live: Vec<Lease> = s.leases().map(|l| Lease {
                    attempt: l.attempt, epoch: l.epoch, job: l.job, sweep: SweepId(0),
                    experiment_name: String::new(), cycle: 0, job_key: String::new(),
                    config: std::sync::Arc::new(json!(null)), placement: l.placement.clone(), ttl_ms: 0,
                }).collect();
                let out = match (op, live.first()) {
                    (0, Some(l)) => finish(&mut s, l, Outcome::Succeeded, now),
                    (1, Some(l)) => finish(&mut s, l, Outcome::Failed { error: "x".into() }, now),
                    (2, _) => s.handle(Event::Tick, TimeMs(now + 25_000)),
                    (3, _) => hello(&mut s, "a", gpus("a", 2, "H100"), now),
                    (4, _) => s.handle(Event::CancelSweep { request: RequestId(0), sweep: SweepId(0) }, TimeMs(now)),
                    _ => s.handle(Event::ResumeSweep { request: RequestId(0), sweep: SweepId(0) }, TimeMs(now)),
                };
                now = s.now.0;
                log.extend(persisted(&out));
            }
            let r = Scheduler::recover(cfg, log, TimeMs(now)).unwrap();
            let view = |s: &Scheduler| s.jobs().map(|j| (j.job, j.status, j.epoch, j.errors.to_vec())).collect::<Vec<_>>();
            prop_assert_eq!(view(&s), view(&r));
            let leased = |s: &Scheduler| s.leases().map(|l| (l.attempt, l.job, l.epoch, l.placement.clone())).collect::<Vec<_>>();
            prop_assert_eq!(leased(&s), leased(&r));
        }
    }
}

/// The shape embedded mode will have: one in-process agent, a driver loop that persists,
/// runs each lease to completion and feeds the outcome back, until the sweep finishes.
#[test]
fn an_in_process_agent_drives_a_sweep_to_completion() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let mut store: Vec<Record> = Vec::new();
    let mut inbox: Vec<Event> = vec![
        Event::AgentHello {
            agent: agent("local"),
            inventory: gpus("local", 0, "-"),
            held: vec![],
            lost: vec![],
        },
        Event::SubmitSweep {
            request: RequestId(0),
            submission: submission("embedded", &[DeviceNeeds::CpuPackages], 3),
        },
    ];
    let mut now = 0;
    let mut finished = None;
    let mut runs = Vec::new();
    while let Some(event) = inbox.pop() {
        now += 10;
        for action in s.handle(event, TimeMs(now)) {
            match action {
                Action::Persist(r) => store.push(r),
                Action::Send {
                    msg: ToAgent::Lease(l),
                    ..
                } => {
                    runs.push(l.cycle);
                    inbox.push(Event::AttemptFinished {
                        agent: l.placement.agent,
                        attempt: l.attempt,
                        epoch: l.epoch,
                        outcome: Outcome::Succeeded,
                    });
                }
                Action::SweepFinished { sweep } => finished = Some(sweep),
                _ => {}
            }
        }
    }
    assert_eq!(finished, Some(SweepId(0)));
    // One CPU package: the cycles ran one after another, each once.
    assert_eq!(runs, vec![0, 1, 2]);
    let accepted = store
        .iter()
        .filter(|r| matches!(r, Record::ResultAccepted { .. }))
        .count();
    assert_eq!(accepted, 3);
    let recovered = Scheduler::recover(SchedulerConfig::default(), store, TimeMs(0)).unwrap();
    assert_eq!(recovered.sweep_progress(SweepId(0)).unwrap().accepted, 3);
}

/// Agent "a" (one GPU) runs a job and renews it once at `renewed_at`; agent "b" (one
/// GPU) stays alive. "a" goes silent and is declared lost at `renewed_at +
/// agent_timeout_ms`: the job moves to "b" at once, while "a"'s GPU stays fenced until
/// `renewed_at + lease_ttl_ms` — a partitioned "a" may run it until then.
struct LostAgent {
    s: Scheduler,
    cfg: SchedulerConfig,
    /// The lost attempt on "a", and its replacement on "b".
    lost: Lease,
    moved: Lease,
    lost_at: u64,
    fence_until: u64,
}

fn lose_agent_a() -> LostAgent {
    let cfg = SchedulerConfig::default();
    let renewed_at = cfg.agent_timeout_ms / 4;
    let lost_at = renewed_at + cfg.agent_timeout_ms;
    let fence_until = renewed_at + cfg.lease_ttl_ms;
    assert!(
        lost_at < fence_until,
        "the scenario needs a lease outliving the agent"
    );
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let lost = leases(&submit(&mut s, submission("t1", &[one_gpu()], 1), 0)).remove(0);
    assert_eq!(lost.placement.agent, agent("a"));
    assert!(leases(&hello(&mut s, "b", gpus("b", 1, "H100"), 0)).is_empty());
    let _ = heartbeat(&mut s, "a", &[&lost], renewed_at);
    let _ = heartbeat(&mut s, "b", &[], renewed_at);
    let _ = heartbeat(&mut s, "b", &[], lost_at - 1);
    // "a" is silent from `renewed_at`: declared lost exactly at its deadline.
    let out = s.handle(Event::Tick, TimeMs(lost_at));
    assert!(persisted(&out).iter().any(|r| matches!(r,
        Record::AttemptEnded { attempt, end: AttemptEnd::Lost { .. }, .. } if *attempt == lost.attempt)));
    let moved = leases(&out).remove(0);
    assert_eq!(moved.job, lost.job);
    assert_eq!(moved.placement.agent, agent("b"));
    // The fence is the first deadline (b's and the moved lease's come later).
    assert_eq!(s.poll_timeout(), Some(TimeMs(fence_until)));
    LostAgent {
        s,
        cfg,
        lost,
        moved,
        lost_at,
        fence_until,
    }
}

/// Submits a one-GPU sweep "t2" at `now`; returns the lease it got, if any.
fn submit_second(s: &mut Scheduler, now: u64) -> Option<Lease> {
    leases(&submit(s, submission("t2", &[one_gpu()], 1), now)).pop()
}

#[test]
fn a_lost_agents_devices_stay_fenced_until_its_lease_would_expire() {
    let LostAgent {
        mut s,
        moved,
        lost_at,
        fence_until,
        ..
    } = lose_agent_a();
    // "a" comes back at once, running nothing; its GPU is still fenced, "b" is full.
    assert!(leases(&hello(&mut s, "a", gpus("a", 1, "H100"), lost_at + 1)).is_empty());
    assert_eq!(submit_second(&mut s, lost_at + 2), None);
    let _ = heartbeat(&mut s, "a", &[], fence_until - 1);
    assert!(leases(&heartbeat(&mut s, "b", &[&moved], fence_until - 1)).is_empty());
    // At the lost lease's expiry the GPU is free again.
    let out = s.handle(Event::Tick, TimeMs(fence_until));
    let granted = leases(&out);
    assert_eq!(granted.len(), 1);
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("gpu:a-0".into())]
    );
}

#[test]
fn a_fenced_run_re_announced_as_running_keeps_its_devices_past_the_expiry_until_it_stops() {
    let LostAgent {
        mut s,
        cfg,
        lost,
        moved,
        lost_at,
        fence_until,
    } = lose_agent_a();
    let still_running = HeldAttempt {
        attempt: lost.attempt,
        epoch: lost.epoch,
        running: true,
    };
    let out = s.handle(
        Event::AgentHello {
            agent: agent("a"),
            inventory: gpus("a", 1, "H100"),
            held: vec![still_running],
            lost: vec![],
        },
        TimeMs(lost_at + 1),
    );
    assert!(out.contains(&Action::Send {
        agent: agent("a"),
        msg: ToAgent::Cancel(still_running),
    }));
    assert_eq!(submit_second(&mut s, lost_at + 2), None);
    // Past the expiry, "a" still reports it running: the GPU stays out of placement.
    let later = fence_until + cfg.agent_timeout_ms / 4;
    let _ = heartbeat(&mut s, "b", &[&moved], later);
    assert!(leases(&heartbeat(&mut s, "a", &[&lost], later)).is_empty());
    // It stopped: the next heartbeat lists nothing and the GPU is leased.
    let granted = leases(&heartbeat(&mut s, "a", &[], later + 1));
    assert_eq!(granted.len(), 1);
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("gpu:a-0".into())]
    );
}

#[test]
fn a_fenced_runs_outcome_frees_its_devices_before_the_expiry() {
    let LostAgent {
        mut s,
        lost,
        lost_at,
        fence_until,
        ..
    } = lose_agent_a();
    assert!(leases(&hello(&mut s, "a", gpus("a", 1, "H100"), lost_at + 1)).is_empty());
    assert_eq!(submit_second(&mut s, lost_at + 2), None);
    // Its outcome is spooled, so the run has stopped: superseded, and the GPU is free.
    let out = finish(&mut s, &lost, Outcome::Succeeded, lost_at + 3);
    assert_eq!(ack_verdicts(&out), vec![AckVerdict::Superseded]);
    let granted = leases(&out);
    assert_eq!(granted.len(), 1);
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("gpu:a-0".into())]
    );
    assert!(lost_at + 3 < fence_until);
}

#[test]
fn a_lease_that_simply_expires_is_not_fenced_further() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let first = leases(&submit(&mut s, submission("t", &[one_gpu()], 1), 0)).remove(0);
    // Alive but never renewing: at the TTL the agent has stopped it, so the job is
    // leased again on the same GPU in the same step.
    let step = cfg.agent_timeout_ms / 4;
    let mut t = 0;
    let mut out = Vec::new();
    while t < cfg.lease_ttl_ms {
        t = (t + step).min(cfg.lease_ttl_ms);
        out = heartbeat(&mut s, "a", &[], t);
    }
    let again = leases(&out).remove(0);
    assert_eq!(again.job, first.job);
    assert_eq!(again.placement.devices, first.placement.devices);
}

#[test]
fn a_stale_mig_run_keeps_its_parent_gpu_from_an_exclusive_parent_job() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "m", mig_node("m", "3g.40gb", 2), 0);
    let shared = DeviceNeeds::MigSlice {
        profile: "3g.40gb".into(),
        exclusive_parent: false,
        model: None,
    };
    let out = submit(&mut s, submission("t1", &[shared], 1), 0);
    let run = leases(&out).remove(0);
    let Reply::SweepSubmitted { sweep, .. } = reply(&out) else {
        panic!("not submitted: {out:?}")
    };
    let _ = s.handle(
        Event::CancelSweep {
            request: RequestId(2),
            sweep,
        },
        TimeMs(1),
    );
    // Past the cancelled lease's expiry the agent still reports the run (it missed the
    // Cancel): the slice and its parent stay busy.
    let past_expiry = cfg.lease_ttl_ms + 1;
    let step = cfg.agent_timeout_ms / 4;
    let mut t = 1;
    while t < past_expiry {
        t = (t + step).min(past_expiry);
        let _ = heartbeat(&mut s, "m", &[&run], t);
    }
    let exclusive = DeviceNeeds::MigSlice {
        profile: "3g.40gb".into(),
        exclusive_parent: true,
        model: None,
    };
    let out = submit(&mut s, submission("t2", &[exclusive], 1), past_expiry);
    assert!(
        leases(&out).is_empty(),
        "parent leased under a running slice"
    );
    // The run stopped: the exclusive-parent job gets the parent.
    let granted = leases(&heartbeat(&mut s, "m", &[], past_expiry + 1));
    assert_eq!(granted.len(), 1);
    assert!(granted[0].placement.claims.contains(&Claim {
        key: DeviceKey("gpu:m-0".into()),
        mode: ClaimMode::Exclusive
    }));
}

/// An in-process agent of embedded mode: one runner slot, nothing else announced.
fn runner(name: &str) -> Inventory {
    Inventory {
        runner_slots: vec![DeviceKey(format!("runner:{name}"))],
        ..Inventory::default()
    }
}

fn pinned(keys: &[&str]) -> DeviceNeeds {
    DeviceNeeds::Pinned {
        claims: keys
            .iter()
            .map(|k| Claim {
                key: DeviceKey((*k).into()),
                mode: ClaimMode::Exclusive,
            })
            .collect(),
    }
}

#[test]
fn pinned_jobs_take_a_runner_slot_and_never_share_a_metered_device() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    hello(&mut s, "r0", runner("r0"), 0);
    hello(&mut s, "r1", runner("r1"), 0);
    // exp0 and exp1 meter one package; exp2 meters its own GPU.
    let needs = [
        pinned(&["experiment:0", "rapl:package-0"]),
        pinned(&["experiment:1", "rapl:package-0"]),
        pinned(&["experiment:2", "gpu:b"]),
    ];
    let first = leases(&submit(&mut s, submission("t", &needs, 2), 1));
    // Two runners: exp0's first cycle and exp2's (disjoint devices) run at once; exp1
    // waits for the package and exp0's second cycle for its experiment.
    let started: Vec<(&str, u32)> = first
        .iter()
        .map(|l| (l.experiment_name.as_str(), l.cycle))
        .collect();
    assert_eq!(started, [("exp0", 0), ("exp2", 0)]);
    let agents: std::collections::BTreeSet<_> =
        first.iter().map(|l| l.placement.agent.clone()).collect();
    assert_eq!(agents.len(), 2, "one job per runner slot");
    for l in &first {
        let slot = DeviceKey(format!("runner:{}", l.placement.agent));
        assert!(l.placement.claims.iter().any(|c| c.key == slot), "{l:?}");
    }
    // exp0's first cycle done: the oldest waiting job, exp0's second cycle, takes the
    // package again; exp1 keeps waiting for it.
    let next = leases(&finish(&mut s, &first[0], Outcome::Succeeded, 2));
    let next: Vec<(&str, u32)> = next
        .iter()
        .map(|l| (l.experiment_name.as_str(), l.cycle))
        .collect();
    assert_eq!(next, [("exp0", 1)]);
}

#[test]
fn a_pinned_job_fits_no_agent_without_runner_slots_and_repeated_keys_are_refused() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    hello(&mut s, "node", gpus("node", 2, "H100"), 0);
    let out = submit(&mut s, submission("t", &[pinned(&["gpu:node-0"])], 1), 1);
    assert!(
        leases(&out).is_empty(),
        "a networked agent takes no pinned job"
    );
    let twice = submit(
        &mut s,
        submission("u", &[pinned(&["rapl:package-0", "rapl:package-0"])], 1),
        2,
    );
    let Reply::Refused(e) = reply(&twice) else {
        panic!("{twice:?}");
    };
    assert!(e.to_string().contains("names rapl:package-0 twice"), "{e}");
}

fn mig_need(profile: &str, model: Option<&str>) -> DeviceNeeds {
    DeviceNeeds::MigSlice {
        profile: profile.into(),
        exclusive_parent: false,
        model: model.map(String::from),
    }
}

#[test]
fn a_mig_need_with_a_model_lands_only_on_a_parent_of_that_model() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    // Two nodes with a 1g.10gb slice each; only b's parent is the model asked for.
    let _ = hello(&mut s, "a", mig_node("a", "1g.10gb", 1), 0);
    let mut b = mig_node("b", "1g.10gb", 1);
    b.gpus[0].model = "A100-80GB".into();
    let b_slice = b.gpus[0].mig_slices[0].key.clone();
    let _ = hello(&mut s, "b", b, 0);
    let out = submit(
        &mut s,
        submission("t", &[mig_need("1g.10gb", Some("A100-80GB"))], 2),
        1,
    );
    let granted = leases(&out);
    assert_eq!(granted.len(), 1, "one slice of that model, two cycles");
    assert_eq!(granted[0].placement.agent, agent("b"));
    assert_eq!(granted[0].placement.devices, vec![b_slice.clone()]);
    assert_eq!(
        granted[0].placement.device_model.as_deref(),
        Some("A100-80GB")
    );
    // a's free slice of the same profile is not used by the waiting cycle.
    let waiting = s
        .jobs()
        .find(|j| j.status == JobStatus::Pending)
        .expect("the second cycle waits")
        .job;
    assert_eq!(
        s.pending_reason(waiting).as_deref(),
        Some("waiting for a MIG slice of profile 1g.10gb (A100-80GB) to be free")
    );
    let next = leases(&finish(&mut s, &granted[0], Outcome::Succeeded, 2));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].placement.devices, vec![b_slice]);
}

#[test]
fn a_pending_job_says_whether_any_agent_could_ever_take_it() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let _ = hello(&mut s, "a", mig_node("a", "1g.10gb", 1), 0);
    let out = submit(
        &mut s,
        submission(
            "t",
            &[
                mig_need("1g.10gb", None),
                mig_need("7g.80gb", None),
                DeviceNeeds::Gpus {
                    count: 2,
                    model: Some("H100".into()),
                },
                mig_need("1g.10gb", None),
            ],
            1,
        ),
        1,
    );
    assert_eq!(leases(&out).len(), 1);
    let reasons: Vec<Option<String>> = s.jobs().map(|j| s.pending_reason(j.job)).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("no connected agent has a MIG slice of profile 7g.80gb".to_owned()),
            Some("no connected agent has 2 whole GPUs on one node (H100)".to_owned()),
            // Its own experiment: no cycle ran yet, so no model is pinned.
            Some("waiting for a MIG slice of profile 1g.10gb to be free".to_owned()),
        ]
    );
    // Asked all at once (one try per class), the same answers.
    let ids: Vec<JobId> = s.jobs().map(|j| j.job).collect();
    let at_once: Vec<Option<String>> = {
        let mut all = s.pending_reasons(ids.iter().copied());
        ids.iter().map(|j| all.remove(j)).collect()
    };
    assert_eq!(at_once, reasons);
    // Drained, the only agent that could run the last job no longer counts as a place.
    let _ = s.handle(
        Event::DrainAgent {
            request: RequestId(9),
            agent: agent("a"),
        },
        TimeMs(2),
    );
    assert_eq!(
        s.pending_reason(JobId(3)).as_deref(),
        Some("only draining agents have a MIG slice of profile 1g.10gb")
    );
}

fn hellos_required(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    msg: ToAgent::HelloRequired,
                    ..
                }
            )
        })
        .count()
}

#[test]
fn a_burst_of_heartbeats_from_a_lost_agent_asks_for_one_hello() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    // Silent past its timeout: declared lost.
    let lost_at = cfg.agent_timeout_ms + 1;
    let _ = s.handle(Event::Tick, TimeMs(lost_at));
    assert!(!s.agents().any(|a| a.agent == &agent("a") && a.alive));
    // The heartbeats it queued while cut off arrive together, then one more per
    // timeout: one Hello asked for the burst, one more once the timeout has passed.
    let burst = 20u64;
    let asked: usize = (0..burst)
        .map(|i| hellos_required(&heartbeat(&mut s, "a", &[], lost_at + i)))
        .sum();
    assert_eq!(asked, 1);
    let again = lost_at + cfg.agent_timeout_ms;
    assert_eq!(hellos_required(&heartbeat(&mut s, "a", &[], again - 1)), 0);
    assert_eq!(hellos_required(&heartbeat(&mut s, "a", &[], again)), 1);
    // Its Hello makes it alive; lost again later, it is asked afresh at once.
    let back = again + 1;
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), back);
    assert_eq!(hellos_required(&heartbeat(&mut s, "a", &[], back + 1)), 0);
    let lost_again = back + 1 + cfg.agent_timeout_ms + 1;
    let _ = s.handle(Event::Tick, TimeMs(lost_again));
    assert_eq!(
        hellos_required(&heartbeat(&mut s, "a", &[], lost_again + 1)),
        1
    );
}
