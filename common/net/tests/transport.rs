//! End-to-end over loopback QUIC: enrollment, mutual TLS, framed messages, and every
//! refusal the cluster's security rests on. Timeouts are generous (a loaded 2-core
//! machine must pass); loops are bounded.

use lem_common::wire::{
    encode_frame, AgentMessage, AttemptRef, CoordinatorMessage, EnrollReply, EnrollRequest,
    Handshake, HandshakeReply, HeldAttempt, PeerRole, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use lem_net::frame_io::read_frame;
use lem_net::pki::{ClientCredential, ClusterCa, LEAF_VALIDITY};
use lem_net::token::{create_join_token, InMemoryTokenBook, JoinToken, StoredToken};
use lem_net::{
    connect, enroll, AcceptedSession, Alpn, ClientOptions, EnrollmentDesk, NetError, PeerIdentity,
    Role, ServerEndpoint, ServerOptions,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TTL_MS: u64 = 15 * 60 * 1000;

/// Everything the tests' tracing logs, for asserting that a reason was logged.
fn log_lines() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        // Server tasks run on runtime threads: the subscriber must be global.
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
    .clone()
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
const STEP: Duration = Duration::from_secs(60);

struct Cluster {
    ca: Arc<ClusterCa>,
    book: Arc<InMemoryTokenBook>,
    now_unix_ms: Arc<AtomicU64>,
    server: ServerEndpoint,
    target: String,
}

impl Cluster {
    fn start() -> Cluster {
        let ca = Arc::new(ClusterCa::generate().unwrap());
        let book = Arc::new(InMemoryTokenBook::default());
        let now_unix_ms = Arc::new(AtomicU64::new(1_000_000));
        let clock_now = now_unix_ms.clone();
        let desk = EnrollmentDesk {
            ca: ca.clone(),
            tokens: book.clone(),
            clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
            agent_validity: LEAF_VALIDITY,
        };
        let options = ServerOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            vec!["localhost".into(), "127.0.0.1".into()],
        );
        let server = ServerEndpoint::bind(desk, options).unwrap();
        let port = server.local_addr().unwrap().port();
        Cluster {
            ca,
            book,
            now_unix_ms,
            server,
            target: format!("127.0.0.1:{port}"),
        }
    }

    fn token(&self) -> JoinToken {
        let now = self.now_unix_ms.load(Ordering::SeqCst);
        create_join_token(self.book.as_ref(), self.ca.sha256(), now, TTL_MS).unwrap()
    }

    fn credential(&self, role: Role, id: &str) -> ClientCredential {
        self.ca
            .issue_client_credential(&PeerIdentity::new(role, id).unwrap(), LEAF_VALIDITY)
            .unwrap()
    }

    /// The next session, or `None` if none arrives within `wait`.
    async fn next_session(&mut self, wait: Duration) -> Option<AcceptedSession> {
        tokio::time::timeout(wait, self.server.accept())
            .await
            .ok()
            .flatten()
    }

    /// No session was yielded to the application.
    async fn assert_no_session(&mut self) {
        let session = self.next_session(Duration::from_millis(300)).await;
        assert!(
            session.is_none(),
            "a session was yielded: {:?}",
            session.map(|s| s.peer)
        );
    }

    /// A QUIC connection to the server made with quinn directly, with `tls` (so a test can
    /// present any certificate, or none, on any ALPN and then send anything). The endpoint
    /// must outlive the connection.
    async fn raw_connection(
        &self,
        tls: rustls::ClientConfig,
    ) -> (quinn::Endpoint, quinn::Connection) {
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connection = endpoint
            .connect_with(
                quinn::ClientConfig::new(Arc::new(quic)),
                self.target.parse().unwrap(),
                "127.0.0.1",
            )
            .unwrap()
            .await
            .unwrap();
        (endpoint, connection)
    }
}

/// The server closes `connection` with `code` and a reason containing `reason_part`.
async fn assert_closed_with(connection: &quinn::Connection, code: u32, reason_part: &str) {
    match tokio::time::timeout(STEP, connection.closed())
        .await
        .unwrap()
    {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), u64::from(code));
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(
                reason.contains(reason_part),
                "{reason:?} lacks {reason_part:?}"
            );
        }
        other => panic!("expected a close with code {code} naming {reason_part:?}, got {other}"),
    }
}

fn heartbeat(attempt: u64) -> AgentMessage {
    AgentMessage::Heartbeat {
        held: vec![HeldAttempt {
            attempt,
            epoch: 2,
            running: true,
        }],
    }
}

fn renew_for(message: &AgentMessage) -> CoordinatorMessage {
    let AgentMessage::Heartbeat { held } = message else {
        panic!("expected a heartbeat, got {message:?}");
    };
    CoordinatorMessage::Renew {
        attempts: held
            .iter()
            .map(|h| AttemptRef {
                attempt: h.attempt,
                epoch: h.epoch,
            })
            .collect(),
        ttl_ms: 30_000,
    }
}

/// Answers every heartbeat on a session with a renewal, until the peer goes.
fn serve_echo(mut session: AcceptedSession) -> tokio::task::JoinHandle<Result<(), NetError>> {
    tokio::spawn(async move {
        while let Some(message) = session.recv.recv::<AgentMessage>().await? {
            session.send.send(&renew_for(&message)).await?;
        }
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_agent_connects_with_mutual_tls_and_exchanges_frames() {
    let mut cluster = Cluster::start();
    let token = cluster.token();
    let options = ClientOptions::default();

    let credential = enroll(&cluster.target, &token.to_text(), "gpu-node-1", &options)
        .await
        .unwrap();
    // The id is the node name and the first 4 bytes of the key's hash, made by the CA.
    assert_eq!(credential.identity().role, Role::Agent);
    let id = &credential.identity().id;
    let suffix = id.strip_prefix("gpu-node-1-").unwrap();
    assert_eq!(suffix.len(), 8);
    assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(credential.ca_sha256().unwrap(), cluster.ca.sha256());
    // The token is used now, and only its hash was ever stored.
    let stored = cluster.book.snapshot();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].secret_sha256, token.secret_sha256());
    assert_eq!(stored[0].used_at_unix_ms, Some(1_000_000));

    // Saved and loaded back from the agent's data dir, key 0600.
    let dir = tempfile::tempdir().unwrap();
    credential.save(dir.path()).unwrap();
    let loaded = ClientCredential::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.identity(), credential.identity());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut client = connect(&cluster.target, &loaded, Alpn::Agent, &options)
        .await
        .unwrap();
    let session = cluster.next_session(STEP).await.expect("a session");
    assert_eq!(&session.peer, credential.identity());
    assert_eq!(session.alpn, Alpn::Agent);
    let server_task = serve_echo(session);

    for attempt in [3, 4, 5] {
        let sent = heartbeat(attempt);
        client.send.send(&sent).await.unwrap();
        let reply: CoordinatorMessage = client.recv.expect("a renewal").await.unwrap();
        assert_eq!(reply, renew_for(&sent));
    }
    client.close().await;
    let _ = tokio::time::timeout(STEP, server_task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_viewer_are_admitted_on_the_cli_alpn() {
    let mut cluster = Cluster::start();
    for (role, id) in [(Role::Operator, "alice"), (Role::Viewer, "bob")] {
        let credential = cluster.credential(role, id);
        let client = connect(
            &cluster.target,
            &credential,
            Alpn::Cli,
            &ClientOptions::default(),
        )
        .await
        .unwrap();
        let session = cluster.next_session(STEP).await.expect("a session");
        assert_eq!(session.peer, PeerIdentity::new(role, id).unwrap());
        assert_eq!(session.alpn, Alpn::Cli);
        client.close().await;
    }
}

/// The connection is refused with a reason containing `reason_part`, and no session is
/// yielded to the application.
async fn assert_refused(
    cluster: &mut Cluster,
    result: Result<lem_net::ClientSession, NetError>,
    reason_part: &str,
) {
    match result {
        Err(NetError::Refused { reason, .. }) => {
            assert!(
                reason.contains(reason_part),
                "reason {reason:?} lacks {reason_part:?}"
            )
        }
        Err(other) => panic!("expected a refusal naming {reason_part:?}, got {other}"),
        Ok(_) => panic!("connection was admitted"),
    }
    cluster.assert_no_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_alpn_without_a_client_certificate_is_refused() {
    let mut cluster = Cluster::start();
    // A client that trusts the server (pinned CA) but presents no certificate.
    let (tls, _) = lem_net::tls::pinned_client_config(cluster.ca.sha256(), Alpn::Agent).unwrap();
    let (_endpoint, connection) = cluster.raw_connection(tls).await;
    assert_closed_with(
        &connection,
        lem_net::close_code::REFUSED,
        "needs a client certificate",
    )
    .await;
    cluster.assert_no_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_certificate_on_the_agent_alpn_is_refused() {
    let mut cluster = Cluster::start();
    let viewer = cluster.credential(Role::Viewer, "bob");
    let result = connect(
        &cluster.target,
        &viewer,
        Alpn::Agent,
        &ClientOptions::default(),
    )
    .await;
    assert_refused(&mut cluster, result, "role viewer may not use lem-agent/1").await;
    // And an agent certificate on the CLI ALPN.
    let agent = cluster.credential(Role::Agent, "node-a");
    let result = connect(
        &cluster.target,
        &agent,
        Alpn::Cli,
        &ClientOptions::default(),
    )
    .await;
    assert_refused(&mut cluster, result, "role agent may not use lem-cli/1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused_in_the_tls_handshake() {
    let mut cluster = Cluster::start();
    let other_ca = ClusterCa::generate().unwrap();
    let stranger = other_ca
        .issue_client_credential(
            &PeerIdentity::new(Role::Agent, "node-x").unwrap(),
            LEAF_VALIDITY,
        )
        .unwrap();
    // It trusts our server (the CA it carries is ours), but its certificate is the
    // other CA's.
    let dir = tempfile::tempdir().unwrap();
    stranger.save(dir.path()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), cluster.ca.certificate_pem()).unwrap();
    let stranger = ClientCredential::load(dir.path()).unwrap().unwrap();
    assert_eq!(stranger.ca_sha256().unwrap(), cluster.ca.sha256());

    let result = connect(
        &cluster.target,
        &stranger,
        Alpn::Agent,
        &ClientOptions::default(),
    )
    .await;
    match result {
        // The server's TLS layer rejects the chain: the handshake aborts with its reason.
        Err(error @ NetError::TlsRejected { .. }) => {
            assert!(
                !error.is_retryable(),
                "a certificate that does not fit is not retried"
            );
            let NetError::TlsRejected { source, .. } = error else {
                unreachable!()
            };
            let text = source.to_string();
            assert!(text.contains("invalid peer certificate"), "{text}");
        }
        Err(other) => panic!("expected the TLS handshake to fail, got {other}"),
        Ok(_) => panic!("a certificate from another CA was admitted"),
    }
    cluster.assert_no_session().await;
}

fn assert_enrollment_refused(result: Result<ClientCredential, NetError>, reason_part: &str) {
    match result {
        Err(NetError::EnrollmentRefused { reason, .. }) => {
            assert!(
                reason.contains(reason_part),
                "reason {reason:?} lacks {reason_part:?}"
            )
        }
        Err(other) => panic!("expected an enrollment refusal naming {reason_part:?}, got {other}"),
        Ok(credential) => panic!("enrolled as {:?}", credential.identity()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_enrolls_once() {
    let cluster = Cluster::start();
    let token = cluster.token().to_text();
    let options = ClientOptions::default();
    enroll(&cluster.target, &token, "node-1", &options)
        .await
        .unwrap();
    let after_first = cluster.book.snapshot();

    let result = enroll(&cluster.target, &token, "node-2", &options).await;
    assert_enrollment_refused(result, "already used");
    assert_eq!(
        cluster.book.snapshot(),
        after_first,
        "a refusal changed the token book"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_and_stays_unused() {
    let cluster = Cluster::start();
    let token = cluster.token();
    let before: Vec<StoredToken> = cluster.book.snapshot();
    // The coordinator's clock passes the token's expiry (issued at 1,000,000 ms).
    cluster
        .now_unix_ms
        .store(1_000_000 + TTL_MS, Ordering::SeqCst);

    let dir = tempfile::tempdir().unwrap();
    let result = lem_net::load_or_enroll(
        dir.path(),
        &cluster.target,
        Some(&token.to_text()),
        "node-1",
        &ClientOptions::default(),
    )
    .await;
    match result {
        Err(NetError::EnrollmentRefused { reason, .. }) => {
            assert!(reason.contains("expired"), "{reason}")
        }
        other => panic!("expected an expiry refusal, got {other:?}"),
    }
    assert_eq!(cluster.book.snapshot(), before);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a credential was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_another_ca_is_refused_by_the_agent_before_it_sends_anything() {
    let cluster = Cluster::start();
    let token = cluster.token();
    let before = cluster.book.snapshot();
    let other_ca = ClusterCa::generate().unwrap();
    // The same secret, but the hash of a CA that is not the server's.
    let forged = token
        .to_text()
        .replace(&hex(&cluster.ca.sha256()), &hex(&other_ca.sha256()));
    assert_ne!(forged, token.to_text());

    let result = enroll(
        &cluster.target,
        &forged,
        "node-1",
        &ClientOptions::default(),
    )
    .await;
    match result {
        Err(NetError::CaPinMismatch { expected, sent, .. }) => {
            assert_eq!(expected, hex(&other_ca.sha256()));
            // The server showed its own certificate and our CA.
            assert!(sent.contains(&hex(&cluster.ca.sha256())), "{sent:?}");
        }
        other => panic!("expected a CA pin mismatch, got {other:?}"),
    }
    assert_eq!(cluster.book.snapshot(), before, "the token was touched");
}

/// An agent connection made with quinn directly, so the test can send any handshake and
/// bytes that are not a frame. Returns the connection, its first stream, and the
/// server's reply to `handshake`, if one came.
async fn raw_agent_connection(
    cluster: &Cluster,
    credential: &ClientCredential,
    handshake: &Handshake,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    Option<HandshakeReply>,
) {
    raw_session_connection(cluster, credential, Alpn::Agent, handshake).await
}

/// [`raw_agent_connection`] on any session ALPN.
async fn raw_session_connection(
    cluster: &Cluster,
    credential: &ClientCredential,
    alpn: Alpn,
    handshake: &Handshake,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    Option<HandshakeReply>,
) {
    let tls = lem_net::tls::client_config(credential, alpn).unwrap();
    let (endpoint, connection) = cluster.raw_connection(tls).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&encode_frame(handshake, MAX_FRAME_BYTES).unwrap())
        .await
        .unwrap();
    let reply = tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME_BYTES))
        .await
        .unwrap()
        .ok()
        .flatten();
    (endpoint, connection, send, reply)
}

fn agent_handshake(protocol_version: u32, role: PeerRole) -> Handshake {
    Handshake {
        protocol_version,
        role,
        lem_version: "9.9.9-test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_version_gets_a_refusal_naming_both() {
    let mut cluster = Cluster::start();
    let other_version = PROTOCOL_VERSION + 1;
    let (_endpoint, connection, _send, reply) = raw_agent_connection(
        &cluster,
        &cluster.credential(Role::Agent, "old"),
        &agent_handshake(other_version, PeerRole::Agent),
    )
    .await;
    match reply {
        Some(HandshakeReply::Refused(refusal)) => {
            assert_eq!(
                (refusal.our_version, refusal.peer_version),
                (PROTOCOL_VERSION, other_version)
            );
            assert!(
                refusal.message.contains("9.9.9-test"),
                "{}",
                refusal.message
            );
        }
        other => panic!("expected a version refusal, got {other:?}"),
    }
    connection.close(0u32.into(), b"bye");
    cluster.assert_no_session().await;
}

/// The version before the current one, written out: what an unupgraded peer sends.
const PREVIOUS_PROTOCOL_VERSION: u32 = 2;

/// The refusal names the peer's version and build and ours, in numbers and in words.
fn assert_names_both_versions(message: &str) {
    for part in [
        "protocol version 2 (lem 9.9.9-test) is not supported".to_string(),
        format!("speaks version {PROTOCOL_VERSION} "),
    ] {
        assert!(message.contains(&part), "{message:?} lacks {part:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_agent_cli_or_enrolling_peer_is_refused_naming_both_versions() {
    assert_eq!(
        PROTOCOL_VERSION,
        PREVIOUS_PROTOCOL_VERSION + 1,
        "bumped again: make PREVIOUS_PROTOCOL_VERSION the version before it"
    );
    let mut cluster = Cluster::start();
    let sessions = [
        (
            Alpn::Agent,
            PeerRole::Agent,
            cluster.credential(Role::Agent, "old-agent"),
        ),
        (
            Alpn::Cli,
            PeerRole::Cli,
            cluster.credential(Role::Operator, "old-cli"),
        ),
    ];
    for (alpn, role, credential) in sessions {
        let (_endpoint, connection, _send, reply) = raw_session_connection(
            &cluster,
            &credential,
            alpn,
            &agent_handshake(PREVIOUS_PROTOCOL_VERSION, role),
        )
        .await;
        let Some(HandshakeReply::Refused(refusal)) = reply else {
            panic!("{alpn}: expected a version refusal, got {reply:?}");
        };
        assert_eq!(
            (refusal.our_version, refusal.peer_version),
            (PROTOCOL_VERSION, PREVIOUS_PROTOCOL_VERSION),
            "{alpn}"
        );
        assert_names_both_versions(&refusal.message);
        connection.close(0u32.into(), b"bye");
        cluster.assert_no_session().await;
    }

    // Enrollment has no handshake: the request carries its version, and a valid token
    // stays unused.
    let token = cluster.token();
    let before = cluster.book.snapshot();
    let pending = lem_net::pki::PendingEnrollment::generate("old-node").unwrap();
    let (tls, _) = lem_net::tls::pinned_client_config(cluster.ca.sha256(), Alpn::Enroll).unwrap();
    let (_endpoint, connection) = cluster.raw_connection(tls).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let request = EnrollRequest {
        protocol_version: PREVIOUS_PROTOCOL_VERSION,
        lem_version: "9.9.9-test".into(),
        join_token: token.to_text(),
        csr_pem: pending.csr_pem().to_owned(),
        node_name: "old-node".into(),
    };
    send.write_all(&encode_frame(&request, MAX_FRAME_BYTES).unwrap())
        .await
        .unwrap();
    let reply = tokio::time::timeout(STEP, read_frame(&mut recv, MAX_FRAME_BYTES))
        .await
        .unwrap()
        .unwrap();
    match reply {
        Some(EnrollReply::Refused { reason }) => assert_names_both_versions(&reason),
        other => panic!("expected an enrollment refusal, got {other:?}"),
    }
    connection.close(0u32.into(), b"bye");
    assert_eq!(cluster.book.snapshot(), before, "the token was touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_naming_the_cli_role_on_the_agent_alpn_is_closed() {
    let mut cluster = Cluster::start();
    let (_endpoint, connection, _send, reply) = raw_agent_connection(
        &cluster,
        &cluster.credential(Role::Agent, "confused"),
        &agent_handshake(PROTOCOL_VERSION, PeerRole::Cli),
    )
    .await;
    assert!(reply.is_none(), "{reply:?}");
    assert_closed_with(&connection, lem_net::close_code::PROTOCOL, "lem-agent/1").await;
    cluster.assert_no_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let log = log_lines();
    let mut cluster = Cluster::start();
    let (_endpoint, bad, mut bad_send, reply) = raw_agent_connection(
        &cluster,
        &cluster.credential(Role::Agent, "bad"),
        &agent_handshake(PROTOCOL_VERSION, PeerRole::Agent),
    )
    .await;
    assert!(
        matches!(reply, Some(HandshakeReply::Accepted { .. })),
        "{reply:?}"
    );
    let bad_server = serve_echo(cluster.next_session(STEP).await.expect("bad's session"));
    let options = ClientOptions::default();
    let mut good = connect(
        &cluster.target,
        &cluster.credential(Role::Agent, "good"),
        Alpn::Agent,
        &options,
    )
    .await
    .unwrap();
    let good_server = serve_echo(cluster.next_session(STEP).await.expect("good's session"));

    // A frame whose one-byte body is the reserved msgpack marker 0xc1.
    bad_send.write_all(&[0, 0, 0, 1, 0xc1]).await.unwrap();

    let server_result = tokio::time::timeout(STEP, bad_server)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(server_result, Err(NetError::MalformedFrame { .. })),
        "{server_result:?}"
    );
    assert_closed_with(
        &bad,
        lem_net::close_code::MALFORMED_FRAME,
        "0xc1 is reserved",
    )
    .await;
    // The server logged why, naming the peer.
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let line = logged
        .lines()
        .find(|line| {
            line.contains("closing connection: malformed frame") && line.contains("agent bad")
        })
        .unwrap_or_else(|| panic!("no log line for the malformed frame in:\n{logged}"));
    assert!(line.contains("0xc1 is reserved"), "{line}");

    // The other connection is still served.
    for attempt in [11, 12] {
        let sent = heartbeat(attempt);
        good.send.send(&sent).await.unwrap();
        let reply: CoordinatorMessage = good.recv.expect("a renewal").await.unwrap();
        assert_eq!(reply, renew_for(&sent));
    }
    good.close().await;
    let _ = tokio::time::timeout(STEP, good_server).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_or_enroll_enrolls_once_then_reuses_the_saved_credential() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tls");
    let options = ClientOptions::default();

    match lem_net::load_or_enroll(&data, &cluster.target, None, "node-1", &options).await {
        Err(NetError::NotEnrolled { dir }) => assert_eq!(dir, data),
        other => panic!("expected NotEnrolled, got {other:?}"),
    }

    let token = cluster.token().to_text();
    let enrolled =
        lem_net::load_or_enroll(&data, &cluster.target, Some(&token), "node-1", &options)
            .await
            .unwrap();
    // Second start: the saved credential, without dialling (this target has no server).
    let reloaded = lem_net::load_or_enroll(&data, "127.0.0.1:9", Some(&token), "node-1", &options)
        .await
        .unwrap();
    assert_eq!(reloaded.identity(), enrolled.identity());
    assert_eq!(reloaded.certificate_pem(), enrolled.certificate_pem());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_cluster_does_not_trust_this_server() {
    let mut cluster = Cluster::start();
    let other_ca = ClusterCa::generate().unwrap();
    let outsider = other_ca
        .issue_client_credential(
            &PeerIdentity::new(Role::Operator, "carol").unwrap(),
            LEAF_VALIDITY,
        )
        .unwrap();
    match connect(
        &cluster.target,
        &outsider,
        Alpn::Cli,
        &ClientOptions::default(),
    )
    .await
    {
        Err(error @ NetError::TlsRejected { .. }) => {
            assert!(!error.is_retryable());
            assert!(
                error.to_string().contains("invalid peer certificate"),
                "{error}"
            );
        }
        Err(other) => panic!("expected the client to reject the server, got {other}"),
        Ok(_) => panic!("the client trusted a server of another CA"),
    }
    cluster.assert_no_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrollment_alpn_serves_nothing_but_enrollment() {
    let mut cluster = Cluster::start();
    let before = cluster.book.snapshot();
    // No certificate, on lem-enroll/1, trying to open a session with a handshake.
    let (tls, _) = lem_net::tls::pinned_client_config(cluster.ca.sha256(), Alpn::Enroll).unwrap();
    let (_endpoint, connection) = cluster.raw_connection(tls).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    let handshake = agent_handshake(PROTOCOL_VERSION, PeerRole::Agent);
    send.write_all(&encode_frame(&handshake, MAX_FRAME_BYTES).unwrap())
        .await
        .unwrap();
    assert_closed_with(
        &connection,
        lem_net::close_code::MALFORMED_FRAME,
        "EnrollRequest",
    )
    .await;
    cluster.assert_no_session().await;
    assert_eq!(cluster.book.snapshot(), before);
}
