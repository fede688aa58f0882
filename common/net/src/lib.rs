//! lem-net: the transport both lem binaries use — QUIC endpoints (quinn), mutual TLS
//! against the cluster CA (rustls with the ring provider only), certificates and
//! enrollment (rcgen), and `common::wire` frames over QUIC streams; also the plain-HTTP
//! responder of both binaries' Prometheus endpoints (`metrics_http`). It is the only crate
//! that touches quinn, rustls or rcgen; `docs/protocol.md` describes what it speaks.

pub mod alpn;
pub mod backoff;
pub mod client;
pub mod enrollment;
pub mod error;
pub mod frame_io;
pub mod identity;
pub mod metrics_http;
pub mod pki;
pub mod server;
pub mod stream;
pub mod tls;
pub mod token;
pub mod transport;

pub use alpn::Alpn;
pub use backoff::Backoff;
pub use client::{
    connect, connect_with_backoff, enroll, load_or_enroll, ClientOptions, ClientSession,
};
pub use enrollment::{system_clock, EnrollmentDesk, UnixMsClock};
pub use error::{close_code, NetError};
pub use identity::{PeerIdentity, Role};
pub use pki::{ClientCredential, ClusterCa};
pub use server::{AcceptedSession, ServerEndpoint, ServerOptions};
pub use stream::{FramedRecv, FramedSend, PeerConnection};
pub use token::{
    create_join_token, create_join_token_for, InMemoryTokenBook, JoinToken, JoinTokenBook,
    StoredToken,
};
pub use transport::Timers;
