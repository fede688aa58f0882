//! Shared by the SmolLM2 test binaries: where the real model is.

use std::path::PathBuf;

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
#[allow(dead_code)] // not every test binary that includes this module calls it
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
