//! Join tokens made by the running coordinator for an operator (`lem --coordinator X
//! token create`): while the server holds the store, this is the way to make one.

use crate::store::Store;
use lem_common::wire::CliReply;
use lem_net::token::create_join_token_for;
use lem_net::token::Sha256Digest;
use std::sync::Arc;

/// The longest TTL a token may have, as for `lem token create` on the data dir.
pub const MAX_TOKEN_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// The most enrollments one token may admit, as for `lem token create --uses`.
pub const MAX_TOKEN_USES: u32 = 10_000;

#[derive(Clone)]
pub struct JoinTokenIssuer {
    pub store: Arc<Store>,
    pub ca_sha256: Sha256Digest,
}

impl JoinTokenIssuer {
    /// A new token valid `ttl_ms` from `now_unix_ms` for `uses` enrollments (its hash
    /// stored, its text returned once), or a refusal saying why.
    pub fn issue(&self, ttl_ms: u64, uses: u32, now_unix_ms: u64) -> CliReply {
        if ttl_ms == 0 || ttl_ms > MAX_TOKEN_TTL_MS {
            return CliReply::Refused {
                reason: format!(
                    "a join token's TTL must be above 0 and at most 7 d, got {ttl_ms} ms"
                ),
            };
        }
        if uses == 0 || uses > MAX_TOKEN_USES {
            return CliReply::Refused {
                reason: format!("a join token's uses must be 1 to {MAX_TOKEN_USES}, got {uses}"),
            };
        }
        let book = self.store.as_ref();
        match create_join_token_for(book, self.ca_sha256, now_unix_ms, ttl_ms, uses) {
            Ok(token) => CliReply::JoinToken {
                token: token.to_text(),
                expires_unix_ms: now_unix_ms.saturating_add(ttl_ms),
                uses,
            },
            Err(e) => CliReply::Refused {
                reason: format!("cannot create a join token: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_net::pki::ClusterCa;
    use lem_net::token::JoinToken;

    #[test]
    fn a_token_names_this_ca_is_stored_by_hash_and_bad_ttls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), std::time::Duration::from_secs(5)).unwrap());
        let (ca, _) = ClusterCa::load_or_create(dir.path()).unwrap();
        let issuer = JoinTokenIssuer {
            store: store.clone(),
            ca_sha256: ca.sha256(),
        };
        let now = 1_000_000;
        let CliReply::JoinToken {
            token,
            expires_unix_ms,
            uses,
        } = issuer.issue(60_000, 4, now)
        else {
            panic!("no token");
        };
        assert_eq!(expires_unix_ms, now + 60_000);
        assert_eq!(uses, 4);
        let parsed = JoinToken::parse(&token).unwrap();
        assert_eq!(parsed.ca_sha256(), ca.sha256());
        let rows = store.join_tokens().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].secret_sha256, parsed.secret_sha256());
        assert_eq!(rows[0].expires_at_unix_ms, now + 60_000);
        assert_eq!((rows[0].max_uses, rows[0].uses), (4, 0));
        for bad in [0, MAX_TOKEN_TTL_MS + 1] {
            assert!(matches!(
                issuer.issue(bad, 1, now),
                CliReply::Refused { .. }
            ));
        }
        for bad in [0, MAX_TOKEN_USES + 1] {
            let CliReply::Refused { reason } = issuer.issue(60_000, bad, now) else {
                panic!("{bad} uses accepted");
            };
            assert!(reason.contains(&format!("got {bad}")), "{reason}");
        }
        assert_eq!(store.join_tokens().unwrap().len(), 1);
    }
}
