//! Join tokens: how agents are admitted. A token expires and admits a fixed number of
//! enrollments (one unless made for more, e.g. one token for a DaemonSet's nodes); its
//! text carries a random secret and the SHA-256 of the cluster CA certificate, so the
//! agent can pin the CA before it trusts the server it enrolls with. The coordinator
//! keeps only the SHA-256 of the secret ([`StoredToken`]), in a [`JoinTokenBook`].
//!
//! Text form: `lemjoin1.<secret: 32 hex>.<CA SHA-256: 64 hex>`.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use thiserror::Error;

pub const TOKEN_PREFIX: &str = "lemjoin1";
pub const SECRET_BYTES: usize = 16;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("join token is not {TOKEN_PREFIX}.<32 hex digits>.<64 hex digits>: {detail}")]
    Malformed { detail: String },
    #[error("join token is unknown to this coordinator")]
    Unknown,
    #[error("join token was already used (at {used_at_unix_ms} ms since the epoch); create a new one with `lem token create`")]
    AlreadyUsed { used_at_unix_ms: u64 },
    #[error("join token is used up: all {max_uses} enrollments it allowed were made (the last at {last_used_at_unix_ms} ms since the epoch); create a new one with `lem token create --uses N`")]
    UsedUp {
        max_uses: u32,
        last_used_at_unix_ms: u64,
    },
    #[error("a join token must admit at least one enrollment (--uses 1 or more)")]
    NoUses,
    #[error("join token expired (at {expired_at_unix_ms} ms since the epoch); create a new one with `lem token create`")]
    Expired { expired_at_unix_ms: u64 },
    #[error("join token was revoked (at {revoked_at_unix_ms} ms since the epoch); create a new one with `lem token create`")]
    Revoked { revoked_at_unix_ms: u64 },
    #[error("a join token with this secret's hash is already in the book")]
    Duplicate,
    #[error("join token store failed: {detail}")]
    Storage { detail: String },
    #[error("cannot draw random bytes for a join token")]
    Random,
}

/// A join token as the operator hands it to an agent.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    secret: [u8; SECRET_BYTES],
    ca_sha256: Sha256Digest,
}

impl std::fmt::Debug for JoinToken {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_sha256", &hex(&self.ca_sha256))
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    pub fn new(secret: [u8; SECRET_BYTES], ca_sha256: Sha256Digest) -> Self {
        Self { secret, ca_sha256 }
    }

    /// A token with a fresh secret from the system's random source.
    pub fn generate(ca_sha256: Sha256Digest) -> Result<Self, TokenError> {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; SECRET_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| TokenError::Random)?;
        Ok(Self::new(secret, ca_sha256))
    }

    /// The CA the agent is to trust: the SHA-256 of its DER certificate.
    pub fn ca_sha256(&self) -> Sha256Digest {
        self.ca_sha256
    }

    /// What the coordinator stores instead of the secret.
    pub fn secret_sha256(&self) -> Sha256Digest {
        Sha256::digest(self.secret).into()
    }

    /// The id `lem token list` shows for this token ([`short_id`]).
    pub fn short_id(&self) -> String {
        short_id(&self.secret_sha256())
    }

    pub fn to_text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}",
            hex(&self.secret),
            hex(&self.ca_sha256)
        )
    }

    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let malformed = |detail: &str| TokenError::Malformed {
            detail: detail.to_owned(),
        };
        let mut parts = text.trim().split('.');
        let (Some(prefix), Some(secret), Some(ca), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three parts separated by '.'"));
        };
        if prefix != TOKEN_PREFIX {
            return Err(malformed(&format!(
                "starts with {prefix:?}, not {TOKEN_PREFIX:?}"
            )));
        }
        let secret = unhex::<SECRET_BYTES>(secret).ok_or_else(|| malformed("bad secret part"))?;
        let ca_sha256 = unhex::<32>(ca).ok_or_else(|| malformed("bad CA hash part"))?;
        Ok(Self::new(secret, ca_sha256))
    }
}

/// A token as the coordinator keeps it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub secret_sha256: Sha256Digest,
    pub expires_at_unix_ms: u64,
    /// When an agent last enrolled with it (`None`: never).
    pub used_at_unix_ms: Option<u64>,
    /// Enrollments it admits in all; once `uses` reaches it, it is never accepted again.
    pub max_uses: u32,
    /// Enrollments made with it so far.
    pub uses: u32,
    /// When it was made (`None`: a row from before tokens recorded it).
    pub created_at_unix_ms: Option<u64>,
    /// When an operator revoked it (`None`: never); a revoked token admits no one.
    pub revoked_at_unix_ms: Option<u64>,
}

/// Hex digits of a token's [`short_id`]: 48 bits of the secret's hash, enough to tell an
/// operator's tokens apart and far too few to matter (the secret itself has 128 bits,
/// and the hash is not what an agent presents).
pub const SHORT_ID_HEX_DIGITS: usize = 12;

/// The id an operator lists and revokes a token by: the first [`SHORT_ID_HEX_DIGITS`]
/// hex digits of its secret's SHA-256, never the secret.
pub fn short_id(secret_sha256: &Sha256Digest) -> String {
    let mut id = hex(secret_sha256);
    id.truncate(SHORT_ID_HEX_DIGITS);
    id
}

/// Where a token stands at a moment, as `lem token list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Expired,
    UsedUp,
    Revoked,
}

impl TokenState {
    /// The word in listings and JSON: `active`, `expired`, `used_up`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::UsedUp => "used_up",
            TokenState::Revoked => "revoked",
        }
    }
}

/// The state of `token` at `now_unix_ms`, in the order [`decide_redeem`] refuses: revoked
/// first, then used up, then expired.
pub fn token_state(token: &StoredToken, now_unix_ms: u64) -> TokenState {
    if token.revoked_at_unix_ms.is_some() {
        TokenState::Revoked
    } else if token.uses >= token.max_uses {
        TokenState::UsedUp
    } else if now_unix_ms >= token.expires_at_unix_ms {
        TokenState::Expired
    } else {
        TokenState::Active
    }
}

/// Whether `stored` admits an enrollment at `now_unix_ms`; on success, the record to
/// write back (marked used). Pure, so every book, in memory or in a store transaction,
/// decides the same way.
pub fn decide_redeem(
    stored: Option<&StoredToken>,
    now_unix_ms: u64,
) -> Result<StoredToken, TokenError> {
    let stored = stored.ok_or(TokenError::Unknown)?;
    if let Some(revoked_at_unix_ms) = stored.revoked_at_unix_ms {
        return Err(TokenError::Revoked { revoked_at_unix_ms });
    }
    if stored.uses >= stored.max_uses {
        let last = stored.used_at_unix_ms.unwrap_or(0);
        return Err(if stored.max_uses <= 1 {
            TokenError::AlreadyUsed {
                used_at_unix_ms: last,
            }
        } else {
            TokenError::UsedUp {
                max_uses: stored.max_uses,
                last_used_at_unix_ms: last,
            }
        });
    }
    if now_unix_ms >= stored.expires_at_unix_ms {
        return Err(TokenError::Expired {
            expired_at_unix_ms: stored.expires_at_unix_ms,
        });
    }
    Ok(StoredToken {
        used_at_unix_ms: Some(now_unix_ms),
        uses: stored.uses + 1,
        ..stored.clone()
    })
}

/// Where join tokens are kept. `redeem` must check and mark used atomically (two agents
/// racing with one token: one wins), and change nothing when it refuses. `add` refuses
/// a hash the book already holds, so a used token can never be reset to unused.
pub trait JoinTokenBook: Send + Sync {
    fn add(&self, token: StoredToken) -> Result<(), TokenError>;
    fn redeem(&self, secret_sha256: &Sha256Digest, now_unix_ms: u64) -> Result<(), TokenError>;
}

/// A book in memory, for tests and for a coordinator without a store.
#[derive(Debug, Default)]
pub struct InMemoryTokenBook {
    tokens: Mutex<HashMap<Sha256Digest, StoredToken>>,
}

impl InMemoryTokenBook {
    /// Every record, ordered by hash: for comparing a book before and after.
    pub fn snapshot(&self) -> Vec<StoredToken> {
        let mut tokens: Vec<StoredToken> = self.lock().values().cloned().collect();
        tokens.sort_by_key(|t| t.secret_sha256);
        tokens
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Sha256Digest, StoredToken>> {
        // A panic elsewhere cannot leave a half-written record: inserts are whole.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl JoinTokenBook for InMemoryTokenBook {
    fn add(&self, token: StoredToken) -> Result<(), TokenError> {
        match self.lock().entry(token.secret_sha256) {
            std::collections::hash_map::Entry::Occupied(_) => Err(TokenError::Duplicate),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(token);
                Ok(())
            }
        }
    }

    fn redeem(&self, secret_sha256: &Sha256Digest, now_unix_ms: u64) -> Result<(), TokenError> {
        let mut tokens = self.lock();
        let updated = decide_redeem(tokens.get(secret_sha256), now_unix_ms)?;
        tokens.insert(*secret_sha256, updated);
        Ok(())
    }
}

/// Makes a single-use token for `ca_sha256` that expires `ttl_ms` after `now_unix_ms`,
/// and records its hash in `book`. The returned text is the only copy of the secret.
pub fn create_join_token(
    book: &dyn JoinTokenBook,
    ca_sha256: Sha256Digest,
    now_unix_ms: u64,
    ttl_ms: u64,
) -> Result<JoinToken, TokenError> {
    create_join_token_for(book, ca_sha256, now_unix_ms, ttl_ms, 1)
}

/// As [`create_join_token`], for `max_uses` enrollments (at least one): one secret for
/// many nodes that all read it from one place (a Kubernetes Secret).
pub fn create_join_token_for(
    book: &dyn JoinTokenBook,
    ca_sha256: Sha256Digest,
    now_unix_ms: u64,
    ttl_ms: u64,
    max_uses: u32,
) -> Result<JoinToken, TokenError> {
    if max_uses == 0 {
        return Err(TokenError::NoUses);
    }
    let token = JoinToken::generate(ca_sha256)?;
    book.add(StoredToken {
        secret_sha256: token.secret_sha256(),
        expires_at_unix_ms: now_unix_ms.saturating_add(ttl_ms),
        used_at_unix_ms: None,
        max_uses,
        uses: 0,
        created_at_unix_ms: Some(now_unix_ms),
        revoked_at_unix_ms: None,
    })?;
    Ok(token)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken::new([0xab; SECRET_BYTES], [0x01; 32])
    }

    #[test]
    fn text_round_trips_and_carries_the_ca_hash() {
        let text = token().to_text();
        assert_eq!(
            text,
            format!("lemjoin1.{}.{}", "ab".repeat(16), "01".repeat(32))
        );
        let parsed = JoinToken::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed, token());
        assert_eq!(parsed.ca_sha256(), [0x01; 32]);
    }

    #[test]
    fn malformed_text_is_refused_with_the_reason() {
        let good = token().to_text();
        for bad in [
            "",
            "lemjoin1.abc",
            &good.replacen("lemjoin1", "lemjoin2", 1),
            &format!("{good}.00"),
            &good.replacen("ab", "zz", 1),
            &good[..good.len() - 2],
        ] {
            assert!(
                matches!(JoinToken::parse(bad), Err(TokenError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", token());
        assert!(!text.contains(&"ab".repeat(16)), "{text}");
    }

    #[test]
    fn only_the_hash_of_the_secret_is_stored() {
        let book = InMemoryTokenBook::default();
        let token = create_join_token(&book, [7; 32], 1_000, 500).unwrap();
        let stored = book.snapshot();
        assert_eq!(stored.len(), 1);
        let expected_hash: [u8; 32] = Sha256::digest(token.secret).into();
        assert_eq!(stored[0].secret_sha256, expected_hash);
        assert_ne!(stored[0].secret_sha256[..SECRET_BYTES], token.secret[..]);
        assert_eq!(stored[0].expires_at_unix_ms, 1_500);
        assert_eq!(stored[0].used_at_unix_ms, None);
    }

    #[test]
    fn a_token_is_redeemed_once_before_it_expires() {
        let book = InMemoryTokenBook::default();
        let token = create_join_token(&book, [7; 32], 1_000, 500).unwrap();
        let hash = token.secret_sha256();

        // Expired at exactly expires_at: nothing changes.
        let before = book.snapshot();
        assert_eq!(
            book.redeem(&hash, 1_500),
            Err(TokenError::Expired {
                expired_at_unix_ms: 1_500
            })
        );
        assert_eq!(book.snapshot(), before);

        assert_eq!(book.redeem(&hash, 1_499), Ok(()));
        assert_eq!(book.snapshot()[0].used_at_unix_ms, Some(1_499));
        let after_use = book.snapshot();
        assert_eq!(
            book.redeem(&hash, 1_499),
            Err(TokenError::AlreadyUsed {
                used_at_unix_ms: 1_499
            })
        );
        assert_eq!(book.snapshot(), after_use);
        assert_eq!(book.redeem(&[0; 32], 0), Err(TokenError::Unknown));
    }

    #[test]
    fn racing_redeems_of_one_token_admit_exactly_one() {
        let book = std::sync::Arc::new(InMemoryTokenBook::default());
        let token = create_join_token(book.as_ref(), [7; 32], 0, 1_000).unwrap();
        let hash = token.secret_sha256();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let book = book.clone();
                std::thread::spawn(move || book.redeem(&hash, 10 + i))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 1, "{results:?}");
        let used_at = book.snapshot()[0].used_at_unix_ms.unwrap();
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
    fn adding_a_known_hash_is_refused_and_keeps_the_used_mark() {
        let book = InMemoryTokenBook::default();
        let token = create_join_token(&book, [7; 32], 0, 1_000).unwrap();
        book.redeem(&token.secret_sha256(), 10).unwrap();
        let fresh = StoredToken {
            secret_sha256: token.secret_sha256(),
            expires_at_unix_ms: 5_000,
            used_at_unix_ms: None,
            max_uses: 1,
            uses: 0,
            created_at_unix_ms: Some(4_000),
            revoked_at_unix_ms: None,
        };
        assert_eq!(book.add(fresh), Err(TokenError::Duplicate));
        assert_eq!(book.snapshot()[0].used_at_unix_ms, Some(10));
    }

    #[test]
    fn a_token_for_n_uses_admits_n_enrollments_then_refuses_without_writing() {
        let book = InMemoryTokenBook::default();
        let uses = 3u32;
        let token = create_join_token_for(&book, [7; 32], 0, 1_000, uses).unwrap();
        let hash = token.secret_sha256();
        for n in 0..uses {
            assert_eq!(book.redeem(&hash, 10 + u64::from(n)), Ok(()), "use {n}");
            assert_eq!(book.snapshot()[0].uses, n + 1);
        }
        let used_up = book.snapshot();
        let last = 10 + u64::from(uses - 1);
        assert_eq!(used_up[0].used_at_unix_ms, Some(last));
        let refused = book.redeem(&hash, 20).unwrap_err();
        assert_eq!(
            refused,
            TokenError::UsedUp {
                max_uses: uses,
                last_used_at_unix_ms: last
            }
        );
        assert!(
            refused.to_string().contains("all 3 enrollments"),
            "{refused}"
        );
        assert_eq!(book.snapshot(), used_up, "a refusal wrote");
        // Expiry still applies to a token with uses left.
        let short = create_join_token_for(&book, [7; 32], 0, 100, uses).unwrap();
        assert_eq!(
            book.redeem(&short.secret_sha256(), 100),
            Err(TokenError::Expired {
                expired_at_unix_ms: 100
            })
        );
        assert_eq!(
            create_join_token_for(&book, [7; 32], 0, 100, 0).unwrap_err(),
            TokenError::NoUses
        );
    }

    #[test]
    fn a_revoked_token_is_refused_first_and_its_state_reads_in_refusal_order() {
        let fresh = StoredToken {
            secret_sha256: [9; 32],
            expires_at_unix_ms: 1_000,
            used_at_unix_ms: None,
            max_uses: 2,
            uses: 0,
            created_at_unix_ms: Some(0),
            revoked_at_unix_ms: None,
        };
        assert_eq!(token_state(&fresh, 999), TokenState::Active);
        assert_eq!(token_state(&fresh, 1_000), TokenState::Expired);
        let used_up = StoredToken {
            uses: 2,
            ..fresh.clone()
        };
        assert_eq!(token_state(&used_up, 1_000), TokenState::UsedUp);
        let revoked = StoredToken {
            revoked_at_unix_ms: Some(500),
            ..used_up
        };
        assert_eq!(token_state(&revoked, 1_000), TokenState::Revoked);
        // Revoked before it expired and with uses left: still refused, as revoked.
        let revoked_fresh = StoredToken {
            revoked_at_unix_ms: Some(500),
            ..fresh
        };
        let refusal = decide_redeem(Some(&revoked_fresh), 600).unwrap_err();
        assert_eq!(
            refusal,
            TokenError::Revoked {
                revoked_at_unix_ms: 500
            }
        );
        assert!(refusal.to_string().contains("revoked"), "{refusal}");
        assert_eq!(
            [
                TokenState::Active,
                TokenState::Expired,
                TokenState::UsedUp,
                TokenState::Revoked
            ]
            .map(TokenState::as_str),
            ["active", "expired", "used_up", "revoked"]
        );
    }

    #[test]
    fn the_short_id_is_a_prefix_of_the_secrets_hash_and_never_the_secret() {
        let token = token();
        let hash_hex = hex(&Sha256::digest([0xab; SECRET_BYTES]));
        assert_eq!(token.short_id(), hash_hex[..SHORT_ID_HEX_DIGITS]);
        assert!(!"ab".repeat(16).contains(&token.short_id()));
    }

    #[test]
    fn two_tokens_have_different_secrets() {
        let a = JoinToken::generate([0; 32]).unwrap();
        let b = JoinToken::generate([0; 32]).unwrap();
        assert_ne!(a.secret_sha256(), b.secret_sha256());
    }
}
