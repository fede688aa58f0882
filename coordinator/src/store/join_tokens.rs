//! The `join_tokens` tree: single-use, expiring enrolment tokens, stored by the SHA-256
//! of the token only, so the store never holds a usable token.

use super::codec::{from_json, to_json, JOIN_TOKENS};
use super::error::{JoinTokenRefusal, StoreError};
use super::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// SHA-256 (hex) of the token.
    pub token_sha256: String,
    /// Unix time in milliseconds after which the token is refused.
    pub expires_at_unix_ms: u64,
    /// The agent that redeemed it, once used.
    pub used_by: Option<String>,
}

/// The hex SHA-256 a token is stored and looked up by.
pub fn join_token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Stores a new token's hash with its expiry; returns the hash.
    pub fn create_join_token(
        &self,
        token: &str,
        expires_at_unix_ms: u64,
    ) -> Result<String, StoreError> {
        let tree = self.tree(JOIN_TOKENS)?;
        let rec = JoinTokenRecord {
            token_sha256: join_token_sha256(token),
            expires_at_unix_ms,
            used_by: None,
        };
        let swapped = tree.compare_and_swap(
            rec.token_sha256.as_bytes(),
            None as Option<&[u8]>,
            Some(to_json(&rec)),
        )?;
        if swapped.is_err() {
            return Err(JoinTokenRefusal::Duplicate.into());
        }
        tree.flush()?;
        Ok(rec.token_sha256)
    }

    /// Marks a token used by `agent` if it is known, unexpired at `now_unix_ms` and
    /// unused; otherwise says why not. Two concurrent redemptions: one wins.
    pub fn redeem_join_token(
        &self,
        token: &str,
        agent: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        let tree = self.tree(JOIN_TOKENS)?;
        let hash = join_token_sha256(token);
        loop {
            let Some(old_bytes) = tree.get(hash.as_bytes())? else {
                return Err(JoinTokenRefusal::Unknown.into());
            };
            let mut rec: JoinTokenRecord = from_json(JOIN_TOKENS, &hash, &old_bytes)?;
            if let Some(by) = rec.used_by {
                return Err(JoinTokenRefusal::AlreadyUsed { by }.into());
            }
            if now_unix_ms >= rec.expires_at_unix_ms {
                return Err(JoinTokenRefusal::Expired.into());
            }
            rec.used_by = Some(agent.to_string());
            let swapped =
                tree.compare_and_swap(hash.as_bytes(), Some(old_bytes), Some(to_json(&rec)))?;
            if swapped.is_ok() {
                tree.flush()?;
                return Ok(());
            }
        }
    }

    pub fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        let tree = self.tree(JOIN_TOKENS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            out.push(from_json(JOIN_TOKENS, &String::from_utf8_lossy(&k), &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TOKEN: &str = "lemjoin-4f1c2d9e8b7a";

    #[test]
    fn only_the_hash_is_stored_and_it_matches_sha256_of_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
        let hash = store.create_join_token(TOKEN, 10_000).unwrap();
        // SHA-256 computed here independently, as `sha256sum` would print it.
        let expected: String = Sha256::digest(TOKEN)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash, expected);
        assert_eq!(hash.len(), 64);
        drop(store);
        // No file of the store holds the token's text.
        for entry in walk(dir.path()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "{} holds the token",
                entry.display()
            );
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn a_token_enrolls_once_before_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
        store.create_join_token(TOKEN, 10_000).unwrap();
        store.create_join_token("expired", 5_000).unwrap();
        let refusal = |r: Result<(), StoreError>| match r {
            Err(StoreError::JoinToken(t)) => t,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refusal(store.redeem_join_token("nope", "a", 1)),
            JoinTokenRefusal::Unknown
        );
        assert_eq!(
            refusal(store.redeem_join_token("expired", "a", 5_000)),
            JoinTokenRefusal::Expired
        );
        store.redeem_join_token(TOKEN, "node-1", 9_999).unwrap();
        assert_eq!(
            refusal(store.redeem_join_token(TOKEN, "node-2", 9_999)),
            JoinTokenRefusal::AlreadyUsed {
                by: "node-1".into()
            }
        );
        assert_eq!(
            refusal(store.create_join_token(TOKEN, 20_000).map(drop)),
            JoinTokenRefusal::Duplicate
        );
    }
}
