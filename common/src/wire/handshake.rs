//! The first frame each way on a connection: which protocol version the peer speaks.
//! `Handshake` and `HandshakeReply` keep their layout across versions (fields may only
//! be added), so a peer of any version can read them and learn why it was refused.

use super::PROTOCOL_VERSION;
use serde::{Deserialize, Serialize};

/// Sent by the connecting peer before anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub protocol_version: u32,
    pub role: PeerRole,
    /// The peer's build (`CARGO_PKG_VERSION`), for logs and refusals.
    pub lem_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    Agent,
    Cli,
}

/// The answer to a [`Handshake`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandshakeReply {
    Accepted { protocol_version: u32 },
    Refused(VersionRefusal),
}

/// Why a peer was refused: both versions, and the same in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRefusal {
    pub our_version: u32,
    pub peer_version: u32,
    pub message: String,
}

/// Accepts a peer speaking [`PROTOCOL_VERSION`]; refuses any other with a message that
/// names both versions and what to do.
pub fn answer_handshake(peer: &Handshake) -> HandshakeReply {
    if peer.protocol_version == PROTOCOL_VERSION {
        return HandshakeReply::Accepted {
            protocol_version: PROTOCOL_VERSION,
        };
    }
    HandshakeReply::Refused(VersionRefusal {
        our_version: PROTOCOL_VERSION,
        peer_version: peer.protocol_version,
        message: version_refusal_message(peer.protocol_version, &peer.lem_version),
    })
}

/// Why a peer speaking `peer_version` (build `peer_lem_version`) is refused, naming both
/// versions and both builds; the handshake and enrollment both say it.
pub fn version_refusal_message(peer_version: u32, peer_lem_version: &str) -> String {
    format!(
        "protocol version {peer_version} (lem {peer_lem_version}) is not supported: this \
         coordinator speaks version {PROTOCOL_VERSION} (lem {}); run the same lem version \
         on the coordinator and every agent and CLI",
        env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(protocol_version: u32) -> Handshake {
        Handshake {
            protocol_version,
            role: PeerRole::Agent,
            lem_version: "9.9.9".into(),
        }
    }

    #[test]
    fn same_version_is_accepted() {
        assert_eq!(
            answer_handshake(&peer(PROTOCOL_VERSION)),
            HandshakeReply::Accepted {
                protocol_version: PROTOCOL_VERSION
            }
        );
    }

    #[test]
    fn other_versions_are_refused_naming_both() {
        for other in [0, PROTOCOL_VERSION + 1, u32::MAX] {
            let HandshakeReply::Refused(refusal) = answer_handshake(&peer(other)) else {
                panic!("version {other} was accepted");
            };
            assert_eq!(
                (refusal.our_version, refusal.peer_version),
                (PROTOCOL_VERSION, other)
            );
            assert!(refusal
                .message
                .contains(&format!("protocol version {other} ")));
            assert!(refusal.message.contains("9.9.9"));
        }
    }
}
