//! Helpers shared by test binaries of several crates (included with `#[path]`):
//! where the real model is, and how to get the fake NVML library.

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

/// The model's path; `None` (with a skip message) when absent, a panic under `CI`.
pub fn model_path() -> Option<PathBuf> {
    let path = smollm2_path();
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but the test model is missing at {} (set LEM_TEST_MODEL or run scripts/fetch-model.sh)",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: SmolLM2 GGUF not found at {} (set LEM_TEST_MODEL or run scripts/fetch-model.sh)",
        path.display()
    );
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
