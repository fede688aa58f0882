//! Inputs and the held data dir, with a real `lem serve`: a prompt file named in a
//! config travels inside the job (bytes and SHA-256) to the agent that leases it; a
//! local read-only command on the server's data dir says at once that the server holds
//! it, naming its address.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use serve_support::agent::{AgentPlan, TestAgent};
use serve_support::{join_token, lem, Server, WAIT};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

#[test]
fn a_prompt_file_travels_with_the_job_and_a_local_read_names_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let token = join_token(&data_dir);
    let server = Server::start(&data_dir, &[]);
    let agent = TestAgent::spawn(
        data_dir.clone(),
        dir.path().join("agent-p"),
        token,
        AgentPlan {
            node_name: "node-p".into(),
            gpus: 1,
            answer_first: None,
            resend_first_acked: false,
            fail_first: 0,
        },
    );
    server.wait_status("the agent's Hello", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 1)
    });

    let prompts = dir.path().join("my-prompts.txt");
    let body = "How far is the moon?\nWrite a haiku about rust.\n";
    std::fs::write(&prompts, body).unwrap();
    let config = dir.path().join("filed.yaml");
    std::fs::write(
        &config,
        format!(
            "config_name: filed\nmodel_name: test/model-0\nmax_input_tokens: 16\n\
             max_output_tokens: 4\nnum_input_prompts: 2\nnum_cycles: 1\n\
             prompt_source:\n  type: file\n  path: {}\n",
            prompts.display()
        ),
    )
    .unwrap();
    let out = server.cli_ok(&["sweep", "submit", config.to_str().unwrap()]);
    assert!(out.contains("1 job(s)"), "{out}");
    // The file could vanish now: what runs is what was submitted.
    std::fs::remove_file(&prompts).unwrap();

    let deadline = Instant::now() + WAIT;
    let lease = loop {
        if let Some(lease) = agent.shared.leases.lock().unwrap().first().cloned() {
            break lease;
        }
        assert!(Instant::now() < deadline, "no lease reached the agent");
        std::thread::sleep(Duration::from_millis(100));
    };
    let source = &lease.config["prompt_source"];
    let expected_sha: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(source["sha256"].as_str(), Some(expected_sha.as_str()));
    let shipped = lem_common::shipped_prompt::decode(
        "my-prompts.txt",
        &expected_sha,
        source["content_base64"].as_str().expect("content shipped"),
    )
    .unwrap();
    assert_eq!(shipped, body.as_bytes());

    // A local `results list` on the held data dir: refused at once (not after the
    // store's 30 s lock wait), naming the server's address and the remote command.
    let started = Instant::now();
    let local = lem()
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["results", "list"])
        .output()
        .unwrap();
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&local.stderr);
    assert!(!local.status.success(), "{stderr}");
    assert!(stderr.contains("held by `lem serve`"), "{stderr}");
    assert!(stderr.contains(&server.addr), "{stderr}");
    assert!(
        stderr.contains(&format!("lem --coordinator {} results", server.addr)),
        "{stderr}"
    );
    assert!(
        waited < Duration::from_secs(25),
        "took {waited:?}: it waited for the lock"
    );

    drop(agent);
    server.stop();
}
