//! `lem config validate|show|new|generate-grid`.

use super::experiment::load_file;
use super::{exit, ConfigCommand};
use lem_common::config::{self, CliOverrides, ResolvedConfig};
use std::path::Path;

pub fn run(cmd: ConfigCommand) -> i32 {
    match cmd {
        ConfigCommand::Validate { config } => validate(&config),
        ConfigCommand::Show { config, json } => show(&config, json),
        ConfigCommand::New { preset, output } => new(preset.as_deref(), output.as_deref()),
        ConfigCommand::GenerateGrid {
            base,
            vary,
            output_dir,
            validate,
            strict,
        } => generate_grid(&base, &vary, &output_dir, validate, strict),
    }
}

/// Loads and resolves a config file with no CLI overrides; prints errors.
fn load_resolved(path: &Path) -> Result<ResolvedConfig, i32> {
    let resolved = load_file(path)
        .and_then(|loaded| config::resolve(None, Some(&loaded), &CliOverrides::default()));
    resolved.map_err(|e| {
        eprintln!("{e}");
        exit::USAGE
    })
}

fn validate(path: &Path) -> i32 {
    let r = match load_resolved(path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for p in &config::unsupported(&r.config) {
        eprintln!(
            "note: {}: {} (lem will refuse to run this)",
            p.field, p.message
        );
    }
    println!("{}: valid", path.display());
    exit::OK
}

fn show(path: &Path, json: bool) -> i32 {
    let r = match load_resolved(path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let v = r.config.to_json();
    if json {
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
    } else {
        print!("{}", serde_yaml::to_string(&v).expect("plain data"));
    }
    exit::OK
}

fn new(preset: Option<&str>, output: Option<&Path>) -> i32 {
    let text = match config::new_config_yaml(preset) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    match output {
        None => {
            print!("{text}");
            exit::OK
        }
        Some(p) => {
            if p.exists() {
                eprintln!("error: {} exists; not overwriting", p.display());
                return exit::USAGE;
            }
            match std::fs::write(p, text) {
                Ok(()) => {
                    println!("wrote {}", p.display());
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", p.display());
                    exit::FAILURE
                }
            }
        }
    }
}

fn generate_grid(base: &Path, vary: &[String], out: &Path, validate: bool, strict: bool) -> i32 {
    let loaded = match load_file(base) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return exit::USAGE;
        }
    };
    let mut axes = Vec::new();
    for spec in vary {
        match config::parse_vary(spec) {
            Ok(a) => axes.push(a),
            Err(e) => {
                eprintln!("error: --vary {spec}: {e}");
                return exit::USAGE;
            }
        }
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
        eprintln!(
            "error: {} of {} combinations are invalid (--strict); nothing written",
            invalid.len(),
            points.len()
        );
        return exit::USAGE;
    }
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return exit::FAILURE;
    }
    let mut written = 0;
    for p in &points {
        if validate && !p.problems.is_empty() {
            continue;
        }
        let path = out.join(&p.file_name);
        if let Err(e) = std::fs::write(&path, &p.yaml) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return exit::FAILURE;
        }
        written += 1;
    }
    println!(
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
    if invalid.is_empty() || validate {
        exit::OK
    } else {
        exit::PARTIAL
    }
}
