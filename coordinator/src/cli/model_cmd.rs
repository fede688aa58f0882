//! `lem models` (what the caches hold) and `lem model convert` (GGUF ⇄ safetensors at a
//! chosen precision, into lem's model dir so the result resolves by name).

use super::error::outln;
use super::{CliError, Outcome};
use clap::{Args, Subcommand};
use lem_agent::convert::{self, TargetDtype, TargetFormat};
use lem_agent::hub::{self, ResolveOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Convert a model to safetensors (dequantised, f32|f16|bf16) or GGUF (f32|f16|q8_0|q4_0).
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// A model name as in `model_name` (repo id, `org/name:QUANT`) or a path to a .gguf
    /// file or safetensors directory.
    pub input: String,
    /// Output format: safetensors | gguf.
    #[arg(long, value_parser = parse_format)]
    pub to: TargetFormat,
    /// Output precision: f32 | f16 | bf16 (safetensors); f32 | f16 | q8_0 | q4_0 (gguf).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: TargetDtype,
    /// Output directory (safetensors) or .gguf file. Default: lem's model dir, as
    /// `<org>--<name>-<dtype>/`, usable as `model_name: <org>/<name>-<dtype>`.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Replace an existing output (only one that `lem model convert` wrote).
    #[arg(long)]
    pub force: bool,
}

fn parse_format(s: &str) -> Result<TargetFormat, String> {
    s.parse()
}

fn parse_dtype(s: &str) -> Result<TargetDtype, String> {
    s.parse()
}

pub fn run(cmd: ModelCommand) -> Result<Outcome, CliError> {
    match cmd {
        ModelCommand::Convert(args) => convert_cmd(args, &ResolveOptions::from_env()),
    }
}

/// The first of `candidates` that resolves (offline) to exactly `path`.
fn first_resolving(candidates: &[String], path: &Path, opts: &ResolveOptions) -> Option<String> {
    let offline = ResolveOptions {
        offline: true,
        ..opts.clone()
    };
    candidates
        .iter()
        .find(|n| hub::resolve_model(n, &offline).is_ok_and(|r| r.format.path() == path))
        .cloned()
}

/// Names that may resolve to a GGUF `file` of repo `id`: pinned by its precision tag
/// (`org/name:q8_0`), by file name, or bare (`pinned_first` orders them).
fn gguf_names(id: &str, file: &Path, pinned_first: bool) -> Vec<String> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag = stem.rsplit(['-', '.']).next().unwrap_or(&stem).to_string();
    let file_name = file
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pinned = [format!("{id}:{tag}"), format!("{id}:{file_name}")];
    let mut v = Vec::new();
    if !pinned_first {
        v.push(id.to_string());
    }
    v.extend(pinned);
    if pinned_first {
        v.push(id.to_string());
    }
    v
}

/// The `model_name` that resolves to a conversion's output when it sits in lem's model
/// dir as `<org>--<name>/` (itself, or a GGUF inside); else the path itself.
fn usable_name(path: &Path, opts: &ResolveOptions) -> String {
    let is_gguf = path.extension().is_some_and(|e| e == "gguf");
    let folder = if is_gguf { path.parent() } else { Some(path) };
    let id = folder
        .filter(|f| f.parent() == Some(opts.lem_model_dir.as_path()))
        .and_then(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| {
            n.split_once("--")
                .map(|(org, rest)| format!("{org}/{rest}"))
        });
    let candidates = match (&id, is_gguf) {
        (Some(id), true) => gguf_names(id, path, true),
        (Some(id), false) => vec![id.clone()],
        (None, _) => Vec::new(),
    };
    first_resolving(&candidates, path, opts).unwrap_or_else(|| path.display().to_string())
}

fn convert_cmd(args: ConvertArgs, opts: &ResolveOptions) -> Result<Outcome, CliError> {
    if !args.dtype.supported_by(args.to) {
        return Err(CliError::usage(format!(
            "--to {} cannot hold {} weights; use --dtype {}",
            args.to.name(),
            args.dtype.name(),
            TargetDtype::names_for(args.to)
        )));
    }
    let resolved =
        hub::resolve_model(&args.input, opts).map_err(|e| CliError::failure(e.to_string()))?;
    let input = resolved.format.path().to_path_buf();
    let base = convert::base_model_id(&args.input, &input, &opts.lem_model_dir, &opts.hf_cache_dir);
    let output = match &args.out {
        None => convert::default_output(&opts.lem_model_dir, &base, args.to, args.dtype).0,
        // A GGUF --out that is a folder gets the default file name inside it.
        Some(out) if args.to == TargetFormat::Gguf && !out.to_string_lossy().ends_with(".gguf") => {
            let (file, _) = convert::default_output(Path::new(""), &base, args.to, args.dtype);
            out.join(
                file.file_name()
                    .expect("default GGUF output has a file name"),
            )
        }
        Some(out) => out.clone(),
    };
    eprintln!(
        "converting {} ({}, {}) to {} {} ...",
        args.input,
        resolved.format.name(),
        input.display(),
        args.to.name(),
        args.dtype.name()
    );
    let report = convert::convert(&input, args.to, args.dtype, &output, args.force)
        .map_err(|e| CliError::failure(e.to_string()))?;
    let counts = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    outln!(
        "wrote {} ({} tensors: {}; {} from {}) in {:.1} s",
        report.output.display(),
        report.tensors,
        counts(&report.output_dtypes),
        human_bytes(report.weights_bytes),
        counts(&report.source_dtypes),
        report.elapsed_s
    );
    for note in &report.notes {
        outln!("note: {note}");
    }
    let name = usable_name(&report.output, opts);
    outln!("use it in a config:  model_name: {name}");
    outln!("or:                  lem experiment --preset quick-test --model {name}");
    Ok(Outcome::Success)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One row of `lem models`.
#[derive(Debug, serde::Serialize)]
struct ModelRow {
    /// What to write in `model_name` (a path when no name resolves to it).
    name: String,
    format: &'static str,
    /// Stored tensor types, most frequent first (`Q4_1`, `F32`, ...).
    dtypes: Vec<String>,
    dtype_counts: std::collections::BTreeMap<String, usize>,
    torch_dtype: Option<String>,
    size_bytes: u64,
    path: String,
    from: &'static str,
    converted_from: Option<String>,
    /// Why the header could not be read, when it could not.
    error: Option<String>,
}

/// The name a cached model resolves by: the repo id when that resolves to this very
/// file or directory, else the repo id pinned to the file, else the path.
fn cached_name(m: &hub::CachedModel, opts: &ResolveOptions) -> String {
    let candidates = if m.format == "gguf" {
        gguf_names(&m.repo_id, &m.path, false)
    } else {
        vec![m.repo_id.clone()]
    };
    first_resolving(&candidates, &m.path, opts).unwrap_or_else(|| m.path.display().to_string())
}

pub fn models(json: bool) -> Result<Outcome, CliError> {
    models_with(json, &ResolveOptions::from_env())
}

fn models_with(json: bool, opts: &ResolveOptions) -> Result<Outcome, CliError> {
    let rows: Vec<ModelRow> = hub::list_cached_models(opts)
        .iter()
        .map(|m| {
            let (info, error) = match convert::inspect_stored(m.format, &m.path) {
                Ok(i) => (i, None),
                Err(e) => (Default::default(), Some(e.to_string())),
            };
            let mut by_count: Vec<(&String, &usize)> = info.dtypes.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            ModelRow {
                name: cached_name(m, opts),
                format: m.format,
                dtypes: by_count.iter().map(|(k, _)| (*k).clone()).collect(),
                dtype_counts: info.dtypes.clone(),
                torch_dtype: info.torch_dtype,
                size_bytes: m.size_bytes,
                path: m.path.display().to_string(),
                from: m.from,
                converted_from: info.converted_from,
                error,
            }
        })
        .collect();
    if json {
        let v = serde_json::json!({
            "lem_model_dir": opts.lem_model_dir.display().to_string(),
            "hf_cache_dir": opts.hf_cache_dir.display().to_string(),
            "models": rows,
        });
        outln!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return Ok(Outcome::Success);
    }
    if rows.is_empty() {
        outln!(
            "No models in lem's model dir ({}) or the Hugging Face cache ({}).",
            opts.lem_model_dir.display(),
            opts.hf_cache_dir.display()
        );
        outln!("To get one:");
        outln!("  scripts/fetch-model.sh        installs SmolLM2-135M-Instruct (Q4_1 GGUF)");
        outln!("  lem model convert <MODEL> --to safetensors|gguf --dtype <DTYPE>");
        outln!("                                makes other precisions of a model you have");
        outln!("  a run with a Hugging Face repo id downloads it (unless HF_HUB_OFFLINE=1)");
        return Ok(Outcome::Success);
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    outln!(
        "{:<width$}  {:<11}  {:<16}  {:>9}  PATH",
        "NAME",
        "FORMAT",
        "DTYPE",
        "SIZE"
    );
    for r in &rows {
        let dtype = match &r.error {
            Some(_) => "unreadable".to_string(),
            None => r.dtypes.join("+"),
        };
        outln!(
            "{:<width$}  {:<11}  {:<16}  {:>9}  {}",
            r.name,
            r.format,
            dtype,
            human_bytes(r.size_bytes),
            r.path
        );
        if let Some(e) = &r.error {
            outln!("  error: {e}");
        }
    }
    outln!("\nUse NAME as `model_name` in a config or with --model. Other precisions:");
    outln!("  lem model convert <NAME> --to safetensors|gguf --dtype f32|f16|bf16|q8_0|q4_0");
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
