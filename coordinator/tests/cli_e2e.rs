//! The `lem` binary end to end, embedded mode, on the real SmolLM2 model.
//!
//! The model is fetched by the test support when absent (`scripts/fetch-model.sh`, as
//! `.ci/run` does); a failed fetch fails the tests with the command to run.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lem() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lem"));
    c.env_remove("LEM_DATA_DIR").env("HF_HUB_OFFLINE", "1");
    c
}

#[path = "../../tests/support.rs"]
mod support;
use support::repo_root;

/// True if the SmolLM2 GGUF is installed; panics under CI when it is not.
fn model_available() -> bool {
    support::model_path().is_some()
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // An empty powercap root: energy must come out unavailable-with-reason, never 0.
        std::fs::create_dir_all(dir.path().join("powercap")).unwrap();
        Self { dir }
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("results")
    }
    fn cmd(&self) -> Command {
        let mut c = lem();
        c.arg("--data-dir")
            .arg(self.data())
            .env("LEM_POWERCAP_ROOT", self.dir.path().join("powercap"))
            .current_dir(repo_root());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        eprintln!(
            "$ lem {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "lem {args:?} failed");
        serde_json::from_slice(&out.stdout).expect("stdout is JSON")
    }
    fn list_all(&self) -> Vec<Value> {
        self.json(&["results", "list", "--all", "--json"])
            .as_array()
            .unwrap()
            .clone()
    }
}

const QUICK: &str = "configs/examples/quick.yaml";

#[test]
fn multi_cycle_experiment_aggregates_and_reaggregates_identically() {
    if !model_available() {
        return;
    }
    let env = Env::new();
    let agg = env.json(&[
        "experiment",
        QUICK,
        "-n",
        "2",
        "--max-tokens",
        "6",
        "--cycles",
        "3",
        "--json",
    ]);
    assert_eq!(agg["num_cycles_expected"], 3);
    assert_eq!(agg["complete"], true);
    let cycles = agg["cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), 3);
    for c in cycles {
        assert_eq!(c["num_requests"], 2);
        let out = c["output_tokens"].as_u64().unwrap();
        assert!(
            (2..=12).contains(&out),
            "output tokens {out} outside 1..=6 per prompt"
        );
        assert!(c["output_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(c["flops_total"].as_f64().unwrap() > 0.0);
        // No powercap here: energy is null with a reason, never zero.
        assert!(c["energy"]["total_j"].is_null());
        assert!(!c["energy"]["missing"].as_array().unwrap().is_empty());
    }
    let tput = &agg["stats"]["output_tokens_per_s"];
    assert_eq!(tput["n"], 3);
    assert!(tput["std"].is_number() && tput["ci95_low"].is_number());
    assert!(
        agg["stats"].get("energy_total_j").is_none(),
        "no energy stat without readings"
    );
    assert_eq!(agg["compute_device"]["kind"], "cpu");

    let id = agg["experiment_id"].as_str().unwrap().to_string();
    let listed = env.json(&["results", "list", "--json"]);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == id.as_str()));

    // Raw results carry the effective config and the CLI overrides.
    let raws = env.json(&["results", "show", &id, "--raw", "--json"]);
    let raws = raws.as_array().unwrap();
    assert_eq!(raws.len(), 3);
    assert_eq!(raws[0]["effective_config"]["max_output_tokens"], 6);
    assert_eq!(raws[0]["cli_overrides"]["max_output_tokens"]["new"], 6);
    assert_eq!(
        raws[0]["cli_overrides"]["max_output_tokens"]["original"],
        32
    );

    // Late aggregation from raw results reproduces the stored numbers exactly.
    let before = env.json(&["results", "show", &id, "--json"]);
    assert!(env.run(&["aggregate", &id, "--force"]).status.success());
    let after = env.json(&["results", "show", &id, "--json"]);
    assert_eq!(before, after);
    assert_eq!(before, agg);
}

#[test]
fn killed_run_is_detected_and_resumed_without_rerunning_done_cycles() {
    if !model_available() {
        return;
    }
    let env = Env::new();
    let args = [
        "experiment",
        QUICK,
        "-n",
        "3",
        "--max-tokens",
        "24",
        "--cycles",
        "4",
    ];
    let mut child = env
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until at least one cycle is committed, then kill -9 mid-experiment.
    let deadline = Instant::now() + Duration::from_secs(300);
    let id = loop {
        assert!(Instant::now() < deadline, "no cycle committed within 300 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "experiment ended before it was killed"
        );
        let list = env.list_all();
        if let Some(e) = list.first() {
            if e["cycles_done"].as_u64().unwrap() >= 1 {
                break e["id"].as_str().unwrap().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let list = env.list_all();
    assert_eq!(list[0]["status"], "killed");
    let done_before = list[0]["cycles_done"].as_u64().unwrap();
    assert!(done_before < 4);
    let raws_before = env.json(&["results", "show", &id, "--raw", "--json"]);

    // A new run of the same config notices the incomplete one (not a terminal: it says how
    // to resume and starts fresh) — check only the notice, with one quick cycle.
    let out = env.run(&[
        "experiment",
        QUICK,
        "-n",
        "1",
        "--max-tokens",
        "24",
        "--cycles",
        "1",
    ]);
    assert!(out.status.success());
    // Different -n/--cycles change the fingerprint except for cycles; -n differs, so the
    // notice must not appear for a different config.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Found incomplete experiment"));
    let out = env.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("Found incomplete experiment {id}")),
        "same config must report the incomplete experiment"
    );

    let out = env.run(&["experiment", "--resume", &id, "--json"]);
    assert!(out.status.success());
    let agg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agg["complete"], true);
    assert_eq!(agg["cycles"].as_array().unwrap().len(), 4);

    // The cycles finished before the kill are byte-for-byte the same records.
    let raws_after = env.json(&["results", "show", &id, "--raw", "--json"]);
    let raws_after = raws_after.as_array().unwrap();
    assert_eq!(raws_after.len(), 4);
    for old in raws_before.as_array().unwrap() {
        assert!(
            raws_after.contains(old),
            "a completed cycle was re-run or changed"
        );
    }
    let list = env.list_all();
    let rec = list.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert_eq!(rec["status"], "completed");
}

#[test]
fn sigint_saves_state_and_prints_resume_command() {
    if !model_available() {
        return;
    }
    let env = Env::new();
    let child = env
        .cmd()
        .args([
            "experiment",
            QUICK,
            "-n",
            "4",
            "--max-tokens",
            "32",
            "--cycles",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "no cycle committed within 300 s");
        if env
            .list_all()
            .first()
            .is_some_and(|e| e["cycles_done"].as_u64().unwrap() >= 1)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(130));
    assert!(
        stderr.contains("experiment --resume exp_"),
        "resume command printed"
    );
    let list = env.list_all();
    assert_eq!(list[0]["status"], "interrupted");
}

#[test]
fn invalid_config_names_file_line_and_field() {
    let env = Env::new();
    let cfg = env.dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "config_name: bad\nmodel_name: x/y\nbatching_options:\n  batch_sise: 4\n",
    )
    .unwrap();
    let out = env.run(&["config", "validate", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:4"), "line number: {stderr}");
    assert!(
        stderr.contains("batching_options.batch_sise"),
        "field: {stderr}"
    );
    assert!(stderr.contains("batch_size"), "suggestion: {stderr}");
    // Nothing was stored.
    assert!(!env.data().exists());
}

#[test]
fn reference_commands_work_without_gpu_or_model() {
    let env = Env::new();
    let out = env.run(&["gpus"]);
    assert!(out.status.success(), "`lem gpus` exits 0 without a GPU");
    if !Path::new("/proc/driver/nvidia/gpus").exists() {
        assert!(String::from_utf8_lossy(&out.stdout).contains("No NVIDIA GPU found"));
    }
    let presets = env.json(&["presets", "--json"]);
    let names: Vec<&str> = presets
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["quick-test", "benchmark", "throughput"]);
    let datasets = env.json(&["datasets", "--json"]);
    assert!(datasets
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["alias"] == "alpaca"));
    let out = env.run(&["experiment"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no config and no preset is a usage error"
    );
    let out = env.run(&["results", "show", "exp_nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn generate_grid_writes_the_cartesian_product_and_each_validates() {
    let env = Env::new();
    let out_dir = env.dir.path().join("grid");
    let out = env.run(&[
        "config",
        "generate-grid",
        QUICK,
        "--vary",
        "batch_size=1,2,4",
        "--vary",
        "fp_precision=float16,float32",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6);
    assert!(files.contains(&"quick__batch_size-4__fp_precision-float32.yaml".to_string()));
    for f in &files {
        let path = out_dir.join(f);
        let out = env.run(&["config", "validate", path.to_str().unwrap()]);
        assert!(out.status.success(), "{f} must validate");
    }
    // --strict refuses a grid with an invalid point and writes nothing.
    let strict_dir = env.dir.path().join("strict");
    let out = env.run(&[
        "config",
        "generate-grid",
        QUICK,
        "--vary",
        "num_cycles=1,11",
        "--strict",
        "--output-dir",
        strict_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!strict_dir.exists() || std::fs::read_dir(&strict_dir).unwrap().next().is_none());
}

#[test]
fn batch_runs_several_configs_with_file_prompts() {
    if !model_available() {
        return;
    }
    let env = Env::new();
    let prompts = env.dir.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"question\": \"What is two plus two?\"}\n{\"question\": \"Name a colour.\"}\n",
    )
    .unwrap();
    let base = std::fs::read_to_string(repo_root().join(QUICK)).unwrap();
    let mut configs = Vec::new();
    for bs in [1, 2] {
        let p = env.dir.path().join(format!("b{bs}.yaml"));
        std::fs::write(
            &p,
            format!(
                "{base}\nconfig_name: batch-test-{bs}\n",
                base = base
                    .replace("config_name: smollm2-quick\n", "")
                    .replace("  batch_size: 1\n", &format!("  batch_size: {bs}\n"))
            ),
        )
        .unwrap();
        configs.push(p);
    }
    let mut args = vec!["batch".to_string()];
    args.extend(configs.iter().map(|p| p.to_string_lossy().into_owned()));
    args.extend(
        [
            "-d",
            prompts.to_str().unwrap(),
            "--max-tokens",
            "4",
            "--parallel",
            "2",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&args);
    assert!(out.status.success());
    let list = env.json(&["results", "list", "--json"]);
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["config_name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["batch-test-1", "batch-test-2"]);
    for e in list.as_array().unwrap() {
        let raws = env.json(&[
            "results",
            "show",
            e["id"].as_str().unwrap(),
            "--raw",
            "--json",
        ]);
        let raw = &raws.as_array().unwrap()[0];
        // Both JSONL prompts were read through the `question` column, no padding counted.
        assert_eq!(raw["requests"].as_array().unwrap().len(), 2);
        assert_eq!(raw["effective_config"]["prompt_source"]["type"], "file");
        let inputs: Vec<u64> = raw["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["input_tokens"].as_u64().unwrap())
            .collect();
        assert!(inputs.iter().all(|&n| (3..20).contains(&n)), "{inputs:?}");
        assert_ne!(inputs[0], inputs[1], "different prompts, different lengths");
    }
}

#[test]
fn dataset_alias_reads_the_hugging_face_cache_offline() {
    if !model_available() {
        return;
    }
    let env = Env::new();
    // A Hugging Face cache as the hub client lays it out: refs/main → snapshot.
    let hf = env.dir.path().join("hf-hub");
    let repo = hf.join("datasets--tatsu-lab--alpaca");
    let snap = repo.join("snapshots/0123456789abcdef0123456789abcdef01234567");
    std::fs::create_dir_all(snap.join("data")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(
        repo.join("refs/main"),
        "0123456789abcdef0123456789abcdef01234567",
    )
    .unwrap();
    let rows: String = (0..6)
        .map(|i| {
            format!(
                "{{\"instruction\": \"Give me tip number {i} for staying healthy.\", \"input\": \"\", \"output\": \"x\"}}\n"
            )
        })
        .collect();
    std::fs::write(snap.join("data/train-00000-of-00001.jsonl"), rows).unwrap();

    let out = env
        .cmd()
        .env("HF_HUB_CACHE", &hf)
        .args([
            "experiment",
            "--preset",
            "quick-test",
            "--model",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "-d",
            "alpaca",
            "-n",
            "3",
            "--max-tokens",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let agg: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = agg["experiment_id"].as_str().unwrap();
    assert_eq!(agg["config_name"], "quick-test-SmolLM2-135M-Instruct");
    let raws = env.json(&["results", "show", id, "--raw", "--json"]);
    let raw = &raws.as_array().unwrap()[0];
    assert_eq!(raw["requests"].as_array().unwrap().len(), 3);
    assert_eq!(
        raw["effective_config"]["prompt_source"]["dataset"],
        "alpaca"
    );
    assert_eq!(
        raw["effective_config"]["max_input_tokens"], 64,
        "preset value"
    );
    assert_eq!(raw["cli_overrides"]["num_input_prompts"]["new"], 3);
}

#[test]
fn until_ci_adds_cycles_to_the_cap_or_stops_when_the_metric_has_no_value() {
    if !model_available() {
        return;
    }
    let env = Env::new();
    let small = ["-n", "2", "--max-tokens", "4", "--json"];
    // A target no timing meets (0.0001%): cycles are added one at a time up to the cap.
    let max_cycles = 4;
    let agg = env.json(
        &[
            &[
                "experiment",
                QUICK,
                "--until-ci",
                "0.0001%",
                "--metric",
                "output_tokens_per_s",
                "--max-cycles",
                &max_cycles.to_string(),
            ][..],
            &small[..],
        ]
        .concat(),
    );
    assert_eq!(agg["cycles"].as_array().unwrap().len(), max_cycles);
    assert_eq!(agg["num_cycles_expected"], max_cycles);
    assert_eq!(agg["complete"], true);
    let u = &agg["until_ci"];
    assert_eq!(u["outcome"], "cap_hit");
    assert_eq!(u["cycles"], max_cycles);
    assert_eq!(u["rule"]["metric"], "output_tokens_per_s");
    assert!((u["rule"]["target_relative_half_width"].as_f64().unwrap() - 1e-6).abs() < 1e-15);
    // The stored relative half-width is the aggregate's own CI over its mean.
    let s = &agg["stats"]["output_tokens_per_s"];
    let want = s["ci95_half_width"].as_f64().unwrap() / s["mean"].as_f64().unwrap().abs();
    assert!((u["relative_half_width"].as_f64().unwrap() - want).abs() <= 1e-12 * want);
    // `results show` says the cap was hit.
    let id = agg["experiment_id"].as_str().unwrap();
    let shown = env.run(&["results", "show", id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("until-ci   CAP HIT, target not reached after 4 cycles"),
        "{text}"
    );

    // No powercap here: j_per_output_token (the default metric) never has a value, so
    // the rule stops at its minimum of 3 cycles and says why, instead of running to 30.
    let agg = env.json(&[&["experiment", QUICK, "--until-ci", "2%"][..], &small[..]].concat());
    assert_eq!(agg["cycles"].as_array().unwrap().len(), 3);
    assert_eq!(agg["until_ci"]["outcome"], "metric_unavailable");
    assert!(agg["until_ci"]["relative_half_width"].is_null());
    assert!(agg["until_ci"]["message"]
        .as_str()
        .unwrap()
        .contains("j_per_output_token has no value"));

    // Bad input is refused before anything runs.
    let out = env.run(&["experiment", QUICK, "--until-ci", "0%"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["experiment", QUICK, "--max-cycles", "5"]);
    assert_eq!(out.status.code(), Some(2), "--max-cycles needs --until-ci");
}
