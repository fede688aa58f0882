//! Where a conversion writes: overwrite rules, and a staging sibling renamed into place
//! so a failed conversion never leaves a half-written model where resolution finds it.

use super::error::{invalid, io_err, ConvertError};
use super::provenance::PROVENANCE_FILE;
use super::target::TargetFormat;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// Refuses an existing output unless `force`; with `force`, still refuses to replace
/// something that is not a converted model of the same kind (e.g. `--out ~`).
pub(super) fn check_output(
    output: &Path,
    format: TargetFormat,
    force: bool,
) -> Result<(), ConvertError> {
    if format == TargetFormat::Gguf
        && !output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Err(invalid(
            output,
            "a GGUF output must be a file ending in .gguf",
        ));
    }
    if !output.exists() && output.symlink_metadata().is_err() {
        return Ok(());
    }
    if !force {
        return Err(ConvertError::Exists {
            path: output.to_path_buf(),
        });
    }
    match format {
        TargetFormat::Gguf if output.is_file() => Ok(()),
        TargetFormat::Gguf => Err(invalid(
            output,
            "exists and is not a file; not replacing it",
        )),
        TargetFormat::Safetensors => {
            let empty = std::fs::read_dir(output)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if output.is_dir() && (empty || output.join(PROVENANCE_FILE).is_file()) {
                Ok(())
            } else {
                Err(invalid(
                    output,
                    format!(
                        "exists and is not a directory written by `lem model convert` \
                         (no {PROVENANCE_FILE}); not replacing it even with --force"
                    ),
                ))
            }
        }
    }
}

/// A hidden sibling to write into before renaming over `output`.
fn staging_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Moves `staged` to `output`, replacing what `check_output` allowed to be replaced.
fn commit(staged: &Path, output: &Path) -> Result<(), ConvertError> {
    if output.is_dir() {
        std::fs::remove_dir_all(output).map_err(io_err(output))?;
    }
    std::fs::rename(staged, output).map_err(io_err(output))
}

/// Runs `write` into a staging path, cleaning up on failure.
pub(super) fn staged<T>(
    output: &Path,
    dir: bool,
    write: impl FnOnce(&Path) -> Result<T, ConvertError>,
) -> Result<T, ConvertError> {
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = staging_path(output);
    let cleanup = |tmp: &Path| {
        let _ = if dir {
            std::fs::remove_dir_all(tmp)
        } else {
            std::fs::remove_file(tmp)
        };
    };
    cleanup(&tmp);
    if dir {
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let result = write(&tmp).and_then(|v| commit(&tmp, output).map(|_| v));
    if result.is_err() {
        cleanup(&tmp);
    }
    result
}

pub(super) fn write_json(path: &Path, v: &Json) -> Result<(), ConvertError> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    std::fs::write(path, text + "\n").map_err(io_err(path))
}
