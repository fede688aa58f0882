//! `lem experiment` on a simulated GPU node: the fake `libnvidia-ml.so` (tests/fake-nvml)
//! named by `LEM_NVML_LIB`, one GPU at a constant 200 W, inference on the CPU with the
//! real SmolLM2 model. Expected energies come from the scenario (200 W × window), not
//! from lem. Skips without the model, except under CI.

use serde_json::{json, Value};
use std::process::Command;

const POWER_W: f64 = 200.0;
/// The fake's counter step (its default, like real hardware).
const STEP_S: f64 = 0.1;

#[path = "../../tests/support.rs"]
mod support;
use support::{build_fake_nvml as fake_library, repo_root};

fn model_available() -> bool {
    support::model_path().is_some()
}

#[test]
fn simulated_node_reports_gross_baseline_and_net_energy() {
    if !model_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A copy, so a rebuild of the fake by another test cannot change it under us.
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(fake_library(), &lib).unwrap();
    let scenario = dir.path().join("scenario.json");
    let s = json!({ "driver_version": "550.54.15",
        "gpus": [ { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-00000000-0000-4000-8000-000000000200",
                    "power": [[0.0, POWER_W]] } ] });
    std::fs::write(&scenario, s.to_string()).unwrap();
    let config = dir.path().join("sim.yaml");
    std::fs::write(
        &config,
        format!(
            "_extends: {}\nidle_baseline_s: 0.5\n",
            repo_root().join("configs/examples/quick.yaml").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("powercap")).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .env_remove("LEM_DATA_DIR")
        .env("HF_HUB_OFFLINE", "1")
        .env("LEM_POWERCAP_ROOT", dir.path().join("powercap"))
        .env("LEM_NVML_LIB", &lib)
        .env("FAKE_NVML_SCENARIO", &scenario)
        .arg("--data-dir")
        .arg(dir.path().join("results"))
        .current_dir(repo_root())
        .args(["experiment"])
        .arg(&config)
        .args(["-n", "2", "--max-tokens", "8", "--json"])
        .output()
        .unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let agg: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = agg["warnings"].to_string();
    assert!(warnings.contains("simulated GPU node"), "{warnings}");

    let cycle = &agg["cycles"][0];
    let gpu = &cycle["energy"]["devices"][0];
    assert_eq!(gpu["device_kind"], "gpu");
    assert_eq!(gpu["simulated"], true);
    assert_eq!(gpu["source"], "nvml-counter");

    // The raw reading carries its window: expected energy = 200 W × window.
    let id = agg["experiment_id"].as_str().unwrap();
    let show = Command::new(env!("CARGO_BIN_EXE_lem"))
        .arg("--data-dir")
        .arg(dir.path().join("results"))
        .args(["results", "show", id, "--raw", "--json"])
        .output()
        .unwrap();
    assert!(show.status.success());
    let raws: Value = serde_json::from_slice(&show.stdout).unwrap();
    let reading = raws[0]["energy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device_kind"] == "gpu")
        .expect("a GPU reading")
        .clone();
    assert_eq!(reading["simulated"], true);
    assert_eq!(reading["source"], "nvml-counter");
    assert_eq!(reading["driver_version"], "fake-nvml-550.54.15");
    let window_s = reading["window_ns"].as_f64().unwrap() / 1e9;
    let gross_j = reading["energy_mj"].as_f64().expect("available") / 1000.0;
    let expected_j = POWER_W * window_s;
    let step_j = POWER_W * STEP_S;
    assert!(
        (gross_j - expected_j).abs() <= 0.01 * expected_j + step_j,
        "gross {gross_j} J vs {expected_j} J over {window_s} s"
    );
    // The window's edges sit on the fake's counter updates: at a constant 200 W the
    // energy over the stated window is 200 W × window within the stated uncertainty
    // (the updates' timing), which is far below one counter step.
    let u_j = reading["uncertainty_mj"].as_f64().expect("an uncertainty") / 1000.0;
    assert!(
        (gross_j - expected_j).abs() <= u_j,
        "gross {gross_j} J vs {expected_j} J ± {u_j} J"
    );
    assert!(u_j < 0.5 * step_j, "aligned edges: ± {u_j} J");
    // The counter period was measured by the baseline (the fake's 100 ms step).
    let period_ms = reading["sample_period_ms"].as_f64().unwrap();
    assert!((period_ms - STEP_S * 1000.0).abs() < 2.0, "{period_ms} ms");
    assert!(reading["sample_period_method"]
        .as_str()
        .unwrap()
        .starts_with("measured"));
    let b = &reading["baseline"];
    assert_eq!(b["settled"], true, "{b}");
    assert!(b["spread_w"].is_number(), "{b}");
    assert!(b["age_ns"].is_number(), "{b}");
    let baseline_w = reading["baseline_power_w"].as_f64().expect("baseline");
    assert!(
        (baseline_w - POWER_W).abs() <= 0.02 * POWER_W,
        "baseline {baseline_w} W"
    );
    let net_j = reading["net_energy_mj"].as_f64().expect("net") / 1000.0;
    assert!(
        net_j.abs() <= POWER_W * STEP_S + 0.01 * gross_j,
        "net {net_j} J (gross {gross_j} J)"
    );

    // The CPU package cannot be read here (empty powercap tree), so there is no total
    // over the job's devices; the GPU's energy stays visible as the labelled readable part.
    let energy = &cycle["energy"];
    assert!(energy["total_j"].is_null() && cycle["j_per_output_token"].is_null());
    let why = energy["total_unavailable_reason"].as_str().unwrap();
    assert!(why.contains("package"), "{why}");
    assert!((energy["partial_total_j"].as_f64().unwrap() - gross_j).abs() < 1e-9);
    assert!(energy["net_total_j"].is_null());
    assert_eq!(agg["simulated"], true, "marked simulated at the top level");

    // The GPU scope is complete: J per output token is its gross over the output tokens.
    let output_tokens = cycle["output_tokens"].as_f64().unwrap();
    let gpu = &cycle["whole_window"]["gpu"];
    assert!((gpu["energy_j"].as_f64().unwrap() - gross_j).abs() < 1e-9);
    let j_per_tok = gpu["j_per_output_token"].as_f64().unwrap();
    assert!((j_per_tok - gross_j / output_tokens).abs() <= 1e-9 * j_per_tok.abs().max(1.0));

    // Steady state, from the raw requests: batch size 1, so one request is in flight from
    // the first start to the last finish. At a constant 200 W the trace scaled to the
    // counter gives gross × that span / the window.
    let requests = raws[0]["requests"].as_array().unwrap();
    let u = |v: &Value| v.as_u64().expect("offset recorded");
    let start = requests
        .iter()
        .map(|r| u(&r["start_offset_ns"]))
        .min()
        .unwrap();
    let end = requests
        .iter()
        .map(|r| u(&r["finish_offset_ns"]))
        .max()
        .unwrap();
    let steady = &cycle["steady_state"];
    assert_eq!(steady["start_offset_ns"].as_u64(), Some(start), "{steady}");
    assert_eq!(steady["end_offset_ns"].as_u64(), Some(end), "{steady}");
    let expected_j = gross_j * (end - start) as f64 / reading["window_ns"].as_f64().unwrap();
    let steady_j = steady["gpu"]["energy_j"].as_f64().unwrap();
    assert!(
        (steady_j - expected_j).abs() <= 1e-6 * expected_j,
        "{steady_j} vs {expected_j}"
    );
    assert!(steady["all_devices"]["energy_j"].is_null());
}

/// Runs `lem experiment` on `scenario` with extra config lines and env; returns the
/// aggregate JSON, the first raw result and the human summary of `results show`.
fn run_simulated(
    dir: &std::path::Path,
    scenario: &Value,
    extra_config: &str,
    env: &[(&str, &str)],
) -> (Value, Value, String) {
    let lib = dir.join("libnvidia-ml.so.1");
    std::fs::copy(fake_library(), &lib).unwrap();
    let scenario_path = dir.join("scenario.json");
    std::fs::write(&scenario_path, scenario.to_string()).unwrap();
    let config = dir.join("sim.yaml");
    std::fs::write(
        &config,
        format!(
            "_extends: {}\nidle_baseline_s: 0.5\n{extra_config}",
            repo_root().join("configs/examples/quick.yaml").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("powercap")).unwrap();
    let lem = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lem"));
        c.env_remove("LEM_DATA_DIR")
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env("HF_HUB_OFFLINE", "1")
            .env("LEM_POWERCAP_ROOT", dir.join("powercap"))
            .env("LEM_NVML_LIB", &lib)
            .env("FAKE_NVML_SCENARIO", &scenario_path)
            .arg("--data-dir")
            .arg(dir.join("results"))
            .current_dir(repo_root())
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        eprintln!(
            "--- lem {args:?}\n{}--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "lem {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let agg: Value = serde_json::from_str(&lem(&[
        "experiment",
        config.to_str().unwrap(),
        "-n",
        "2",
        "--max-tokens",
        "8",
        "--json",
    ]))
    .unwrap();
    let id = agg["experiment_id"].as_str().unwrap().to_owned();
    let raws: Value =
        serde_json::from_str(&lem(&["results", "show", &id, "--raw", "--json"])).unwrap();
    let summary = lem(&["results", "show", &id]);
    (agg, raws[0].clone(), summary)
}

#[test]
fn phases_trace_and_carbon_on_a_simulated_node() {
    if !model_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A 1 ms counter, so prefill and decode segments of tens of ms can be split by
    // the counter itself.
    let s = json!({ "step_ms": 1,
        "gpus": [ { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-00000000-0000-4000-8000-000000000201",
                    "power": [[0.0, POWER_W]], "temperature_c": [[0.0, 40]] } ] });
    let (agg, raw, summary) = run_simulated(
        dir.path(),
        &s,
        "sample_period_ms: 20\ncarbon: {pue: 1.5, grid_intensity_gco2e_per_kwh: 400}\n",
        &[],
    );
    let gpu = raw["energy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device_kind"] == "gpu")
        .unwrap();
    let gross_mj = gpu["energy_mj"].as_f64().unwrap();
    // The sampler's trace rides beside the counter at the configured period.
    let trace = &gpu["trace"];
    assert_eq!(trace["period_ms"], 20.0);
    let samples = trace["samples"].as_array().unwrap();
    let window_s = gpu["window_ns"].as_f64().unwrap() / 1e9;
    assert!(
        samples.len() as f64 >= 0.5 * window_s / 0.02,
        "{} samples over {window_s} s",
        samples.len()
    );
    assert_eq!(samples[1]["temperature_c"], 40);
    // Phases: prefill + decode + between-batch time is the gross energy.
    let p = &gpu["phases"];
    assert!(p.is_object(), "no phase split: {gpu}");
    let parts: f64 = ["prefill_mj", "decode_mj", "other_mj"]
        .iter()
        .map(|k| p[k].as_f64().unwrap())
        .sum();
    assert!(
        (parts - gross_mj).abs() < 1e-6 * gross_mj,
        "{p} vs {gross_mj}"
    );
    assert!(p["prefill_mj"].as_f64().unwrap() > 0.0 && p["decode_mj"].as_f64().unwrap() > 0.0);
    let cycle = &agg["cycles"][0];
    // Phase totals over devices need every device read; the GPU keeps its own split.
    assert!(cycle["energy"]["prefill_j"].is_null());
    assert!(cycle["energy"]["devices"][0]["phases"].is_object());
    // Carbon needs the job's total, which the unreadable CPU package denies: null, with
    // the reason, never the GPU's share passed off as the job's.
    let carbon = &cycle["carbon"];
    assert!(carbon["co2e_g"].is_null(), "{carbon}");
    let why = carbon["unavailable_reason"].as_str().unwrap();
    assert!(why.contains("package"), "{why}");
    assert!(summary.contains("SIMULATED"), "{summary}");
    assert!(summary.contains("prefill"), "{summary}");
    assert!(summary.contains("decode"), "{summary}");
    assert!(
        summary.contains("carbon                 not computed"),
        "{summary}"
    );
}

#[test]
fn a_job_on_one_mig_slice_gets_its_attributed_share() {
    if !model_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scenario: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fake-nvml/scenarios/a100-mig.json"))
            .unwrap(),
    )
    .unwrap();
    let slice = "MIG-a1000000-3g20-4000-8000-000000000001";
    let (agg, raw, summary) = run_simulated(
        dir.path(),
        &scenario,
        "",
        &[("CUDA_VISIBLE_DEVICES", slice)],
    );
    let readings = raw["energy"].as_array().unwrap();
    let r = readings
        .iter()
        .find(|r| r["device_kind"] == "mig_slice")
        .unwrap_or_else(|| panic!("no MIG slice reading: {readings:?}"));
    assert_eq!(r["device_id"], slice);
    assert!(
        !readings.iter().any(|r| r["device_kind"] == "gpu"),
        "the parent is not also charged to the job"
    );
    let mig = &r["mig"];
    assert_eq!(mig["mode"], "shared");
    // Conservation, exactly, from the stored inputs.
    let shares: i64 = mig["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["energy_mj"].as_i64().unwrap())
        .sum();
    let parent = mig["parent_energy_mj"].as_i64().unwrap();
    assert_eq!(shares + mig["unattributed_mj"].as_i64().unwrap(), parent);
    let mine = mig["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slice_id"] == slice)
        .unwrap()["energy_mj"]
        .as_f64()
        .unwrap();
    assert_eq!(r["energy_mj"].as_f64().unwrap(), mine);
    assert!(mine > 0.0 && (mine as i64) < parent);
    let dev = &agg["cycles"][0]["energy"]["devices"][0];
    assert_eq!(dev["mig_mode"], "shared");
    assert!(summary.contains("MIG slice"), "{summary}");
    assert!(summary.contains("simulated"), "{summary}");
}

#[test]
fn gpu_check_window_compares_counter_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(fake_library(), &lib).unwrap();
    let scenario = dir.path().join("s.json");
    let s = json!({ "gpus": [ { "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-00000000-0000-4000-8000-000000000202", "power": [[0.0, 300.0]] } ] });
    std::fs::write(&scenario, s.to_string()).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lem"))
            .env("LEM_NVML_LIB", &lib)
            .env("FAKE_NVML_SCENARIO", &scenario)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let w = run(&[
        "gpu-check",
        "window",
        "--seconds",
        "1.5",
        "--sample-period-ms",
        "10",
        "--json",
    ]);
    let g = &w[0];
    assert_eq!(g["simulated"], true);
    // 300 W steady; the counter moves in 100 ms steps: within one step of 300 W × window.
    let window_s = g["window_s"].as_f64().unwrap();
    let counter_j = g["energy_j"].as_f64().unwrap();
    assert!((counter_j - 300.0 * window_s).abs() <= 30.0 + 1e-3, "{g}");
    // The trace integral of a steady 300 W is exact; it differs from the counter only by
    // the counter's step.
    let trace_j = g["trace_energy_j"].as_f64().unwrap();
    assert!((trace_j - 300.0 * window_s).abs() < 0.5, "{g}");
    assert!(g["trace_samples"].as_u64().unwrap() > 50);
    let p = run(&["gpu-check", "periods", "--seconds", "1.2", "--json"]);
    let med = p[0]["counter_period_median_ms"].as_f64().unwrap();
    assert!((med - 100.0).abs() < 15.0, "counter period {med} ms: {p}");
}
