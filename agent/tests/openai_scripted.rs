//! `engine: openai` against a scripted loopback server (`scripted_server`): streamed
//! answers are timed and counted, a 500, a cut stream and a timeout are recorded per
//! request with their reasons and make the result partial, the concurrency bound holds,
//! arrivals are honoured, and a server that is down is a clear error naming the endpoint.
//! Expected values come from the script's constants and the prompts written here.

use lem_agent::engine::Engine;
use lem_agent::runner::{self, JobRunner, NoProgress, RunContext, RunError};
use lem_common::config::{EngineKind, ExperimentConfig, OpenAiServerConfig, PromptSource};
use lem_common::domain::{JobSpec, RawResult, StopReason};
use lem_common::server::FailureKind;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod scripted_server;
#[path = "../../tests/support.rs"]
mod support;

use scripted_server::*;

fn context(dir: &std::path::Path) -> RunContext {
    let mut ctx = RunContext::from_env(Arc::new(AtomicBool::new(false)));
    ctx.resolve.offline = true;
    // No RAPL: the energy readings say unavailable; metering is tested elsewhere.
    ctx.powercap_root = dir.join("no-powercap");
    ctx
}

fn config(
    endpoint: &str,
    prompts_file: &std::path::Path,
    max_concurrency: u32,
) -> ExperimentConfig {
    let model = support::model();
    let mut c = ExperimentConfig::default_for("scripted", model.to_str().unwrap());
    c.engine = EngineKind::Openai;
    c.openai = Some(OpenAiServerConfig {
        endpoint: endpoint.to_string(),
        model: MODEL_ID.into(),
        api_key_env: None,
        engine_name: Some("scripted".into()),
        engine_version: Some("1.0".into()),
        max_concurrency: Some(max_concurrency),
        request_timeout_s: 1.5,
    });
    c.prompt_source = Some(PromptSource::File {
        path: prompts_file.to_str().unwrap().into(),
        column: None,
        sample_size: None,
        shuffle: false,
        seed: 42,
        sha256: None,
        content_base64: None,
    });
    c.max_output_tokens = 16;
    c.warmup_prompts = 0;
    c.idle_baseline_s = 0.0;
    c.save_outputs = true;
    c
}

fn job(config: ExperimentConfig) -> JobSpec {
    JobSpec {
        experiment_id: "e".into(),
        job_key: "k".into(),
        cycle: 0,
        attempt: 0,
        config,
        cli_overrides: BTreeMap::new(),
    }
}

fn write_prompts(dir: &std::path::Path, prompts: &[&str]) -> std::path::PathBuf {
    let path = dir.join("prompts.txt");
    std::fs::write(&path, prompts.join("\n") + "\n").unwrap();
    path
}

fn run(cfg: ExperimentConfig, ctx: &RunContext) -> Result<RawResult, RunError> {
    JobRunner::new().run(&job(cfg), ctx, &mut NoProgress)
}

#[test]
fn streamed_answers_and_every_kind_of_failure_are_recorded_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = [
        "stream alpha",
        "fail500 beta",
        "nousage gamma",
        "cut delta",
        "slow epsilon",
        "stream zeta",
    ];
    let file = write_prompts(dir.path(), &prompts);
    let server = ScriptedServer::start();
    let ctx = context(dir.path());
    let r =
        run(config(&server.endpoint(), &file, 2), &ctx).expect("a run with failures is a result");

    // Identity: the /models answer, the server header, the stated name and version.
    let s = r.server.as_ref().expect("server record");
    assert_eq!(
        s.models_response.as_ref().unwrap()["data"][0]["id"],
        MODEL_ID
    );
    assert_eq!(
        s.response_headers.get("server").map(String::as_str),
        Some(SERVER_HEADER)
    );
    assert_eq!(
        (s.engine_name.as_deref(), s.engine_version.as_deref()),
        (Some("scripted"), Some("1.0"))
    );
    assert_eq!(r.compute_device.kind, "openai-server");
    assert!(
        r.compute_device.name.contains(&server.endpoint()),
        "{}",
        r.compute_device.name
    );

    // Every prompt was sent once; at most 2 at a time, and 2 were (all were due at once
    // and each answer takes over 100 ms).
    assert_eq!(s.requests_sent as usize, prompts.len());
    assert_eq!(
        server.stats.completions.load(Ordering::SeqCst),
        prompts.len()
    );
    assert_eq!(server.stats.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(s.max_concurrency, 2);

    // Failures: one per failing keyword, with kind and reason.
    let failed: Vec<_> = s
        .failed_requests
        .iter()
        .map(|f| (f.index, f.kind, f.http_status, f.chunks_received))
        .collect();
    assert_eq!(
        failed,
        [
            (1, FailureKind::HttpStatus, Some(500), 0),
            (3, FailureKind::StreamCut, None, 1),
            (4, FailureKind::Timeout, None, 0),
        ]
    );
    assert!(
        s.failed_requests[0].reason.contains("scripted failure"),
        "{}",
        s.failed_requests[0].reason
    );
    assert!(
        s.failed_requests[2].reason.contains("1.5 s"),
        "{}",
        s.failed_requests[2].reason
    );
    // The timed-out request failed no sooner than its timeout after it was sent.
    let t = &s.failed_requests[2];
    assert!(t.failed_offset_ns - t.start_offset_ns >= 1_500_000_000);
    let partial = r
        .warnings
        .iter()
        .find(|w| w.starts_with("partial:"))
        .expect("partial warning");
    assert!(partial.contains("3 of 6 requests failed"), "{partial}");
    assert!(
        partial.contains("1 http_status")
            && partial.contains("1 stream_cut")
            && partial.contains("1 timeout"),
        "{partial}"
    );

    // Successes: the stream and nousage prompts, in prompt order.
    let ok: Vec<u32> = r.requests.iter().map(|q| q.index).collect();
    assert_eq!(ok, [0, 2, 5]);
    let headers = Engine::read_gguf_headers(&support::model(), None).unwrap();
    for q in &r.requests {
        let prompt = prompts[q.index as usize];
        assert_eq!(q.output_text.as_deref(), Some(CHUNKS.concat().as_str()));
        // One gap per pair of chunks; they add up to the span from first to last chunk.
        assert_eq!(q.itl_ns.len(), CHUNKS.len() - 1);
        assert_eq!(q.itl_ns.iter().sum::<u64>(), q.e2e_ns - q.ttft_ns);
        // The server waits before each chunk, so no chunk can arrive earlier.
        assert!(q.ttft_ns >= FIRST_CHUNK_DELAY.as_nanos() as u64, "{q:?}");
        let scripted_ns =
            (FIRST_CHUNK_DELAY + CHUNK_GAP * (CHUNKS.len() as u32 - 1)).as_nanos() as u64;
        assert!(q.e2e_ns >= scripted_ns, "{q:?}");
        assert_eq!(q.arrival_offset_ns, None);
        assert_eq!(
            q.finish_offset_ns.unwrap() - q.start_offset_ns.unwrap(),
            q.e2e_ns
        );
        assert_eq!(
            q.stop_reason,
            StopReason::Eos,
            "finish_reason absent, fewer than max tokens"
        );
        if prompt.starts_with("stream") {
            // The server's usage wins over lem's count.
            assert_eq!(q.output_tokens, USAGE_COMPLETION_TOKENS);
            assert_eq!(
                q.input_tokens,
                USAGE_PROMPT_TOKENS_BASE + prompt.len() as u32
            );
        } else {
            // No usage: lem counted — the prompt with the model's tokenizer, and the
            // output's three words (each one token in SmolLM2's vocabulary).
            assert_eq!(
                q.input_tokens as usize,
                headers.tokenizer.encode(prompt).unwrap().len()
            );
            assert_eq!(q.output_tokens, CHUNKS.len() as u32);
        }
    }
    assert_eq!(s.output_tokens_counted_by_lem, [2]);
    assert_eq!(s.input_tokens_counted_by_lem, [2]);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("1 request(s) had no `usage`")),
        "{:?}",
        r.warnings
    );
    // Prefill/decode are not attributable for a server: zero time, no phase split.
    assert_eq!((r.prefill_ns, r.decode_ns), (0, 0));
    assert!(r.energy.iter().all(|e| e.phases.is_none()));
    assert!(r.flops.total() > 0.0);
    assert!(r.peak_memory_bytes.value.is_none());
}

#[test]
fn arrivals_are_honoured_and_latency_counts_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = ["stream a", "stream b", "stream c"];
    let file = write_prompts(dir.path(), &prompts);
    let server = ScriptedServer::start();
    let mut cfg = config(&server.endpoint(), &file, 1);
    cfg.latency_simulation.enabled = true;
    cfg.latency_simulation.mode = lem_common::config::LatencyMode::Constant;
    let qps = 4.0;
    cfg.latency_simulation.target_qps = qps;
    let r = run(cfg, &context(dir.path())).unwrap();
    assert!(r.server.as_ref().unwrap().failed_requests.is_empty());
    for q in &r.requests {
        // Constant schedule: request i is due at i / qps.
        let due_ns = (q.index as f64 / qps * 1e9).round() as u64;
        assert_eq!(q.arrival_offset_ns, Some(due_ns));
        let sent = q.start_offset_ns.unwrap();
        assert!(sent >= due_ns, "sent at {sent} before due {due_ns}");
        // TTFT includes the wait between arrival and sending.
        assert!(q.ttft_ns >= sent - due_ns + FIRST_CHUNK_DELAY.as_nanos() as u64);
        assert_eq!(q.finish_offset_ns.unwrap() - due_ns, q.e2e_ns);
    }
    assert_eq!(server.stats.max_in_flight.load(Ordering::SeqCst), 1);
}

#[test]
fn a_server_that_is_down_is_an_error_naming_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_prompts(dir.path(), &["stream a"]);
    let endpoint = format!("http://127.0.0.1:{}/v1", closed_port());
    let cfg = config(&endpoint, &file, 1);
    let ctx = context(dir.path());
    for err in [
        runner::preflight(&cfg, &ctx).unwrap_err(),
        run(cfg.clone(), &ctx).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, RunError::Server(_)), "{err:?}");
        assert!(
            msg.contains(&endpoint) && msg.contains("not reachable"),
            "{msg}"
        );
    }
}

#[test]
fn a_refused_connection_mid_run_is_a_connect_failure() {
    use lem_agent::openai::drive::{drive, PlannedRequest, Target};
    use lem_agent::openai::endpoint::Endpoint;
    let target = Target {
        endpoint: Endpoint::parse(&format!("http://127.0.0.1:{}/v1", closed_port())).unwrap(),
        api_key: None,
        request_timeout: std::time::Duration::from_secs(5),
        max_concurrency: 2,
    };
    let planned = (0..3)
        .map(|i| PlannedRequest {
            index: i,
            body: b"{}".to_vec(),
            arrival_ns: None,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stop = AtomicBool::new(false);
    let mut seen = 0;
    let sent = rt
        .block_on(drive(
            planned,
            &target,
            std::time::Instant::now(),
            &stop,
            |_| seen += 1,
        ))
        .unwrap();
    assert_eq!((sent.len(), seen), (3, 3));
    for s in &sent {
        let f = s.outcome.as_ref().unwrap_err();
        assert_eq!(f.kind, FailureKind::Connect, "{f:?}");
        assert!(f.reason.contains("127.0.0.1"), "{}", f.reason);
    }
}

#[test]
fn an_unset_api_key_variable_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_prompts(dir.path(), &["stream a"]);
    let server = ScriptedServer::start();
    let mut cfg = config(&server.endpoint(), &file, 1);
    let var = "LEM_TEST_OPENAI_KEY_THAT_IS_NEVER_SET";
    cfg.openai.as_mut().unwrap().api_key_env = Some(var.into());
    let msg = run(cfg, &context(dir.path())).unwrap_err().to_string();
    assert!(
        msg.contains("openai.api_key_env") && msg.contains(var),
        "{msg}"
    );
}
