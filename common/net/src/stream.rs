//! A connection to an authenticated peer and the framed streams on it. A malformed frame
//! closes the connection it came on, with the reason logged and sent to the peer; other
//! connections are untouched.

use crate::error::{close_code, NetError};
use crate::frame_io::{read_frame, write_frame, FrameReadError, FrameWriteError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The longest close reason sent; QUIC frames must fit a packet.
const MAX_CLOSE_REASON_BYTES: usize = 200;

/// One QUIC connection to a peer. Cloning gives another handle to the same connection.
#[derive(Clone, Debug)]
pub struct PeerConnection {
    inner: quinn::Connection,
    /// Kept so the endpoint's socket lives as long as its connections.
    endpoint: quinn::Endpoint,
    peer: Arc<str>,
    max_frame_bytes: u32,
}

impl PeerConnection {
    pub(crate) fn new(
        inner: quinn::Connection,
        endpoint: quinn::Endpoint,
        peer: String,
        max_frame_bytes: u32,
    ) -> Self {
        Self {
            inner,
            endpoint,
            peer: peer.into(),
            max_frame_bytes,
        }
    }

    /// How logs and errors name the peer.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Opens a new stream each way (for instance one per result upload).
    pub async fn open_stream(&self) -> Result<(FramedSend, FramedRecv), NetError> {
        let (send, recv) = self
            .inner
            .open_bi()
            .await
            .map_err(|e| NetError::from_connection(&self.peer, e))?;
        Ok(self.framed(send, recv))
    }

    /// The next stream the peer opens; `None` when the peer closed the connection as
    /// done.
    pub async fn accept_stream(&self) -> Result<Option<(FramedSend, FramedRecv)>, NetError> {
        match self.inner.accept_bi().await {
            Ok((send, recv)) => Ok(Some(self.framed(send, recv))),
            Err(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code.into_inner() == u64::from(close_code::DONE) =>
            {
                Ok(None)
            }
            Err(e) => Err(NetError::from_connection(&self.peer, e)),
        }
    }

    /// Closes the connection with a code from [`close_code`] and a reason for the peer.
    pub fn close(&self, code: u32, reason: &str) {
        let reason = truncate_reason(reason);
        self.inner.close(code.into(), reason.as_bytes());
    }

    /// Waits until the connection is closed, by either side, and says how.
    pub async fn closed(&self) -> NetError {
        NetError::from_connection(&self.peer, self.inner.closed().await)
    }

    /// Waits (bounded) until close frames are sent, so a peer learns why it was closed.
    pub async fn wait_idle(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.endpoint.wait_idle()).await;
    }

    pub(crate) fn framed(
        &self,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> (FramedSend, FramedRecv) {
        (
            FramedSend {
                stream: send,
                connection: self.clone(),
            },
            FramedRecv {
                stream: recv,
                connection: self.clone(),
            },
        )
    }
}

/// The sending half of a stream: one message per frame.
#[derive(Debug)]
pub struct FramedSend {
    stream: quinn::SendStream,
    connection: PeerConnection,
}

impl FramedSend {
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), NetError> {
        let peer = &self.connection.peer;
        write_frame(&mut self.stream, message, self.connection.max_frame_bytes)
            .await
            .map_err(|source| match source {
                FrameWriteError::Io(io) => {
                    NetError::from_stream_io(peer, io).unwrap_or_else(|io| NetError::Write {
                        peer: peer.to_string(),
                        source: FrameWriteError::Io(io),
                    })
                }
                source => NetError::Write {
                    peer: peer.to_string(),
                    source,
                },
            })
    }

    /// No more messages on this stream; the peer's reader sees its end.
    pub fn finish(&mut self) {
        // Already finished or reset: nothing more to say either way.
        let _ = self.stream.finish();
    }
}

/// The receiving half of a stream.
#[derive(Debug)]
pub struct FramedRecv {
    stream: quinn::RecvStream,
    connection: PeerConnection,
}

impl FramedRecv {
    /// The next message, or `None` when the peer finished the stream between frames.
    /// A malformed frame closes the whole connection (logged, reason sent to the peer).
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, NetError> {
        let peer = self.connection.peer.clone();
        match read_frame(&mut self.stream, self.connection.max_frame_bytes).await {
            Ok(message) => Ok(message),
            Err(source) if source.is_malformed() => {
                tracing::warn!(peer = %peer, reason = %source, "closing connection: malformed frame");
                self.connection.close(
                    close_code::MALFORMED_FRAME,
                    &format!("malformed frame: {source}"),
                );
                Err(NetError::MalformedFrame {
                    peer: peer.to_string(),
                    source,
                })
            }
            Err(FrameReadError::Io(io)) => Err(NetError::from_stream_io(&peer, io).unwrap_or_else(
                |io| NetError::Read {
                    peer: peer.to_string(),
                    source: FrameReadError::Io(io),
                },
            )),
            Err(source) => Err(NetError::Read {
                peer: peer.to_string(),
                source,
            }),
        }
    }

    /// The next message, which must come: a finished stream is an error naming `what`.
    pub async fn expect<T: DeserializeOwned>(&mut self, what: &'static str) -> Result<T, NetError> {
        self.recv().await?.ok_or_else(|| NetError::UnexpectedEnd {
            peer: self.connection.peer.to_string(),
            what,
        })
    }
}

fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl PeerConnection {
    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<NetError> {
        self.inner
            .close_reason()
            .map(|e| NetError::from_connection(&self.peer, e))
    }
}
