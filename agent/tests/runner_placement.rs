//! Placement is an argument of the run, not part of the job: one job spec (one key) run
//! on a simulated two-GPU node (the fake NVML, named in the context) meters the GPUs its
//! placement names, whichever they are, while its key stays the hash of the config and
//! cycle. CPU inference with the real SmolLM2; skips without the model, except under CI.

use lem_agent::runner::{DevicePlacement, JobRunner, NoProgress, RunContext};
use lem_common::config::{Device, ExperimentConfig};
use lem_common::domain::{job_key, DeviceKind, JobSpec, RawResult};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod fake_nvml;
use fake_nvml::support;

const GPU_A: &str = "GPU-aaaaaaaa-0000-4000-8000-000000000001";
const GPU_B: &str = "GPU-bbbbbbbb-0000-4000-8000-000000000002";

fn gpu_ids(r: &RawResult) -> Vec<&str> {
    r.energy
        .iter()
        .filter(|e| e.device_kind == DeviceKind::Gpu)
        .map(|e| e.device_id.as_str())
        .collect()
}

#[test]
fn the_same_job_meters_the_gpus_its_placement_names_and_keeps_its_key() {
    lem_agent::threads::init(Some(2));
    let Some(model) = support::model_path() else {
        return;
    };
    // Real time (no time_scale): the runner's meters use the wall clock.
    let gpu = |uuid: &str, watts: f64| json!({ "name": "NVIDIA H100 80GB HBM3", "uuid": uuid, "power": [[0.0, watts]] });
    let fake = fake_nvml::Fake::new(&json!({
        "driver_version": "550.54.15",
        "gpus": [gpu(GPU_A, 100.0), gpu(GPU_B, 300.0)],
    }));
    let root = tempfile::tempdir().unwrap();
    let mut base = RunContext::from_env(Arc::new(AtomicBool::new(false)));
    base.resolve.offline = true;
    base.powercap_root = root.path().join("no-powercap");
    base.nvml_lib = Some(fake.path.clone());

    let mut cfg = ExperimentConfig::default_for("placement", model.to_str().unwrap());
    cfg.device = Device::Cpu;
    cfg.num_input_prompts = Some(1);
    cfg.max_input_tokens = 8;
    cfg.max_output_tokens = 2;
    cfg.warmup_prompts = 0;
    cfg.idle_baseline_s = 0.0;
    cfg.gpu_list = vec![0];
    let key = job_key(&cfg.to_json(), 1);
    let job = JobSpec {
        experiment_id: "placement".into(),
        job_key: key.clone(),
        cycle: 1,
        attempt: 0,
        config: cfg,
        cli_overrides: BTreeMap::new(),
    };
    let mut runner = JobRunner::new();
    let mut run_on = |placement: DevicePlacement| {
        let ctx = base.clone().with_placement(placement);
        runner.run(&job, &ctx, &mut NoProgress).expect("run")
    };

    // Embedded mode: gpu_list [0] is the first GPU by index.
    let embedded = run_on(DevicePlacement::default());
    // A lease naming the second GPU: the config's gpu_list is not consulted.
    let leased = run_on(DevicePlacement::Devices {
        targets: vec![GPU_B.into()],
        cuda_ordinal: 0,
    });
    // Embedded with CUDA_VISIBLE_DEVICES (as read at start) reordering the GPUs.
    let reordered = run_on(DevicePlacement::GpuList {
        cuda_visible_devices: Some(format!("{GPU_B},{GPU_A}")),
    });

    assert_eq!(gpu_ids(&embedded), [GPU_A]);
    assert_eq!(gpu_ids(&leased), [GPU_B]);
    assert_eq!(gpu_ids(&reordered), [GPU_B]);
    for r in [&embedded, &leased, &reordered] {
        assert_eq!(r.job_key, key, "the key is the config's and cycle's");
        assert_eq!(r.effective_config, embedded.effective_config);
    }
    // Each run was alone in this process: its peak memory is its own (or says why not).
    for r in [&embedded, &leased, &reordered] {
        let peak = &r.peak_memory_bytes;
        assert!(peak.value.is_some_and(|b| b > 0), "{peak:?}");
        let source = peak.source.as_deref().unwrap();
        assert!(
            source.contains("this job's peak") || source.contains("could not be reset"),
            "{source}"
        );
    }
    // The readings are the named GPU's: the 300 W one draws more than the 100 W one over
    // a window (the windows differ in length, so compare average power).
    let watts = |r: &RawResult| {
        let e = r
            .energy
            .iter()
            .find(|e| e.device_kind == DeviceKind::Gpu)
            .unwrap();
        e.energy_mj.expect("the fake's GPU reads") / (e.window_ns as f64 / 1e6)
    };
    assert!(
        watts(&leased) > 2.0 * watts(&embedded),
        "{} W vs {} W",
        watts(&leased),
        watts(&embedded)
    );
}
