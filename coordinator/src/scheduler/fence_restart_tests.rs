//! Fences across a coordinator restart: an attempt ended while its agent may still run
//! it keeps its claims after `recover` for what was left of its lease, counted from the
//! restart; records from before fences were persisted load and release as they did.

use super::tests::{agent, gpus, heartbeat, hello, leases, persisted, submission, submit};
use super::*;

fn one_gpu() -> DeviceNeeds {
    DeviceNeeds::Gpus {
        count: 1,
        model: None,
    }
}

/// Keeps what `out` persists in `log`, as the driver's store would.
fn keep(log: &mut Vec<Record>, out: Vec<Action>) -> Vec<Action> {
    log.extend(persisted(&out));
    out
}

fn running(lease: &Lease) -> HeldAttempt {
    HeldAttempt {
        attempt: lease.attempt,
        epoch: lease.epoch,
        running: true,
    }
}

/// `name` reconnects after the restart still running `run`.
fn hello_running(s: &mut Scheduler, name: &str, run: &Lease, now: u64) -> Vec<Action> {
    s.handle(
        Event::AgentHello {
            agent: agent(name),
            inventory: gpus(name, 1, "H100"),
            held: vec![running(run)],
            lost: vec![],
        },
        TimeMs(now),
    )
}

/// Agent "a" (one GPU) runs a job, is renewed at `renewed_at`, then falls silent and is
/// declared lost at `lost_at`; the job moves to "b". "a" may run the lost attempt until
/// `renewed_at + lease_ttl_ms`, so its GPU is fenced for `fence_ms` from `lost_at`.
struct LostWithLog {
    s: Scheduler,
    cfg: SchedulerConfig,
    log: Vec<Record>,
    lost: Lease,
    moved: Lease,
    lost_at: u64,
    fence_ms: u64,
}

fn lose_agent_a_keeping_the_log() -> LostWithLog {
    let cfg = SchedulerConfig::default();
    let renewed_at = cfg.agent_timeout_ms / 4;
    let lost_at = renewed_at + cfg.agent_timeout_ms;
    let fence_ms = renewed_at + cfg.lease_ttl_ms - lost_at;
    assert!(
        fence_ms > 1,
        "the scenario needs a lease outliving its agent"
    );
    let mut s = Scheduler::new(cfg.clone());
    let mut log = Vec::new();
    keep(&mut log, hello(&mut s, "a", gpus("a", 1, "H100"), 0));
    let out = keep(
        &mut log,
        submit(&mut s, submission("t1", &[one_gpu()], 1), 0),
    );
    let lost = leases(&out).remove(0);
    assert_eq!(lost.placement.agent, agent("a"));
    keep(&mut log, hello(&mut s, "b", gpus("b", 1, "H100"), 0));
    keep(&mut log, heartbeat(&mut s, "a", &[&lost], renewed_at));
    keep(&mut log, heartbeat(&mut s, "b", &[], renewed_at));
    keep(&mut log, heartbeat(&mut s, "b", &[], lost_at - 1));
    let out = keep(&mut log, s.handle(Event::Tick, TimeMs(lost_at)));
    let moved = leases(&out).remove(0);
    assert_eq!((moved.job, &moved.placement.agent), (lost.job, &agent("b")));
    LostWithLog {
        s,
        cfg,
        log,
        lost,
        moved,
        lost_at,
        fence_ms,
    }
}

fn submit_second(s: &mut Scheduler, now: u64) -> Option<Lease> {
    leases(&submit(s, submission("t2", &[one_gpu()], 1), now)).pop()
}

#[test]
fn a_fence_open_at_a_restart_keeps_its_gpu_for_what_was_left_of_it_from_the_restart() {
    let LostWithLog {
        cfg,
        log,
        lost,
        moved,
        fence_ms,
        ..
    } = lose_agent_a_keeping_the_log();
    let ended: Vec<_> = log
        .iter()
        .filter_map(|r| match r {
            Record::AttemptEnded {
                attempt, fence_ms, ..
            } if *attempt == lost.attempt => Some(*fence_ms),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![Some(fence_ms)]);

    // The restarted driver's clock starts anywhere: here far below the old one.
    let restart = 3;
    let mut s = Scheduler::recover(cfg, log, TimeMs(restart)).unwrap();
    // "a" comes back still running it (a Hello that left it out would prove it gone and
    // lift the fence); it stops reporting it below, and the fence still holds.
    assert!(leases(&hello_running(&mut s, "a", &lost, restart)).is_empty());
    let _ = hello_running(&mut s, "b", &moved, restart);
    assert_eq!(submit_second(&mut s, restart), None, "gpu:a-0 is fenced");
    let last_fenced = restart + fence_ms - 1;
    let _ = heartbeat(&mut s, "b", &[&moved], last_fenced);
    assert!(leases(&heartbeat(&mut s, "a", &[], last_fenced)).is_empty());
    assert_eq!(s.poll_timeout(), Some(TimeMs(restart + fence_ms)));
    let granted = leases(&s.handle(Event::Tick, TimeMs(restart + fence_ms)));
    assert_eq!(granted.len(), 1, "the fence ran out: gpu:a-0 is free");
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("gpu:a-0".into())]
    );
}

#[test]
fn records_from_before_persisted_fences_load_and_release_at_replay_as_before() {
    let LostWithLog {
        cfg, log, moved, ..
    } = lose_agent_a_keeping_the_log();
    // The records as an older coordinator wrote them: no `fence_ms` key.
    let old: Vec<Record> = log
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            if let Some(ended) = v.get_mut("AttemptEnded") {
                let fields = ended.as_object_mut().unwrap();
                assert!(fields.remove("fence_ms").is_some(), "{fields:?}");
            }
            serde_json::from_value(v).unwrap()
        })
        .collect();
    assert!(old.iter().all(|r| !matches!(
        r,
        Record::AttemptEnded {
            fence_ms: Some(_),
            ..
        }
    )));
    // And a record with no fence is written without the key, as before.
    let unfenced = Record::AttemptEnded {
        attempt: AttemptId(0),
        job: JobId(0),
        end: AttemptEnd::Cancelled,
        fence_ms: None,
    };
    assert!(!serde_json::to_string(&unfenced)
        .unwrap()
        .contains("fence_ms"));

    let restart = 3;
    let mut s = Scheduler::recover(cfg, old, TimeMs(restart)).unwrap();
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), restart);
    let _ = hello_running(&mut s, "b", &moved, restart);
    let granted = submit_second(&mut s, restart).expect("no fence survives an old log");
    assert_eq!(granted.placement.devices, vec![DeviceKey("gpu:a-0".into())]);
}

#[test]
fn a_replayed_fence_whose_devices_a_later_lease_took_is_not_held_again() {
    let LostWithLog {
        mut s,
        cfg,
        mut log,
        lost,
        lost_at,
        fence_ms,
        ..
    } = lose_agent_a_keeping_the_log();
    keep(
        &mut log,
        hello(&mut s, "a", gpus("a", 1, "H100"), lost_at + 1),
    );
    keep(
        &mut log,
        submit(&mut s, submission("t2", &[one_gpu()], 1), lost_at + 1),
    );
    // The live fence runs out and the queued job takes gpu:a-0.
    let out = keep(&mut log, s.handle(Event::Tick, TimeMs(lost_at + fence_ms)));
    let next = leases(&out).remove(0);
    assert_eq!(next.placement.devices, vec![DeviceKey("gpu:a-0".into())]);

    let restart = lost_at + fence_ms + 1;
    let s = Scheduler::recover(cfg, log, TimeMs(restart)).unwrap();
    assert!(
        !s.fenced.contains_key(&lost.attempt),
        "{} took gpu:a-0 after the fence ended, so replay must not fence it again",
        next.attempt
    );
    assert!(s.leases().any(|l| l.attempt == next.attempt));
}

#[test]
fn a_replayed_fence_is_lifted_when_its_agent_reports_the_run_lost() {
    let LostWithLog {
        cfg,
        log,
        lost,
        moved,
        ..
    } = lose_agent_a_keeping_the_log();
    let restart = 3;
    let mut s = Scheduler::recover(cfg, log, TimeMs(restart)).unwrap();
    // What an in-process agent reports after its process died: every fenced run of its.
    let reported = s.fenced_runs_of(&agent("a"));
    assert_eq!(reported, vec![running(&lost)]);
    assert!(s.fenced_runs_of(&agent("b")).is_empty());
    let _ = s.handle(
        Event::AgentHello {
            agent: agent("a"),
            inventory: gpus("a", 1, "H100"),
            held: vec![],
            lost: reported,
        },
        TimeMs(restart),
    );
    let _ = hello_running(&mut s, "b", &moved, restart);
    let granted = submit_second(&mut s, restart).expect("the run is gone: gpu:a-0 is free");
    assert_eq!(granted.placement.devices, vec![DeviceKey("gpu:a-0".into())]);
}
