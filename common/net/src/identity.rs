//! Who a certificate belongs to. A client certificate names its holder in exactly one
//! URI subject alternative name, `urn:lem:<role>:<id>`; the verifier reads it back as a
//! typed [`PeerIdentity`]. The CA signs only names it built itself, so a peer cannot
//! choose its role.

use std::fmt;
use thiserror::Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Prefix of the URI that carries a certificate's role and id.
pub const IDENTITY_URI_PREFIX: &str = "urn:lem:";

/// Longest id a certificate may carry.
pub const MAX_ID_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A node that runs jobs (`lem-agent`), on the agent ALPN.
    Agent,
    /// A CLI user who may submit, cancel and drain.
    Operator,
    /// A CLI user who may only read.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Agent, Role::Operator, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Result<Role, IdentityError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| IdentityError::UnknownRole {
                role: text.to_owned(),
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated holder of a client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub role: Role,
    pub id: String,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("unknown role {role:?} (expected agent, operator or viewer)")]
    UnknownRole { role: String },
    #[error(
        "id {id:?} is not usable: 1 to {MAX_ID_CHARS} characters of A-Z a-z 0-9 . _ - are allowed"
    )]
    BadId { id: String },
    #[error("certificate cannot be parsed: {detail}")]
    Unparsable { detail: String },
    #[error("certificate carries no {IDENTITY_URI_PREFIX}<role>:<id> name")]
    Missing,
    #[error("certificate carries {count} {IDENTITY_URI_PREFIX} names; exactly one is allowed")]
    Ambiguous { count: usize },
    #[error("certificate name {uri:?} is not {IDENTITY_URI_PREFIX}<role>:<id>")]
    Malformed { uri: String },
}

impl PeerIdentity {
    /// An identity with a checked id.
    pub fn new(role: Role, id: impl Into<String>) -> Result<Self, IdentityError> {
        let id = id.into();
        check_id(&id)?;
        Ok(Self { role, id })
    }

    /// The URI subject alternative name that carries this identity.
    pub fn to_uri(&self) -> String {
        format!("{IDENTITY_URI_PREFIX}{}:{}", self.role, self.id)
    }

    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed {
            uri: uri.to_owned(),
        };
        let rest = uri
            .strip_prefix(IDENTITY_URI_PREFIX)
            .ok_or_else(malformed)?;
        let (role, id) = rest.split_once(':').ok_or_else(malformed)?;
        PeerIdentity::new(Role::parse(role)?, id)
    }

    /// Reads the identity from a DER certificate (one the TLS layer already verified).
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable {
            detail: e.to_string(),
        })?;
        let uris: Vec<&str> = uri_names(&cert)?
            .into_iter()
            .filter(|uri| uri.starts_with(IDENTITY_URI_PREFIX))
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::Missing),
            [uri] => PeerIdentity::from_uri(uri),
            more => Err(IdentityError::Ambiguous { count: more.len() }),
        }
    }
}

/// Ids go into URIs, file names and logs: a small, safe alphabet.
pub fn check_id(id: &str) -> Result<(), IdentityError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || !id.chars().all(allowed) {
        return Err(IdentityError::BadId { id: id.to_owned() });
    }
    Ok(())
}

fn uri_names<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparsable {
            detail: e.to_string(),
        })?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips_for_every_role() {
        for role in Role::ALL {
            let identity = PeerIdentity::new(role, "node-7.gpu_a").unwrap();
            let uri = identity.to_uri();
            assert_eq!(uri, format!("urn:lem:{}:node-7.gpu_a", role.as_str()));
            assert_eq!(PeerIdentity::from_uri(&uri).unwrap(), identity);
        }
    }

    #[test]
    fn bad_ids_and_uris_are_refused() {
        for id in ["", "a b", "a/b", "é", &"x".repeat(MAX_ID_CHARS + 1)] {
            assert!(
                matches!(check_id(id), Err(IdentityError::BadId { .. })),
                "{id:?}"
            );
        }
        assert!(check_id(&"x".repeat(MAX_ID_CHARS)).is_ok());
        assert_eq!(
            PeerIdentity::from_uri("urn:lem:root:x"),
            Err(IdentityError::UnknownRole {
                role: "root".into()
            })
        );
        assert!(matches!(
            PeerIdentity::from_uri("urn:lem:agent"),
            Err(IdentityError::Malformed { .. })
        ));
        assert!(matches!(
            PeerIdentity::from_uri("https://example.org"),
            Err(IdentityError::Malformed { .. })
        ));
    }
}
