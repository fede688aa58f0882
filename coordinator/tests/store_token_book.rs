//! The coordinator's sled store as lem-net's join-token book, end to end: real
//! enrollments over loopback QUIC against a server whose `EnrollmentDesk` redeems tokens
//! in the store. A token enrolls once; reuse and expiry are refused and change nothing;
//! no file of the store holds a token's text or secret. Time is an injected clock.

use lem_coordinator::store::Store;
use lem_net::pki::{ClusterCa, LEAF_VALIDITY};
use lem_net::token::{create_join_token, JoinToken, StoredToken, TokenError};
use lem_net::{
    enroll, ClientOptions, EnrollmentDesk, NetError, Role, ServerEndpoint, ServerOptions,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const START_UNIX_MS: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 15 * 60 * 1000;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The secret's bytes, decoded here from the token's text (`lemjoin1.<secret>.<ca>`).
fn secret_bytes(text: &str) -> Vec<u8> {
    let secret_hex = text.split('.').nth(1).unwrap();
    (0..secret_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16).unwrap())
        .collect()
}

fn refusal_reason(outcome: Result<lem_net::ClientCredential, NetError>) -> String {
    match outcome {
        Err(NetError::EnrollmentRefused { reason, .. }) => reason,
        Err(other) => panic!("expected an enrollment refusal, got error {other}"),
        Ok(credential) => panic!("expected a refusal, {} enrolled", credential.identity()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_admits_a_token_once_and_refuses_reuse_and_expiry_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = Arc::new(Store::open(&data_dir, Duration::from_secs(5)).unwrap());
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let now_unix_ms = Arc::new(AtomicU64::new(START_UNIX_MS));
    let clock_now = now_unix_ms.clone();
    let desk = EnrollmentDesk {
        ca: ca.clone(),
        tokens: store.clone(),
        clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
        agent_validity: LEAF_VALIDITY,
    };
    let server = ServerEndpoint::bind(
        desk,
        ServerOptions::new("127.0.0.1:0".parse().unwrap(), vec!["127.0.0.1".into()]),
    )
    .unwrap();
    let target = format!("127.0.0.1:{}", server.local_addr().unwrap().port());
    let options = ClientOptions::default();

    let first = create_join_token(store.as_ref(), ca.sha256(), START_UNIX_MS, TTL_MS).unwrap();
    let second = create_join_token(store.as_ref(), ca.sha256(), START_UNIX_MS, TTL_MS).unwrap();
    let texts = [first.to_text(), second.to_text()];

    // A token enrolls once, a minute after it was made.
    let enrolled_at = START_UNIX_MS + 60_000;
    now_unix_ms.store(enrolled_at, Ordering::SeqCst);
    let credential = enroll(&target, &texts[0], "node-a", &options)
        .await
        .expect("a fresh token enrolls");
    assert_eq!(credential.identity().role, Role::Agent);
    assert_eq!(credential.ca_sha256().unwrap(), ca.sha256());
    let mut expected = vec![
        StoredToken {
            secret_sha256: first.secret_sha256(),
            expires_at_unix_ms: START_UNIX_MS + TTL_MS,
            used_at_unix_ms: Some(enrolled_at),
            max_uses: 1,
            uses: 1,
            created_at_unix_ms: Some(START_UNIX_MS),
            revoked_at_unix_ms: None,
        },
        StoredToken {
            secret_sha256: second.secret_sha256(),
            expires_at_unix_ms: START_UNIX_MS + TTL_MS,
            used_at_unix_ms: None,
            max_uses: 1,
            uses: 0,
            created_at_unix_ms: Some(START_UNIX_MS),
            revoked_at_unix_ms: None,
        },
    ];
    expected.sort_by_key(|t| t.secret_sha256);
    assert_eq!(store.join_tokens().unwrap(), expected);

    // Reuse: refused with the time it was used, and the tree is as it was.
    now_unix_ms.store(enrolled_at + 1_000, Ordering::SeqCst);
    let reason = refusal_reason(enroll(&target, &texts[0], "node-b", &options).await);
    assert_eq!(
        reason,
        TokenError::AlreadyUsed {
            used_at_unix_ms: enrolled_at
        }
        .to_string()
    );
    assert_eq!(store.join_tokens().unwrap(), expected, "a reuse wrote");

    // Expiry: at exactly its expiry time the unused token is refused, and stays unused.
    now_unix_ms.store(START_UNIX_MS + TTL_MS, Ordering::SeqCst);
    let reason = refusal_reason(enroll(&target, &texts[1], "node-c", &options).await);
    assert_eq!(
        reason,
        TokenError::Expired {
            expired_at_unix_ms: START_UNIX_MS + TTL_MS
        }
        .to_string()
    );
    assert_eq!(store.join_tokens().unwrap(), expected, "an expiry wrote");

    // A token the store never saw (same CA): unknown, nothing written.
    let stranger = JoinToken::generate(ca.sha256()).unwrap();
    now_unix_ms.store(START_UNIX_MS + 1, Ordering::SeqCst);
    let reason = refusal_reason(enroll(&target, &stranger.to_text(), "node-d", &options).await);
    assert_eq!(reason, TokenError::Unknown.to_string());
    assert_eq!(
        store.join_tokens().unwrap(),
        expected,
        "an unknown token wrote"
    );

    server.close();
    drop(server);
    // The desk's task may still hold a clone of the store for a moment; the files are
    // flushed after every write, so they can be read now.
    let files = files_under(&data_dir);
    assert!(!files.is_empty(), "the store wrote no files");
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        for text in texts.iter().chain([&stranger.to_text()]) {
            let secret_hex = text.split('.').nth(1).unwrap();
            assert!(
                !contains(&bytes, text.as_bytes()),
                "{} holds a token",
                path.display()
            );
            assert!(
                !contains(&bytes, secret_hex.as_bytes()),
                "{} holds a secret in hex",
                path.display()
            );
            assert!(
                !contains(&bytes, &secret_bytes(text)),
                "{} holds a secret's bytes",
                path.display()
            );
        }
    }
}
