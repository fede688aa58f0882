//! Helpers shared by test binaries of several crates (included with `#[path]`):
//! where the real model is (fetched when absent), and how to get the fake NVML library.

#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates sit one level below the workspace root")
        .to_path_buf()
}

/// `LEM_TEST_MODEL`, else the GGUF that `scripts/fetch-model.sh` installs under
/// `$LEM_MODEL_DIR` (default `~/.cache/lem/models`).
pub fn smollm2_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LEM_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("LEM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lem/models")
        });
    dir.join("HuggingFaceTB--SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The real model's path. When it is absent, `scripts/fetch-model.sh` fetches it (as
/// `.ci/run` does), once per test binary; if that fails, the test fails with the one
/// command to run. Tests never pass by skipping.
pub fn model() -> PathBuf {
    static FETCHED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let path = smollm2_path();
    if path.exists() {
        return path;
    }
    if let Some(p) = std::env::var_os("LEM_TEST_MODEL") {
        panic!(
            "LEM_TEST_MODEL names {}, which does not exist; point it at the SmolLM2 GGUF or unset it",
            PathBuf::from(p).display()
        );
    }
    // One fetch at a time within this binary; the script itself moves the file into
    // place atomically, so other binaries racing it are safe.
    let _guard = FETCHED.lock().unwrap_or_else(|e| e.into_inner());
    if path.exists() {
        return path;
    }
    let script = repo_root().join("scripts/fetch-model.sh");
    eprintln!(
        "test model missing at {}; fetching it with {}",
        path.display(),
        script.display()
    );
    let fetched = Command::new("bash").arg(&script).status();
    match fetched {
        Ok(status) if status.success() && path.exists() => path,
        outcome => panic!(
            "the test model is missing at {} and fetching it failed ({outcome:?}); run:\n  scripts/fetch-model.sh",
            path.display()
        ),
    }
}

/// [`model`] for callers written when an absent model skipped the test: never `None`.
pub fn model_path() -> Option<PathBuf> {
    Some(model())
}

/// Gemma 3 270M (Q4_K_M) as `scripts/fetch-gemma3.sh` installs it, or `LEM_TEST_GEMMA3`.
/// Absent: None after printing why, so the test skips — unless `CI` is set, where
/// `.ci/run` fetches it and its absence fails the test.
pub fn gemma3_path() -> Option<PathBuf> {
    let path = match std::env::var_os("LEM_TEST_GEMMA3") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("LEM_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/lem/models")
            })
            .join("google--gemma-3-270m-GGUF/gemma-3-270m-q4_k_m.gguf"),
    };
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "Gemma 3 270M is not at {}; fetch it with scripts/fetch-gemma3.sh",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "CI is set: {why}");
    eprintln!("skipping: {why}");
    None
}

/// Builds the fake `libnvidia-ml` (tests/fake-nvml) into the target directory this test
/// executable lives in — a no-op when it is fresh — and returns its path.
pub fn build_fake_nvml() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test-exe>
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "fake-nvml", "--profile", &profile])
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo build -p fake-nvml");
    assert!(status.success(), "cargo build -p fake-nvml failed");
    let lib = profile_dir.join("libnvidia_ml.so");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// Adds what every test agent gets to `cmd` (the `lem-agent` binary, or a launcher that
/// execs it): the coordinator, node name and data dir, 500 ms heartbeats, quick
/// reconnects unless `extra` sets its own, the join token if any, then `extra`; none of
/// the variables that would point it elsewhere; the simulated node's hardware; offline,
/// info logs, no colour. A simulated node is laid out under `node_dir` as
/// `libnvidia-ml.so.1` (its copy of the fake NVML, so a rebuild elsewhere cannot change
/// it), `scenario.json` (tests/fake-nvml), `powercap/` and the agent's `agent-data/`.
pub fn agent_command(
    cmd: &mut Command,
    node_dir: &Path,
    node_name: &str,
    coordinator: &str,
    token: Option<&str>,
    extra: &[&str],
) {
    cmd.args(["--coordinator", coordinator, "--node-name", node_name])
        .arg("--data-dir")
        .arg(node_dir.join("agent-data"))
        .args(["--heartbeat-interval-ms", "500"]);
    if let Some(token) = token {
        cmd.args(["--join-token", token]);
    }
    if !extra.contains(&"--reconnect-initial-ms") {
        cmd.args([
            "--reconnect-initial-ms",
            "100",
            "--reconnect-max-ms",
            "1000",
        ]);
    }
    cmd.args(extra);
    for var in [
        "LEM_DATA_DIR",
        "LEM_AGENT_DATA_DIR",
        "LEM_JOIN_TOKEN",
        "LEM_AGENT_CONFIG",
        "LEM_COORDINATOR",
        "CUDA_VISIBLE_DEVICES",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HUB_OFFLINE", "1")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("LEM_NVML_LIB", node_dir.join("libnvidia-ml.so.1"))
        .env("FAKE_NVML_SCENARIO", node_dir.join("scenario.json"))
        .env("LEM_POWERCAP_ROOT", node_dir.join("powercap"));
}
