//! A fence across a coordinator restart, with the real store: a GPU whose agent was lost
//! while running on it stays out of placement after the driver restarts, until what was
//! left of the lost lease has run out, counted from the restart on the new process's
//! clock (which starts anywhere), and is leased once it has.

use super::*;
use crate::scheduler::{
    AgentId, AttemptEnd, DeviceKey, DeviceNeeds, ExperimentSubmission, GpuDevice, HeldAttempt,
    Inventory, Lease, SweepSubmission, ToAgent,
};
use std::sync::mpsc::Receiver;
use std::time::Duration;

fn one_gpu_node(name: &str) -> Inventory {
    Inventory {
        gpus: vec![GpuDevice {
            key: DeviceKey(format!("gpu:{name}-0")),
            model: "H100".into(),
            mig_slices: vec![],
        }],
        cpu_packages: vec![],
        runner_slots: vec![],
    }
}

fn one_job(token: &str) -> SweepSubmission {
    SweepSubmission {
        idempotency_token: token.into(),
        name: token.into(),
        experiments: vec![ExperimentSubmission {
            name: "exp0".into(),
            config: serde_json::json!({ "model_name": "m" }),
            needs: DeviceNeeds::Gpus {
                count: 1,
                model: None,
            },
        }],
        cycles: 1,
        pin_device_model: true,
    }
}

fn hello(name: &str, held: Vec<HeldAttempt>) -> Event {
    Event::AgentHello {
        agent: AgentId(name.into()),
        inventory: one_gpu_node(name),
        held,
        lost: vec![],
    }
}

fn heartbeat(name: &str, held: Vec<HeldAttempt>) -> Event {
    Event::Heartbeat {
        agent: AgentId(name.into()),
        held,
    }
}

fn submit(token: &str) -> Event {
    Event::SubmitSweep {
        request: RequestId(1),
        submission: one_job(token),
    }
}

fn running(lease: &Lease) -> HeldAttempt {
    HeldAttempt {
        attempt: lease.attempt,
        epoch: lease.epoch,
        running: true,
    }
}

/// The leases that reached `rx` since it was last read.
fn leases_sent(rx: &Receiver<ToAgent>) -> Vec<Lease> {
    rx.try_iter()
        .filter_map(|m| match m {
            ToAgent::Lease(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn start(dir: &std::path::Path, now: u64) -> Driver<ChannelLink> {
    let store = Arc::new(Store::open(dir, Duration::from_secs(5)).unwrap());
    Driver::start(
        store,
        ChannelLink::new(),
        SchedulerConfig::default(),
        TimeMs(now),
    )
    .unwrap()
}

#[test]
fn a_fenced_gpu_stays_unleased_after_a_restart_until_its_fence_runs_out() {
    let cfg = SchedulerConfig::default();
    let renewed_at = 5_000;
    let lost_at = renewed_at + cfg.agent_timeout_ms;
    // "a" may run the lost attempt until its last renewal + the TTL.
    let fence_ms = renewed_at + cfg.lease_ttl_ms - lost_at;
    assert!(
        fence_ms > 1,
        "the scenario needs a lease outliving its agent"
    );
    let dir = tempfile::tempdir().unwrap();

    let mut d = start(dir.path(), 0);
    let a_rx = d.link_mut().connect(AgentId("a".into()));
    d.handle(hello("a", vec![]), None, TimeMs(0)).unwrap();
    d.handle(submit("first"), None, TimeMs(0)).unwrap();
    let lost = leases_sent(&a_rx).remove(0);
    let b_rx = d.link_mut().connect(AgentId("b".into()));
    d.handle(hello("b", vec![]), None, TimeMs(0)).unwrap();
    d.handle(
        heartbeat("a", vec![running(&lost)]),
        None,
        TimeMs(renewed_at),
    )
    .unwrap();
    d.handle(heartbeat("b", vec![]), None, TimeMs(renewed_at))
        .unwrap();
    d.handle(heartbeat("b", vec![]), None, TimeMs(lost_at - 1))
        .unwrap();
    // "a" is silent: lost at its deadline, its job moves to "b".
    d.tick(TimeMs(lost_at)).unwrap();
    let moved = leases_sent(&b_rx).remove(0);
    assert_eq!(moved.job, lost.job);
    let ended = d.store().records().unwrap();
    assert!(
        ended.iter().any(|r| matches!(r,
            Record::AttemptEnded { attempt, end: AttemptEnd::Lost { .. }, fence_ms: Some(ms), .. }
                if *attempt == lost.attempt && *ms == fence_ms)),
        "the lost attempt's end records its fence of {fence_ms} ms: {ended:?}"
    );
    drop(d); // the coordinator dies inside the fence

    // The new process's clock starts anywhere: here below the old one.
    let restart = 700;
    let mut d = start(dir.path(), restart);
    let a_rx = d.link_mut().connect(AgentId("a".into()));
    let b_rx = d.link_mut().connect(AgentId("b".into()));
    // "a" comes back still running it (a Hello that left it out would prove it gone and
    // lift the fence); it stops reporting it below, and the fence still holds.
    d.handle(hello("a", vec![running(&lost)]), None, TimeMs(restart))
        .unwrap();
    d.handle(hello("b", vec![running(&moved)]), None, TimeMs(restart))
        .unwrap();
    d.handle(submit("second"), None, TimeMs(restart + 1))
        .unwrap();
    assert!(
        leases_sent(&a_rx).is_empty(),
        "gpu:a-0 leased inside the fence"
    );
    assert!(
        leases_sent(&b_rx).is_empty(),
        "gpu:b-0 is busy with the moved job"
    );
    // One millisecond before the fence runs out, still nothing for "a".
    let last_fenced = restart + fence_ms - 1;
    d.handle(heartbeat("a", vec![]), None, TimeMs(last_fenced))
        .unwrap();
    d.handle(
        heartbeat("b", vec![running(&moved)]),
        None,
        TimeMs(last_fenced),
    )
    .unwrap();
    assert!(
        leases_sent(&a_rx).is_empty(),
        "gpu:a-0 leased inside the fence"
    );
    assert_eq!(d.poll_timeout(), Some(TimeMs(restart + fence_ms)));
    d.tick(TimeMs(restart + fence_ms)).unwrap();
    let granted = leases_sent(&a_rx);
    assert_eq!(granted.len(), 1, "gpu:a-0 is free once the fence ran out");
    assert_eq!(
        granted[0].placement.devices,
        vec![DeviceKey("gpu:a-0".into())]
    );
    assert_ne!(granted[0].job, lost.job);
}
