//! One join token for several nodes, as a Kubernetes DaemonSet reads it from one Secret:
//! `lem token create --uses 2` admits two real `lem-agent` processes, and a third with
//! the same token is refused with a clear error and nothing stored for it; an expired
//! token is refused the same way. A token made through the running coordinator carries
//! its use count too.

// Only its GPU model name is used here.
#[allow(unused_imports)]
mod netns_support;
mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use lem_coordinator::store::Store;
use lem_net::pki::CREDENTIAL_CERT_FILE;
use serve_support::node::{AgentProcess, SimNode};
use serve_support::{lem, Server, WAIT};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A simulated one-GPU node for a real `lem-agent` on loopback.
fn one_gpu_node(root: &Path, name: &str) -> SimNode {
    let gpu = serde_json::json!({
        "name": netns_support::GPU_MODEL,
        "uuid": format!("GPU-{name}-0000-4000-8000-000000000001"),
        "power": [[0.0, 200.0]], "temperature_c": [[0.0, 41]],
        "energy_start_mj": 5_000_000 });
    SimNode::new(root, name, vec![gpu])
}

/// Waits (bounded) for an agent that is expected to give up.
fn exit_of(agent: &mut AgentProcess, node: &SimNode) -> ExitStatus {
    agent.wait_exit(WAIT).unwrap_or_else(|| {
        panic!(
            "{} still runs after {WAIT:?}:\n{}",
            node.name,
            agent.log_text()
        )
    })
}

/// Waits (bounded) for `count` agents, all alive; their ids.
fn alive_agent_ids(server: &Server, count: usize, what: &str) -> Vec<String> {
    let status = server.wait_status(what, |s| {
        s["agents"]
            .as_array()
            .is_some_and(|a| a.len() == count && a.iter().all(|x| x["alive"] == true))
    });
    status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
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

    let nodes: Vec<SimNode> = ["tok-a", "tok-b", "tok-c", "tok-d"]
        .iter()
        .map(|n| one_gpu_node(dir.path(), n))
        .collect();
    let agents: Vec<AgentProcess> = nodes[..2]
        .iter()
        .map(|n| n.spawn(&server.addr, &shared_token, 0))
        .collect();
    let ids = alive_agent_ids(&server, 2, "two agents on one token");
    for node in &nodes[..2] {
        let prefix = format!("{}-", node.name);
        assert!(ids.iter().any(|id| id.starts_with(&prefix)), "{ids:?}");
    }

    // A third node with the same token: refused, and it says why.
    let mut third = nodes[2].spawn(&server.addr, &shared_token, 0);
    let exit = exit_of(&mut third, &nodes[2]);
    let log = third.log_text();
    assert!(!exit.success(), "{log}");
    assert!(log.contains("used up"), "{log}");
    assert!(log.contains(&format!("all {uses} enrollments")), "{log}");

    // A token past its TTL: refused as expired.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(short_made.elapsed()));
    let mut late = nodes[3].spawn(&server.addr, &short_token, 0);
    let exit = exit_of(&mut late, &nodes[3]);
    let log = late.log_text();
    assert!(!exit.success(), "{log}");
    assert!(log.contains("expired"), "{log}");

    // Through the running coordinator too: a token for three.
    let made = server.cli(&["token", "create", "--ttl", "5m", "--uses", "3"]);
    let said = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "{said}");
    assert!(said.contains("join token for 3 agents"), "{said}");

    let status = server.status_json();
    assert_eq!(status["agents"].as_array().unwrap().len(), 2, "{status:#}");
    drop((agents, third, late));
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
        let certificate = node.data_dir().join(CREDENTIAL_CERT_FILE);
        assert_eq!(certificate.exists(), i < 2, "{}", certificate.display());
    }
}

/// A token's id as `lem token list` should show it, computed here from the token's
/// text: the first 12 hex digits of the SHA-256 of its secret (`lemjoin1.<secret>.<ca>`).
fn expected_id(token: &str) -> String {
    let secret_hex = token.split('.').nth(1).unwrap();
    let secret: Vec<u8> = (0..secret_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16).unwrap())
        .collect();
    Sha256::digest(&secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..12]
        .to_owned()
}

/// `token list --json` rows by id: (uses, max_uses, uses_left, state).
fn listed(stdout: &str) -> std::collections::BTreeMap<String, (u64, u64, u64, String)> {
    let rows: serde_json::Value = serde_json::from_str(stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                (
                    r["uses"].as_u64().unwrap(),
                    r["max_uses"].as_u64().unwrap(),
                    r["uses_left"].as_u64().unwrap(),
                    r["state"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// `lem token ARGS --data-dir DATA_DIR` (no `--coordinator`).
fn token_on_data_dir(data_dir: &Path, args: &[&str]) -> std::process::Output {
    lem()
        .args(["token"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

fn stdout_of(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn listed_tokens_show_their_uses_and_a_revoked_one_enrolls_no_one_while_the_other_still_does() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let (revoked_token, said) = token_create(&data_dir, "1h", "2");
    let revoked_id = expected_id(&revoked_token);
    assert!(said.contains(&revoked_id), "create names the id: {said}");
    let (kept_token, _) = token_create(&data_dir, "1h", "3");
    let kept_id = expected_id(&kept_token);

    // On the data dir: both, unused.
    let local = |args: &[&str]| token_on_data_dir(&data_dir, args);
    let rows = listed(&stdout_of(&local(&["list", "--json"]), "local list"));
    assert_eq!(
        rows,
        [
            (revoked_id.clone(), (0, 2, 2, "active".to_owned())),
            (kept_id.clone(), (0, 3, 3, "active".to_owned())),
        ]
        .into()
    );
    let table = stdout_of(&local(&["list"]), "local list table");
    assert!(!table.contains(revoked_token.split('.').nth(1).unwrap()));
    for (id, left) in [(&revoked_id, "2/2"), (&kept_id, "3/3")] {
        let line = table.lines().find(|l| l.starts_with(id.as_str())).unwrap();
        assert!(line.contains(left) && line.ends_with("active"), "{table}");
    }

    let server = Server::start(&data_dir, &[]);
    let nodes: Vec<SimNode> = ["rev-a", "rev-b", "rev-c"]
        .iter()
        .map(|n| one_gpu_node(dir.path(), n))
        .collect();
    let first = nodes[0].spawn(&server.addr, &revoked_token, 0);
    server.wait_status("the first agent", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 1)
    });

    // Through the coordinator: the first token used once, the other not at all.
    let rows = listed(&server.cli_ok(&["token", "list", "--json"]));
    assert_eq!(rows[&revoked_id], (1, 2, 1, "active".to_owned()));
    assert_eq!(rows[&kept_id], (0, 3, 3, "active".to_owned()));

    // A viewer lists, and is refused a revoke.
    let viewer_dir = dir.path().join("viewer");
    let out = lem()
        .args(["user", "add", "vera", "--role", "viewer", "--out"])
        .arg(&viewer_dir)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    stdout_of(&out, "user add");
    let as_viewer = |args: &[&str]| {
        lem()
            .args(["--coordinator", &server.addr, "--credential"])
            .arg(&viewer_dir)
            .args(args)
            .output()
            .unwrap()
    };
    let viewer_rows = listed(&stdout_of(
        &as_viewer(&["token", "list", "--json"]),
        "viewer list",
    ));
    assert_eq!(viewer_rows, rows);
    let refused = as_viewer(&["token", "revoke", &revoked_id]);
    assert!(!refused.status.success(), "a viewer revoked a token");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("may only read"), "{said}");
    assert_eq!(
        listed(&server.cli_ok(&["token", "list", "--json"])),
        rows,
        "a viewer's revoke changed a token"
    );

    // The operator revokes it (by a prefix), twice: the second changes nothing.
    let said = server.cli_ok(&["token", "revoke", &revoked_id[..8]]);
    assert!(
        said.contains(&format!("revoked join token {revoked_id}")),
        "{said}"
    );
    let said = server.cli_ok(&["token", "revoke", &revoked_id]);
    assert!(said.contains("already revoked"), "{said}");
    let unknown = server.cli(&["token", "revoke", "0000000000ff"]);
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("no join token has id"), "{said}");

    // An agent enrolling with the revoked token is refused and says why; one with the
    // other token still enrolls.
    let mut refused_agent = nodes[1].spawn(&server.addr, &revoked_token, 0);
    let exit = exit_of(&mut refused_agent, &nodes[1]);
    let log = refused_agent.log_text();
    assert!(!exit.success(), "{log}");
    assert!(log.contains("revoked"), "{log}");
    let second = nodes[2].spawn(&server.addr, &kept_token, 0);
    let ids = alive_agent_ids(&server, 2, "the agent on the kept token");
    assert!(!ids.iter().any(|id| id.starts_with("rev-b-")), "{ids:?}");

    // Active ones only by default, and how many are hidden; all with --all.
    let table = server.cli_ok(&["token", "list"]);
    assert!(
        table.contains(&kept_id) && !table.contains(&revoked_id),
        "{table}"
    );
    assert!(table.contains("(1 more not shown"), "{table}");
    let rows = listed(&server.cli_ok(&["token", "list", "--all", "--json"]));
    assert_eq!(rows[&revoked_id], (1, 2, 1, "revoked".to_owned()));
    assert_eq!(rows[&kept_id], (1, 3, 2, "active".to_owned()));
    drop((first, refused_agent, second));
    server.stop();

    // Nothing stored for the refused node: the revoked token still counts one use, and
    // the refused node holds no certificate.
    let store = Store::open(&data_dir, Duration::from_secs(10)).unwrap();
    let mut uses: Vec<(u32, u32, bool)> = store
        .join_tokens()
        .unwrap()
        .iter()
        .map(|t| (t.max_uses, t.uses, t.revoked_at_unix_ms.is_some()))
        .collect();
    uses.sort();
    assert_eq!(uses, vec![(2, 1, true), (3, 1, false)]);
    drop(store);
    for (node, enrolled) in nodes.iter().zip([true, false, true]) {
        let certificate = node.data_dir().join(CREDENTIAL_CERT_FILE);
        assert_eq!(certificate.exists(), enrolled, "{}", certificate.display());
    }

    // On the data dir again: a revoke there, seen by the next list.
    let said = stdout_of(&local(&["revoke", &kept_id]), "local revoke");
    assert!(
        said.contains(&format!("revoked join token {kept_id}")),
        "{said}"
    );
    let rows = listed(&stdout_of(&local(&["list", "--json"]), "local list"));
    assert!(rows.is_empty(), "{rows:?}");
    let rows = listed(&stdout_of(
        &local(&["list", "--all", "--json"]),
        "local list --all",
    ));
    assert_eq!(rows[&kept_id], (1, 3, 2, "revoked".to_owned()));
}

/// The coordinator-host line, `lem token create --data-dir D` without
/// `--coordinator`, while `lem serve` holds D: it goes through that server with D's
/// operator credential (whatever names the server certificate was asked for), and so do
/// `list` and `revoke`; the token it prints enrolls an agent.
#[test]
fn token_commands_on_a_data_dir_held_by_its_server_go_through_that_server() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let server = Server::start(&data_dir, &["--server-name", "head.example"]);

    let (token, said) = token_create(&data_dir, "10m", "1");
    assert!(said.contains("going through it"), "{said}");
    let id = expected_id(&token);
    let on_data_dir = |args: &[&str]| token_on_data_dir(&data_dir, args);
    let rows = listed(&stdout_of(&on_data_dir(&["list", "--json"]), "token list"));
    assert_eq!(
        rows.get(&id),
        Some(&(0, 1, 1, "active".to_owned())),
        "{rows:?}"
    );

    let node = one_gpu_node(dir.path(), "via-host");
    let agent = node.spawn(&server.addr, &token, 0);
    let ids = alive_agent_ids(&server, 1, "an agent on a token made on the data dir");
    assert!(ids[0].starts_with("via-host-"), "{ids:?}");

    // A second token, revoked on the data dir: the server's store says so.
    let (other, _) = token_create(&data_dir, "10m", "1");
    let other_id = expected_id(&other);
    stdout_of(&on_data_dir(&["revoke", &other_id]), "token revoke");
    let rows = listed(&stdout_of(
        &on_data_dir(&["list", "--all", "--json"]),
        "token list --all",
    ));
    assert_eq!(
        rows.get(&id),
        Some(&(1, 1, 0, "used_up".to_owned())),
        "{rows:?}"
    );
    assert_eq!(rows[&other_id].3, "revoked", "{rows:?}");
    drop(agent);
    server.stop();
}
