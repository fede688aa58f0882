//! What a new user meets in the first hour, pinned at the command line (issue 12): help
//! texts, errors for bad input and bad models, a closed pipe, failed and killed runs,
//! `results list` and `aggregate --all` around them, `config generate-grid` into a used
//! folder. Outputs are compared whole, with the temporary directory redacted as `[TMP]`
//! and ids or timings matched by `[..]`.
//!
//! Most cases need no model: stores are filled through the library. The few that run
//! inference use the real SmolLM2 model (fetched by the test support when absent).

use lem_coordinator::embedded::{self, StoreHandle};
use lem_coordinator::store::{ExperimentStatus, Store};
use snapbox::cmd::Command;
use snapbox::{str, Assert, Redactions};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "../../tests/support.rs"]
mod support;

#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
mod record_fixture;

/// A scratch directory standing in for a user's working directory, with empty model
/// caches (so no model is found by accident) and no RAPL.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["models", "hf", "powercap"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The default data dir as seen from the sandbox (`./results`).
    fn results(&self) -> PathBuf {
        self.path().join("results")
    }

    fn lem(&self) -> Command {
        Command::new(snapbox::cmd::cargo_bin("lem"))
            .with_assert(self.assert())
            .env_remove("LEM_DATA_DIR")
            .env_remove("LEM_COORDINATOR")
            .env_remove("LEM_TEST_MODEL")
            .env("HF_HUB_OFFLINE", "1")
            .env("LEM_MODEL_DIR", self.path().join("models"))
            .env("HF_HUB_CACHE", self.path().join("hf"))
            .env("LEM_POWERCAP_ROOT", self.path().join("powercap"))
            // User-facing errors never carry a backtrace, even when this is set.
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .current_dir(self.path())
            .timeout(Duration::from_secs(300))
    }

    fn assert(&self) -> Assert {
        let mut redactions = Redactions::new();
        let tmp = self.path().to_path_buf();
        redactions.insert("[TMP]", tmp).unwrap();
        Assert::new()
            .action_env(snapbox::assert::DEFAULT_ACTION_ENV)
            .redact_with(redactions)
    }

    fn store(&self) -> Store {
        Store::open(&self.results(), Duration::from_secs(10)).unwrap()
    }
}

/// A GGUF header (version 3) with the given string metadata and tensors of f32 data
/// `(name, dims)`, but none of the tensor data: enough to be read as a header.
fn gguf_header(metadata: &[(&str, &str)], tensors: &[(&str, &[u64])]) -> Vec<u8> {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut b, key);
        b.extend(8u32.to_le_bytes()); // GGUF value type 8: string
        string(&mut b, value);
    }
    let mut offset = 0u64;
    for (name, dims) in tensors {
        string(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes()); // ggml type 0: f32
        b.extend(offset.to_le_bytes());
        offset += dims.iter().product::<u64>() * 4;
    }
    // Tensor data starts at the next 32-byte boundary.
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b
}

// ---------------------------------------------------------------- help and usage

#[test]
fn generate_grid_help_explains_every_flag_and_shows_no_store_flags() {
    let sb = Sandbox::new();
    sb.lem()
        .args(["config", "generate-grid", "--help"])
        .assert()
        .success()
        .stdout_eq(str![[r#"
Write one config per point of a parameter grid

Usage: lem config generate-grid [OPTIONS] --vary <KEY=V1,V2> <BASE>

Arguments:
  <BASE>  The config every point starts from

Options:
      --vary <KEY=V1,V2>  key=v1,v2,... (repeatable); e.g. batch_size=1,2,4 or decoder_config.temperature=0,0.7
  -o, --output-dir <DIR>  Folder to write the configs into; it must be empty or new (see --force) [default: grid]
      --force             Clear the folder's existing .yaml files first, so no stale config is left for `lem batch DIR/*.yaml` to run
  -v, --verbose...        More log output (-v info, -vv debug)
      --validate          Skip invalid combinations instead of writing them
      --strict            Fail (write nothing) if any combination is invalid
  -h, --help              Print help

"#]]);
}

#[test]
fn results_show_help_describes_its_argument_and_flags() {
    let sb = Sandbox::new();
    sb.lem()
        .args(["results", "show", "--help"])
        .assert()
        .success()
        .stdout_eq(str![[r#"
Show one experiment's results (or why it failed)

Usage: lem results show [OPTIONS] <ID>

Arguments:
  <ID>  Experiment id (or unique prefix)

Options:
      --raw             Per-cycle raw results instead of the aggregate
      --json            Machine-readable output (the aggregate, or the raw results with --raw)
      --no-plots        No per-cycle sparklines or phase bar (drawn only when stdout is a terminal)
      --data-dir <DIR>  Where results are stored (overrides the one before the subcommand and LEM_DATA_DIR; default ./results)
  -v, --verbose...      More log output (-v info, -vv debug)
  -h, --help            Print help

"#]]);
}

#[test]
fn a_negative_batch_size_is_named_plainly() {
    let sb = Sandbox::new();
    sb.lem()
        .args([
            "experiment",
            "--preset",
            "quick-test",
            "-m",
            "x",
            "-b",
            "-3",
        ])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: invalid value '-3' for '--batch-size <N>': must be a positive integer, got -3

For more information, try '--help'.

"#]]);
    assert!(!sb.results().exists());
}

#[test]
fn the_coordinator_flag_is_refused_by_commands_that_run_embedded_only() {
    let sb = Sandbox::new();
    sb.lem()
        .args(["--coordinator", "head:7443", "presets"])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: --coordinator head:7443: this command runs embedded only; through a coordinator lem offers sweep, status, agent, results (list, show, compare, export, table), report, aggregate and token (create, list, revoke) (drop --coordinator, or unset LEM_COORDINATOR)

"#]]);
}

#[test]
fn the_config_template_says_arrivals_are_simulated() {
    let sb = Sandbox::new();
    let out = sb.lem().args(["config", "new"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("enabled:"))
        .expect("latency_simulation.enabled in the template");
    assert_eq!(
        line,
        "  enabled: false            # true: requests arrive on this schedule (docs/latency.md)"
    );
    assert!(!text.contains("does not simulate"), "{text}");
}

// ---------------------------------------------------------------- closed pipe

/// Runs `lem args` with stdout a pipe whose reading end is already closed, as after
/// `lem ... | head -1` has exited.
fn run_into_closed_pipe(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors on success, checked below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2)");
    // SAFETY: both descriptors were just created and are owned here alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let mut cmd = std::process::Command::new(snapbox::cmd::cargo_bin("lem"));
    cmd.args(args)
        .current_dir(sb.path())
        .env_remove("LEM_DATA_DIR")
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped());
    cmd.output().unwrap()
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let sb = Sandbox::new();
    {
        // A store with a result to show.
        let store = sb.store();
        let rec = completed_experiment(&store, "exp_20260101_000000_aaaaaa", "quick", 1);
        drop(store);
        let handle = StoreHandle::new(&sb.results());
        embedded::aggregate_and_store(&handle, &rec).unwrap();
    }
    for args in [
        &["presets"][..],
        &["config", "new"],
        &["results", "list"],
        &["results", "show", "exp_20260101_000000_aaaaaa"],
    ] {
        let out = run_into_closed_pipe(&sb, args);
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned()
            ),
            (Some(0), String::new()),
            "lem {args:?} into a closed pipe"
        );
    }
}

// ---------------------------------------------------------------- bad models

#[test]
fn a_missing_model_is_a_usage_error_and_stores_nothing() {
    let sb = Sandbox::new();
    sb.lem()
        .args([
            "experiment",
            "--preset",
            "quick-test",
            "--model",
            "/nonexistent/dir/model.gguf",
        ])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: model `/nonexistent/dir/model.gguf` not found (offline). Looked in:
  - local path /nonexistent/dir/model.gguf: does not exist
To fetch it: `scripts/fetch-model.sh` installs SmolLM2-135M-Instruct (Q4_1 GGUF) into lem's model dir; any other .gguf can be copied to <LEM_MODEL_DIR>/<org>--<name>/; or unset HF_HUB_OFFLINE / LEM_OFFLINE where the Hugging Face hub is reachable.

"#]]);
    assert!(!sb.results().exists(), "a usage error created the data dir");
}

#[test]
fn a_file_that_is_not_gguf_is_refused_naming_it_without_a_backtrace() {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("junk.gguf"), "not a model, just text\n").unwrap();
    sb.lem()
        .args([
            "experiment",
            "--preset",
            "quick-test",
            "--model",
            "junk.gguf",
        ])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: model `junk.gguf`: junk.gguf is not a readable GGUF file: unknown magic 0x20746f6e

"#]]);
    assert!(!sb.results().exists());
}

#[test]
fn a_truncated_gguf_is_refused_before_anything_is_stored() {
    let sb = Sandbox::new();
    let header = gguf_header(
        &[("general.architecture", "llama")],
        &[("token_embd.weight", &[64, 1000])],
    );
    let header_len = header.len();
    std::fs::write(sb.path().join("cut.gguf"), header).unwrap();
    let expected = format!(
        "error: model `cut.gguf`: cut.gguf: tensor `token_embd.weight`: data ends at byte {} but the file has only {header_len} bytes (truncated file?)\n",
        header_len + 64 * 1000 * 4
    );
    sb.lem()
        .args([
            "experiment",
            "--preset",
            "quick-test",
            "--model",
            "cut.gguf",
        ])
        .assert()
        .code(2)
        .stderr_eq(expected);
    assert!(!sb.results().exists());
}

#[test]
fn an_unsupported_architecture_is_refused_before_anything_is_stored() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("gpt2.gguf"),
        gguf_header(&[("general.architecture", "gpt2")], &[]),
    )
    .unwrap();
    // Earlier records must not be touched either.
    drop(sb.store());
    sb.lem()
        .args(["experiment", "--preset", "quick-test", "--model", "gpt2.gguf"])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: model `gpt2.gguf`: gpt2.gguf: unsupported architecture `gpt2` (general.architecture); this engine runs `llama`, `qwen2` and `gemma3`

"#]]);
    assert!(sb.store().experiments().unwrap().is_empty());
}

#[test]
fn batch_checks_every_model_before_running_any() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("bad.yaml"),
        "config_name: bad\nmodel_name: missing.gguf\n",
    )
    .unwrap();
    sb.lem()
        .args(["batch", "bad.yaml"])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: bad.yaml: model `missing.gguf` not found (offline). Looked in:
  - local path missing.gguf: does not exist
To fetch it: [..]
bad.yaml: invalid; nothing was run

"#]]);
    assert!(!sb.results().exists());
}

#[test]
fn a_missing_prompt_file_is_a_usage_error_and_stores_nothing() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("file-prompts.yaml"),
        "config_name: fp\nmodel_name: missing.gguf\nprompt_source:\n  type: file\n  path: prompts.txt\n",
    )
    .unwrap();
    sb.lem()
        .args(["experiment", "file-prompts.yaml"])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: prompts: prompt file prompts.txt: No such file or directory (os error 2)

"#]]);
    assert!(!sb.results().exists());
}

// ---------------------------------------------------------------- the store

#[test]
fn read_only_commands_name_the_store_and_never_create_it() {
    let sb = Sandbox::new();
    sb.lem()
        .args(["results", "show", "exp_nope"])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: no result store at [TMP]/results: nothing has run with this data dir yet (--data-dir or LEM_DATA_DIR; default ./results under the current directory)

"#]]);
    sb.lem()
        .args(["results", "list"])
        .assert()
        .success()
        .stdout_eq(str![[r#"
No experiments: no result store at [TMP]/results: nothing has run with this data dir yet (--data-dir or LEM_DATA_DIR; default ./results under the current directory)

"#]]);
    sb.lem().args(["aggregate", "--all"]).assert().code(2);
    assert!(
        !sb.results().exists(),
        "a read-only command created ./results"
    );

    drop(sb.store());
    sb.lem()
        .args(["results", "show", "exp_nope"])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: no experiment `exp_nope` in the result store at [TMP]/results/lem.sled

"#]]);
}

/// Stores a completed experiment `id` of `cycles` cycles (no aggregate yet).
fn completed_experiment(
    store: &Store,
    id: &str,
    config_name: &str,
    cycles: u32,
) -> lem_coordinator::store::ExperimentRecord {
    let mut resolved = fixtures::resolved_config("org/model");
    resolved.config.config_name = config_name.to_string();
    resolved.config.num_cycles = cycles;
    let mut rec = record_fixture::experiment_record(&resolved, id, ExperimentStatus::Running);
    rec.status = ExperimentStatus::Completed;
    store.create_experiment(&rec).unwrap();
    for cycle in 0..cycles {
        let mut raw = fixtures::raw_result(id, cycle, 4, 1_000_000_000);
        raw.energy
            .push(lem_common::domain::EnergyReading::unavailable(
                lem_common::domain::DeviceKind::Dram,
                "package-0/dram",
                "no RAPL under the test's powercap root",
                1_000_000_000,
            ));
        store.put_raw(&raw).unwrap();
    }
    rec
}

/// A failed experiment with no results, as a run that failed in its first cycle leaves.
fn failed_experiment(store: &Store, id: &str) {
    let resolved = fixtures::resolved_config("org/model");
    let mut rec = record_fixture::experiment_record(&resolved, id, ExperimentStatus::Running);
    rec.status = ExperimentStatus::Failed;
    rec.error = Some(format!(
        "experiment {id} cycle 1: prompts: cannot read prompts.txt"
    ));
    rec.error_chain = vec!["No such file or directory (os error 2)".into()];
    store.create_experiment(&rec).unwrap();
}

#[test]
fn a_failed_run_shows_why_and_does_not_block_aggregate_all() {
    let sb = Sandbox::new();
    {
        let store = sb.store();
        completed_experiment(
            &store,
            "exp_20260101_000000_aaaaaa",
            "a-config-name-longer-than-the-old-column-width",
            2,
        );
        failed_experiment(&store, "exp_20260101_000001_bbbbbb");
    }
    // `list` shows the completed one, aligned, and says what it hides and how to see it.
    sb.lem()
        .args(["results", "list"])
        .assert()
        .success()
        .stdout_eq(str![[r#"
ID                          STATUS     CYCLES  CONFIG                                          MODEL
exp_20260101_000000_aaaaaa  completed     2/2  a-config-name-longer-than-the-old-column-width  org/model
(1 more not shown: 1 failed; `lem --data-dir results results list --all` lists them)

"#]]);
    sb.lem()
        .args(["--data-dir", "results", "results", "list", "--all"])
        .assert()
        .success()
        .stdout_eq(str![[r#"
ID                          STATUS     CYCLES  CONFIG                                          MODEL
exp_20260101_000000_aaaaaa  completed     2/2  a-config-name-longer-than-the-old-column-width  org/model
exp_20260101_000001_bbbbbb  failed        0/1  quick-test-model                                org/model

"#]]);
    // The failure's reason and causes are stored and shown; no dead-end hint.
    sb.lem()
        .args(["results", "show", "exp_20260101_000001_bbbbbb"])
        .assert()
        .code(3)
        .stdout_eq(str![[r#"
Experiment exp_20260101_000001_bbbbbb failed: experiment exp_20260101_000001_bbbbbb cycle 1: prompts: cannot read prompts.txt
  caused by: No such file or directory (os error 2)
Experiment exp_20260101_000001_bbbbbb (failed, 0 of 1 cycles have results) has no aggregate.

"#]]);
    // --all aggregates what it can and reports the skip, with success.
    sb.lem()
        .args(["aggregate", "--all"])
        .assert()
        .success()
        .stdout_eq(str![[r#"
exp_20260101_000000_aaaaaa: aggregated 2 cycle(s)

"#]])
        .stderr_eq(str![[r#"
skipped 1 experiment(s) with nothing to aggregate: exp_20260101_000001_bbbbbb (failed before any cycle finished)

"#]]);
    sb.lem()
        .args(["aggregate", "--all", "--force"])
        .assert()
        .success();
}

#[test]
fn the_summary_states_the_dtypes_used_and_each_missing_reason_once() {
    let sb = Sandbox::new();
    let rec = {
        let store = sb.store();
        completed_experiment(&store, "exp_20260101_000000_cccccc", "quick", 1)
    };
    embedded::aggregate_and_store(&StoreHandle::new(&sb.results()), &rec).unwrap();
    let out = sb
        .lem()
        .args(["results", "show", "exp_20260101_000000_cccccc"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(
            &"  model      org/model (gguf; weights Q8_0 (requantised from Q4_1), compute f32)"
        ),
        "{text}"
    );
    let reason = "no RAPL under the test's powercap root";
    assert_eq!(text.matches(reason).count(), 1, "{text}");
    assert!(
        lines.contains(
            &format!("                         package-0, package-0/dram: {reason}").as_str()
        ),
        "{text}"
    );
}

// ---------------------------------------------------------------- generate-grid

#[test]
fn generate_grid_refuses_a_used_folder_and_force_clears_stale_configs() {
    let sb = Sandbox::new();
    let base = support::repo_root().join("configs/examples/quick.yaml");
    let grid = sb.path().join("grid");
    std::fs::create_dir_all(&grid).unwrap();
    std::fs::write(grid.join("stale.yaml"), "config_name: stale\n").unwrap();
    let generate = |force: bool| {
        let mut args = vec![
            "config".to_string(),
            "generate-grid".into(),
            base.display().to_string(),
            "--vary".into(),
            "batch_size=1,2".into(),
            "-o".into(),
            "grid".into(),
        ];
        if force {
            args.push("--force".into());
        }
        sb.lem().args(args)
    };
    generate(false).assert().code(2).stderr_eq(str![[r#"
error: grid is not empty (1 entries); choose a new folder, or add --force to remove its config files first

"#]]);
    assert!(grid.join("stale.yaml").exists());
    generate(true).assert().success().stdout_eq(str![[r#"
wrote 2 of 2 configs to grid

"#]]);
    let mut names: Vec<String> = std::fs::read_dir(&grid)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "quick__batch_size-1.yaml".to_string(),
            "quick__batch_size-2.yaml".to_string()
        ]
    );
}

#[test]
fn the_readme_grid_glob_names_configs_that_validate() {
    let grid = support::repo_root().join("configs/grid");
    let configs: Vec<PathBuf> = std::fs::read_dir(&grid)
        .unwrap_or_else(|e| panic!("{}: {e}", grid.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(configs.len() >= 2, "configs/grid holds {configs:?}");
    let sb = Sandbox::new();
    for c in &configs {
        sb.lem()
            .arg("config")
            .arg("validate")
            .arg(c)
            .assert()
            .success();
    }
}

// ---------------------------------------------------------------- runs (real model)

#[test]
fn a_killed_run_is_offered_with_a_resume_hint_that_works_as_printed() {
    let model = support::model();
    let sb = Sandbox::new();
    let cli = lem_common::config::CliOverrides {
        model: Some(model.display().to_string()),
        num_prompts: Some(1),
        max_tokens: Some(2),
        ..Default::default()
    };
    let resolved = lem_common::config::resolve(Some("quick-test"), None, &cli).unwrap();
    {
        // A run that says "running" on another host: killed, as far as this one knows.
        let store = sb.store();
        let mut rec = record_fixture::experiment_record(
            &resolved,
            "exp_20260101_000000_dddddd",
            ExperimentStatus::Running,
        );
        rec.hostname = "another-host".into();
        store.create_experiment(&rec).unwrap();
        // A failed run of the same config is never offered.
        let mut failed = record_fixture::experiment_record(
            &resolved,
            "exp_20260101_000001_eeeeee",
            ExperimentStatus::Running,
        );
        failed.status = ExperimentStatus::Failed;
        store.create_experiment(&failed).unwrap();
    }
    let model_arg = model.display().to_string();
    let args = [
        "experiment",
        "--preset",
        "quick-test",
        "-m",
        model_arg.as_str(),
        "-n",
        "1",
        "--max-tokens",
        "2",
        "--json",
    ];
    let out = sb.lem().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Found incomplete experiment exp_20260101_000000_dddddd (0 of 1 cycles done, status killed)."),
        "{stderr}"
    );
    assert!(!stderr.contains("exp_20260101_000001_eeeeee"), "{stderr}");
    let hint = "lem --data-dir results experiment --resume exp_20260101_000000_dddddd";
    assert!(stderr.contains(hint), "{stderr}");
    // The hint works as printed.
    let hint_args: Vec<&str> = hint.split(' ').skip(1).collect();
    let out = sb.lem().args(&hint_args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agg["experiment_id"], "exp_20260101_000000_dddddd");
}

#[test]
fn quick_test_on_gguf_runs_without_warnings() {
    let model = support::model();
    let sb = Sandbox::new();
    let model_arg = model.display().to_string();
    let out = sb
        .lem()
        .args([
            "experiment",
            "--preset",
            "quick-test",
            "-m",
            model_arg.as_str(),
            "-n",
            "1",
            "--max-tokens",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!stdout.contains("warning"), "{stdout}");
    let model_line = stdout
        .lines()
        .find(|l| l.starts_with("  model "))
        .expect("a model line");
    // Q4_1 runs on its own weights; the kernel variant depends on this machine's CPU.
    let variant = model_line.strip_suffix("))").and_then(|l| {
        l.split("(gguf; weights Q4_1, compute f32 (CPU kernels: ")
            .nth(1)
    });
    assert!(
        variant.is_some_and(|v| ["scalar", "avx2", "avx512vnni"].contains(&v)),
        "{model_line}"
    );
}
