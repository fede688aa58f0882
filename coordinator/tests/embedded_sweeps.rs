//! Embedded mode as sweeps, on the real SmolLM2 model (two tokens a cycle): `lem batch`
//! stores ONE sweep of configs × cycles with one accepted result per job, and a run
//! stopped by its stop flag (what Ctrl+C sets) resumes its cancelled jobs without
//! running a stored cycle again. Expected counts come from each scenario's own numbers.

use lem_agent::hub::ResolveOptions;
use lem_agent::runner::{DevicePlacement, EnvSnapshot, JobRunner, RunContext, RunProgress};
use lem_common::config::{self, CliOverrides};
use lem_coordinator::embedded::{self, StoreHandle};
use lem_coordinator::embedded_agent::{LeaseProgress, RunShared, RunnerExecutor};
use lem_coordinator::embedded_run::{self, pinned_needs, ExperimentEnd, RunObserver, Work};
use lem_coordinator::scheduler::{ExperimentSubmission, SweepSubmission};
use lem_coordinator::store::Store;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "../../tests/support.rs"]
mod support;

fn open(data_dir: &Path) -> Store {
    Store::open(data_dir, Duration::from_secs(10)).unwrap()
}

#[test]
fn a_batch_of_two_configs_by_two_cycles_is_one_sweep_with_one_accepted_result_per_job() {
    let model = support::model();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("powercap")).unwrap();
    let (configs, cycles) = (["a", "b"], 2u32);
    let paths: Vec<_> = configs
        .iter()
        .map(|name| {
            let p = dir.path().join(format!("{name}.yaml"));
            let yaml = format!(
                "_extends: {}\nconfig_name: sweep-{name}\nmodel_name: {}\nidle_baseline_s: 0\n",
                support::repo_root()
                    .join("configs/examples/quick.yaml")
                    .display(),
                model.display()
            );
            std::fs::write(&p, yaml).unwrap();
            p
        })
        .collect();
    let data_dir = dir.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .env_remove("LEM_DATA_DIR")
        .env_remove("LEM_NVML_LIB")
        .env("HF_HUB_OFFLINE", "1")
        .env("LEM_POWERCAP_ROOT", dir.path().join("powercap"))
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("batch")
        .args(&paths)
        .args(["-n", "1", "--max-tokens", "2", "--cycles"])
        .arg(cycles.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let store = open(&data_dir);
    let sweeps = store.sweeps().unwrap();
    assert_eq!(sweeps.len(), 1, "one sweep for the whole batch: {sweeps:?}");
    let sweep = &sweeps[0];
    let experiments = store.experiments().unwrap();
    assert_eq!(experiments.len(), configs.len());
    // The sweep names the stored experiments, in the order given.
    let mut by_order = experiments.clone();
    by_order.sort_by_key(|e| {
        configs
            .iter()
            .position(|c| e.config_name == format!("sweep-{c}"))
    });
    let ids: Vec<String> = by_order.iter().map(|e| e.id.clone()).collect();
    assert_eq!(sweep.experiment_names, ids);
    let jobs = store.jobs_of_sweep(sweep).unwrap();
    assert_eq!(jobs.len(), configs.len() * cycles as usize);
    let accepted = store.accepted_results(sweep).unwrap();
    let mut got: Vec<(String, u32)> = accepted
        .iter()
        .map(|a| (a.raw.experiment_id.clone(), a.raw.cycle))
        .collect();
    got.sort();
    let mut expected: Vec<(String, u32)> = ids
        .iter()
        .flat_map(|id| (0..cycles).map(move |c| (id.clone(), c)))
        .collect();
    expected.sort();
    assert_eq!(got, expected, "one accepted result per job");
    for (rec, id) in by_order.iter().zip(&ids) {
        assert_eq!(rec.status.as_str(), "completed");
        // What `lem results` reads: each cycle once, the accepted body itself.
        let raws = store.raw_results(id).unwrap();
        let cycles_stored: Vec<u32> = raws.iter().map(|r| r.cycle).collect();
        assert_eq!(cycles_stored, (0..cycles).collect::<Vec<_>>());
        for raw in &raws {
            let a = accepted
                .iter()
                .find(|a| a.raw.experiment_id == *id && a.raw.cycle == raw.cycle)
                .unwrap();
            assert_eq!(a.raw, *raw);
        }
    }
}

/// Counts the runs each runner starts, and sets the stop flag when `stop_at` starts (as
/// Ctrl+C would during that cycle's model load).
struct Counting {
    started: Arc<Mutex<Vec<u32>>>,
    stop_at: Option<u32>,
    stop: Arc<AtomicBool>,
}

impl RunProgress for Counting {}
impl LeaseProgress for Counting {
    fn job_started(&mut self, _experiment: &str, cycle: u32) {
        self.started.lock().unwrap().push(cycle);
        if self.stop_at == Some(cycle) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

struct Quiet;
impl RunObserver for Quiet {}

#[test]
fn an_interrupted_run_resumes_its_cancelled_jobs_without_running_a_stored_cycle_again() {
    let model = support::model();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["models", "hf", "powercap"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let cycles = 3;
    let cli = CliOverrides {
        model: Some(model.display().to_string()),
        num_prompts: Some(1),
        max_tokens: Some(2),
        cycles: Some(cycles),
        ..Default::default()
    };
    let resolved = config::resolve(Some("quick-test"), None, &cli).unwrap();
    let store = StoreHandle::new(&dir.path().join("data"));
    let rec = embedded::create_experiment(&store, &resolved, "test").unwrap();
    let ctx = |stop: &Arc<AtomicBool>| RunContext {
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
        stop: stop.clone(),
    };
    let run = |work: Work, stop_at: Option<u32>| {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(RunShared::default());
        let executor = RunnerExecutor {
            runner: JobRunner::new(),
            ctx: ctx(&stop),
            cli_overrides: BTreeMap::new(),
            progress: Box::new(Counting {
                started: started.clone(),
                stop_at,
                stop: stop.clone(),
            }),
            shared: shared.clone(),
        };
        let report =
            embedded_run::run(&store, work, vec![executor], &shared, &stop, &mut Quiet).unwrap();
        let started = started.lock().unwrap().clone();
        (report, started)
    };

    // Stopped as the second cycle starts: the first is stored, the rest are cancelled.
    let submission = SweepSubmission {
        idempotency_token: rec.id.clone(),
        name: rec.id.clone(),
        experiments: vec![ExperimentSubmission {
            name: rec.id.clone(),
            config: rec.effective_config.clone(),
            needs: pinned_needs(&rec.id, &[]),
        }],
        cycles,
        pin_device_model: true,
    };
    let (report, started) = run(Work::Submit(vec![submission]), Some(1));
    assert!(
        matches!(report.ends[&rec.id], ExperimentEnd::Interrupted),
        "{:?}",
        report.ends
    );
    assert_eq!(started, [0, 1], "the third cycle never started");
    let first = store.with(|s| s.raw_results(&rec.id)).unwrap();
    assert_eq!(first.iter().map(|r| r.cycle).collect::<Vec<_>>(), [0]);
    assert_eq!(report.sweeps.len(), 1);

    // The resume requeues the cancelled jobs of the same sweep and runs only those.
    let sweeps = embedded_run::sweeps_of(&store, &rec.id).unwrap();
    assert_eq!(sweeps, report.sweeps);
    let (report, started) = run(Work::Resume(sweeps.clone()), None);
    assert!(
        matches!(report.ends[&rec.id], ExperimentEnd::Finished),
        "{:?}",
        report.ends
    );
    assert_eq!(started, [1, 2], "the stored cycle 0 is not run again");
    let raws = store.with(|s| s.raw_results(&rec.id)).unwrap();
    assert_eq!(
        raws.iter().map(|r| r.cycle).collect::<Vec<_>>(),
        (0..cycles).collect::<Vec<_>>()
    );
    assert_eq!(raws[0], first[0], "the stored cycle is the same record");
    let s = open(&dir.path().join("data"));
    let row = s.sweep(sweeps[0]).unwrap().unwrap();
    let accepted: Vec<u32> = s
        .accepted_results(&row)
        .unwrap()
        .iter()
        .map(|a| a.raw.cycle)
        .collect();
    assert_eq!(accepted, (0..cycles).collect::<Vec<_>>());
}
