//! The application protocols a coordinator serves, one per kind of peer, and which
//! certificate roles each admits.

use crate::identity::Role;
use lem_common::wire::PeerRole;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// Enrollment: the only protocol on which a peer without a client certificate is
    /// served, and all it can do is enroll.
    Enroll,
    /// Agents (role `agent`).
    Agent,
    /// CLI users (roles `operator` and `viewer`).
    Cli,
}

impl Alpn {
    pub const ALL: [Alpn; 3] = [Alpn::Enroll, Alpn::Agent, Alpn::Cli];

    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Alpn::Enroll => b"lem-enroll/1",
            Alpn::Agent => b"lem-agent/1",
            Alpn::Cli => b"lem-cli/1",
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Alpn> {
        Alpn::ALL.into_iter().find(|alpn| alpn.as_bytes() == bytes)
    }

    /// Whether a certificate of `role` may speak this protocol.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Alpn::Enroll => false,
            Alpn::Agent => role == Role::Agent,
            Alpn::Cli => matches!(role, Role::Operator | Role::Viewer),
        }
    }

    /// The role a session's handshake frame must name on this protocol.
    pub fn handshake_role(self) -> Option<PeerRole> {
        match self {
            Alpn::Enroll => None,
            Alpn::Agent => Some(PeerRole::Agent),
            Alpn::Cli => Some(PeerRole::Cli),
        }
    }
}

impl fmt::Display for Alpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_admits_exactly_its_roles() {
        let admitted = |alpn: Alpn| -> Vec<Role> {
            Role::ALL.into_iter().filter(|r| alpn.admits(*r)).collect()
        };
        assert_eq!(admitted(Alpn::Enroll), vec![]);
        assert_eq!(admitted(Alpn::Agent), vec![Role::Agent]);
        assert_eq!(admitted(Alpn::Cli), vec![Role::Operator, Role::Viewer]);
    }

    #[test]
    fn names_round_trip() {
        for alpn in Alpn::ALL {
            assert_eq!(Alpn::from_bytes(alpn.as_bytes()), Some(alpn));
        }
        assert_eq!(Alpn::from_bytes(b"h3"), None);
        assert_eq!(Alpn::Agent.to_string(), "lem-agent/1");
    }
}
