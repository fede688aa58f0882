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

#[test]
fn gpus_lists_mig_instances_under_their_parent() {
    let lib = fake_library();
    let scenario_path = support::repo_root().join("tests/fake-nvml/scenarios/a100-mig.json");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&scenario_path).unwrap()).unwrap();
    let env = [
        ("FAKE_NVML_SCENARIO", scenario_path.as_path()),
        ("LEM_NVML_LIB", lib.as_path()),
    ];
    let out = lem(&["gpus", "--json"], &env);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gpu = &v["gpus"][0];
    assert_eq!(gpu["mig_mode"]["current"], true);
    let want = s["gpus"][0]["mig_instances"].as_array().unwrap();
    let got = gpu["mig_instances"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g["mig_index"], i);
        assert_eq!(g["parent_index"], 0);
        assert_eq!(g["parent_uuid"], s["gpus"][0]["uuid"]);
        assert_eq!(g["uuid"], w["uuid"]);
        assert_eq!(g["gpu_instance_id"], w["gpu_instance_id"]);
        assert_eq!(g["compute_instance_id"], w["compute_instance_id"]);
        assert_eq!(g["compute_slices"], w["slices"]);
        assert_eq!(g["sm_count"], w["sm_count"]);
        assert_eq!(g["memory_total_bytes"], w["memory_total_bytes"]);
        // Derived by lem from slices and memory; the scenario names it for reference.
        assert_eq!(g["profile"], w["profile"]);
    }

    let out = lem(&["gpus"], &env);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let parent = lines.iter().position(|l| l.starts_with("0 ")).unwrap();
    assert!(lines[parent].contains("NVIDIA A100-SXM4-40GB"));
    // Slices follow their parent, indented, with profile, UUID and instance ids.
    for (k, w) in want.iter().enumerate() {
        let l = lines[parent + 1 + k];
        assert!(l.starts_with(&format!("  0:{k}")), "{l}");
        assert!(
            l.contains(&format!("MIG {}", w["profile"].as_str().unwrap())),
            "{l}"
        );
        assert!(l.contains(w["uuid"].as_str().unwrap()), "{l}");
        assert!(
            l.contains(&format!("GI {} CI 0", w["gpu_instance_id"])),
            "{l}"
        );
        assert!(
            l.contains(&format!("{} slices, {} SMs", w["slices"], w["sm_count"])),
            "{l}"
        );
    }
}
