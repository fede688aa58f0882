//! rustls configurations, every one built with the ring provider explicitly: TLS 1.3
//! only, no 0-RTT, no session resumption (each connection shows its certificate).

use crate::alpn::Alpn;
use crate::pki::{certificate_sha256, ClientCredential, PkiError, ServerCertificate};
use crate::token::{hex, Sha256Digest};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("CA certificate is not usable as a trust anchor: {0}")]
    TrustAnchor(rustls::Error),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// The one crypto provider lem uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(TlsError::TrustAnchor)?;
    Ok(Arc::new(roots))
}

/// The coordinator's config: its certificate chain, every ALPN, client certificates
/// verified against the cluster CA when presented. A peer may connect without one (to
/// enroll); the server refuses it on any other ALPN after the handshake.
pub fn server_config(
    ca: &CertificateDer<'static>,
    server: &ServerCertificate,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain.clone(), server.key.clone_key())?;
    config.alpn_protocols = Alpn::ALL.iter().map(|a| a.as_bytes().to_vec()).collect();
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client's config with its credential, trusting the server through the credential's
/// CA, speaking `alpn`.
pub fn client_config(
    credential: &ClientCredential,
    alpn: Alpn,
) -> Result<rustls::ClientConfig, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&credential.ca_der()?)?)
        .with_client_auth_cert(vec![credential.certificate_der()?], credential.key_der()?)?;
    Ok(finish_client(config, alpn))
}

/// A config without a client certificate, trusting the server only if its chain holds
/// the CA whose SHA-256 is `ca_sha256` (from a join token) and its certificate is valid
/// under that CA for the name dialled. Used to enroll; `pin` records a mismatch.
pub fn pinned_client_config(
    ca_sha256: Sha256Digest,
    alpn: Alpn,
) -> Result<(rustls::ClientConfig, Arc<PinnedCaVerifier>), TlsError> {
    let verifier = Arc::new(PinnedCaVerifier {
        ca_sha256,
        provider: provider(),
        mismatch: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((finish_client(config, alpn), verifier))
}

fn finish_client(mut config: rustls::ClientConfig, alpn: Alpn) -> rustls::ClientConfig {
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    config.enable_early_data = false;
    config.resumption = Resumption::disabled();
    config
}

/// Trusts a server whose chain includes the pinned CA and verifies under it.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    ca_sha256: Sha256Digest,
    provider: Arc<CryptoProvider>,
    /// Hashes of the certificates the server sent, when none was the pinned CA.
    mismatch: Mutex<Option<Vec<String>>>,
}

impl PinnedCaVerifier {
    /// When the server's chain did not hold the pinned CA: the SHA-256 of each
    /// certificate it sent instead.
    pub fn mismatch(&self) -> Option<Vec<String>> {
        self.mismatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|cert| certificate_sha256(cert) == self.ca_sha256)
        else {
            let sent = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|cert| hex(&certificate_sha256(cert)))
                .collect();
            *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
            return Err(rustls::Error::General(format!(
                "the server's CA is not the one the join token names (SHA-256 {})",
                hex(&self.ca_sha256)
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config offers TLS 1.3 only; a 1.2 signature is never legitimate here.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
