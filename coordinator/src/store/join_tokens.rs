//! The `join_tokens` tree: lem-net's [`JoinTokenBook`], durable. A row is a
//! [`StoredToken`] keyed by the hex SHA-256 of the token's secret; the secret itself and
//! the token's text are never stored. The redeem decision is lem-net's pure
//! [`decide_redeem`], taken inside a sled transaction: a token's use count rises by one
//! per admitted enrollment and never past its `max_uses` (of two racing redeems of a
//! token's last use exactly one is admitted), and a refusal writes nothing.

use super::codec::{to_json, JOIN_TOKENS};
use super::error::StoreError;
use super::Store;
use lem_net::token::{decide_redeem, JoinTokenBook, Sha256Digest, StoredToken, TokenError};
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
}

impl TokenRow {
    fn from_stored(token: &StoredToken) -> Self {
        Self {
            secret_sha256: hex(&token.secret_sha256),
            expires_at_unix_ms: token.expires_at_unix_ms,
            used_at_unix_ms: token.used_at_unix_ms,
            max_uses: Some(token.max_uses),
            uses: Some(token.uses),
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
