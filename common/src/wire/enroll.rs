//! Enrollment: the one exchange on the `lem-enroll/1` ALPN, made by an agent that has no
//! certificate yet. The agent sends its join token and a certificate signing request for
//! a key it made itself; the coordinator answers with the signed certificate and the
//! cluster CA, or a refusal. The private key never leaves the agent.

use serde::{Deserialize, Serialize};

/// Agent → coordinator, the only frame an enrolling agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub protocol_version: u32,
    /// The agent's build (`CARGO_PKG_VERSION`), for logs and refusals.
    pub lem_version: String,
    /// The whole join token as the operator handed it over.
    pub join_token: String,
    /// PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
    /// The name the agent goes by (its host name); the coordinator derives the agent id
    /// from it and the key.
    pub node_name: String,
}

/// Coordinator → agent, the answer to an [`EnrollRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollReply {
    Enrolled {
        /// The id on the certificate: how the coordinator will know this agent.
        agent_id: String,
        /// The agent's certificate, PEM, signed by the cluster CA.
        certificate_pem: String,
        /// The cluster CA certificate, PEM.
        ca_certificate_pem: String,
    },
    Refused {
        reason: String,
    },
}
