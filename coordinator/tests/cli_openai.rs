//! `engine: openai` end to end: `lem experiment` against the scripted loopback server
//! (agent/tests/scripted_server) with one prompt it answers and one it fails. The
//! experiment ends `partial`, the cycle line counts the failure, and the stored raw
//! result carries the server's identity and the failed request with its reason.

use serde_json::Value;
use std::process::{Command, Output};

#[path = "../../agent/tests/scripted_server/mod.rs"]
mod scripted_server;
#[path = "../../tests/support.rs"]
mod support;
use scripted_server::{ScriptedServer, MODEL_ID, SERVER_HEADER, USAGE_COMPLETION_TOKENS};

fn lem(dir: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .env_remove("LEM_DATA_DIR")
        .env("HF_HUB_OFFLINE", "1")
        .env("LEM_POWERCAP_ROOT", dir.join("powercap"))
        .arg("--data-dir")
        .arg(dir.join("results"))
        .args(args)
        .current_dir(support::repo_root())
        .output()
        .unwrap();
    eprintln!(
        "$ lem {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_run_with_a_failed_request_is_stored_partial_with_the_failure() {
    let model = support::model();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("powercap")).unwrap();
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "stream one\nfail500 two\n").unwrap();
    let server = ScriptedServer::start();
    let cfg = dir.join("server.yaml");
    std::fs::write(
        &cfg,
        format!(
            "config_name: scripted-server
model_name: {model}
max_output_tokens: 16
warmup_prompts: 0
idle_baseline_s: 0
engine: openai
openai:
  endpoint: {endpoint}
  model: {MODEL_ID}
  engine_name: scripted
  engine_version: '1.0'
prompt_source:
  type: file
  path: {prompts}
",
            model = model.display(),
            endpoint = server.endpoint(),
            prompts = prompts.display()
        ),
    )
    .unwrap();

    let out = lem(dir, &["experiment", cfg.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 prompts, 1 failed"), "{stderr}");
    let agg: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = agg["experiment_id"].as_str().unwrap().to_string();
    assert_eq!(agg["cycles"][0]["failed_requests"], 1);
    assert_eq!(agg["cycles"][0]["num_requests"], 1);
    assert_eq!(agg["cycles"][0]["output_tokens"], USAGE_COMPLETION_TOKENS);

    // Listed as partial (and listed: its cycles all finished).
    let list: Value =
        serde_json::from_slice(&lem(dir, &["results", "list", "--json"]).stdout).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("listed without --all");
    assert_eq!(row["status"], "partial");

    let raws: Value =
        serde_json::from_slice(&lem(dir, &["results", "show", &id, "--raw", "--json"]).stdout)
            .unwrap();
    let server_rec = &raws[0]["server"];
    assert_eq!(server_rec["response_headers"]["server"], SERVER_HEADER);
    assert_eq!(server_rec["engine_name"], "scripted");
    assert_eq!(server_rec["failed_requests"][0]["index"], 1);
    assert_eq!(server_rec["failed_requests"][0]["kind"], "http_status");
    assert_eq!(server_rec["failed_requests"][0]["http_status"], 500);
    assert_eq!(raws[0]["requests"].as_array().unwrap().len(), 1);

    // The cycle export counts the failure beside the successful request.
    let export = lem(
        dir,
        &[
            "results", "export", &id, "--format", "jsonl", "--level", "cycle",
        ],
    );
    assert!(export.status.success());
    let row: Value = serde_json::from_slice(export.stdout.split(|&b| b == b'\n').next().unwrap())
        .expect("one JSON object per line");
    assert_eq!(
        (
            row["num_requests"].as_u64(),
            row["failed_requests"].as_u64()
        ),
        (Some(1), Some(1))
    );
}
