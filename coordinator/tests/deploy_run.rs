//! The deployment files in deploy/ run, where this machine can run them (the parse checks
//! are in `deploy_files.rs`):
//! - the systemd units, pointed at the built `lem` and `lem-agent`, pass `systemd-analyze
//!   verify` without a complaint and keep their offline `systemd-analyze security`
//!   exposure at or below what they reach today;
//! - the Slurm batch script, submitted with `sbatch` to a one-node Slurm cluster set up on
//!   this host by `scripts/slurm-smoke.sh`, starts an agent that joins a `lem serve` on
//!   loopback, serves a sweep and stops cleanly on `scancel`;
//! - the Kubernetes manifests validate strictly (unknown fields refused) against the
//!   schemas of two Kubernetes releases (PyPI `kubernetes-validate`).
//!
//! Each skips with the reason printed when its tool is missing (Slurm also needs root);
//! `.ci/run` installs Slurm, munge and kubernetes-validate (`scripts/setup-slurm.sh`,
//! `scripts/setup-k8s-validate.sh`), so CI runs them all.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use serve_support::{node::agent_binary, support};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `name` found on PATH (or as a path that exists).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn deploy_dir() -> PathBuf {
    support::repo_root().join("deploy")
}

/// A copy of the unit `file` in `dir` with its ExecStart binary replaced by `binary`.
fn unit_running(dir: &Path, file: &str, installed: &str, binary: &Path) -> PathBuf {
    let source = deploy_dir().join("systemd").join(file);
    let text =
        std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let line = format!("ExecStart={installed}");
    assert!(
        text.lines()
            .any(|l| l == line || l.starts_with(&format!("{line} "))),
        "{file}: no `{line}` line"
    );
    let copy = dir.join(file);
    std::fs::write(
        &copy,
        text.replace(&line, &format!("ExecStart={}", binary.display())),
    )
    .unwrap();
    copy
}

/// Offline security exposure of each unit, at most this (systemd's scale 0–10, times 10
/// as `--threshold` takes it): what the units reach today, so a removed hardening line
/// fails here.
const EXPOSURE_LIMITS: [(&str, u32); 2] = [("lem-serve.service", 15), ("lem-agent.service", 34)];

#[test]
fn systemd_units_on_the_built_binaries_pass_verify_and_keep_their_exposure() {
    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lem = PathBuf::from(env!("CARGO_BIN_EXE_lem"));
    let units = [
        unit_running(dir.path(), "lem-serve.service", "/usr/local/bin/lem", &lem),
        unit_running(
            dir.path(),
            "lem-agent.service",
            "/usr/local/bin/lem-agent",
            &agent_binary(),
        ),
    ];

    let out = Command::new(&analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Offline, verify reports on the unit text and the binary; lines about the host's
    // own units (other services it loads) are not ours.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("lem-serve.service") || l.contains("lem-agent.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    for (unit, (name, limit)) in units.iter().zip(EXPOSURE_LIMITS) {
        assert!(unit.ends_with(name));
        let out = Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={limit}"))
            .arg(unit)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let overall = stdout
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no overall exposure in:\n{stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!("{overall}");
        assert!(
            out.status.success(),
            "{name}: exposure above {}.{}: {overall}\n{stdout}",
            limit / 10,
            limit % 10
        );
    }
}

#[test]
fn slurm_batch_script_starts_an_agent_that_serves_a_sweep_and_stops_on_scancel() {
    let missing: Vec<&str> = ["sbatch", "slurmctld", "slurmd", "munged", "mungekey"]
        .into_iter()
        .filter(|tool| on_path(tool).is_none())
        .collect();
    if !missing.is_empty() {
        let reason = format!(
            "{} not installed (scripts/setup-slurm.sh installs slurm-wlm and munge)",
            missing.join(", ")
        );
        // .ci/run installs them: under CI their absence is a broken setup, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a throwaway Slurm cluster needs root (slurmd runs jobs as users)");
        return;
    }
    // Slurm sets CUDA_VISIBLE_DEVICES only for GRES backed by device nodes; a container
    // without CAP_MKNOD cannot make them.
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = Command::new("mknod")
        .arg(probe_dir.path().join("probe"))
        .args(["c", "1", "3"])
        .output()
        .expect("mknod runs");
    if !probe.status.success() {
        eprintln!(
            "skipped: cannot make device nodes here (no CAP_MKNOD): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(support::repo_root().join("scripts/slurm-smoke.sh"))
        .env("LEM_BIN", env!("CARGO_BIN_EXE_lem"))
        .env("LEM_AGENT_BIN", agent_binary())
        .env("FAKE_NVML_LIB", support::build_fake_nvml())
        .env("LEM_TEST_MODEL", support::model())
        .env_remove("LEM_SMOKE_KEEP")
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "scripts/slurm-smoke.sh failed");
    // The script's own checks passed; its last line has the timings.
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("slurm-smoke: agent joined after ")
            && last.contains("sweep accepted after")
            && last.contains("after scancel")
            && last.contains("agent listed lost after"),
        "{last}"
    );
    eprintln!("slurm smoke run took {:?}", started.elapsed());
}

/// Kubernetes releases the manifests are checked against: the oldest one still common on
/// GPU clusters and the newest the tool bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];

#[test]
fn kubernetes_manifests_validate_strictly_against_the_kubernetes_schemas() {
    let tool = std::env::var_os("LEM_K8S_VALIDATE")
        .map(PathBuf::from)
        .or_else(|| on_path("kubernetes-validate"));
    let Some(tool) = tool else {
        let reason = "kubernetes-validate not found (scripts/setup-k8s-validate.sh installs it; \
                      LEM_K8S_VALIDATE names it)";
        // .ci/run installs it: under CI its absence is a broken setup, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{reason}");
        eprintln!("skipped: {reason}");
        return;
    };
    let manifests: Vec<PathBuf> = ["coordinator.yaml", "agent-daemonset.yaml"]
        .iter()
        .map(|f| deploy_dir().join("kubernetes").join(f))
        .collect();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&tool)
            .args(["--strict", "--kubernetes-version", version])
            .args(&manifests)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{report}");
        assert!(out.status.success(), "Kubernetes {version}:\n{report}");
        // Every resource of both files was checked (a file the tool skipped would not fail).
        for resource in [
            "statefulset/lem-coordinator",
            "service/lem-coordinator",
            "daemonset/lem-agent",
            "secret/lem-join-token",
        ] {
            assert!(
                report.contains(&format!("passed for resource {resource}")),
                "Kubernetes {version}: {resource} not validated:\n{report}"
            );
        }
    }
}
