//! What can go wrong on the network, each naming the peer or target it concerns.

use crate::frame_io::{FrameReadError, FrameWriteError};
use crate::pki::PkiError;
use crate::tls::TlsError;
use crate::token::TokenError;
use crate::transport::TimersError;
use lem_common::wire::VersionRefusal;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Application close codes lem puts on a QUIC connection.
pub mod close_code {
    /// Done; nothing went wrong.
    pub const DONE: u32 = 0;
    /// The peer is not admitted: no or wrong certificate, role not allowed on this ALPN.
    pub const REFUSED: u32 = 1;
    /// The peer sent bytes that are not a valid frame.
    pub const MALFORMED_FRAME: u32 = 2;
    /// The peer speaks another protocol version (after a `HandshakeReply::Refused`).
    pub const VERSION_REFUSED: u32 = 3;
    /// The peer broke the protocol in another way (wrong first message, role mismatch).
    pub const PROTOCOL: u32 = 4;
}

#[derive(Debug, Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot resolve {target:?}: {detail}")]
    Resolve { target: String, detail: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Timers(#[from] TimersError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error("connection to {peer} lost: {source}")]
    ConnectionLost {
        peer: String,
        source: quinn::ConnectionError,
    },
    #[error("{peer} refused the connection: {reason}")]
    Refused { peer: String, reason: String },
    #[error("TLS handshake with {peer} failed (certificates do not fit this cluster): {source}")]
    TlsRejected {
        peer: String,
        source: quinn::ConnectionError,
    },
    #[error("{peer} closed the connection (code {code}): {reason}")]
    ClosedByPeer {
        peer: String,
        code: u64,
        reason: String,
    },
    #[error("{peer} sent a malformed frame, connection closed: {source}")]
    MalformedFrame {
        peer: String,
        source: FrameReadError,
    },
    #[error("reading from {peer}: {source}")]
    Read {
        peer: String,
        source: FrameReadError,
    },
    #[error("sending to {peer}: {source}")]
    Write {
        peer: String,
        source: FrameWriteError,
    },
    #[error("{peer} refused our protocol version: {}", refusal.message)]
    VersionRefused {
        peer: String,
        refusal: VersionRefusal,
    },
    #[error("{peer} refused the enrollment: {reason}")]
    EnrollmentRefused { peer: String, reason: String },
    #[error(
        "{target} is not the cluster the join token names: the token pins CA SHA-256 {expected}, \
         the server sent certificates with SHA-256 {sent:?}; check the token and the address"
    )]
    CaPinMismatch {
        target: String,
        expected: String,
        sent: Vec<String>,
    },
    #[error("{peer}: no {what} within {timeout:?}")]
    Timeout {
        peer: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("{peer} ended the stream before sending {what}")]
    UnexpectedEnd { peer: String, what: &'static str },
    #[error(
        "no credential in {} and no join token given: create a token on the coordinator \
         host with `lem token create` and pass it to enroll",
        dir.display()
    )]
    NotEnrolled { dir: std::path::PathBuf },
    #[error("{peer} broke the protocol: {detail}")]
    Protocol { peer: String, detail: String },
}

impl NetError {
    /// Whether trying again later may succeed (the peer was unreachable or went away),
    /// as opposed to a refusal or a configuration error that would repeat.
    pub fn is_retryable(&self) -> bool {
        match self {
            NetError::Resolve { .. }
            | NetError::Connect { .. }
            | NetError::ConnectionLost { .. }
            | NetError::Timeout { .. }
            | NetError::UnexpectedEnd { .. } => true,
            NetError::ClosedByPeer { code, .. } => *code == u64::from(close_code::DONE),
            NetError::Read { source, .. } => !source.is_malformed(),
            NetError::Write { source, .. } => matches!(source, FrameWriteError::Io(_)),
            _ => false,
        }
    }

    /// Classifies a connection's end as the peer saw fit to describe it.
    pub(crate) fn from_connection(peer: &str, error: quinn::ConnectionError) -> NetError {
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => {
                let code = close.error_code.into_inner();
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                if code == u64::from(close_code::REFUSED) {
                    NetError::Refused {
                        peer: peer.to_owned(),
                        reason,
                    }
                } else {
                    NetError::ClosedByPeer {
                        peer: peer.to_owned(),
                        code,
                        reason,
                    }
                }
            }
            source if is_tls_failure(&source) => NetError::TlsRejected {
                peer: peer.to_owned(),
                source,
            },
            source => NetError::ConnectionLost {
                peer: peer.to_owned(),
                source,
            },
        }
    }

    /// A stream IO error as the connection's end when that is what it was; otherwise the
    /// error back.
    pub(crate) fn from_stream_io(
        peer: &str,
        error: std::io::Error,
    ) -> Result<NetError, std::io::Error> {
        let lost = error.get_ref().and_then(|inner| {
            match (
                inner.downcast_ref::<quinn::ReadError>(),
                inner.downcast_ref::<quinn::WriteError>(),
            ) {
                (Some(quinn::ReadError::ConnectionLost(e)), _)
                | (_, Some(quinn::WriteError::ConnectionLost(e))) => Some(e.clone()),
                _ => None,
            }
        });
        match lost {
            Some(e) => Ok(NetError::from_connection(peer, e)),
            None => Err(error),
        }
    }
}

/// Whether a connection ended in a TLS alert, raised here or by the peer: QUIC carries
/// those as transport error codes 0x100–0x1ff. Certificates that do not fit will not fit
/// on the next try either.
fn is_tls_failure(error: &quinn::ConnectionError) -> bool {
    let code = match error {
        quinn::ConnectionError::TransportError(e) => u64::from(e.code),
        quinn::ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        _ => return false,
    };
    (0x100..0x200).contains(&code)
}
