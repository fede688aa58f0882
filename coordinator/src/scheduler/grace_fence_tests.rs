//! A lease recovered after a coordinator restart and not re-announced within a grace
//! shorter than the lease TTL: requeued at the end of the grace, its devices fenced for the
//! rest of the TTL counted from the restart (its agent may still run it that long), also
//! across another restart, unless its agent's Hello shows the run is gone.

use super::tests::{agent, gpus, heartbeat, hello, leases, one_gpu, persisted, submission, submit};
use super::*;

/// The old process's clock ran to here; the new one restarts far below it.
const OLD_CLOCK_MS: u64 = 1_000_000;
const RESTART_MS: u64 = 5;

fn running(lease: &Lease) -> HeldAttempt {
    HeldAttempt {
        attempt: lease.attempt,
        epoch: lease.epoch,
        running: true,
    }
}

fn hello_holding(s: &mut Scheduler, name: &str, held: Vec<HeldAttempt>, now: u64) -> Vec<Action> {
    s.handle(
        Event::AgentHello {
            agent: agent(name),
            inventory: gpus(name, 1, "H100"),
            held,
            lost: vec![],
        },
        TimeMs(now),
    )
}

/// Agent "a" (one GPU) was running `lease` when the coordinator died; the coordinator
/// restarts at `RESTART_MS` with `grace_ms` and hears only from "b" (one GPU), if
/// `with_b`.
struct Recovered {
    s: Scheduler,
    cfg: SchedulerConfig,
    log: Vec<Record>,
    lease: Lease,
}

fn recover_with_a_silent(grace_ms: u64, with_b: bool) -> Recovered {
    let cfg = SchedulerConfig {
        restart_grace_ms: grace_ms,
        ..SchedulerConfig::default()
    };
    let mut old = Scheduler::new(cfg.clone());
    let mut log = Vec::new();
    log.extend(persisted(&hello(
        &mut old,
        "a",
        gpus("a", 1, "H100"),
        OLD_CLOCK_MS,
    )));
    let out = submit(&mut old, submission("t1", &[one_gpu()], 1), OLD_CLOCK_MS);
    log.extend(persisted(&out));
    let lease = leases(&out).remove(0);
    assert_eq!(lease.placement.agent, agent("a"));
    log.extend(persisted(&heartbeat(
        &mut old,
        "a",
        &[&lease],
        OLD_CLOCK_MS + 1,
    )));

    let mut s = Scheduler::recover(cfg.clone(), log.clone(), TimeMs(RESTART_MS)).unwrap();
    if with_b {
        let out = hello_holding(&mut s, "b", vec![], RESTART_MS);
        // With no grace, the first event ends the lease and "b" takes the job.
        assert_eq!(leases(&out).len(), usize::from(grace_ms == 0));
    }
    Recovered { s, cfg, log, lease }
}

fn ended_fence_ms(records: &[Record], attempt: AttemptId) -> Vec<Option<u64>> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::AttemptEnded {
                attempt: a,
                fence_ms,
                ..
            } if *a == attempt => Some(*fence_ms),
            _ => None,
        })
        .collect()
}

fn submit_second(s: &mut Scheduler, now: u64) -> Option<Lease> {
    leases(&submit(s, submission("t2", &[one_gpu()], 1), now)).pop()
}

#[test]
fn a_lease_not_reannounced_within_a_grace_below_the_ttl_is_fenced_for_the_rest_of_the_ttl() {
    let grace_ms = 12_000;
    let Recovered {
        mut s, cfg, lease, ..
    } = recover_with_a_silent(grace_ms, true);
    assert!(grace_ms < cfg.lease_ttl_ms);
    let grace_end = RESTART_MS + grace_ms;
    // "a" was renewed before the crash, so it stops the run by the restart plus the TTL.
    let agent_stops_by = RESTART_MS + cfg.lease_ttl_ms;

    let _ = heartbeat(&mut s, "b", &[], grace_end - 1);
    let out = s.handle(Event::Tick, TimeMs(grace_end));
    assert_eq!(
        ended_fence_ms(&persisted(&out), lease.attempt),
        vec![Some(agent_stops_by - grace_end)],
        "the fence is persisted with what may be left of the lease"
    );
    let moved = leases(&out).remove(0);
    assert_eq!(
        (moved.job, &moved.placement.agent),
        (lease.job, &agent("b")),
        "the job is requeued at the end of the grace, not the end of the fence"
    );
    assert_eq!(s.fenced[&lease.attempt].until, TimeMs(agent_stops_by));

    // "a" comes back still running it: told to stop; it then stops reporting it, and
    // gpu:a-0 stays fenced until the restart plus the TTL.
    let out = hello_holding(&mut s, "a", vec![running(&lease)], grace_end + 1);
    assert!(out.contains(&Action::Send {
        agent: agent("a"),
        msg: ToAgent::Cancel(running(&lease)),
    }));
    let _ = heartbeat(&mut s, "b", &[&moved], agent_stops_by - 1);
    let _ = heartbeat(&mut s, "a", &[], agent_stops_by - 1);
    assert_eq!(submit_second(&mut s, agent_stops_by - 1), None, "fenced");
    let granted = leases(&s.handle(Event::Tick, TimeMs(agent_stops_by)));
    assert_eq!(granted.len(), 1, "the fence ran out: gpu:a-0 is free");
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("gpu:a-0".into())]
    );
}

#[test]
fn a_grace_end_fence_is_lifted_by_a_hello_of_its_agent_that_does_not_list_the_run() {
    let grace_ms = 12_000;
    let Recovered { mut s, lease, .. } = recover_with_a_silent(grace_ms, true);
    let grace_end = RESTART_MS + grace_ms;
    let _ = heartbeat(&mut s, "b", &[], grace_end - 1);
    let moved = leases(&s.handle(Event::Tick, TimeMs(grace_end))).remove(0);
    assert!(s.fenced.contains_key(&lease.attempt));

    // A Hello lists everything the agent holds, and the dead process can send it
    // nothing more: the run is gone.
    let _ = hello_holding(&mut s, "a", vec![], grace_end + 1);
    assert!(!s.fenced.contains_key(&lease.attempt));
    let _ = heartbeat(&mut s, "b", &[&moved], grace_end + 1);
    let granted = submit_second(&mut s, grace_end + 1).expect("gpu:a-0 is free");
    assert_eq!(granted.placement.devices, vec![DeviceKey("gpu:a-0".into())]);
}

#[test]
fn a_fence_this_process_set_is_not_lifted_by_a_hello_that_does_not_list_the_run() {
    // A lease this process sent may still be on its way to the agent, so only the
    // agent's own word (an outcome, or `lost`) or the lease's expiry lifts its fence.
    let Recovered {
        mut s, cfg, lease, ..
    } = recover_with_a_silent(0, true);
    let _ = hello_holding(&mut s, "a", vec![], RESTART_MS);
    let out = submit(&mut s, submission("t2", &[one_gpu()], 1), RESTART_MS);
    let granted = leases(&out);
    let here = granted
        .iter()
        .find(|l| l.placement.agent == agent("a"))
        .expect("one of the two jobs went to a");
    assert_ne!(here.attempt, lease.attempt);
    let lost_at = RESTART_MS + cfg.agent_timeout_ms;
    let _ = heartbeat(&mut s, "b", &[], lost_at - 1);
    let _ = s.handle(Event::Tick, TimeMs(lost_at));
    assert!(s.fenced.contains_key(&here.attempt), "a was lost");
    let _ = hello_holding(&mut s, "a", vec![], lost_at + 1);
    assert!(
        s.fenced.contains_key(&here.attempt),
        "its lease may yet reach a"
    );
}

#[test]
fn with_no_grace_a_recovered_lease_resumes_at_once_when_its_agent_says_hello() {
    // Embedded mode: grace 0 and a TTL of a week; the in-process agent died with the old
    // process and says Hello holding nothing.
    let Recovered {
        mut s, cfg, lease, ..
    } = recover_with_a_silent(0, false);
    assert!(cfg.lease_ttl_ms > 0);
    let out = hello_holding(&mut s, "a", vec![], RESTART_MS);
    let again = leases(&out);
    assert_eq!(again.len(), 1, "resumed at once: {out:?}");
    assert_eq!(
        (again[0].job, &again[0].placement.agent),
        (lease.job, &agent("a"))
    );
    assert_ne!(again[0].attempt, lease.attempt);
}

#[test]
fn a_grace_end_fence_survives_a_second_restart() {
    let grace_ms = 12_000;
    let Recovered {
        mut s,
        cfg,
        mut log,
        lease,
    } = recover_with_a_silent(grace_ms, true);
    let grace_end = RESTART_MS + grace_ms;
    log.extend(persisted(&heartbeat(&mut s, "b", &[], grace_end - 1)));
    let out = s.handle(Event::Tick, TimeMs(grace_end));
    log.extend(persisted(&out));
    let moved = leases(&out).remove(0);
    let fence_ms = RESTART_MS + cfg.lease_ttl_ms - grace_end;

    // The second restart's clock starts anywhere, here below the first one's.
    let second = 2;
    let mut s = Scheduler::recover(cfg, log, TimeMs(second)).unwrap();
    assert_eq!(s.fenced[&lease.attempt].until, TimeMs(second + fence_ms));
    let _ = hello_holding(&mut s, "b", vec![running(&moved)], second);
    let _ = hello_holding(&mut s, "a", vec![running(&lease)], second);
    let last_fenced = second + fence_ms - 1;
    let _ = heartbeat(&mut s, "b", &[&moved], last_fenced);
    let _ = heartbeat(&mut s, "a", &[], last_fenced);
    assert_eq!(submit_second(&mut s, last_fenced), None, "fenced");
    let granted = leases(&s.handle(Event::Tick, TimeMs(second + fence_ms)));
    assert_eq!(granted.len(), 1, "the fence ran out: gpu:a-0 is free");
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("gpu:a-0".into())]
    );
}
