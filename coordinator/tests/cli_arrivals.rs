//! `latency_simulation` end to end: `lem experiment` serving requests on a constant
//! arrival schedule with the real SmolLM2 model.
//!
//! Skips with a message when the model is absent, except under CI (env `CI` set).

use serde_json::Value;
use std::process::{Command, Output};

#[path = "../../tests/support.rs"]
mod support;
use support::repo_root;

const MS: u64 = 1_000_000;
/// 20 req/s: one arrival every 50 ms, well inside one request's ~130 ms of generation
/// (8 tokens at ~65 tok/s), so later requests queue behind earlier ones.
const QPS: u64 = 20;
const GAP_NS: u64 = 1_000_000_000 / QPS;

const CONFIG: &str = "\
config_name: arrivals-e2e
model_name: HuggingFaceTB/SmolLM2-135M-Instruct
max_input_tokens: 32
max_output_tokens: 8
min_output_tokens: 8
num_input_prompts: 4
fp_precision: float32
num_cycles: 1
random_seed: 42
idle_baseline_s: 0
warmup_prompts: 1
batching_options:
  batch_size: 2
  strategy: static
decoder_config:
  preset: deterministic
prompt_source:
  type: synthetic
  input_tokens: 8
latency_simulation:
  enabled: true
  mode: constant
  target_qps: 20
";

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .env_remove("LEM_DATA_DIR")
        .env("HF_HUB_OFFLINE", "1")
        // An empty powercap root: no energy, and no dependence on the host's counters.
        .env("LEM_POWERCAP_ROOT", dir.join("powercap"))
        .arg("--data-dir")
        .arg(dir.join("results"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    eprintln!(
        "$ lem {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "lem {args:?} failed");
    out
}

fn json(dir: &std::path::Path, args: &[&str]) -> Value {
    serde_json::from_slice(&run(dir, args).stdout).expect("stdout is JSON")
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

#[test]
fn constant_arrivals_queue_requests_and_report_serving_latencies() {
    if support::model_path().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("powercap")).unwrap();
    let cfg = dir.join("arrivals.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();

    let agg = json(dir, &["experiment", cfg.to_str().unwrap(), "--json"]);
    let id = agg["experiment_id"].as_str().unwrap().to_string();

    // The stored raw result: request i arrived at i / qps, exactly.
    let raws = json(dir, &["results", "show", &id, "--raw", "--json"]);
    let reqs = raws[0]["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 4);
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(u(&r["index"]), i as u64);
        assert_eq!(u(&r["arrival_offset_ns"]), i as u64 * GAP_NS, "request {i}");
        assert_eq!(u(&r["output_tokens"]), 8);
        assert!(u(&r["e2e_ns"]) > u(&r["ttft_ns"]));
    }
    // Request 0 ran alone from t = 0 and was still generating when request 1 arrived
    // 50 ms later, so request 1 queued until request 0 finished: its TTFT, counted from
    // its arrival, includes that wait.
    let done_0_ns = u(&reqs[0]["e2e_ns"]);
    assert!(
        done_0_ns > GAP_NS,
        "request 0 took {} ms: the engine was not busy at the next arrival",
        done_0_ns / MS
    );
    let queued_1_ns = done_0_ns - GAP_NS;
    let ttft_1_ns = u(&reqs[1]["ttft_ns"]);
    assert!(
        ttft_1_ns >= queued_1_ns,
        "request 1: TTFT {ttft_1_ns} ns < its wait behind request 0, {queued_1_ns} ns"
    );
    // Requests are served in arrival order: first tokens come in that order too.
    let first_token_ns: Vec<u64> = reqs
        .iter()
        .map(|r| u(&r["arrival_offset_ns"]) + u(&r["ttft_ns"]))
        .collect();
    assert!(
        first_token_ns.windows(2).all(|w| w[1] + MS >= w[0]),
        "{first_token_ns:?}"
    );

    // The aggregate: labelled arrivals, the scheduled rate, vllm-style latencies.
    let cycle = &agg["cycles"][0];
    assert_eq!(cycle["arrivals"], "constant 20 req/s");
    let achieved = cycle["achieved_arrival_rate_per_s"].as_f64().unwrap();
    assert!((achieved - QPS as f64).abs() < 1e-6, "{achieved}");
    let rps = cycle["request_throughput_per_s"].as_f64().unwrap();
    assert!(rps > 0.0 && rps <= QPS as f64, "{rps}");
    for metric in ["ttft", "tpot", "itl", "e2e"] {
        let p = &cycle[format!("{metric}_ms")];
        let (mean, p50, p90, p99) = (
            p["mean"].as_f64().unwrap(),
            p["p50"].as_f64().unwrap(),
            p["p90"].as_f64().unwrap(),
            p["p99"].as_f64().unwrap(),
        );
        assert!(
            mean > 0.0 && p50 > 0.0 && p50 <= p90 && p90 <= p99,
            "{metric}: {p}"
        );
        for stat in ["mean", "p50", "p90", "p99"] {
            let name = format!("{metric}_{stat}_ms");
            assert!(agg["stats"][&name]["mean"].is_number(), "stats.{name}");
        }
    }
    // The slowest TTFT includes at least request 1's wait.
    assert!(cycle["ttft_ms"]["max"].as_f64().unwrap() >= queued_1_ns as f64 / 1e6);

    // The printed summary says how requests arrived and shows the latency table.
    let out = run(dir, &["results", "show", &id]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("constant 20 req/s; batch-at-a-time serving"),
        "{summary}"
    );
    assert!(summary.contains("request throughput"), "{summary}");
    let header = summary
        .lines()
        .find(|l| l.trim_start().starts_with("latency (ms)"))
        .unwrap_or_else(|| panic!("no latency table:\n{summary}"));
    for col in ["mean", "median", "p90", "p99"] {
        assert!(header.contains(col), "{header}");
    }
    for label in ["TTFT", "TPOT", "ITL", "E2EL"] {
        let row = summary
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row:\n{summary}"));
        let cells: Vec<f64> = row
            .split_whitespace()
            .skip(1)
            .map(|c| c.parse().unwrap_or_else(|_| panic!("{label}: {row}")))
            .collect();
        assert_eq!(cells.len(), 4, "{row}");
    }
}
