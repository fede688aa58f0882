//! Names of converted models: the base model id and the default output path (the CLI's).

use super::target::{TargetDtype, TargetFormat};
use std::path::{Path, PathBuf};

/// `name` without a trailing precision/format tag (`-f16`, `.Q4_1`, `-GGUF`), so converted
/// models are named after the model, not after what they were converted from.
pub fn strip_dtype_suffix(name: &str) -> &str {
    let Some(i) = name.rfind(['-', '.']).filter(|&i| i > 0) else {
        return name;
    };
    let tag = name[i + 1..].to_ascii_lowercase();
    // q4_1, q8_0, q4_k_m, ...
    let quant = tag.strip_prefix('q').is_some_and(|r| {
        r.starts_with(|c: char| c.is_ascii_digit())
            && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    let float = matches!(
        tag.as_str(),
        "f32" | "f16" | "bf16" | "fp32" | "fp16" | "gguf"
    );
    if quant || float {
        &name[..i]
    } else {
        name
    }
}

/// The `org/name` a converted model is named after: the repo id when `input` is one,
/// else the folder of the lem model dir or Hugging Face cache holding `resolved`, else
/// `local/<file or folder name>`. Any precision tag is stripped.
pub fn base_model_id(
    input: &str,
    resolved: &Path,
    lem_model_dir: &Path,
    hf_cache_dir: &Path,
) -> String {
    let input = input.trim();
    let without_selector = input.split_once(':').map_or(input, |(b, _)| b);
    let id = if !Path::new(input).exists() && crate::hub::is_repo_id(without_selector) {
        without_selector.to_string()
    } else {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let resolved = canon(resolved);
        let first_component = |root: &Path| {
            resolved
                .strip_prefix(canon(root))
                .ok()
                .and_then(|rel| rel.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
        };
        if let Some(folder) = first_component(lem_model_dir).filter(|f| f.contains("--")) {
            folder.replacen("--", "/", 1)
        } else if let Some(folder) = first_component(hf_cache_dir)
            .and_then(|f| f.strip_prefix("models--").map(str::to_string))
        {
            folder.replacen("--", "/", 1)
        } else {
            let stem = if resolved.is_file() {
                resolved.file_stem()
            } else {
                resolved.file_name()
            };
            format!(
                "local/{}",
                stem.map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            )
        }
    };
    let (org, name) = id.split_once('/').unwrap_or(("local", id.as_str()));
    format!("{org}/{}", strip_dtype_suffix(name))
}

/// Where a conversion goes by default, and the `model_name` that resolves to it:
/// safetensors into `<lem_model_dir>/<org>--<name>-<dtype>/` (`org/name-dtype`); GGUF
/// into `<lem_model_dir>/<org>--<name>-GGUF/<name>-<dtype>.gguf` (`org/name-GGUF:dtype`),
/// one folder for all precisions as GGUF repos on the hub do. A GGUF never goes beside
/// the original or into a safetensors folder: a second GGUF there would make the
/// original's name ambiguous, and a GGUF shadows safetensors in the same folder.
pub fn default_output(
    lem_model_dir: &Path,
    base_id: &str,
    format: TargetFormat,
    dtype: TargetDtype,
) -> (PathBuf, String) {
    let (org, name) = base_id.split_once('/').unwrap_or(("local", base_id));
    let tag = dtype.name();
    match format {
        TargetFormat::Safetensors => (
            lem_model_dir.join(format!("{org}--{name}-{tag}")),
            format!("{org}/{name}-{tag}"),
        ),
        TargetFormat::Gguf => (
            lem_model_dir
                .join(format!("{org}--{name}-GGUF"))
                .join(format!("{name}-{tag}.gguf")),
            format!("{org}/{name}-GGUF:{tag}"),
        ),
    }
}
