//! One join token for several nodes, as a Kubernetes DaemonSet reads it from one Secret:
//! `lem token create --uses 2` admits two real `lem-agent` processes, and a third with
//! the same token is refused with a clear error and nothing stored for it; an expired
//! token is refused the same way. A token made through the running coordinator carries
//! its use count too.

mod netns_support;
mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use lem_coordinator::store::Store;
use lem_net::pki::CREDENTIAL_CERT_FILE;
use netns_support::agent_binary;
use serve_support::support;
use serve_support::{lem, Server, WAIT};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A simulated one-GPU node for a real `lem-agent` on loopback.
struct AgentNode {
    name: String,
    dir: PathBuf,
}

impl AgentNode {
    fn new(root: &Path, name: &str) -> AgentNode {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("powercap")).unwrap();
        let scenario = serde_json::json!({ "driver_version": "550.54.15", "gpus": [{
            "name": netns_support::GPU_MODEL,
            "uuid": format!("GPU-{name}-0000-4000-8000-000000000001"),
            "power": [[0.0, 200.0]], "temperature_c": [[0.0, 41]],
            "energy_start_mj": 5_000_000 }] });
        std::fs::write(dir.join("scenario.json"), scenario.to_string()).unwrap();
        AgentNode {
            name: name.to_owned(),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn spawn(&self, coordinator: &str, token: &str) -> Child {
        Command::new(agent_binary())
            .args(["--coordinator", coordinator, "--join-token", token])
            .args(["--node-name", &self.name, "--data-dir"])
            .arg(self.dir.join("agent-data"))
            .args(["--heartbeat-interval-ms", "500"])
            .args([
                "--reconnect-initial-ms",
                "100",
                "--reconnect-max-ms",
                "1000",
            ])
            .env_remove("LEM_DATA_DIR")
            .env_remove("LEM_AGENT_DATA_DIR")
            .env_remove("LEM_JOIN_TOKEN")
            .env_remove("LEM_AGENT_CONFIG")
            .env_remove("LEM_COORDINATOR")
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("LEM_NVML_LIB", support::build_fake_nvml())
            .env("FAKE_NVML_SCENARIO", self.dir.join("scenario.json"))
            .env("LEM_POWERCAP_ROOT", self.dir.join("powercap"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("agent.log")).unwrap())
            .spawn()
            .expect("lem-agent starts")
    }
}

/// Kills the agents when the test ends, passed or not.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (bounded) for an agent that is expected to give up.
fn exit_of(child: &mut Child, node: &AgentNode) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} still runs after {WAIT:?}:\n{}",
            node.name,
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lem token create` on the data dir: the token's text and what stderr said.
fn token_create(data_dir: &Path, ttl: &str, uses: &str) -> (String, String) {
    let out = lem()
        .args([
            "token",
            "create",
            "--ttl",
            ttl,
            "--uses",
            uses,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        stderr,
    )
}

#[test]
fn a_two_use_token_enrolls_two_agents_and_refuses_a_third_and_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let uses = 2;
    let (shared_token, said) = token_create(&data_dir, "1h", &uses.to_string());
    assert!(said.contains("join token for 2 agents"), "{said}");
    let (short_token, said) = token_create(&data_dir, "1s", "5");
    assert!(said.contains("join token for 5 agents"), "{said}");
    let short_made = Instant::now();
    let server = Server::start(&data_dir, &[]);

    let nodes: Vec<AgentNode> = ["tok-a", "tok-b", "tok-c", "tok-d"]
        .iter()
        .map(|n| AgentNode::new(dir.path(), n))
        .collect();
    let mut agents = Agents(
        nodes[..2]
            .iter()
            .map(|n| n.spawn(&server.addr, &shared_token))
            .collect(),
    );
    let status = server.wait_status("two agents on one token", |s| {
        s["agents"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["alive"] == true))
    });
    let ids: Vec<&str> = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    for node in &nodes[..2] {
        let prefix = format!("{}-", node.name);
        assert!(ids.iter().any(|id| id.starts_with(&prefix)), "{ids:?}");
    }

    // A third node with the same token: refused, and it says why.
    let mut third = nodes[2].spawn(&server.addr, &shared_token);
    let exit = exit_of(&mut third, &nodes[2]);
    let log = nodes[2].log();
    assert!(!exit.success(), "{log}");
    assert!(log.contains("used up"), "{log}");
    assert!(log.contains(&format!("all {uses} enrollments")), "{log}");

    // A token past its TTL: refused as expired.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(short_made.elapsed()));
    let mut late = nodes[3].spawn(&server.addr, &short_token);
    let exit = exit_of(&mut late, &nodes[3]);
    let log = nodes[3].log();
    assert!(!exit.success(), "{log}");
    assert!(log.contains("expired"), "{log}");

    // Through the running coordinator too: a token for three.
    let made = server.cli(&["token", "create", "--ttl", "5m", "--uses", "3"]);
    let said = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "{said}");
    assert!(said.contains("join token for 3 agents"), "{said}");

    let status = server.status_json();
    assert_eq!(status["agents"].as_array().unwrap().len(), 2, "{status:#}");
    agents.0.push(third);
    agents.0.push(late);
    drop(agents);
    server.stop();

    // Nothing stored for the refused nodes: the shared token used exactly twice, the
    // short one never, and a certificate on the admitted nodes only.
    let store = Store::open(&data_dir, Duration::from_secs(10)).unwrap();
    let mut rows: Vec<(u32, u32)> = store
        .join_tokens()
        .unwrap()
        .iter()
        .map(|t| (t.max_uses, t.uses))
        .collect();
    rows.sort();
    assert_eq!(rows, vec![(uses, uses), (3, 0), (5, 0)]);
    for (i, node) in nodes.iter().enumerate() {
        let certificate = node.dir.join("agent-data").join(CREDENTIAL_CERT_FILE);
        assert_eq!(certificate.exists(), i < 2, "{}", certificate.display());
    }
}
