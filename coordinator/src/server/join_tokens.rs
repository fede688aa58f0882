//! Join tokens through the running coordinator (`lem --coordinator X token
//! create|list|revoke`): while the server holds the store, this is the way to reach
//! them. Answered from the store's token book, with no scheduler state. The rows `lem
//! token list` shows are made here for both ways in (data dir or coordinator).

use crate::store::{RevokeError, Store, StoreError};
use lem_common::wire::cli::JoinTokenSummary;
use lem_common::wire::{CliReply, CliRequest};
use lem_net::token::{create_join_token_for, short_id, token_state, Sha256Digest, StoredToken};
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
    /// The reply to a join-token request (`None`: not one). The caller has checked the
    /// peer's role.
    pub fn answer(&self, request: &CliRequest, now_unix_ms: u64) -> Option<CliReply> {
        Some(match request {
            CliRequest::CreateJoinToken { ttl_ms, uses } => self.issue(*ttl_ms, *uses, now_unix_ms),
            CliRequest::ListJoinTokens => match token_summaries(&self.store, now_unix_ms) {
                Ok(rows) => CliReply::JoinTokens(rows),
                Err(e) => CliReply::Refused {
                    reason: format!("cannot list join tokens: {e}"),
                },
            },
            CliRequest::RevokeJoinToken { id } => {
                match self.store.revoke_join_token(id, now_unix_ms) {
                    Ok(done) => revoked_reply(&done),
                    Err(e) => CliReply::Refused {
                        reason: e.to_string(),
                    },
                }
            }
            _ => return None,
        })
    }

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

/// A revoke's reply, the same from a data dir and from the coordinator.
pub fn revoked_reply(done: &crate::store::Revocation) -> CliReply {
    CliReply::JoinTokenRevoked {
        id: short_id(&done.token.secret_sha256),
        revoked_unix_ms: done.token.revoked_at_unix_ms.unwrap_or_default(),
        newly_revoked: done.newly_revoked,
    }
}

/// Revokes `id` in `store` now, for `lem token revoke` on a data dir.
pub fn revoke(store: &Store, id: &str, now_unix_ms: u64) -> Result<CliReply, RevokeError> {
    Ok(revoked_reply(&store.revoke_join_token(id, now_unix_ms)?))
}

/// Every token in `store` as `lem token list` shows it at `now_unix_ms`: oldest first
/// (tokens from before creation times were recorded lead), then by id.
pub fn token_summaries(
    store: &Store,
    now_unix_ms: u64,
) -> Result<Vec<JoinTokenSummary>, StoreError> {
    let mut rows: Vec<JoinTokenSummary> = store
        .join_tokens()?
        .iter()
        .map(|token| summary(token, now_unix_ms))
        .collect();
    rows.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
    Ok(rows)
}

fn summary(token: &StoredToken, now_unix_ms: u64) -> JoinTokenSummary {
    JoinTokenSummary {
        id: short_id(&token.secret_sha256),
        created_unix_ms: token.created_at_unix_ms,
        expires_unix_ms: token.expires_at_unix_ms,
        uses: token.uses,
        max_uses: token.max_uses,
        state: token_state(token, now_unix_ms).as_str().to_owned(),
        revoked_unix_ms: token.revoked_at_unix_ms,
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
