//! The dialling side, for agents and the CLI: enroll once with a join token, then
//! connect with the credential, with a version handshake before anything else.

use crate::alpn::Alpn;
use crate::backoff::{retry, Backoff};
use crate::error::{close_code, NetError};
use crate::pki::{ClientCredential, PendingEnrollment};
use crate::stream::{FramedRecv, FramedSend, PeerConnection};
use crate::tls::{client_config, pinned_client_config};
use crate::token::{hex, JoinToken};
use crate::transport::Timers;
use lem_common::wire::{
    EnrollReply, EnrollRequest, Handshake, HandshakeReply, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub timers: Timers,
    pub max_frame_bytes: u32,
    /// How long the server may take to answer a handshake or an enrollment.
    pub reply_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timers: Timers::default(),
            max_frame_bytes: MAX_FRAME_BYTES,
            reply_timeout: Duration::from_secs(15),
        }
    }
}

/// A session with the coordinator after an accepted handshake.
#[derive(Debug)]
pub struct ClientSession {
    pub connection: PeerConnection,
    /// The stream the handshake went on, kept for the session's messages.
    pub send: FramedSend,
    pub recv: FramedRecv,
}

impl ClientSession {
    /// Closes the session as done and waits (bounded) for the close to be sent.
    pub async fn close(self) {
        self.connection.close(close_code::DONE, "done");
        self.connection.wait_idle(Duration::from_secs(2)).await;
    }
}

/// `host:port` resolved: the address to dial and the name to verify the server by.
pub async fn resolve(target: &str) -> Result<(SocketAddr, String), NetError> {
    let resolve_error = |detail: String| NetError::Resolve {
        target: target.to_owned(),
        detail,
    };
    let (host, _port) = target
        .rsplit_once(':')
        .ok_or_else(|| resolve_error("expected host:port".into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .next()
        .ok_or_else(|| resolve_error("no address".into()))?;
    Ok((addr, host))
}

async fn dial(
    target: &str,
    tls: rustls::ClientConfig,
    options: &ClientOptions,
) -> Result<(quinn::Connection, quinn::Endpoint), NetError> {
    let (addr, host) = resolve(target).await?;
    let connect_error = |detail: String| NetError::Connect {
        target: target.to_owned(),
        detail,
    };
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| connect_error(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(options.timers.transport_config()?);
    let local: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(local).map_err(|source| NetError::Bind {
        addr: local,
        source,
    })?;
    let connection = endpoint
        .connect_with(config, addr, &host)
        .map_err(|e| connect_error(e.to_string()))?
        .await
        .map_err(|e| NetError::from_connection(target, e))?;
    Ok((connection, endpoint))
}

/// Connects with `credential` on `alpn` (agent or CLI) and does the version handshake.
/// A refusal by the server (no admissible certificate, wrong role, other version) is an
/// error that says why.
pub async fn connect(
    target: &str,
    credential: &ClientCredential,
    alpn: Alpn,
    options: &ClientOptions,
) -> Result<ClientSession, NetError> {
    let role = alpn.handshake_role().ok_or_else(|| NetError::Protocol {
        peer: target.to_owned(),
        detail: format!("{alpn} has no session handshake; use enroll"),
    })?;
    let tls = client_config(credential, alpn)?;
    let (connection, endpoint) = dial(target, tls, options).await?;
    let connection = PeerConnection::new(
        connection,
        endpoint,
        format!("coordinator {target}"),
        options.max_frame_bytes,
    );
    let handshake = async {
        let (mut send, mut recv) = connection.open_stream().await?;
        send.send(&Handshake {
            protocol_version: PROTOCOL_VERSION,
            role,
            lem_version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await?;
        let reply: HandshakeReply = recv.expect("a handshake reply").await?;
        Ok::<_, NetError>((send, recv, reply))
    };
    let outcome = tokio::time::timeout(options.reply_timeout, handshake).await;
    let (send, recv, reply) = match outcome {
        Err(_) => {
            return Err(NetError::Timeout {
                peer: connection.peer().to_owned(),
                what: "handshake reply",
                timeout: options.reply_timeout,
            })
        }
        // A server that refused us at once closed the connection: say why it did.
        Ok(Err(error)) => return Err(refusal_or(&connection, error)),
        Ok(Ok(done)) => done,
    };
    match reply {
        HandshakeReply::Accepted { .. } => Ok(ClientSession {
            connection,
            send,
            recv,
        }),
        HandshakeReply::Refused(refusal) => {
            connection.close(close_code::VERSION_REFUSED, "version refused");
            Err(NetError::VersionRefused {
                peer: connection.peer().to_owned(),
                refusal,
            })
        }
    }
}

/// [`connect`], retried with backoff while the failure is one that may pass.
pub async fn connect_with_backoff(
    target: &str,
    credential: &ClientCredential,
    alpn: Alpn,
    options: &ClientOptions,
    backoff: &mut Backoff,
    max_attempts: u32,
) -> Result<ClientSession, NetError> {
    retry(backoff, max_attempts, |_| {
        connect(target, credential, alpn, options)
    })
    .await
}

/// Enrolls with `join_token`: trusts the server only if it shows the CA the token names,
/// sends a CSR for a key made here, and returns the credential (not yet saved).
pub async fn enroll(
    target: &str,
    join_token: &str,
    node_name: &str,
    options: &ClientOptions,
) -> Result<ClientCredential, NetError> {
    let token = JoinToken::parse(join_token)?;
    let pending = PendingEnrollment::generate(node_name)?;
    let (tls, pin) = pinned_client_config(token.ca_sha256(), Alpn::Enroll)?;
    let pin_error = |pin: &crate::tls::PinnedCaVerifier| {
        pin.mismatch().map(|sent| NetError::CaPinMismatch {
            target: target.to_owned(),
            expected: hex(&token.ca_sha256()),
            sent,
        })
    };
    // A server whose chain lacks the pinned CA fails the handshake; say that, not how.
    let (connection, endpoint) = dial(target, tls, options)
        .await
        .map_err(|error| pin_error(&pin).unwrap_or(error))?;
    let connection = PeerConnection::new(
        connection,
        endpoint,
        format!("coordinator {target}"),
        options.max_frame_bytes,
    );
    let exchange = async {
        let (mut send, mut recv) = connection.open_stream().await?;
        send.send(&EnrollRequest {
            protocol_version: PROTOCOL_VERSION,
            lem_version: env!("CARGO_PKG_VERSION").to_owned(),
            join_token: join_token.trim().to_owned(),
            csr_pem: pending.csr_pem().to_owned(),
            node_name: node_name.to_owned(),
        })
        .await?;
        send.finish();
        recv.expect::<EnrollReply>("an enrollment reply").await
    };
    let reply = match tokio::time::timeout(options.reply_timeout, exchange).await {
        Err(_) => Err(NetError::Timeout {
            peer: connection.peer().to_owned(),
            what: "enrollment reply",
            timeout: options.reply_timeout,
        }),
        Ok(reply) => reply.map_err(|error| refusal_or(&connection, error)),
    };
    connection.close(close_code::DONE, "enrollment done");
    connection.wait_idle(Duration::from_secs(2)).await;
    match reply? {
        EnrollReply::Refused { reason } => Err(NetError::EnrollmentRefused {
            peer: connection.peer().to_owned(),
            reason,
        }),
        EnrollReply::Enrolled {
            certificate_pem,
            ca_certificate_pem,
            ..
        } => {
            let credential = pending.complete(certificate_pem, ca_certificate_pem)?;
            // The CA handed back must be the one pinned, or we would trust another later.
            let ca_sha256 = credential.ca_sha256()?;
            if ca_sha256 != token.ca_sha256() {
                return Err(NetError::CaPinMismatch {
                    target: target.to_owned(),
                    expected: hex(&token.ca_sha256()),
                    sent: vec![hex(&ca_sha256)],
                });
            }
            Ok(credential)
        }
    }
}

/// The credential in `dir`, or, when there is none yet, an enrollment with `join_token`
/// whose credential is saved there first. Without a credential or a token: an error
/// that says what is missing.
pub async fn load_or_enroll(
    dir: &Path,
    target: &str,
    join_token: Option<&str>,
    node_name: &str,
    options: &ClientOptions,
) -> Result<ClientCredential, NetError> {
    if let Some(credential) = ClientCredential::load(dir)? {
        return Ok(credential);
    }
    let join_token = join_token.ok_or_else(|| NetError::NotEnrolled {
        dir: dir.to_owned(),
    })?;
    let credential = enroll(target, join_token, node_name, options).await?;
    credential.save(dir)?;
    Ok(credential)
}

/// When the server closed the connection, its reason says more than the stream error.
fn refusal_or(connection: &PeerConnection, error: NetError) -> NetError {
    match error {
        NetError::Refused { .. } | NetError::ClosedByPeer { .. } => error,
        other => connection.close_reason().unwrap_or(other),
    }
}
