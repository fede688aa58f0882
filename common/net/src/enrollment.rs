//! The coordinator's side of enrollment: whether a request is admitted, and the signed
//! certificate if it is. The token is redeemed only after everything else passed, so a
//! refused request leaves the token book as it was.

use crate::pki::ClusterCa;
use crate::token::{hex, JoinToken, JoinTokenBook};
use lem_common::wire::{version_refusal_message, EnrollReply, EnrollRequest, PROTOCOL_VERSION};
use std::sync::Arc;
use std::time::Duration;

/// Milliseconds since the Unix epoch; injected so tests can move time.
pub type UnixMsClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock as a [`UnixMsClock`].
pub fn system_clock() -> UnixMsClock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// Decides enrollment requests for one cluster.
#[derive(Clone)]
pub struct EnrollmentDesk {
    pub ca: Arc<ClusterCa>,
    pub tokens: Arc<dyn JoinTokenBook>,
    pub clock: UnixMsClock,
    /// How long an agent's certificate lives.
    pub agent_validity: Duration,
}

impl EnrollmentDesk {
    /// The answer to `request`. Refusals say why; the token is consumed only on success.
    pub fn decide(&self, request: &EnrollRequest) -> EnrollReply {
        match self.try_enroll(request) {
            Ok(reply) => reply,
            Err(reason) => EnrollReply::Refused { reason },
        }
    }

    fn try_enroll(&self, request: &EnrollRequest) -> Result<EnrollReply, String> {
        if request.protocol_version != PROTOCOL_VERSION {
            return Err(version_refusal_message(
                request.protocol_version,
                &request.lem_version,
            ));
        }
        let token = JoinToken::parse(&request.join_token).map_err(|e| e.to_string())?;
        if token.ca_sha256() != self.ca.sha256() {
            return Err(format!(
                "the join token names CA {}, this cluster's CA is {}",
                hex(&token.ca_sha256()),
                hex(&self.ca.sha256())
            ));
        }
        let (identity, certificate_pem) = self
            .ca
            .sign_agent_csr(&request.csr_pem, &request.node_name, self.agent_validity)
            .map_err(|e| format!("node {:?}: {e}", request.node_name))?;
        // Last: everything that can refuse without a write has passed.
        self.tokens
            .redeem(&token.secret_sha256(), (self.clock)())
            .map_err(|e| e.to_string())?;
        Ok(EnrollReply::Enrolled {
            agent_id: identity.id,
            certificate_pem,
            ca_certificate_pem: self.ca.certificate_pem().to_owned(),
        })
    }
}
