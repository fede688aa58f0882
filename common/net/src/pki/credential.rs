//! A client's credential — its key, its certificate and the cluster CA — and the agent's
//! side of enrollment: a key made on the node and the CSR that asks the CA to sign it.

use super::files::{check_private_mode, read_optional, write_file, PRIVATE_MODE, PUBLIC_MODE};
use super::{certificate_der_from_pem, certificate_sha256, rcgen_error, PkiError};
use crate::identity::{check_id, PeerIdentity};
use crate::token::Sha256Digest;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use x509_parser::prelude::{FromDer, X509Certificate};

pub const CREDENTIAL_KEY_FILE: &str = "key.pem";
pub const CREDENTIAL_CERT_FILE: &str = "cert.pem";
pub const CREDENTIAL_CA_FILE: &str = "ca.pem";

/// What a client presents: its certificate and key, and the CA it trusts the server by.
#[derive(Clone)]
pub struct ClientCredential {
    identity: PeerIdentity,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl std::fmt::Debug for ClientCredential {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredential")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClientCredential {
    pub(crate) fn new(
        identity: PeerIdentity,
        cert_pem: String,
        key_pem: String,
        ca_pem: String,
    ) -> Self {
        Self {
            identity,
            cert_pem,
            key_pem,
            ca_pem,
        }
    }

    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// SHA-256 of the CA this credential trusts.
    pub fn ca_sha256(&self) -> Result<Sha256Digest, PkiError> {
        Ok(certificate_sha256(&self.ca_der()?))
    }

    pub(crate) fn certificate_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        certificate_der_from_pem(&self.cert_pem, Path::new(CREDENTIAL_CERT_FILE))
    }

    pub(crate) fn ca_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        certificate_der_from_pem(&self.ca_pem, Path::new(CREDENTIAL_CA_FILE))
    }

    pub(crate) fn key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::Pem {
            path: CREDENTIAL_KEY_FILE.into(),
            detail: e.to_string(),
        })?;
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
    }

    /// Writes `key.pem` (0600), `cert.pem` and `ca.pem` into `dir` (created 0700).
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        // Key first: `load` calls a key without a certificate incomplete, never the
        // reverse.
        write_file(&dir.join(CREDENTIAL_KEY_FILE), &self.key_pem, PRIVATE_MODE)?;
        write_file(&dir.join(CREDENTIAL_CERT_FILE), &self.cert_pem, PUBLIC_MODE)?;
        write_file(&dir.join(CREDENTIAL_CA_FILE), &self.ca_pem, PUBLIC_MODE)?;
        Ok(())
    }

    /// The credential saved in `dir`, or `None` when there is none (not enrolled yet).
    /// A partial one, an open key or a certificate of another key is an error.
    pub fn load(dir: &Path) -> Result<Option<Self>, PkiError> {
        let key_path = dir.join(CREDENTIAL_KEY_FILE);
        let cert_path = dir.join(CREDENTIAL_CERT_FILE);
        let ca_path = dir.join(CREDENTIAL_CA_FILE);
        let texts = (
            read_optional(&key_path)?,
            read_optional(&cert_path)?,
            read_optional(&ca_path)?,
        );
        let (key_pem, cert_pem, ca_pem) = match texts {
            (None, None, None) => return Ok(None),
            (Some(key), Some(cert), Some(ca)) => (key, cert, ca),
            (key, cert, _) => {
                let missing = if key.is_none() {
                    CREDENTIAL_KEY_FILE
                } else if cert.is_none() {
                    CREDENTIAL_CERT_FILE
                } else {
                    CREDENTIAL_CA_FILE
                };
                return Err(PkiError::Incomplete {
                    dir: dir.to_owned(),
                    missing: missing.to_owned(),
                });
            }
        };
        check_private_mode(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Pem {
            path: key_path.clone(),
            detail: e.to_string(),
        })?;
        let cert_der = certificate_der_from_pem(&cert_pem, &cert_path)?;
        certificate_der_from_pem(&ca_pem, &ca_path)?;
        check_key_matches(&cert_der, &key, &cert_path)?;
        let identity = PeerIdentity::from_certificate_der(&cert_der)?;
        Ok(Some(Self::new(identity, cert_pem, key_pem, ca_pem)))
    }
}

/// A key made on the agent and the CSR asking the CA to certify it.
pub struct PendingEnrollment {
    key: KeyPair,
    csr_pem: String,
}

impl PendingEnrollment {
    pub fn generate(node_name: &str) -> Result<Self, PkiError> {
        check_id(node_name)?;
        let key = KeyPair::generate().map_err(rcgen_error("generate the agent key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        let csr = params
            .serialize_request(&key)
            .map_err(rcgen_error("make the certificate signing request"))?;
        let csr_pem = csr
            .pem()
            .map_err(rcgen_error("encode the certificate signing request"))?;
        Ok(Self { key, csr_pem })
    }

    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The credential once the CA answered: the certificate must be for this key and
    /// carry an identity.
    pub fn complete(
        self,
        certificate_pem: String,
        ca_pem: String,
    ) -> Result<ClientCredential, PkiError> {
        let origin = Path::new("enrollment reply");
        let cert_der = certificate_der_from_pem(&certificate_pem, origin)?;
        certificate_der_from_pem(&ca_pem, origin)?;
        check_key_matches(&cert_der, &self.key, origin)?;
        let identity = PeerIdentity::from_certificate_der(&cert_der)?;
        Ok(ClientCredential::new(
            identity,
            certificate_pem,
            self.key.serialize_pem(),
            ca_pem,
        ))
    }
}

/// Refuses a certificate whose public key is not `key`'s.
pub(crate) fn check_key_matches(
    cert_der: &[u8],
    key: &KeyPair,
    origin: &Path,
) -> Result<(), PkiError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| PkiError::Pem {
        path: origin.to_owned(),
        detail: e.to_string(),
    })?;
    if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(PkiError::KeyMismatch {
            path: origin.to_owned(),
        });
    }
    Ok(())
}
