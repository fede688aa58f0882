//! The `join_tokens` tree: lem-net's [`JoinTokenBook`], durable. A row is a
//! [`StoredToken`] keyed by the hex SHA-256 of the token's secret; the secret itself and
//! the token's text are never stored. The redeem decision is lem-net's pure
//! [`decide_redeem`], taken inside a sled transaction: a token's use count rises by one
//! per admitted enrollment and never past its `max_uses` (of two racing redeems of a
//! token's last use exactly one is admitted), and a refusal writes nothing. An operator
//! revokes a token by its short id ([`lem_net::token::short_id`]: a prefix of the row's key), in a
//! transaction that sets its revoked time and nothing else; from then on
//! [`decide_redeem`] refuses it.

use super::codec::{to_json, JOIN_TOKENS};
use super::error::StoreError;
use super::Store;
use lem_net::token::{
    decide_redeem, JoinTokenBook, Sha256Digest, StoredToken, TokenError, SHORT_ID_HEX_DIGITS,
};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// How a [`StoredToken`] is laid out in the tree: the hash as hex so the rows read in
/// any JSON tool.
/// Rows written before tokens had a use count lack `max_uses` and `uses`: they were
/// single-use, used once if `used_at_unix_ms` is set.
#[derive(Debug, Serialize, Deserialize)]
struct TokenRow {
    secret_sha256: String,
    expires_at_unix_ms: u64,
    used_at_unix_ms: Option<u64>,
    #[serde(default)]
    max_uses: Option<u32>,
    #[serde(default)]
    uses: Option<u32>,
    /// Absent from rows written before tokens recorded when they were made.
    #[serde(default)]
    created_at_unix_ms: Option<u64>,
    #[serde(default)]
    revoked_at_unix_ms: Option<u64>,
}

impl TokenRow {
    fn from_stored(token: &StoredToken) -> Self {
        Self {
            secret_sha256: hex(&token.secret_sha256),
            expires_at_unix_ms: token.expires_at_unix_ms,
            used_at_unix_ms: token.used_at_unix_ms,
            max_uses: Some(token.max_uses),
            uses: Some(token.uses),
            created_at_unix_ms: token.created_at_unix_ms,
            revoked_at_unix_ms: token.revoked_at_unix_ms,
        }
    }

    fn into_stored(self, key: &str) -> Result<StoredToken, String> {
        let secret_sha256 = unhex32(&self.secret_sha256).ok_or_else(|| {
            format!("store tree `{JOIN_TOKENS}` row `{key}`: secret_sha256 is not 64 hex digits")
        })?;
        let used_before_counts = u32::from(self.used_at_unix_ms.is_some());
        Ok(StoredToken {
            secret_sha256,
            expires_at_unix_ms: self.expires_at_unix_ms,
            used_at_unix_ms: self.used_at_unix_ms,
            max_uses: self.max_uses.unwrap_or(1),
            uses: self.uses.unwrap_or(used_before_counts),
            created_at_unix_ms: self.created_at_unix_ms,
            revoked_at_unix_ms: self.revoked_at_unix_ms,
        })
    }
}

fn decode_row(key: &str, bytes: &[u8]) -> Result<StoredToken, String> {
    let row: TokenRow = serde_json::from_slice(bytes)
        .map_err(|e| format!("corrupt row `{key}` in store tree `{JOIN_TOKENS}`: {e}"))?;
    row.into_stored(key)
}

fn storage(detail: impl std::fmt::Display) -> TokenError {
    TokenError::Storage {
        detail: detail.to_string(),
    }
}

impl JoinTokenBook for Store {
    fn add(&self, token: StoredToken) -> Result<(), TokenError> {
        let tree = self.tree(JOIN_TOKENS).map_err(storage)?;
        let key = hex(&token.secret_sha256);
        let row = to_json(&TokenRow::from_stored(&token));
        let swapped = tree
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(row))
            .map_err(storage)?;
        if swapped.is_err() {
            return Err(TokenError::Duplicate);
        }
        tree.flush().map_err(storage)?;
        Ok(())
    }

    fn redeem(&self, secret_sha256: &Sha256Digest, now_unix_ms: u64) -> Result<(), TokenError> {
        let tree = self.tree(JOIN_TOKENS).map_err(storage)?;
        let key = hex(secret_sha256);
        let outcome = tree.transaction(|tx| {
            let stored = match tx.get(key.as_bytes())? {
                Some(bytes) => Some(
                    decode_row(&key, &bytes)
                        .map_err(|detail| ConflictableTransactionError::Abort(storage(detail)))?,
                ),
                None => None,
            };
            // Refusals abort the transaction, so nothing is written.
            let used = decide_redeem(stored.as_ref(), now_unix_ms)
                .map_err(ConflictableTransactionError::Abort)?;
            tx.insert(key.as_bytes(), to_json(&TokenRow::from_stored(&used)))?;
            Ok(())
        });
        match outcome {
            Ok(()) => {}
            Err(TransactionError::Abort(refusal)) => return Err(refusal),
            Err(TransactionError::Storage(e)) => return Err(storage(e)),
        }
        // Admitted only once the mark is on disk: a crash cannot hand the token out twice.
        tree.flush().map_err(storage)?;
        Ok(())
    }
}

impl Store {
    /// Every token row, ordered by hash (sled's key order).
    pub fn join_tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        let tree = self.tree(JOIN_TOKENS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let row: TokenRow = super::codec::from_json(JOIN_TOKENS, &key, &v)?;
            out.push(row.into_stored(&key).map_err(|_| StoreError::BadKey {
                tree: JOIN_TOKENS,
                key,
            })?);
        }
        Ok(out)
    }
}

/// The fewest hex digits a revoke may name a token by: fewer would match by accident.
pub const MIN_TOKEN_ID_HEX_DIGITS: usize = 4;

/// Why `lem token revoke ID` revoked nothing.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(
        "`{id}` is not a join token id: give at least {MIN_TOKEN_ID_HEX_DIGITS} of the \
         {SHORT_ID_HEX_DIGITS} hex digits of the id `lem token list` shows"
    )]
    BadId { id: String },
    #[error("no join token has id `{id}`; `lem token list --all` lists every token")]
    Unknown { id: String },
    #[error("join token id `{id}` is ambiguous: it starts {matches:?}; give more digits")]
    Ambiguous { id: String, matches: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a revoke did: the token as it now stands, and whether this call revoked it
/// (`false`: it was already revoked, at the time it keeps, and nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub token: StoredToken,
    pub newly_revoked: bool,
}

impl Store {
    /// Revokes the token whose [`lem_net::token::short_id`] starts with `id` (a unique prefix), at
    /// `now_unix_ms`. Idempotent: revoking a revoked token succeeds with
    /// `newly_revoked: false` and keeps the first revoke time. Only `revoked_at_unix_ms`
    /// changes; the revoke is on disk before this returns.
    pub fn revoke_join_token(&self, id: &str, now_unix_ms: u64) -> Result<Revocation, RevokeError> {
        let id = id.trim().to_ascii_lowercase();
        let well_formed = (MIN_TOKEN_ID_HEX_DIGITS..=64).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(RevokeError::BadId { id });
        }
        let tree = self.tree(JOIN_TOKENS)?;
        let mut keys = Vec::new();
        for item in tree.scan_prefix(id.as_bytes()) {
            let (key, _) = item.map_err(StoreError::from)?;
            keys.push(String::from_utf8_lossy(&key).into_owned());
        }
        let key = match keys.as_slice() {
            [] => return Err(RevokeError::Unknown { id }),
            [key] => key.clone(),
            many => {
                let matches = many
                    .iter()
                    .map(|k| k.chars().take(SHORT_ID_HEX_DIGITS).collect())
                    .collect();
                return Err(RevokeError::Ambiguous { id, matches });
            }
        };
        let outcome = tree.transaction(|tx| {
            let Some(bytes) = tx.get(key.as_bytes())? else {
                // Rows are never deleted; absent here only if the key vanished under us.
                return Err(ConflictableTransactionError::Abort(RevokeError::Unknown {
                    id: id.clone(),
                }));
            };
            let token = decode_row(&key, &bytes).map_err(|_| {
                ConflictableTransactionError::Abort(RevokeError::Store(StoreError::BadKey {
                    tree: JOIN_TOKENS,
                    key: key.clone(),
                }))
            })?;
            if token.revoked_at_unix_ms.is_some() {
                return Ok(Revocation {
                    token,
                    newly_revoked: false,
                });
            }
            let revoked = StoredToken {
                revoked_at_unix_ms: Some(now_unix_ms),
                ..token
            };
            tx.insert(key.as_bytes(), to_json(&TokenRow::from_stored(&revoked)))?;
            Ok(Revocation {
                token: revoked,
                newly_revoked: true,
            })
        });
        let revocation = match outcome {
            Ok(revocation) => revocation,
            Err(TransactionError::Abort(refusal)) => return Err(refusal),
            Err(TransactionError::Storage(e)) => return Err(StoreError::from(e).into()),
        };
        if revocation.newly_revoked {
            // Revoked only once it is on disk: a crash cannot bring the token back.
            tree.flush().map_err(StoreError::from)?;
        }
        Ok(revocation)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<Sha256Digest> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_net::token::{create_join_token, create_join_token_for, JoinToken};
    use sha2::{Digest, Sha256};
    use std::sync::Arc;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path(), WAIT).unwrap()
    }

    #[test]
    fn a_row_holds_the_hash_of_the_secret_and_the_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let token = JoinToken::new([0x5a; 16], [1; 32]);
        store
            .add(StoredToken {
                secret_sha256: token.secret_sha256(),
                expires_at_unix_ms: 10_000,
                used_at_unix_ms: None,
                max_uses: 1,
                uses: 0,
                created_at_unix_ms: Some(4_000),
                revoked_at_unix_ms: None,
            })
            .unwrap();
        // The hash computed here from the secret bytes, as `sha256sum` would.
        let expected: [u8; 32] = Sha256::digest([0x5a; 16]).into();
        let rows = store.join_tokens().unwrap();
        assert_eq!(
            rows,
            vec![StoredToken {
                secret_sha256: expected,
                expires_at_unix_ms: 10_000,
                used_at_unix_ms: None,
                max_uses: 1,
                uses: 0,
                created_at_unix_ms: Some(4_000),
                revoked_at_unix_ms: None,
            }]
        );
        // Keyed by the hex of that hash.
        let tree = store.tree(JOIN_TOKENS).unwrap();
        let expected_key: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert!(tree.get(expected_key.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn redeem_admits_once_refuses_expired_and_unknown_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let live = create_join_token(&store, [1; 32], 1_000, 9_000).unwrap();
        let stale = create_join_token(&store, [1; 32], 1_000, 4_000).unwrap();
        assert_eq!(
            store.redeem(&[0; 32], 2_000),
            Err(TokenError::Unknown),
            "unknown hash"
        );
        let before = store.join_tokens().unwrap();
        assert_eq!(
            store.redeem(&stale.secret_sha256(), 5_000),
            Err(TokenError::Expired {
                expired_at_unix_ms: 5_000
            })
        );
        assert_eq!(store.join_tokens().unwrap(), before, "a refusal wrote");
        store.redeem(&live.secret_sha256(), 9_999).unwrap();
        drop(store);

        // The used mark is durable: a reopened store still refuses the token.
        let store = open(&dir);
        assert_eq!(
            store.redeem(&live.secret_sha256(), 9_999),
            Err(TokenError::AlreadyUsed {
                used_at_unix_ms: 9_999
            })
        );
        assert_eq!(
            store.add(StoredToken {
                secret_sha256: live.secret_sha256(),
                expires_at_unix_ms: 99_999,
                used_at_unix_ms: None,
                max_uses: 1,
                uses: 0,
                created_at_unix_ms: None,
                revoked_at_unix_ms: None,
            }),
            Err(TokenError::Duplicate),
            "re-adding a used token would reset it"
        );
    }

    #[test]
    fn racing_redeems_admit_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let token = create_join_token(store.as_ref(), [1; 32], 0, 60_000).unwrap();
        let hash = token.secret_sha256();
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || store.redeem(&hash, 100 + i))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        let used_at = store.join_tokens().unwrap()[0].used_at_unix_ms.unwrap();
        for refused in results.iter().filter_map(|r| r.clone().err()) {
            assert_eq!(
                refused,
                TokenError::AlreadyUsed {
                    used_at_unix_ms: used_at
                }
            );
        }
    }

    #[test]
    fn a_multi_use_token_counts_racing_redeems_and_admits_exactly_its_uses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let uses = 3u32;
        let token = create_join_token_for(store.as_ref(), [1; 32], 0, 60_000, uses).unwrap();
        let hash = token.secret_sha256();
        let racers = 8u64;
        let threads: Vec<_> = (0..racers)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || store.redeem(&hash, 100 + i))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, uses as usize, "{results:?}");
        let row = store.join_tokens().unwrap()[0].clone();
        assert_eq!((row.uses, row.max_uses), (uses, uses));
        for refused in results.iter().filter_map(|r| r.clone().err()) {
            assert!(
                matches!(refused, TokenError::UsedUp { max_uses, .. } if max_uses == uses),
                "{refused:?}"
            );
        }
        drop(store);
        // The count is durable: a reopened store still refuses, and writes nothing.
        let store = open(&dir);
        let before = store.join_tokens().unwrap();
        assert!(matches!(
            store.redeem(&hash, 500),
            Err(TokenError::UsedUp { .. })
        ));
        assert_eq!(store.join_tokens().unwrap(), before);
    }

    #[test]
    fn a_row_from_before_use_counts_reads_as_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (fresh, used) = ([4u8; 32], [5u8; 32]);
        let tree = store.tree(JOIN_TOKENS).unwrap();
        // The row layout of that version, written by hand.
        let row = |hash: &[u8; 32], used_at: &str| {
            format!(
                "{{\"secret_sha256\":\"{}\",\"expires_at_unix_ms\":9000,\"used_at_unix_ms\":{used_at}}}",
                hex(hash)
            )
        };
        tree.insert(hex(&fresh).as_bytes(), row(&fresh, "null").into_bytes())
            .unwrap();
        tree.insert(hex(&used).as_bytes(), row(&used, "50").into_bytes())
            .unwrap();
        assert_eq!(
            store.redeem(&used, 60),
            Err(TokenError::AlreadyUsed {
                used_at_unix_ms: 50
            })
        );
        store.redeem(&fresh, 60).unwrap();
        assert!(matches!(
            store.redeem(&fresh, 61),
            Err(TokenError::AlreadyUsed {
                used_at_unix_ms: 60
            })
        ));
    }

    #[test]
    fn revoke_refuses_the_token_and_changes_nothing_else_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let kept = create_join_token_for(&store, [1; 32], 1_000, 60_000, 3).unwrap();
        let revoked = create_join_token_for(&store, [1; 32], 1_000, 60_000, 3).unwrap();
        store.redeem(&revoked.secret_sha256(), 2_000).unwrap();
        let before = store.join_tokens().unwrap();
        let row_of = |rows: &[StoredToken], hash: Sha256Digest| {
            rows.iter()
                .find(|t| t.secret_sha256 == hash)
                .cloned()
                .unwrap()
        };

        // Its id as the operator reads it: the first 12 hex digits of the secret's hash.
        let hash_hex: String = Sha256::digest(revoked_secret(&revoked))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = &hash_hex[..12];
        assert_eq!(revoked.short_id(), id);
        let done = store.revoke_join_token(&id.to_uppercase(), 3_000).unwrap();
        assert!(done.newly_revoked);
        let expected = StoredToken {
            revoked_at_unix_ms: Some(3_000),
            ..row_of(&before, revoked.secret_sha256())
        };
        assert_eq!(done.token, expected);
        drop(store);

        let store = open(&dir);
        let after = store.join_tokens().unwrap();
        assert_eq!(row_of(&after, revoked.secret_sha256()), expected);
        assert_eq!(
            row_of(&after, kept.secret_sha256()),
            row_of(&before, kept.secret_sha256()),
            "the other token changed"
        );
        assert_eq!(
            store.redeem(&revoked.secret_sha256(), 4_000),
            Err(TokenError::Revoked {
                revoked_at_unix_ms: 3_000
            })
        );
        assert_eq!(
            store.join_tokens().unwrap(),
            after,
            "a refused redeem wrote"
        );
        store.redeem(&kept.secret_sha256(), 4_000).unwrap();
    }

    /// The secret's bytes, read back from the token's text (`lemjoin1.<secret>.<ca>`).
    fn revoked_secret(token: &JoinToken) -> Vec<u8> {
        let text = token.to_text();
        let secret_hex = text.split('.').nth(1).unwrap();
        (0..secret_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn revoking_twice_is_idempotent_and_keeps_the_first_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let token = create_join_token(&store, [1; 32], 1_000, 60_000).unwrap();
        let first = store.revoke_join_token(&token.short_id(), 2_000).unwrap();
        let rows = store.join_tokens().unwrap();
        let again = store.revoke_join_token(&token.short_id(), 5_000).unwrap();
        assert!(first.newly_revoked);
        assert!(!again.newly_revoked);
        assert_eq!(again.token.revoked_at_unix_ms, Some(2_000));
        assert_eq!(store.join_tokens().unwrap(), rows, "a second revoke wrote");
    }

    #[test]
    fn revoke_of_an_unknown_or_malformed_id_says_so_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let token = create_join_token(&store, [1; 32], 1_000, 60_000).unwrap();
        let rows = store.join_tokens().unwrap();
        // An id no token's hash starts with: the first digit changed.
        let id = token.short_id();
        let first = u8::from_str_radix(&id[..1], 16).unwrap();
        let other = format!("{:x}{}", (first + 1) % 16, &id[1..]);
        let err = store.revoke_join_token(&other, 2_000).unwrap_err();
        assert!(
            matches!(&err, RevokeError::Unknown { id } if *id == other),
            "{err:?}"
        );
        assert!(err.to_string().contains("token list --all"), "{err}");
        for bad in ["", "abc", "not-hex-at-all", &"a".repeat(65)] {
            let err = store.revoke_join_token(bad, 2_000).unwrap_err();
            assert!(matches!(err, RevokeError::BadId { .. }), "{bad:?}: {err:?}");
        }
        assert_eq!(store.join_tokens().unwrap(), rows);
    }

    #[test]
    fn a_prefix_two_tokens_share_is_ambiguous_and_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let tree = store.tree(JOIN_TOKENS).unwrap();
        // Two hashes that share their first four hex digits, written as rows by hand.
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[..2].copy_from_slice(&[0xab, 0xcd]);
        b[..2].copy_from_slice(&[0xab, 0xcd]);
        a[2] = 0x01;
        b[2] = 0x02;
        for hash in [a, b] {
            let row = TokenRow::from_stored(&StoredToken {
                secret_sha256: hash,
                expires_at_unix_ms: 9_000,
                used_at_unix_ms: None,
                max_uses: 1,
                uses: 0,
                created_at_unix_ms: Some(1_000),
                revoked_at_unix_ms: None,
            });
            tree.insert(hex(&hash).as_bytes(), to_json(&row)).unwrap();
        }
        let err = store.revoke_join_token("abcd", 2_000).unwrap_err();
        let RevokeError::Ambiguous { matches, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(matches, &["abcd01000000", "abcd02000000"]);
        assert!(store
            .join_tokens()
            .unwrap()
            .iter()
            .all(|t| t.revoked_at_unix_ms.is_none()));
        // One more digit tells them apart.
        assert!(
            store
                .revoke_join_token("abcd02", 2_000)
                .unwrap()
                .newly_revoked
        );
    }

    #[test]
    fn a_corrupt_row_is_a_storage_error_naming_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let hash = [3u8; 32];
        store
            .tree(JOIN_TOKENS)
            .unwrap()
            .insert(hex(&hash).as_bytes(), b"not json".to_vec())
            .unwrap();
        match store.redeem(&hash, 1) {
            Err(TokenError::Storage { detail }) => {
                assert!(detail.contains(JOIN_TOKENS), "{detail}")
            }
            other => panic!("expected a storage error, got {other:?}"),
        }
    }
}
