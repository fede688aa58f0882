//! The cluster CA: created once in the coordinator's data dir, loaded at every start.
//! It signs the server certificate (never used as one itself) and every client
//! certificate, each carrying the names this CA chose.

use super::files::{check_private_mode, read_optional, write_file, PRIVATE_MODE, PUBLIC_MODE};
use super::{
    certificate_der_from_pem, certificate_sha256, random_serial, rcgen_error, validity_window,
    ClientCredential, PkiError, CA_VALIDITY,
};
use crate::identity::{check_id, PeerIdentity, Role, MAX_ID_CHARS};
use crate::token::{hex, Sha256Digest};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key.pem";

pub struct ClusterCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("sha256", &hex(&self.sha256()))
            .finish_non_exhaustive()
    }
}

/// The server's certificate chain (its own, then the CA's) and key, for TLS.
#[derive(Debug)]
pub struct ServerCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClusterCa {
    /// A new CA in memory.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generate the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "lem cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity_window(CA_VALIDITY);
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("self-sign the CA"))?;
        Ok(Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir` (`ca.pem`, `ca.key.pem`), creating it there first if
    /// neither exists. Returns whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !cert_path.exists() && !key_path.exists() {
            let ca = Self::generate()?;
            // Key first: a crash between the two leaves no certificate without its key.
            write_file(&key_path, &ca.issuer.key().serialize_pem(), PRIVATE_MODE)?;
            write_file(&cert_path, &ca.cert_pem, PUBLIC_MODE)?;
            return Ok((ca, true));
        }
        Ok((Self::load(dir)?, false))
    }

    /// Loads an existing CA from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let missing = |name: &str| PkiError::Incomplete {
            dir: dir.to_owned(),
            missing: name.to_owned(),
        };
        let cert_pem = read_optional(&cert_path)?.ok_or_else(|| missing(CA_CERT_FILE))?;
        let key_pem = read_optional(&key_path)?.ok_or_else(|| missing(CA_KEY_FILE))?;
        check_private_mode(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Pem {
            path: key_path.clone(),
            detail: e.to_string(),
        })?;
        let cert_der = certificate_der_from_pem(&cert_pem, &cert_path)?;
        super::credential::check_key_matches(&cert_der, &key, &cert_path)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| PkiError::Pem {
            path: cert_path.clone(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            cert_der,
            cert_pem,
            issuer,
        })
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// What a join token carries to name this CA.
    pub fn sha256(&self) -> Sha256Digest {
        certificate_sha256(&self.cert_der)
    }

    /// A server certificate for the names and addresses agents and CLIs dial (a fresh
    /// key each time; the coordinator issues one at every start).
    pub fn issue_server_certificate(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<ServerCertificate, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "lem coordinator");
        params.subject_alt_names = names
            .iter()
            .map(|name| server_name_san(name))
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(rcgen_error("generate the server key"))?;
        let cert = self.sign(params, &key, validity, "sign the server certificate")?;
        Ok(ServerCertificate {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// A credential (key and certificate) for `identity`, made here: for operators and
    /// viewers, and for tests. Agents enroll instead, so their key never travels.
    pub fn issue_client_credential(
        &self,
        identity: &PeerIdentity,
        validity: Duration,
    ) -> Result<ClientCredential, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generate a client key"))?;
        let cert = self.sign(
            client_params(identity)?,
            &key,
            validity,
            "sign a client certificate",
        )?;
        Ok(ClientCredential::new(
            identity.clone(),
            cert.pem(),
            key.serialize_pem(),
            self.cert_pem.clone(),
        ))
    }

    /// Signs an enrolling agent's CSR. Only the CSR's key is used: the role (agent) and
    /// the id (`<node_name>-<8 hex of the key's SHA-256>`, unique per key) are this CA's.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        node_name: &str,
        validity: Duration,
    ) -> Result<(PeerIdentity, String), PkiError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Csr {
                detail: e.to_string(),
            })?;
        let identity = agent_identity(node_name, &csr.public_key.subject_public_key_info())?;
        let mut params = client_params(&identity)?;
        (params.not_before, params.not_after) = validity_window(validity);
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rcgen_error("sign the agent certificate"))?;
        Ok((identity, cert.pem()))
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        key: &KeyPair,
        validity: Duration,
        what: &'static str,
    ) -> Result<rcgen::Certificate, PkiError> {
        (params.not_before, params.not_after) = validity_window(validity);
        params.serial_number = Some(random_serial()?);
        params
            .signed_by(key, &self.issuer)
            .map_err(rcgen_error(what))
    }
}

/// The id an agent gets: its node name and a short hash of its public key, so two nodes
/// with one host name stay apart and a re-enrolled node with a new key is a new agent.
pub fn agent_identity(node_name: &str, public_key_info: &[u8]) -> Result<PeerIdentity, PkiError> {
    let key_hash = hex(&certificate_sha256(public_key_info)[..4]);
    let suffix_chars = key_hash.len() + 1;
    if node_name.chars().count() + suffix_chars > MAX_ID_CHARS {
        return Err(crate::identity::IdentityError::BadId {
            id: node_name.to_owned(),
        }
        .into());
    }
    check_id(node_name)?;
    Ok(PeerIdentity::new(
        Role::Agent,
        format!("{node_name}-{key_hash}"),
    )?)
}

fn client_params(identity: &PeerIdentity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.id.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, identity.role.as_str());
    let uri = identity
        .to_uri()
        .try_into()
        .map_err(rcgen_error("encode the identity name"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn server_name_san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid_dns {
        return Err(PkiError::BadServerName {
            name: name.to_owned(),
        });
    }
    let dns = name
        .to_owned()
        .try_into()
        .map_err(|_| PkiError::BadServerName {
            name: name.to_owned(),
        })?;
    Ok(SanType::DnsName(dns))
}
