//! `lem gpus` against the fake `libnvidia-ml.so` (tests/fake-nvml) and without NVML.
//!
//! The fake is built with `cargo build -p fake-nvml` into the target directory this test
//! executable lives in (a no-op when fresh); the scenario reaches the `lem` process
//! through `FAKE_NVML_SCENARIO`.

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

#[path = "../../tests/support.rs"]
mod support;
use support::build_fake_nvml as fake_library;

fn lem(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lem"));
    c.env_remove("LEM_NVML_LIB")
        .env_remove("FAKE_NVML_SCENARIO");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.args(args).output().unwrap();
    eprintln!(
        "$ lem {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scenario() -> Value {
    json!({
        "driver_version": "535.104.12",
        "gpus": [
            { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-5c1f0a3e-0000-4000-8000-000000000001",
              "memory_total_bytes": 85_520_809_984u64, "power_limit_mw": 700_000,
              "power": [[0.0, 70.0]] },
            { "name": "NVIDIA A100-SXM4-40GB", "uuid": "GPU-5c1f0a3e-0000-4000-8000-000000000002",
              "memory_total_bytes": 42_949_672_960u64, "power_limit_mw": 400_000, "mig_mode": 1,
              "fail": { "nvmlDeviceGetPowerManagementLimit": "NOT_SUPPORTED" } }
        ]
    })
}

#[test]
fn gpus_json_lists_the_scenario_gpus() {
    let lib = fake_library();
    let dir = tempfile::tempdir().unwrap();
    let scenario_path = dir.path().join("scenario.json");
    let s = scenario();
    std::fs::write(&scenario_path, s.to_string()).unwrap();
    let env = [("FAKE_NVML_SCENARIO", scenario_path.as_path())];

    let out = lem(
        &["gpus", "--json", "--nvml-lib", lib.to_str().unwrap()],
        &env,
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["nvml_available"], true);
    assert_eq!(v["driver_version"], "fake-nvml-535.104.12");
    let gpus = v["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    for (i, (got, want)) in gpus.iter().zip(s["gpus"].as_array().unwrap()).enumerate() {
        assert_eq!(got["index"], i);
        assert_eq!(got["name"], want["name"]);
        assert_eq!(got["uuid"], want["uuid"]);
        assert_eq!(got["memory_total_bytes"], want["memory_total_bytes"]);
        assert_eq!(got["mig_mode"]["current"], want["mig_mode"] == 1);
    }
    assert_eq!(gpus[0]["power_limit_w"], 700.0);
    assert_eq!(gpus[1]["power_limit_w"], Value::Null);
    assert!(gpus[1]["unavailable"]["power_limit_w"]
        .as_str()
        .unwrap()
        .contains("NotSupported"));

    // The same through LEM_NVML_LIB, as a table.
    let out = lem(&["gpus"], &[env[0], ("LEM_NVML_LIB", lib.as_path())]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    for col in ["IDX", "NAME", "UUID", "MEMORY", "POWER LIMIT", "MIG"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(text.contains("GPU-5c1f0a3e-0000-4000-8000-000000000001"));
    assert!(text.contains("700 W"));
    assert!(text.contains("enabled"));
    assert!(text.contains("Driver fake-nvml-535.104.12"));
}

#[test]
fn gpus_without_nvml_says_so_and_exits_zero() {
    let missing = Path::new("/nonexistent/libnvidia-ml.so.1");
    let out = lem(&["gpus", "--nvml-lib", missing.to_str().unwrap()], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No NVIDIA GPU found"), "{text}");
    assert!(text.contains("/nonexistent/libnvidia-ml.so.1"), "{text}");

    let out = lem(&["gpus", "--json"], &[("LEM_NVML_LIB", missing)]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nvml_available"], false);
    assert_eq!(v["gpus"], json!([]));
    assert!(v["reason"].as_str().unwrap().contains("cannot load"));
}
