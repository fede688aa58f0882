//! `lem token create` as a user runs it: the printed token carries the data dir's CA
//! hash, the store holds its hash with the asked-for expiry, the CA is made once, a bad
//! TTL is a usage error, and a store held by another process is a clear failure.

use lem_coordinator::store::Store;
use lem_net::pki::ClusterCa;
use lem_net::token::JoinToken;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn lem_token_create(data_dir: &Path, ttl: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lem"))
        .args(["token", "create", "--ttl", ttl, "--data-dir"])
        .arg(data_dir)
        .env_remove("LEM_DATA_DIR")
        .output()
        .unwrap()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn token_create_prints_a_token_for_this_ca_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let ttl_ms = 15 * 60 * 1000;

    let before = now_unix_ms();
    let first = lem_token_create(&data_dir, "15m");
    let after = now_unix_ms();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("created the cluster CA"), "{stderr}");
    let text = String::from_utf8(first.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "stdout is the token alone: {text}");
    let token = JoinToken::parse(&text).unwrap();
    let ca = ClusterCa::load(&data_dir).unwrap();
    assert_eq!(token.ca_sha256(), ca.sha256());

    // A second token: same CA, not created again.
    let second = lem_token_create(&data_dir, "2h");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(!stderr.contains("created the cluster CA"), "{stderr}");
    let token2 = JoinToken::parse(&String::from_utf8(second.stdout).unwrap()).unwrap();
    assert_eq!(token2.ca_sha256(), ca.sha256());
    assert_ne!(token2.secret_sha256(), token.secret_sha256());

    let store = Store::open(&data_dir, Duration::from_secs(5)).unwrap();
    let rows = store.join_tokens().unwrap();
    assert_eq!(rows.len(), 2);
    let row = rows
        .iter()
        .find(|r| r.secret_sha256 == token.secret_sha256())
        .expect("the first token's hash is stored");
    assert_eq!(row.used_at_unix_ms, None);
    assert!(
        (before + ttl_ms..=after + ttl_ms).contains(&row.expires_at_unix_ms),
        "expiry {} not 15 min after the run ({before}..{after})",
        row.expires_at_unix_ms
    );
    drop(store);

    for entry in walk(&data_dir.join("lem.sled")) {
        let bytes = std::fs::read(&entry).unwrap();
        let secret_hex = text.trim().split('.').nth(1).unwrap();
        assert!(
            !bytes
                .windows(secret_hex.len())
                .any(|w| w == secret_hex.as_bytes()),
            "{} holds the secret",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_bad_ttl_is_a_usage_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let out = lem_token_create(&data_dir, "15w");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--ttl") && stderr.contains("15w"),
        "{stderr}"
    );
    assert!(
        !data_dir.exists(),
        "a refused command created {}",
        data_dir.display()
    );
}

#[test]
fn a_store_held_by_another_process_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    // This test process holds the store, as a running coordinator would.
    let held = Store::open(&data_dir, Duration::from_secs(5)).unwrap();
    let out = lem_token_create(&data_dir, "15m");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("held by another process") && stderr.contains("lem.sled"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "printed a token anyway");
    assert!(held.join_tokens().unwrap().is_empty());
    assert!(!data_dir.join("ca.pem").exists(), "made a CA anyway");
}
