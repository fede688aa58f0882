//! The in-process agent on its own thread, driven by `drive_sweep` on the real clock
//! (nothing here depends on how fast the machine is: leases do not time out).

use super::*;
use crate::aggregate::ExperimentAggregate;
use crate::driver::{drive_sweep, sweep_experiment_id, ChannelLink, Driver, MonotonicClock};
use crate::scheduler::{
    DeviceKey, DeviceNeeds, ExperimentSubmission, JobStatus, Record, Reply, RequestId,
    SweepSubmission,
};
use crate::store::Store;
use crate::test_fixtures::raw_result;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Fails the first run of cycle 1 of every experiment, succeeds otherwise; remembers
/// which thread ran each job.
#[derive(Default)]
struct FlakyExecutor {
    runs: Vec<(String, AttemptId, u32)>,
    failed_once: std::collections::BTreeSet<String>,
}

impl JobExecutor for FlakyExecutor {
    fn execute(&mut self, lease: &Lease) -> Result<RawResult, String> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        self.runs.push((thread, lease.attempt, lease.cycle));
        if lease.cycle == 1 && self.failed_once.insert(lease.experiment_name.clone()) {
            return Err(format!("{}: flaky", lease.attempt));
        }
        let mut raw = raw_result(
            &lease.experiment_name,
            lease.cycle,
            4,
            1_000_000_000 + lease.attempt.0,
        );
        raw.attempt = lease.attempt.0 as u32;
        Ok(raw)
    }
}

#[test]
fn the_local_agent_runs_leases_on_its_own_thread_until_the_sweep_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Duration::from_secs(5)).unwrap());
    let clock = MonotonicClock::starting_at(0);
    let mut link = ChannelLink::new();
    let agent = AgentId("local".into());
    let messages = link.connect(agent.clone());
    let mut driver = Driver::start(
        Arc::clone(&store),
        link,
        in_process_scheduler_config(3),
        clock.now(),
    )
    .unwrap();
    let (events_tx, events) = mpsc::channel();
    let inventory = Inventory {
        gpus: vec![],
        cpu_packages: vec![DeviceKey("rapl:local:package-0".into())],
        runner_slots: vec![],
    };
    let thread = spawn_local_agent(
        agent.clone(),
        inventory,
        vec![],
        FlakyExecutor::default(),
        messages,
        events_tx,
    )
    .unwrap();
    let submission = SweepSubmission {
        idempotency_token: "t".into(),
        name: "local".into(),
        experiments: (0..2)
            .map(|i| ExperimentSubmission {
                name: format!("exp{i}"),
                config: serde_json::json!({ "model_name": "m", "i": i }),
                needs: DeviceNeeds::CpuPackages,
            })
            .collect(),
        cycles: 3,
        pin_device_model: true,
    };
    let done = driver
        .handle(
            crate::scheduler::Event::SubmitSweep {
                request: RequestId(1),
                submission,
            },
            None,
            clock.now(),
        )
        .unwrap();
    let [(_, Reply::SweepSubmitted { sweep, .. })] = done.replies[..] else {
        panic!("{done:?}");
    };
    let mut finished: Vec<crate::scheduler::SweepId> = Vec::new();
    drive_sweep(&mut driver, &events, &[sweep], &clock, |_, done| {
        finished.extend(&done.finished);
        Ok(())
    })
    .unwrap();
    assert_eq!(finished, [sweep]);

    // Closing the link ends the agent thread; it hands its executor back.
    driver.link_mut().disconnect(&agent);
    let executor = thread.join().unwrap();
    // 2 experiments × 3 cycles, plus one failed run of cycle 1 of each.
    assert_eq!(executor.runs.len(), 2 * 3 + 2);
    assert!(
        executor.runs.iter().all(|(t, ..)| t == "lem-runner"),
        "{:?}",
        executor.runs
    );
    // One CPU package: one run at a time, so attempts ran in id order.
    let attempts: Vec<u64> = executor.runs.iter().map(|(_, a, _)| a.0).collect();
    assert_eq!(attempts, (0..8).collect::<Vec<u64>>());

    let failures: Vec<String> = store
        .records()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::AttemptEnded {
                end: crate::scheduler::AttemptEnd::Failed { error },
                ..
            } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(
        failures.iter().all(|e| e.ends_with(": flaky")),
        "{failures:?}"
    );
    for j in driver.scheduler().jobs() {
        assert!(matches!(j.status, JobStatus::Accepted(_)), "{j:?}");
    }
    for name in ["exp0", "exp1"] {
        let agg: ExperimentAggregate = store
            .aggregate(&sweep_experiment_id(sweep, name))
            .unwrap()
            .unwrap();
        assert!(agg.complete);
        let cycles: Vec<u32> = agg.cycles.iter().map(|c| c.cycle).collect();
        assert_eq!(cycles, [0, 1, 2]);
    }
}
