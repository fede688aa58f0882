//! Operating a cluster through `lem --coordinator`: runner failures are retried and
//! listed by `sweep show`; `agent drain` stops new leases to an agent; `sweep cancel`
//! and `sweep resume` change a queued sweep; a new agent (token made through the
//! coordinator) takes the resumed jobs and the sweep completes.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use serve_support::agent::{AgentPlan, TestAgent};
use serve_support::{join_token, write_configs, Server};

#[test]
fn failures_retry_drain_cancel_and_resume_work_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let token = join_token(&data_dir);
    let server = Server::start(&data_dir, &[]);
    let failures = 2;
    let agent = TestAgent::spawn(
        data_dir.clone(),
        dir.path().join("agent-d"),
        token,
        AgentPlan {
            node_name: "node-d".into(),
            gpus: 2,
            answer_first: None,
            resend_first_acked: false,
            fail_first: failures,
        },
    );
    let status = server.wait_status("the agent's Hello", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 1)
    });
    let agent_id = status["agents"][0]["id"].as_str().unwrap().to_owned();
    let configs = write_configs(dir.path());
    let (alpha, beta) = (configs[0].to_str().unwrap(), configs[1].to_str().unwrap());

    // Two runner failures, retried (three are allowed per job): both jobs accepted.
    server.cli_ok(&["sweep", "submit", alpha, "--cycles", "2"]);
    server.wait_status("sweep-0 accepted", |s| {
        s["sweeps"][0]["progress"]["accepted"].as_u64() == Some(2)
    });
    let shown: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["sweep", "show", "sweep-0", "--json"])).unwrap();
    let jobs = shown["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j["status"] == "accepted"), "{shown:#}");
    let errors: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j["errors"].as_array().unwrap())
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), failures, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("simulated runner failure")),
        "{errors:?}"
    );

    // Drained: the agent gets no new lease, so a new sweep waits in the queue.
    let out = server.cli_ok(&["agent", "drain", &agent_id]);
    assert!(out.contains("draining"), "{out}");
    server.cli_ok(&["sweep", "submit", beta, "--cycles", "2"]);
    let status = server.wait_status("sweep-1 queued", |s| s["queued_jobs"].as_u64() == Some(2));
    assert_eq!(status["agents"][0]["draining"], true);
    assert_eq!(status["sweeps"][1]["progress"]["pending"].as_u64(), Some(2));
    let listed: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["agent", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["id"], agent_id.as_str());

    let out = server.cli_ok(&["sweep", "cancel", "1"]);
    assert!(out.contains("2 job(s) cancelled"), "{out}");
    server.wait_status("sweep-1 cancelled", |s| {
        s["sweeps"][1]["progress"]["cancelled"].as_u64() == Some(2)
    });
    let out = server.cli_ok(&["sweep", "resume", "sweep-1"]);
    assert!(out.contains("2 job(s) queued again"), "{out}");

    // A second agent, enrolled with a token made through the coordinator, runs them.
    let token_out = server.cli_ok(&["token", "create", "--ttl", "5m"]);
    let second = TestAgent::spawn(
        data_dir.clone(),
        dir.path().join("agent-e"),
        token_out.trim().to_owned(),
        AgentPlan {
            node_name: "node-e".into(),
            gpus: 1,
            answer_first: None,
            resend_first_acked: false,
            fail_first: 0,
        },
    );
    server.wait_status("sweep-1 accepted on the new agent", |s| {
        s["sweeps"][1]["progress"]["accepted"].as_u64() == Some(2)
    });
    let leased_by_drained = agent
        .shared
        .leases
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.sweep == 1)
        .count();
    assert_eq!(leased_by_drained, 0, "a drained agent got a lease");
    assert_eq!(
        second
            .shared
            .leases
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.sweep == 1)
            .count(),
        2
    );
    let listed = server.cli_ok(&["sweep", "list"]);
    assert!(
        listed.contains("sweep-1") && listed.contains("2/2"),
        "{listed}"
    );

    drop(second);
    drop(agent);
    server.stop();
}
