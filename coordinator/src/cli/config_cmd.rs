//! `lem config validate|show|new|generate-grid`.

use super::error::{out, outln};
use super::experiment::load_file;
use super::{CliError, ConfigCommand, Outcome};
use lem_common::config::{self, CliOverrides, ResolvedConfig};
use std::path::{Path, PathBuf};

pub fn run(cmd: ConfigCommand) -> Result<Outcome, CliError> {
    match cmd {
        ConfigCommand::Validate { config } => validate(&config),
        ConfigCommand::Show { config, json } => show(&config, json),
        ConfigCommand::New { preset, output } => new(preset.as_deref(), output.as_deref()),
        ConfigCommand::GenerateGrid {
            base,
            vary,
            output_dir,
            force,
            validate,
            strict,
        } => generate_grid(&base, &vary, &output_dir, force, validate, strict),
    }
}

/// Loads and resolves a config file with no CLI overrides.
fn load_resolved(path: &Path) -> Result<ResolvedConfig, CliError> {
    load_file(path)
        .and_then(|loaded| config::resolve(None, Some(&loaded), &CliOverrides::default()))
        .map_err(|e| CliError::usage(e.to_string()))
}

fn validate(path: &Path) -> Result<Outcome, CliError> {
    let r = load_resolved(path)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for p in &config::unsupported(&r.config) {
        eprintln!(
            "note: {}: {} (lem will refuse to run this)",
            p.field, p.message
        );
    }
    outln!("{}: valid", path.display());
    Ok(Outcome::Success)
}

fn show(path: &Path, json: bool) -> Result<Outcome, CliError> {
    let r = load_resolved(path)?;
    let v = r.config.to_json();
    if json {
        outln!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
    } else {
        out!("{}", serde_yaml::to_string(&v).expect("plain data"));
    }
    Ok(Outcome::Success)
}

fn new(preset: Option<&str>, output: Option<&Path>) -> Result<Outcome, CliError> {
    let text = config::new_config_yaml(preset).map_err(|e| CliError::usage(e.to_string()))?;
    match output {
        None => out!("{text}"),
        Some(p) => {
            if p.exists() {
                return Err(CliError::usage(format!(
                    "{} exists; not overwriting",
                    p.display()
                )));
            }
            std::fs::write(p, text)
                .map_err(|e| CliError::failure(format!("cannot write {}: {e}", p.display())))?;
            outln!("wrote {}", p.display());
        }
    }
    Ok(Outcome::Success)
}

fn generate_grid(
    base: &Path,
    vary: &[String],
    out: &Path,
    force: bool,
    validate: bool,
    strict: bool,
) -> Result<Outcome, CliError> {
    let loaded = load_file(base).map_err(|e| CliError::usage(e.to_string()))?;
    let mut axes = Vec::new();
    for spec in vary {
        let axis =
            config::parse_vary(spec).map_err(|e| CliError::usage(format!("--vary {spec}: {e}")))?;
        axes.push(axis);
    }
    let points = config::expand_grid(&loaded, &axes);
    let invalid: Vec<_> = points.iter().filter(|p| !p.problems.is_empty()).collect();
    for p in &invalid {
        eprintln!("invalid combination {}:", p.file_name);
        for problem in &p.problems {
            eprintln!("  {}: {}", problem.field, problem.message);
        }
    }
    if strict && !invalid.is_empty() {
        return Err(CliError::usage(format!(
            "{} of {} combinations are invalid (--strict); nothing written",
            invalid.len(),
            points.len()
        )));
    }
    prepare_output_dir(out, force)?;
    let mut written = 0;
    for p in &points {
        if validate && !p.problems.is_empty() {
            continue;
        }
        let path = out.join(&p.file_name);
        std::fs::write(&path, &p.yaml)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))?;
        written += 1;
    }
    outln!(
        "wrote {written} of {} configs to {}{}",
        points.len(),
        out.display(),
        if validate && !invalid.is_empty() {
            format!(" ({} invalid skipped)", invalid.len())
        } else if !invalid.is_empty() {
            format!(
                " ({} invalid written; --validate skips them, --strict refuses)",
                invalid.len()
            )
        } else {
            String::new()
        }
    );
    Ok(if invalid.is_empty() || validate {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

/// Makes `out` ready for a fresh grid: created if missing; refused if it holds anything,
/// unless `force`, which removes its `.yaml`/`.yml`/`.json` files (a stale config would
/// otherwise be run by `lem batch DIR/*.yaml`). Anything else in it is never deleted.
fn prepare_output_dir(out: &Path, force: bool) -> Result<(), CliError> {
    let cannot = |what: &str, e: std::io::Error| {
        CliError::failure(format!("cannot {what} {}: {e}", out.display()))
    };
    if !out.exists() {
        return std::fs::create_dir_all(out).map_err(|e| cannot("create", e));
    }
    if !out.is_dir() {
        return Err(CliError::usage(format!(
            "{} exists and is not a folder",
            out.display()
        )));
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| cannot("read", e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| cannot("read", e))?;
    if entries.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(CliError::usage(format!(
            "{} is not empty ({} entries); choose a new folder, or add --force to remove its config files first",
            out.display(),
            entries.len()
        )));
    }
    let is_config = |p: &Path| {
        p.is_file()
            && p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
    };
    let others: Vec<&PathBuf> = entries.iter().filter(|p| !is_config(p)).collect();
    if let Some(other) = others.first() {
        return Err(CliError::usage(format!(
            "{} holds {} besides config files; --force removes only .yaml/.yml/.json files, so choose a new folder",
            out.display(),
            other.display()
        )));
    }
    for p in &entries {
        std::fs::remove_file(p)
            .map_err(|e| CliError::failure(format!("cannot remove {}: {e}", p.display())))?;
    }
    Ok(())
}
