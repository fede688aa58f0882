//! The coordinator's endpoint. Every connection is authenticated before the application
//! sees it: on the enrollment ALPN the endpoint serves the enrollment itself; on the
//! agent and CLI ALPNs it requires a client certificate from the cluster CA (checked in
//! the TLS handshake), a role the ALPN admits and a version handshake, and only then
//! yields an [`AcceptedSession`].

use crate::alpn::Alpn;
use crate::enrollment::EnrollmentDesk;
use crate::error::{close_code, NetError};
use crate::identity::PeerIdentity;
use crate::stream::{FramedRecv, FramedSend, PeerConnection};
use crate::tls::server_config;
use crate::transport::Timers;
use lem_common::wire::{
    answer_handshake, EnrollRequest, Handshake, HandshakeReply, MAX_FRAME_BYTES,
};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How the coordinator's endpoint is set up.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// The names and addresses agents and CLIs dial; the server certificate carries them.
    pub server_names: Vec<String>,
    pub timers: Timers,
    pub max_frame_bytes: u32,
    /// How long a new connection may take to send its handshake or enrollment request.
    pub handshake_timeout: Duration,
    /// How long the server certificate issued at start lives.
    pub server_validity: Duration,
}

impl ServerOptions {
    pub fn new(listen: SocketAddr, server_names: Vec<String>) -> Self {
        Self {
            listen,
            server_names,
            timers: Timers::default(),
            max_frame_bytes: MAX_FRAME_BYTES,
            handshake_timeout: Duration::from_secs(10),
            server_validity: crate::pki::LEAF_VALIDITY,
        }
    }
}

/// An authenticated agent or CLI connection, after the version handshake.
#[derive(Debug)]
pub struct AcceptedSession {
    pub peer: PeerIdentity,
    pub alpn: Alpn,
    pub connection: PeerConnection,
    /// The stream the peer opened for its handshake, kept for the session's messages.
    pub send: FramedSend,
    pub recv: FramedRecv,
}

pub struct ServerEndpoint {
    endpoint: quinn::Endpoint,
    listen: SocketAddr,
    sessions: mpsc::Receiver<AcceptedSession>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl ServerEndpoint {
    /// Issues the server certificate for `options.server_names` from the desk's CA and
    /// starts listening. Must be called inside a tokio runtime.
    pub fn bind(desk: EnrollmentDesk, options: ServerOptions) -> Result<Self, NetError> {
        let server_cert = desk
            .ca
            .issue_server_certificate(&options.server_names, options.server_validity)?;
        let tls = server_config(desk.ca.certificate_der(), &server_cert)?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| {
            NetError::Tls(crate::tls::TlsError::Rustls(rustls::Error::General(
                e.to_string(),
            )))
        })?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(options.timers.transport_config()?);
        let endpoint =
            quinn::Endpoint::server(config, options.listen).map_err(|source| NetError::Bind {
                addr: options.listen,
                source,
            })?;
        let (tx, sessions) = mpsc::channel(64);
        let listen = options.listen;
        let accept_loop = tokio::spawn(accept_loop(endpoint.clone(), desk, options, tx));
        Ok(Self {
            endpoint,
            listen,
            sessions,
            accept_loop,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: self.listen,
            source,
        })
    }

    /// The next authenticated session; `None` once the endpoint is closed.
    pub async fn accept(&mut self) -> Option<AcceptedSession> {
        self.sessions.recv().await
    }

    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        self.accept_loop.abort();
        self.endpoint
            .close(close_code::DONE.into(), b"coordinator shutting down");
    }
}

impl Drop for ServerEndpoint {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    desk: EnrollmentDesk,
    options: ServerOptions,
    sessions: mpsc::Sender<AcceptedSession>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let (endpoint, desk, options, sessions) = (
            endpoint.clone(),
            desk.clone(),
            options.clone(),
            sessions.clone(),
        );
        // Each connection on its own task: a slow or hostile peer holds up no other.
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::info!(%remote, %error, "connection refused in the TLS handshake");
                    return;
                }
            };
            if let Some(session) = admit(connection, endpoint, &desk, &options).await {
                let _ = sessions.send(session).await;
            }
        });
    }
}

/// Authenticates one connection; enrollment connections are served here and yield
/// nothing.
async fn admit(
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    desk: &EnrollmentDesk,
    options: &ServerOptions,
) -> Option<AcceptedSession> {
    let remote = connection.remote_address();
    let refuse = |connection: &quinn::Connection, reason: String| {
        tracing::warn!(%remote, %reason, "connection refused");
        connection.close(close_code::REFUSED.into(), reason.as_bytes());
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .and_then(|protocol| Alpn::from_bytes(&protocol));
    let Some(alpn) = alpn else {
        refuse(&connection, "no lem ALPN was negotiated".into());
        return None;
    };
    let certificate = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().cloned());

    if alpn == Alpn::Enroll {
        let peer = format!("enrolling peer {remote}");
        let connection = PeerConnection::new(connection, endpoint, peer, options.max_frame_bytes);
        serve_enrollment(connection, desk, options.handshake_timeout).await;
        return None;
    }

    let Some(certificate) = certificate else {
        refuse(
            &connection,
            format!("{alpn} needs a client certificate from this cluster's CA; agents enroll first with a join token"),
        );
        return None;
    };
    // The TLS layer verified the chain to the cluster CA; the name is the CA's too.
    let peer = match PeerIdentity::from_certificate_der(&certificate) {
        Ok(peer) => peer,
        Err(error) => {
            refuse(&connection, format!("client certificate: {error}"));
            return None;
        }
    };
    if !alpn.admits(peer.role) {
        refuse(
            &connection,
            format!("role {} may not use {alpn}", peer.role),
        );
        return None;
    }
    let connection = PeerConnection::new(
        connection,
        endpoint,
        format!("{peer} ({remote})"),
        options.max_frame_bytes,
    );
    match version_handshake(&connection, alpn, options.handshake_timeout).await {
        Ok(Some((send, recv))) => {
            tracing::info!(peer = %connection.peer(), %alpn, "session accepted");
            Some(AcceptedSession {
                peer,
                alpn,
                connection,
                send,
                recv,
            })
        }
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(peer = %connection.peer(), %error, "handshake failed");
            connection.close(close_code::PROTOCOL, &error.to_string());
            None
        }
    }
}

/// Reads the peer's `Handshake` and answers it. `Ok(None)`: refused (another version),
/// the refusal sent and the connection closed.
async fn version_handshake(
    connection: &PeerConnection,
    alpn: Alpn,
    timeout: Duration,
) -> Result<Option<(FramedSend, FramedRecv)>, NetError> {
    let timed_out = |what| NetError::Timeout {
        peer: connection.peer().to_owned(),
        what,
        timeout,
    };
    let (mut send, mut recv) = tokio::time::timeout(timeout, connection.accept_stream())
        .await
        .map_err(|_| timed_out("handshake stream"))??
        .ok_or_else(|| NetError::UnexpectedEnd {
            peer: connection.peer().to_owned(),
            what: "a handshake",
        })?;
    let handshake: Handshake = tokio::time::timeout(timeout, recv.expect("a handshake"))
        .await
        .map_err(|_| timed_out("handshake"))??;
    if Some(handshake.role) != alpn.handshake_role() {
        return Err(NetError::Protocol {
            peer: connection.peer().to_owned(),
            detail: format!("handshake names role {:?} on {alpn}", handshake.role),
        });
    }
    let reply = answer_handshake(&handshake);
    send.send(&reply).await?;
    if let HandshakeReply::Refused(refusal) = reply {
        tracing::warn!(peer = %connection.peer(), reason = %refusal.message, "version refused");
        send.finish();
        // Let the refusal arrive before the connection goes.
        let _ = tokio::time::timeout(timeout, connection.closed()).await;
        connection.close(close_code::VERSION_REFUSED, &refusal.message);
        return Ok(None);
    }
    Ok(Some((send, recv)))
}

async fn serve_enrollment(connection: PeerConnection, desk: &EnrollmentDesk, timeout: Duration) {
    let outcome = async {
        let (mut send, mut recv) = tokio::time::timeout(timeout, connection.accept_stream())
            .await
            .map_err(|_| NetError::Timeout {
                peer: connection.peer().to_owned(),
                what: "enrollment stream",
                timeout,
            })??
            .ok_or_else(|| NetError::UnexpectedEnd {
                peer: connection.peer().to_owned(),
                what: "an enrollment request",
            })?;
        let request: EnrollRequest =
            tokio::time::timeout(timeout, recv.expect("an enrollment request"))
                .await
                .map_err(|_| NetError::Timeout {
                    peer: connection.peer().to_owned(),
                    what: "enrollment request",
                    timeout,
                })??;
        let reply = desk.decide(&request);
        match &reply {
            lem_common::wire::EnrollReply::Enrolled { agent_id, .. } => {
                tracing::info!(peer = %connection.peer(), node = %request.node_name, agent = %agent_id, "agent enrolled")
            }
            lem_common::wire::EnrollReply::Refused { reason } => {
                tracing::warn!(peer = %connection.peer(), node = %request.node_name, %reason, "enrollment refused")
            }
        }
        send.send(&reply).await?;
        send.finish();
        Ok::<_, NetError>(())
    }
    .await;
    if let Err(error) = outcome {
        tracing::warn!(peer = %connection.peer(), %error, "enrollment failed");
        return;
    }
    // The agent closes once it has read the reply; bounded in case it never does.
    let _ = tokio::time::timeout(timeout, connection.closed()).await;
    connection.close(close_code::DONE, "enrollment done");
}
