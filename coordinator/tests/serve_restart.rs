//! kill -9 of `lem serve` in the middle of a sweep, and a restart on the same data dir:
//! the state comes back from the store, the agent reconnects and re-announces the leases
//! it still holds (they keep their attempts), and the sweep completes with exactly one
//! accepted result per job. A second `lem serve` on a held data dir is refused.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use lem_coordinator::store::Store;
use serve_support::agent::{AgentPlan, TestAgent};
use serve_support::{join_token, write_configs, Server};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn a_sweep_survives_kill_9_of_the_coordinator_with_one_accepted_result_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let token = join_token(&data_dir);
    let server = Server::start(&data_dir, &[]);
    // One coordinator per data dir: a second is refused at once, naming the first.
    let second = serve_support::run_lem(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already running") && stderr.contains(&server.addr),
        "{stderr}"
    );
    let answered_before_kill = 2;
    let agent = TestAgent::spawn(
        data_dir.clone(),
        dir.path().join("agent-cred"),
        token,
        AgentPlan {
            node_name: "node-b".into(),
            gpus: 2,
            answer_first: Some(answered_before_kill),
            resend_first_acked: false,
            fail_first: 0,
        },
    );
    server.wait_status("the agent's Hello", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 1)
    });
    let configs = write_configs(dir.path());
    let mut submit = vec!["sweep", "submit", "--cycles", "3"];
    submit.extend(configs.iter().map(|p| p.to_str().unwrap()));
    server.cli_ok(&submit);
    let jobs = 2 * 3;

    // Two results in, two more leases held (running) by the agent: kill now.
    let status = server.wait_status("two accepted and two leases held", |s| {
        s["sweeps"][0]["progress"]["accepted"].as_u64() == Some(answered_before_kill as u64)
            && s["leases"].as_array().is_some_and(|l| l.len() == 2)
    });
    let held_attempts: BTreeSet<u64> = status["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["attempt"].as_u64().unwrap())
        .collect();
    let connections_before = agent.shared.connections.load(Ordering::SeqCst);
    server.kill9();

    let server = Server::start(&data_dir, &[]);
    // Recovered from the store: the sweep and its two leases, waiting for their agent.
    agent.shared.released.store(true, Ordering::SeqCst);
    let status = server.wait_status("every job accepted after the restart", |s| {
        s["sweeps"][0]["progress"]["accepted"].as_u64() == Some(jobs)
    });
    assert_eq!(status["sweeps"][0]["progress"]["failed"].as_u64(), Some(0));
    assert!(agent.shared.connections.load(Ordering::SeqCst) > connections_before);
    drop(agent);
    server.stop();

    let store = Store::open(&data_dir, Duration::from_secs(10)).unwrap();
    let stored = store.stored_results().unwrap();
    assert_eq!(stored.len() as u64, jobs, "one stored result per job");
    let mut accepted_attempts = BTreeSet::new();
    let mut jobs_seen = BTreeSet::new();
    for r in &stored {
        assert!(jobs_seen.insert(r.job), "{} stored twice", r.job);
        assert_eq!(store.accepted_attempt(r.job).unwrap(), Some(r.attempt));
        accepted_attempts.insert(r.attempt.0);
    }
    // The leases held across the kill were re-announced and kept, not requeued.
    assert!(
        held_attempts.is_subset(&accepted_attempts),
        "held {held_attempts:?}, accepted {accepted_attempts:?}"
    );
}
