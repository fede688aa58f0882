//! The coordinator's enrollment decisions without a network: every refusal says why and
//! leaves the token book exactly as it was; only a request that passes every check
//! consumes its token.

use lem_common::wire::{EnrollReply, EnrollRequest, PROTOCOL_VERSION};
use lem_net::pki::{ClusterCa, PendingEnrollment, LEAF_VALIDITY};
use lem_net::token::{create_join_token, InMemoryTokenBook, JoinToken};
use lem_net::{EnrollmentDesk, PeerIdentity, Role};
use std::sync::Arc;

const NOW_MS: u64 = 5_000_000;

fn desk() -> (EnrollmentDesk, Arc<InMemoryTokenBook>) {
    let book = Arc::new(InMemoryTokenBook::default());
    let desk = EnrollmentDesk {
        ca: Arc::new(ClusterCa::generate().unwrap()),
        tokens: book.clone(),
        clock: Arc::new(|| NOW_MS),
        agent_validity: LEAF_VALIDITY,
    };
    (desk, book)
}

fn request(token: &JoinToken, csr_pem: &str, node_name: &str) -> EnrollRequest {
    EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        lem_version: "test".into(),
        join_token: token.to_text(),
        csr_pem: csr_pem.to_owned(),
        node_name: node_name.to_owned(),
    }
}

fn refusal(reply: EnrollReply) -> String {
    match reply {
        EnrollReply::Refused { reason } => reason,
        EnrollReply::Enrolled { agent_id, .. } => panic!("enrolled as {agent_id}"),
    }
}

#[test]
fn every_refusal_leaves_the_book_unchanged_and_says_why() {
    let (desk, book) = desk();
    let token = create_join_token(book.as_ref(), desk.ca.sha256(), NOW_MS, 60_000).unwrap();
    let pending = PendingEnrollment::generate("node-1").unwrap();
    let good = request(&token, pending.csr_pem(), "node-1");
    let before = book.snapshot();

    let other_ca = ClusterCa::generate().unwrap();
    let cases: Vec<(EnrollRequest, &str)> = vec![
        (
            EnrollRequest {
                protocol_version: PROTOCOL_VERSION + 1,
                ..good.clone()
            },
            "protocol version",
        ),
        (
            EnrollRequest {
                join_token: "lemjoin1.nothex".into(),
                ..good.clone()
            },
            "join token is not",
        ),
        (
            request(
                &JoinToken::new([9; 16], desk.ca.sha256()),
                pending.csr_pem(),
                "node-1",
            ),
            "unknown",
        ),
        (
            EnrollRequest {
                join_token: JoinToken::parse(&token.to_text())
                    .map(|t| {
                        let text = t.to_text();
                        let ours: String = desk
                            .ca
                            .sha256()
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        let theirs: String = other_ca
                            .sha256()
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        text.replace(&ours, &theirs)
                    })
                    .unwrap(),
                ..good.clone()
            },
            "names CA",
        ),
        (
            EnrollRequest {
                csr_pem:
                    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                        .into(),
                ..good.clone()
            },
            "certificate signing request refused",
        ),
        (
            EnrollRequest {
                node_name: "no spaces allowed".into(),
                ..good.clone()
            },
            "no spaces allowed",
        ),
    ];
    for (bad, reason_part) in cases {
        let reason = refusal(desk.decide(&bad));
        assert!(
            reason.contains(reason_part),
            "{reason:?} lacks {reason_part:?}"
        );
        assert_eq!(
            book.snapshot(),
            before,
            "refusal {reason:?} changed the book"
        );
    }

    // The good request still works after all that, once.
    match desk.decide(&good) {
        EnrollReply::Enrolled {
            agent_id,
            certificate_pem,
            ca_certificate_pem,
        } => {
            assert!(agent_id.starts_with("node-1-"), "{agent_id}");
            assert_eq!(ca_certificate_pem, desk.ca.certificate_pem());
            let credential = pending
                .complete(certificate_pem, ca_certificate_pem)
                .unwrap();
            assert_eq!(
                credential.identity(),
                &PeerIdentity::new(Role::Agent, agent_id).unwrap()
            );
        }
        EnrollReply::Refused { reason } => panic!("refused: {reason}"),
    }
    assert_eq!(book.snapshot()[0].used_at_unix_ms, Some(NOW_MS));
    let reason = refusal(desk.decide(&good));
    assert!(reason.contains("already used"), "{reason}");
}
