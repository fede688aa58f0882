//! `common::wire`: the only types that cross the network between the coordinator, its
//! agents and the CLI, and how they are framed. No IO: the transport hands bytes in and
//! takes bytes out.
//!
//! These are deliberately not the scheduler's internal types: the wire is a contract
//! with peers of other builds, so it changes only with [`PROTOCOL_VERSION`], while the
//! scheduler's state may change freely. `docs/protocol.md` describes the protocol.

mod check;
pub mod cli;
mod enroll;
mod frame;
mod handshake;
mod messages;

pub use check::MalformedReason;
pub use cli::{CliReply, CliRequest};
pub use enroll::{EnrollReply, EnrollRequest};
pub use frame::{
    decode_frame, encode_frame, Decoded, FrameBuffer, FrameError, FRAME_HEADER_BYTES,
    MAX_FRAME_BYTES, MAX_NESTING_DEPTH,
};
pub use handshake::{
    answer_handshake, version_refusal_message, Handshake, HandshakeReply, PeerRole, VersionRefusal,
};
pub use messages::{
    AckVerdict, AgentMessage, AttemptRef, ClaimMode, CoordinatorMessage, DeviceClaim, Gpu,
    HeldAttempt, Inventory, LeaseGrant, MigSlice,
};

/// Version of the messages and framing in this module. Bump on any change a peer of the
/// previous version could not decode; the handshake refuses a peer with another one.
/// Version 3 added CLI requests and replies a version-2 peer cannot decode
/// (`ListJoinTokens`, `RevokeJoinToken`, `JoinTokens`, `JoinTokenRevoked`); see
/// `docs/protocol.md` for each version's changes.
pub const PROTOCOL_VERSION: u32 = 3;
