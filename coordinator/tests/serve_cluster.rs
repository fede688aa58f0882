//! `lem serve` as a user runs it, on loopback: an in-test agent enrolled with a token
//! from `lem token create` serves a sweep submitted with `lem --coordinator … sweep
//! submit` (2 configs × 3 cycles); status shows the agent and the progress; results are
//! stored once per job and listed through the coordinator; a resubmission under the same
//! idempotency token creates nothing; a viewer is refused and nothing is stored; a
//! result resent after its ack was lost is acknowledged again and stored once; a join
//! token made through the running coordinator enrolls a second agent.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use lem_common::wire::cli::{CliReply, CliRequest};
use lem_coordinator::store::Store;
use serve_support::agent::{AgentPlan, TestAgent};
use serve_support::{join_token, write_configs, Server};
use std::time::Duration;

const CYCLES: u64 = 3;

#[test]
fn a_sweep_runs_on_a_network_agent_and_each_job_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let token = join_token(&data_dir);
    let server = Server::start(&data_dir, &[]);
    assert!(data_dir.join("operator/key.pem").exists());
    assert!(
        server.log_text().contains("listening on"),
        "{}",
        server.log_text()
    );

    let agent = TestAgent::spawn(
        data_dir.clone(),
        dir.path().join("agent-cred"),
        token,
        AgentPlan {
            node_name: "node-a".into(),
            gpus: 2,
            answer_first: None,
            resend_first_acked: true,
            fail_first: 0,
        },
    );
    let status = server.wait_status("the agent's Hello", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 1)
    });
    let agent_row = &status["agents"][0];
    assert!(
        agent_row["id"].as_str().unwrap().starts_with("node-a-"),
        "{agent_row}"
    );
    assert_eq!(agent_row["alive"], true);
    assert_eq!(agent_row["gpus"].as_array().unwrap().len(), 2);

    let configs = write_configs(dir.path());
    let config_args: Vec<&str> = configs.iter().map(|p| p.to_str().unwrap()).collect();
    let mut submit = vec!["sweep", "submit"];
    submit.extend(&config_args);
    submit.extend(["--cycles", "3", "--name", "grid"]);
    let out = server.cli_ok(&submit);
    let jobs = configs.len() as u64 * CYCLES;
    assert!(out.contains(&format!("{jobs} job(s)")), "{out}");

    let status = server.wait_status("every job accepted", |s| {
        s["sweeps"][0]["progress"]["accepted"].as_u64() == Some(jobs)
    });
    let progress = &status["sweeps"][0]["progress"];
    assert_eq!(
        (
            progress["pending"].as_u64(),
            progress["leased"].as_u64(),
            progress["failed"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(status["sweeps"][0]["name"], "grid");
    // Nothing left to run: a watch prints once, says so and ends.
    let watched = server.cli_ok(&["status", "--watch"]);
    assert!(watched.contains("sweep-0 finished"), "{watched}");
    assert!(watched.contains("6/6 accepted"), "{watched}");

    // Through the coordinator: both experiments completed with 3 of 3 cycles.
    let listed: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["results", "list", "--json"])).unwrap();
    let rows = listed.as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sweep-0/alpha", "sweep-0/beta"]);
    for (row, model) in rows.iter().zip(["test/model-0", "test/model-1"]) {
        assert_eq!(row["cycles_done"].as_u64(), Some(CYCLES), "{row}");
        assert_eq!(row["num_cycles"].as_u64(), Some(CYCLES), "{row}");
        assert_eq!(row["status"], "completed");
        assert_eq!(row["model_name"], model);
    }
    let text = server.cli_ok(&["results", "list"]);
    assert!(
        text.contains("sweep-0/alpha") && text.contains("3/3"),
        "{text}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["results", "show", "sweep-0/beta", "--json"]))
            .unwrap();
    let cycles: Vec<u64> = shown["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cycle"].as_u64().unwrap())
        .collect();
    assert_eq!(cycles, [0, 1, 2]);
    let summary = server.cli_ok(&["results", "show", "sweep-0/alpha"]);
    assert!(summary.contains("Experiment sweep-0/alpha"), "{summary}");
    // As embedded `lem aggregate`: one line per experiment (`--force` recomputes the
    // aggregates the finished sweep stored).
    let aggregated = server.cli_ok(&["aggregate", "--all", "--force"]);
    assert_eq!(
        aggregated,
        "sweep-0/alpha: aggregated 3 cycle(s)\nsweep-0/beta: aggregated 3 cycle(s)\n"
    );

    // The ack of the first result was "lost": the agent sent it again and got a
    // second ack; the store holds it once (checked below).
    let first = agent.shared.acks.lock().unwrap()[0].0;
    let deadline = std::time::Instant::now() + serve_support::WAIT;
    while agent.acks_of(first.attempt) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the resent result got no second ack"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The same idempotency token twice: one sweep.
    let resubmit = || {
        request(
            &server,
            &CliRequest::SubmitSweep(lem_common::wire::cli::SweepSubmission {
                idempotency_token: "fixed-token".into(),
                name: "again".into(),
                experiments: vec![lem_common::wire::cli::ExperimentSubmission {
                    name: "gamma".into(),
                    config: serde_json::json!({"model_name": "test/model-g"}),
                    needs: lem_common::wire::cli::DeviceNeeds::Gpus {
                        count: 1,
                        model: None,
                    },
                }],
                cycles: 1,
                pin_device_model: true,
            }),
        )
    };
    let first_submit = resubmit();
    let second_submit = resubmit();
    assert_eq!(
        first_submit,
        CliReply::SweepSubmitted {
            sweep: 1,
            created: true,
            jobs: 1
        }
    );
    assert_eq!(
        second_submit,
        CliReply::SweepSubmitted {
            sweep: 1,
            created: false,
            jobs: 1
        }
    );
    server.wait_status("the second sweep", |s| {
        s["sweeps"][1]["progress"]["accepted"].as_u64() == Some(1)
    });

    // A viewer reads, and is refused a submission; nothing is stored.
    let viewer_dir = dir.path().join("viewer");
    let out = serve_support::run_lem(&[
        "user",
        "add",
        "vera",
        "--role",
        "viewer",
        "--out",
        viewer_dir.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let as_viewer = |args: &[&str]| {
        serve_support::lem()
            .args([
                "--coordinator",
                &server.addr,
                "--credential",
                viewer_dir.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    for args in [&["sweep", "list"][..], &["results", "list"], &["status"]] {
        let read = as_viewer(args);
        assert!(
            read.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&read.stderr)
        );
    }
    let refused = as_viewer(&["aggregate", "sweep-0/alpha"]);
    assert_eq!(refused.status.code(), Some(1), "a viewer aggregated");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("viewer vera may only read"), "{stderr}");
    let mut viewer_submit = vec!["sweep", "submit"];
    viewer_submit.extend(&config_args);
    let refused = as_viewer(&viewer_submit);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("viewer vera may only read"), "{stderr}");
    for args in [["sweep", "cancel", "0"], ["agent", "drain", "x"]] {
        let refused = as_viewer(&args);
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
    }
    let sweeps: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["sweep", "list", "--json"])).unwrap();
    assert_eq!(sweeps.as_array().unwrap().len(), 2, "{sweeps}");

    // With the server holding the store, tokens come from the coordinator; a second
    // agent enrolls with one. A viewer may not make tokens.
    let token_out = server.cli(&["token", "create", "--ttl", "10m"]);
    assert!(
        token_out.status.success(),
        "{}",
        String::from_utf8_lossy(&token_out.stderr)
    );
    let second_token = String::from_utf8(token_out.stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(second_token.starts_with("lemjoin1."), "{second_token}");
    let refused = as_viewer(&["token", "create"]);
    assert_eq!(refused.status.code(), Some(1));
    let second = TestAgent::spawn(
        data_dir.clone(),
        dir.path().join("agent-cred-2"),
        second_token,
        AgentPlan {
            node_name: "node-c".into(),
            gpus: 1,
            answer_first: None,
            resend_first_acked: false,
            fail_first: 0,
        },
    );
    server.wait_status("the second agent", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 2)
    });

    drop(second);
    drop(agent);
    server.stop();

    // Exactly one stored result per job, each the job's accepted one.
    let store = Store::open(&data_dir, Duration::from_secs(10)).unwrap();
    let stored = store.stored_results().unwrap();
    assert_eq!(stored.len() as u64, jobs + 1);
    let mut jobs_seen: Vec<u64> = stored.iter().map(|r| r.job.0).collect();
    jobs_seen.dedup();
    assert_eq!(jobs_seen.len() as u64, jobs + 1, "a job stored twice");
    for r in &stored {
        assert_eq!(store.accepted_attempt(r.job).unwrap(), Some(r.attempt));
    }
}

/// One CLI request over the wire with the operator credential.
fn request(server: &Server, request: &CliRequest) -> CliReply {
    let credential = lem_net::ClientCredential::load(&server.data_dir.join("operator"))
        .unwrap()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = lem_net::ClientOptions::default();
        let mut s = lem_net::connect(&server.addr, &credential, lem_net::Alpn::Cli, &options)
            .await
            .unwrap();
        s.send.send(request).await.unwrap();
        let reply = s.recv.expect::<CliReply>("a reply").await.unwrap();
        s.close().await;
        reply
    })
}
