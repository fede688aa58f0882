//! The cluster's certificates on disk and what they say: CA creation and reloading,
//! key file modes, partial credentials, the server certificate's names, and agent
//! certificates whose identity the CA decides, not the CSR.

use lem_net::pki::{
    agent_identity, ClientCredential, ClusterCa, PendingEnrollment, PkiError, CA_CERT_FILE,
    CA_KEY_FILE, LEAF_VALIDITY,
};
use lem_net::{PeerIdentity, Role};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn the_ca_is_created_once_then_loaded_with_its_key_private() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (created, was_created) = ClusterCa::load_or_create(&pki).unwrap();
    assert!(was_created);
    assert_eq!(mode(&pki.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&pki), 0o700);
    let (loaded, was_created) = ClusterCa::load_or_create(&pki).unwrap();
    assert!(!was_created);
    assert_eq!(loaded.sha256(), created.sha256());
    // The hash a token carries is the SHA-256 of the DER certificate on disk.
    let on_disk = std::fs::read_to_string(pki.join(CA_CERT_FILE)).unwrap();
    let expected: [u8; 32] = Sha256::digest(der(&on_disk)).into();
    assert_eq!(loaded.sha256(), expected);

    // A loaded CA still signs certificates that the created one's holders accept.
    let credential = loaded
        .issue_client_credential(
            &PeerIdentity::new(Role::Operator, "op").unwrap(),
            LEAF_VALIDITY,
        )
        .unwrap();
    assert_eq!(credential.ca_sha256().unwrap(), created.sha256());
}

#[test]
fn an_open_ca_key_or_a_missing_half_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::load_or_create(dir.path()).unwrap();
    let key = dir.path().join(CA_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    match ClusterCa::load(dir.path()) {
        Err(error @ PkiError::KeyTooOpen { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains(&key.display().to_string()) && text.contains("chmod 600"),
                "{text}"
            )
        }
        other => panic!("expected KeyTooOpen, got {other:?}"),
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
    // Not silently replaced: a new CA would orphan every enrolled agent.
    match ClusterCa::load_or_create(dir.path()) {
        Err(PkiError::Incomplete { missing, .. }) => assert_eq!(missing, CA_CERT_FILE),
        other => panic!("expected Incomplete, got {other:?}"),
    }
}

#[test]
fn the_server_certificate_carries_the_dialled_names_and_is_not_the_ca() {
    let ca = ClusterCa::generate().unwrap();
    let names = vec![
        "head".to_string(),
        "head.cluster.local".into(),
        "10.0.0.7".into(),
        "::1".into(),
    ];
    let server = ca.issue_server_certificate(&names, LEAF_VALIDITY).unwrap();
    assert_eq!(server.chain.len(), 2);
    assert_eq!(server.chain[1].as_ref(), ca.certificate_der().as_ref());
    assert_ne!(server.chain[0].as_ref(), ca.certificate_der().as_ref());

    let (_, cert) = X509Certificate::from_der(&server.chain[0]).unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match name {
            GeneralName::DNSName(n) => dns.push(n.to_string()),
            GeneralName::IPAddress(bytes) => ips.push(bytes.to_vec()),
            other => panic!("unexpected name {other:?}"),
        }
    }
    assert_eq!(dns, ["head", "head.cluster.local"]);
    let v6: std::net::Ipv6Addr = "::1".parse().unwrap();
    assert_eq!(ips, [vec![10, 0, 0, 7], v6.octets().to_vec()]);
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert_eq!(
        cert.issuer().to_string(),
        X509Certificate::from_der(ca.certificate_der())
            .unwrap()
            .1
            .subject()
            .to_string()
    );

    for bad in ["", "has space", "a..b", "under_score"] {
        assert!(
            matches!(
                ca.issue_server_certificate(&[bad.to_string()], LEAF_VALIDITY),
                Err(PkiError::BadServerName { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn an_agent_certificate_carries_the_cas_identity_not_the_csrs() {
    let ca = ClusterCa::generate().unwrap();
    // A CSR asking to be an operator, in a URI name and in its subject.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:lem:operator:evil".try_into().unwrap(),
    )];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "evil");
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();

    let (identity, cert_pem) = ca.sign_agent_csr(&csr_pem, "gpu-3", LEAF_VALIDITY).unwrap();
    // Expected id computed here: node name, then the first 4 bytes of SHA-256(SPKI), hex.
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let digest = Sha256::digest(&spki);
    let expected_id = format!(
        "gpu-3-{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3]
    );
    assert_eq!(
        identity,
        PeerIdentity::new(Role::Agent, expected_id.clone()).unwrap()
    );
    assert_eq!(agent_identity("gpu-3", &spki).unwrap(), identity);

    let cert_der = der(&cert_pem);
    assert_eq!(
        PeerIdentity::from_certificate_der(&cert_der).unwrap(),
        identity
    );
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    let uris: Vec<String> = cert
        .extensions()
        .iter()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [format!("urn:lem:agent:{expected_id}")]);
    assert_eq!(cert.tbs_certificate.subject_pki.raw, spki.as_slice());

    // A CSR whose signature does not verify is refused.
    let mut tampered = der_of_csr(&csr_pem);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let tampered_pem = pem_of_csr(&tampered);
    assert!(matches!(
        ca.sign_agent_csr(&tampered_pem, "gpu-3", LEAF_VALIDITY),
        Err(PkiError::Csr { .. })
    ));
    // A node name that cannot be an id is refused.
    assert!(matches!(
        ca.sign_agent_csr(&csr_pem, "bad/name", LEAF_VALIDITY),
        Err(PkiError::Identity(_))
    ));
}

fn der_of_csr(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn pem_of_csr(der: &[u8]) -> String {
    // Base64 by hand: PEM is 64-column base64 between the markers.
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

#[test]
fn a_client_credential_round_trips_and_refuses_partial_or_mismatched_files() {
    let ca = ClusterCa::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(
        ClientCredential::load(dir.path()).unwrap().is_none(),
        "empty dir is 'not enrolled'"
    );

    let pending = PendingEnrollment::generate("node-9").unwrap();
    let (identity, cert_pem) = ca
        .sign_agent_csr(pending.csr_pem(), "node-9", LEAF_VALIDITY)
        .unwrap();
    let credential = pending
        .complete(cert_pem, ca.certificate_pem().to_owned())
        .unwrap();
    assert_eq!(credential.identity(), &identity);
    credential.save(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join("key.pem")), 0o600);
    let loaded = ClientCredential::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.identity(), &identity);
    assert_eq!(loaded.ca_sha256().unwrap(), ca.sha256());

    // Another key's certificate beside this key.
    let other = ca
        .issue_client_credential(
            &PeerIdentity::new(Role::Agent, "other").unwrap(),
            LEAF_VALIDITY,
        )
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), other.certificate_pem()).unwrap();
    assert!(matches!(
        ClientCredential::load(dir.path()),
        Err(PkiError::KeyMismatch { .. })
    ));

    std::fs::remove_file(dir.path().join("cert.pem")).unwrap();
    match ClientCredential::load(dir.path()) {
        Err(PkiError::Incomplete { missing, .. }) => assert_eq!(missing, "cert.pem"),
        other => panic!("expected Incomplete, got {other:?}"),
    }

    // A reply certifying another key is refused before anything is saved.
    let pending = PendingEnrollment::generate("node-9").unwrap();
    assert!(matches!(
        pending.complete(
            other.certificate_pem().to_owned(),
            ca.certificate_pem().to_owned()
        ),
        Err(PkiError::KeyMismatch { .. })
    ));
}
