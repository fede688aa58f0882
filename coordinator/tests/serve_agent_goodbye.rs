//! A real `lem-agent` stopped cleanly (SIGTERM) while it runs nothing says goodbye, and
//! `lem serve` lists it disconnected at once. The agent timeout is set to ten minutes,
//! beyond every wait here, so only the goodbye can explain the change.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use serve_support::node::SimNode as Node;
use serve_support::{join_token, Server};
use std::time::{Duration, Instant};

const AGENT_TIMEOUT_MS: u64 = 600_000;

fn agents_alive(status: &serde_json::Value) -> Vec<bool> {
    status["agents"]
        .as_array()
        .map(|a| a.iter().map(|a| a["alive"] == true).collect())
        .unwrap_or_default()
}

#[test]
fn an_agent_stopped_by_sigterm_while_idle_is_listed_disconnected_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(
        dir.path(),
        "node-a",
        vec![serde_json::json!({ "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-0000a000-0000-4000-8000-000000000001", "power": [[0.0, 200.0]],
            "temperature_c": [[0.0, 40]], "energy_start_mj": 1_000_000 })],
    );
    let data_dir = dir.path().join("coordinator");
    let token = join_token(&data_dir);
    let timeout = AGENT_TIMEOUT_MS.to_string();
    let ttl = (2 * AGENT_TIMEOUT_MS).to_string();
    let server = Server::start(
        &data_dir,
        &["--agent-timeout-ms", &timeout, "--lease-ttl-ms", &ttl],
    );
    let mut agent = node.spawn(&server.addr, &token, 0);
    server.wait_status("the agent connected", |s| agents_alive(s) == [true]);

    let stopped_at = Instant::now();
    agent.sigterm();
    let exit = agent
        .wait_exit(Duration::from_secs(60))
        .expect("lem-agent exits on SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", agent.log_text());
    assert_eq!(agent.count("stopped"), 1, "{}", agent.log_text());
    server.wait_status("the agent listed disconnected", |s| {
        agents_alive(s) == [false]
    });
    let took = stopped_at.elapsed();
    assert!(
        took < Duration::from_millis(AGENT_TIMEOUT_MS),
        "disconnected after {took:?}: the agent timeout, not the goodbye"
    );
    eprintln!("agent goodbye: listed disconnected {took:?} after SIGTERM");
    server.stop();
}
