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

    // J per output token is the gross total over the output tokens.
    let output_tokens = cycle["output_tokens"].as_f64().unwrap();
    let total_j = cycle["energy"]["total_j"].as_f64().unwrap();
    assert!((total_j - gross_j).abs() < 1e-9, "only the GPU is measured");
    let j_per_tok = cycle["j_per_output_token"].as_f64().unwrap();
    assert!((j_per_tok - gross_j / output_tokens).abs() <= 1e-9 * j_per_tok.abs().max(1.0));
    assert!(cycle["energy"]["net_total_j"].is_number());
}
