//! `lem doctor` through the built binary, on a simulated node: the fake NVML (a MIG
//! scenario) and a powercap tree built in a temp dir, with readable and unreadable
//! counters. Expected values come from the scenario and the tree, not from doctor.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

#[path = "../../tests/support.rs"]
mod support;
use support::build_fake_nvml as fake_library;

/// A machine: powercap tree, caches and data dir, all under one temp dir.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        let m = Machine {
            dir: tempfile::tempdir().unwrap(),
        };
        for (zone, name) in [
            ("intel-rapl:0", "package-0"),
            ("intel-rapl:0:0", "dram"),
            // Skipped by lem (overlaps the package): doctor must not list it.
            ("intel-rapl:1", "psys"),
        ] {
            let d = m.powercap().join(zone);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("energy_uj"), "1000\n").unwrap();
            std::fs::write(d.join("max_energy_range_uj"), "262143328850\n").unwrap();
        }
        m
    }

    fn powercap(&self) -> std::path::PathBuf {
        self.dir.path().join("powercap")
    }

    fn lem(&self, args: &[&str], envs: &[(&str, &Path)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lem"));
        c.current_dir(self.dir.path())
            .env_remove("LEM_NVML_LIB")
            .env_remove("FAKE_NVML_SCENARIO")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("LEM_OFFLINE")
            .env_remove("LEM_DATA_DIR")
            .env("LEM_POWERCAP_ROOT", self.powercap())
            .env("LEM_MODEL_DIR", self.dir.path().join("models"))
            .env("HF_HUB_CACHE", self.dir.path().join("hf"));
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
}

fn checks(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("stdout is JSON")
        .as_array()
        .expect("a list of checks")
        .clone()
}

fn area<'a>(checks: &'a [Value], name: &str) -> Vec<&'a Value> {
    checks.iter().filter(|c| c["area"] == name).collect()
}

#[test]
fn simulated_mig_node_with_readable_rapl() {
    let m = Machine::new();
    let lib = fake_library();
    let scenario_path = support::repo_root().join("tests/fake-nvml/scenarios/a100-mig.json");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&scenario_path).unwrap()).unwrap();
    let out = m.lem(
        &["doctor", "--json"],
        &[
            ("FAKE_NVML_SCENARIO", scenario_path.as_path()),
            ("LEM_NVML_LIB", lib.as_path()),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let all = checks(&out);

    // NVML loads, but a named library is a simulated node: a warning that says so.
    let nvml = area(&all, "nvml");
    assert_eq!(nvml.len(), 1);
    assert_eq!(nvml[0]["status"], "warning");
    let msg = nvml[0]["message"].as_str().unwrap();
    let gpus_in_scenario = s["gpus"].as_array().unwrap().len();
    assert!(msg.contains(&format!("{gpus_in_scenario} GPU(s)")), "{msg}");
    assert!(msg.contains(s["driver_version"].as_str().unwrap()), "{msg}");
    assert!(msg.contains("simulated"), "{msg}");

    // One line per GPU, with its MIG instances' profiles.
    let gpus = area(&all, "gpu");
    assert_eq!(gpus.len(), gpus_in_scenario);
    let g = &s["gpus"][0];
    let line = gpus[0]["message"].as_str().unwrap();
    assert!(line.contains(g["name"].as_str().unwrap()), "{line}");
    assert!(line.contains(g["uuid"].as_str().unwrap()), "{line}");
    let instances = g["mig_instances"].as_array().unwrap();
    assert!(
        line.contains(&format!("MIG enabled, {} instance(s)", instances.len())),
        "{line}"
    );
    for i in instances {
        assert!(line.contains(i["profile"].as_str().unwrap()), "{line}");
    }

    // Package and its DRAM readable; psys not listed.
    let rapl = area(&all, "rapl");
    assert_eq!(rapl.len(), 2, "{rapl:?}");
    for (c, id) in rapl.iter().zip(["package-0", "package-0/dram"]) {
        assert_eq!(c["status"], "ok");
        assert!(c["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id}: ")));
    }
    // Not created by looking.
    assert!(!m.dir.path().join("results").exists());
}

#[test]
fn no_nvml_and_no_powercap_are_warnings_with_remedies_and_exit_0() {
    let m = Machine::new();
    std::fs::remove_dir_all(m.powercap()).unwrap();
    let missing = Path::new("/nonexistent/libnvidia-ml.so.1");
    let out = m.lem(&["doctor", "--json"], &[("LEM_NVML_LIB", missing)]);
    assert_eq!(out.status.code(), Some(0));
    let all = checks(&out);
    for name in ["nvml", "rapl"] {
        let c = area(&all, name);
        assert_eq!(c.len(), 1, "{name}: {c:?}");
        assert_eq!(c[0]["status"], "warning");
        assert!(c[0]["remedy"].as_str().is_some_and(|r| !r.is_empty()));
    }
    assert!(area(&all, "nvml")[0]["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/libnvidia-ml.so.1"));
    // No model in the empty caches: a warning that says how to get one.
    assert_eq!(area(&all, "models")[0]["status"], "warning");
    // Every check has a status of the three, and a remedy exactly when not ok.
    for c in &all {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warning", "error"].contains(&status), "{c}");
        assert_eq!(c["remedy"].is_null(), status == "ok", "{c}");
    }
}

/// Mode 000 stops only non-root users (root reads it anyway); the injected EACCES case
/// is in the unit tests of `cli/doctor.rs`.
#[test]
fn mode_000_counter_is_a_warning_for_non_root() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("running as root: mode 000 is readable; covered by the unit test");
        return;
    }
    let m = Machine::new();
    let energy = m.powercap().join("intel-rapl:0/energy_uj");
    std::fs::set_permissions(&energy, std::fs::Permissions::from_mode(0o000)).unwrap();
    let missing = Path::new("/nonexistent/libnvidia-ml.so.1");
    let out = m.lem(&["doctor", "--json"], &[("LEM_NVML_LIB", missing)]);
    assert_eq!(out.status.code(), Some(0));
    let all = checks(&out);
    let pkg = area(&all, "rapl")[0];
    assert_eq!(pkg["status"], "warning");
    assert!(pkg["remedy"]
        .as_str()
        .unwrap()
        .contains(&energy.display().to_string()));
}

#[test]
fn a_broken_store_is_an_error_line_and_exit_1() {
    let m = Machine::new();
    let store = m.dir.path().join("results/lem.sled");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("conf"), b"\xff\x00not a sled config").unwrap();
    std::fs::write(store.join("db"), b"garbage").unwrap();
    let missing = Path::new("/nonexistent/libnvidia-ml.so.1");
    let out = m.lem(&["doctor"], &[("LEM_NVML_LIB", missing)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("error") && l.contains("store"))
        .unwrap_or_else(|| panic!("no store error line in:\n{text}"));
    assert!(line.contains("lem.sled"), "{line}");
    assert!(text.contains("fix: move"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 error(s)"));
}

#[test]
fn hub_line_reports_the_offline_setting_without_calling_out() {
    let m = Machine::new();
    let missing = Path::new("/nonexistent/libnvidia-ml.so.1");
    let one = Path::new("1");
    let out = m.lem(
        &["doctor", "--json"],
        &[("LEM_NVML_LIB", missing), ("HF_HUB_OFFLINE", one)],
    );
    let all = checks(&out);
    assert!(area(&all, "hub")[0]["message"]
        .as_str()
        .unwrap()
        .contains("offline"));
    let out = m.lem(&["doctor", "--json"], &[("LEM_NVML_LIB", missing)]);
    let all = checks(&out);
    assert!(area(&all, "hub")[0]["message"]
        .as_str()
        .unwrap()
        .contains("not tested"));
}
