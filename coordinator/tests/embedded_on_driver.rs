//! Embedded mode's pieces composed on the scheduler: a real store, the driver, and the
//! in-process agent running the real `JobRunner` (SmolLM2, two tokens) on its own
//! thread. `lem experiment` and `lem batch` go this way (`embedded_run`, tested in
//! `embedded_sweeps.rs`); this pins the pieces alone.

use lem_agent::hub::ResolveOptions;
use lem_agent::runner::{DevicePlacement, EnvSnapshot, JobRunner, RunContext};
use lem_common::config::{self, CliOverrides};
use lem_common::domain::job_key;
use lem_coordinator::aggregate::ExperimentAggregate;
use lem_coordinator::driver::{
    drive_sweep, in_process_scheduler_config, spawn_local_agent, sweep_experiment_id, ChannelLink,
    Driver, MonotonicClock,
};
use lem_coordinator::embedded::StoreHandle;
use lem_coordinator::embedded_agent::RunnerExecutor;
use lem_coordinator::scheduler::{
    AgentId, DeviceKey, DeviceNeeds, Event, ExperimentSubmission, Inventory, JobStatus, Reply,
    RequestId, SweepSubmission,
};
use lem_coordinator::store::Store;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[path = "../../tests/support.rs"]
mod support;

#[test]
fn a_sweep_runs_on_the_real_runner_through_the_driver_and_is_stored_once_per_cycle() {
    let model = support::model();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["models", "hf", "powercap", "data"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let cycles = 2;
    let cli = CliOverrides {
        model: Some(model.display().to_string()),
        num_prompts: Some(1),
        max_tokens: Some(2),
        cycles: Some(cycles),
        ..Default::default()
    };
    let resolved = config::resolve(Some("quick-test"), None, &cli).unwrap();
    let config_json = resolved.config.to_json();

    let data_dir = dir.path().join("data");
    // Opened for each operation, as embedded mode does.
    let store = StoreHandle::new(&data_dir);
    let clock = MonotonicClock::starting_at(0);
    let agent = AgentId("local".into());
    let mut link = ChannelLink::new();
    let messages = link.connect(agent.clone());
    let mut driver = Driver::start(
        store.clone(),
        link,
        in_process_scheduler_config(1),
        clock.now(),
    )
    .unwrap();
    let ctx = RunContext {
        resolve: ResolveOptions {
            lem_model_dir: dir.path().join("models"),
            hf_cache_dir: dir.path().join("hf"),
            offline: true,
            revision: "main".into(),
            home_dir: None,
            access: Default::default(),
        },
        powercap_root: dir.path().join("powercap"),
        nvml_lib: None,
        placement: DevicePlacement::default(),
        env: EnvSnapshot::default(),
        stop: Arc::new(AtomicBool::new(false)),
    };
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
        RunnerExecutor::new(JobRunner::new(), ctx),
        messages,
        events_tx,
    )
    .unwrap();
    let submission = SweepSubmission {
        idempotency_token: "exp_test".into(),
        name: "exp_test".into(),
        experiments: vec![ExperimentSubmission {
            name: "exp_test".into(),
            config: config_json.clone(),
            needs: DeviceNeeds::CpuPackages,
        }],
        cycles,
        pin_device_model: true,
    };
    let done = driver
        .handle(
            Event::SubmitSweep {
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
    // Between two of the driver's operations another lem process can open the store
    // (`lem results list` in a second terminal).
    let mut reads = 0;
    drive_sweep(&mut driver, &events, &[sweep], &clock, |_, _| {
        let reader = Store::open_existing(&data_dir, Duration::from_secs(5));
        assert!(reader.is_ok(), "{:?}", reader.err());
        reads += 1;
        Ok(())
    })
    .unwrap();
    assert!(reads >= 2, "one read after each result at least");
    driver.link_mut().disconnect(&agent);
    let executor = thread.join().unwrap();
    let errors = executor.shared.errors.lock().unwrap();
    assert!(errors.is_empty(), "{errors:?}");

    for j in driver.scheduler().jobs() {
        assert!(matches!(j.status, JobStatus::Accepted(_)), "{j:?}");
    }
    let store = Store::open(&data_dir, Duration::from_secs(5)).unwrap();
    let row = store.sweep(sweep).unwrap().unwrap();
    let results = store.accepted_results(&row).unwrap();
    let got: Vec<(u32, String)> = results
        .iter()
        .map(|r| (r.raw.cycle, r.raw.job_key.clone()))
        .collect();
    let expected: Vec<(u32, String)> = (0..cycles).map(|c| (c, job_key(&config_json, c))).collect();
    assert_eq!(got, expected);
    for r in &results {
        assert_eq!(r.raw.experiment_id, "exp_test");
        assert_eq!(r.raw.requests.len(), 1, "num_prompts = 1");
        assert!(r.raw.output_tokens() <= 2, "max_tokens = 2");
        assert!(r.raw.output_tokens() >= 1);
    }
    let agg: ExperimentAggregate = store
        .aggregate(&sweep_experiment_id(sweep, "exp_test"))
        .unwrap()
        .unwrap();
    assert!(agg.complete, "{:?}", agg.warnings);
    let counted: Vec<u32> = agg.cycles.iter().map(|c| c.cycle).collect();
    assert_eq!(counted, [0, 1]);
}
