//! The cluster's certificates: its CA (in the coordinator's data dir), the server
//! certificate issued from it at each start, and client credentials (agents enroll with
//! a key and CSR of their own; operators and viewers are issued one).

mod ca;
mod credential;
mod files;

pub use ca::{agent_identity, ClusterCa, ServerCertificate, CA_CERT_FILE, CA_KEY_FILE};
pub use credential::{
    ClientCredential, PendingEnrollment, CREDENTIAL_CA_FILE, CREDENTIAL_CERT_FILE,
    CREDENTIAL_KEY_FILE,
};
pub use files::{check_private_mode, PRIVATE_MODE};

use crate::identity::IdentityError;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// How long certificates live unless the caller says otherwise.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before issue, so a peer whose clock is behind accepts
/// them.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: private key is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error(
        "{dir}: incomplete credential, {missing} is missing; remove the directory and enroll again"
    )]
    Incomplete { dir: PathBuf, missing: String },
    #[error("{path}: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("{path}: the certificate does not belong to the private key beside it")]
    KeyMismatch { path: PathBuf },
    #[error("cannot {what}: {detail}")]
    Certificate { what: &'static str, detail: String },
    #[error("certificate signing request refused: {detail}")]
    Csr { detail: String },
    #[error("server name {name:?} is neither an IP address nor a DNS name")]
    BadServerName { name: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

pub(crate) fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |e| PkiError::Certificate {
        what,
        detail: e.to_string(),
    }
}

/// SHA-256 of a DER certificate: how a join token names the CA.
pub fn certificate_sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The DER of the first certificate in `pem`.
pub fn certificate_der_from_pem(
    pem: &str,
    origin: &std::path::Path,
) -> Result<rustls::pki_types::CertificateDer<'static>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        path: origin.to_owned(),
        detail: format!("no certificate: {e}"),
    })
}

/// Validity window from now: starts `CLOCK_SKEW_ALLOWANCE` ago, lasts `validity`.
pub(crate) fn validity_window(validity: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    let skew = time::Duration::try_from(CLOCK_SKEW_ALLOWANCE).unwrap_or(time::Duration::HOUR);
    let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::DAY);
    (now - skew, now + validity)
}

/// A random serial number, positive (high bit clear) as RFC 5280 asks.
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Certificate {
            what: "draw a serial number",
            detail: "system random source failed".into(),
        })?;
    bytes[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
