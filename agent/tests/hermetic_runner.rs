//! The runner is hermetic: nothing `JobRunner::run` can reach reads or sets an
//! environment variable. Everything a job needs arrives in its `RunContext`, built once
//! at start (`RunContext::from_env`, called by the CLI) or per lease by an agent.
//!
//! Checked on the source: every `env::var`/`set_var`/... in the agent crate must sit in
//! one of the few start-up functions allowed below, and no file on the run path may call
//! those functions (or the NVML helpers that fall back to `LEM_NVML_LIB`).

use std::path::{Path, PathBuf};

/// Calls that read or change the process environment.
const ENV_CALLS: &[&str] = &[
    "env::var(",
    "env::var_os(",
    "env::vars(",
    "env::vars_os(",
    "env::set_var(",
    "env::remove_var(",
];

/// (file under `agent/src`, function) pairs allowed to touch the environment: all run
/// once at process start, outside any job.
const ALLOWED: &[(&str, &str)] = &[
    // The embedded-mode snapshot `RunContext::from_env` takes.
    ("runner/context.rs", "capture"),
    // Model places for CLI commands (`lem models`, `lem doctor`) and `from_env` above.
    ("hub.rs", "from_env"),
    // `--nvml-lib` / `LEM_NVML_LIB` for the CLI's GPU commands.
    ("meter/nvml.rs", "resolve_lib_path"),
    // candle's pool sizes, set once when lem / lem-agent starts.
    ("threads.rs", "init"),
    // lem-agent's settings (flag > `LEM_*` variable > file), resolved once in `main`.
    ("main.rs", "run"),
    // lem-agent's device inventory at start (`CUDA_VISIBLE_DEVICES` as a scheduler set it).
    ("daemon/mod.rs", "start_agent"),
];

/// Files (or folders) a job runs through.
const RUN_PATH: &[&str] = &[
    "runner",
    "metered_window.rs",
    "serving.rs",
    "warmup.rs",
    "model_hash.rs",
    "engine",
    "openai",
    "prompts",
    "meter/claims.rs",
    "meter/ownership.rs",
    "meter/rapl.rs",
    "meter/rapl_poll.rs",
    "meter/sampler.rs",
    "meter/baseline.rs",
    "meter/phases.rs",
];

/// Start-up entry points the run path must not call: each reads the environment itself
/// or falls back to it.
const START_UP_ONLY: &[&str] = &[
    "RunContext::from_env",
    "EnvSnapshot::capture",
    "ResolveOptions::from_env",
    "resolve_lib_path(",
    "threads::init(",
    "init_nvml(",
    "discover_gpus(",
    "NvmlMeter::open(",
    "NvmlMeter::open_targets(",
    "nvml::simulation_reason(",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its unit tests (`#[cfg(test)]` to the end, as lem's files
/// keep them) and without comment lines.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// The function a line sits in: the last `fn name` at or above it.
fn enclosing_fn<'a>(lines: &[(usize, &'a str)], upto: usize) -> Option<&'a str> {
    lines[..=upto].iter().rev().find_map(|(_, l)| {
        let rest = l.split("fn ").nth(1)?;
        let name = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()?;
        (!name.is_empty()).then_some(name)
    })
}

/// Environment calls outside the allowed functions, as `file:line fn: code`.
fn env_calls_outside_allowed(rel: &str, text: &str) -> Vec<String> {
    let lines = code_lines(text);
    let mut found = Vec::new();
    for (idx, (n, line)) in lines.iter().enumerate() {
        if ENV_CALLS.iter().any(|c| line.contains(c)) {
            let func = enclosing_fn(&lines, idx).unwrap_or("?");
            if !ALLOWED.contains(&(rel, func)) {
                found.push(format!("{rel}:{n} in fn {func}: {}", line.trim()));
            }
        }
    }
    found
}

/// The context's own constructors: start-up code that lives beside the runner.
const START_UP_FILES: &[&str] = &["runner/context.rs"];

fn on_run_path(rel: &str) -> bool {
    !START_UP_FILES.contains(&rel)
        && RUN_PATH
            .iter()
            .any(|p| rel == *p || rel.starts_with(&format!("{p}/")))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(src_dir())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn nothing_but_start_up_functions_touch_the_environment() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    assert!(files.len() > 30, "the agent's sources were found");
    let mut found = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        found.extend(env_calls_outside_allowed(&relative(path), &text));
    }
    assert!(
        found.is_empty(),
        "environment read or set outside start-up (put it in RunContext instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_run_path_calls_no_start_up_function() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut checked = 0;
    let mut found = Vec::new();
    for path in &files {
        let rel = relative(path);
        if !on_run_path(&rel) {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in code_lines(&text) {
            // `pub fn resolve_lib_path(` and the like are definitions, not calls.
            if line.contains("fn ") {
                continue;
            }
            for call in START_UP_ONLY {
                if line.contains(call) {
                    found.push(format!("{rel}:{n}: {}", line.trim()));
                }
            }
        }
    }
    assert!(checked > 20, "the run path's files were found ({checked})");
    assert!(
        found.is_empty(),
        "the run path calls a start-up function:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_flags_an_env_read_in_a_job_function() {
    let src = "fn open_meter() {\n    let v = std::env::var(\"CUDA_VISIBLE_DEVICES\");\n}\n\
               fn capture() {\n    std::env::vars_os();\n}\n#[cfg(test)]\nmod tests {\n    fn t() { std::env::set_var(\"A\", \"1\"); }\n}\n";
    let found = env_calls_outside_allowed("runner/context.rs", src);
    // The read in open_meter is flagged with its line; the allowed capture and the unit
    // test are not.
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("runner/context.rs:2 in fn open_meter"),
        "{found:?}"
    );
    assert_eq!(
        env_calls_outside_allowed(
            "runner/mod.rs",
            "fn capture() { std::env::set_var(\"A\", \"1\"); }\n"
        )
        .len(),
        1,
        "capture is allowed in context.rs only"
    );
}
