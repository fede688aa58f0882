//! A prompt file shipped with a cluster job: `lem --coordinator … sweep submit` reads the
//! file where it runs and puts its bytes (base64) and SHA-256 into the config's
//! `prompt_source`; the agent checks the hash and writes the bytes into its own data dir.
//! The reading and writing are the callers'; this module holds the pure parts.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Largest prompt file a sweep ships (per config). It travels inside the submission and
/// every lease of the experiment, so it must stay far below the wire's frame limit.
pub const MAX_SHIPPED_PROMPT_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShippedPromptError {
    #[error(
        "prompt file {path}: {size_bytes} bytes exceeds the limit of {limit_bytes} bytes for a \
         file shipped with a cluster sweep"
    )]
    TooLarge {
        path: String,
        size_bytes: u64,
        limit_bytes: u64,
    },
    #[error("prompt file {path}: its content is not valid base64: {detail}")]
    NotBase64 { path: String, detail: String },
    #[error("prompt file {path}: content has SHA-256 {actual}, but the config says {expected}")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `(sha256, content_base64)` for the bytes of the file at `path` (named in errors).
pub fn encode(path: &str, bytes: &[u8]) -> Result<(String, String), ShippedPromptError> {
    let size_bytes = bytes.len() as u64;
    if size_bytes > MAX_SHIPPED_PROMPT_BYTES {
        return Err(ShippedPromptError::TooLarge {
            path: path.to_string(),
            size_bytes,
            limit_bytes: MAX_SHIPPED_PROMPT_BYTES,
        });
    }
    Ok((sha256_hex(bytes), STANDARD.encode(bytes)))
}

/// The shipped bytes, checked against `expected_sha256`.
pub fn decode(
    path: &str,
    expected_sha256: &str,
    content_base64: &str,
) -> Result<Vec<u8>, ShippedPromptError> {
    let bytes = STANDARD
        .decode(content_base64)
        .map_err(|e| ShippedPromptError::NotBase64 {
            path: path.to_string(),
            detail: e.to_string(),
        })?;
    check_hash(path, expected_sha256, &bytes)?;
    Ok(bytes)
}

/// Refuses `bytes` unless their SHA-256 is `expected_sha256` (hex, any case).
pub fn check_hash(
    path: &str,
    expected_sha256: &str,
    bytes: &[u8],
) -> Result<(), ShippedPromptError> {
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(expected_sha256.trim()) {
        return Err(ShippedPromptError::HashMismatch {
            path: path.to_string(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_with_their_hash() {
        let bytes: Vec<u8> = (0..=255u8)
            .chain(b"hello\nworld\n".iter().copied())
            .collect();
        let (sha, content) = encode("p.bin", &bytes).unwrap();
        // The SHA-256 of the empty input is a published constant; check the helper on it.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(sha.len(), 64);
        assert_eq!(decode("p.bin", &sha, &content).unwrap(), bytes);
    }

    #[test]
    fn a_file_over_the_limit_is_refused_naming_file_and_limit() {
        let bytes = vec![b'a'; MAX_SHIPPED_PROMPT_BYTES as usize + 1];
        let err = encode("data/big.txt", &bytes).unwrap_err().to_string();
        assert!(err.contains("data/big.txt"), "{err}");
        assert!(err.contains(&MAX_SHIPPED_PROMPT_BYTES.to_string()), "{err}");
        assert!(
            err.contains(&(MAX_SHIPPED_PROMPT_BYTES + 1).to_string()),
            "{err}"
        );
    }

    #[test]
    fn altered_content_or_bad_base64_is_refused() {
        let (sha, _) = encode("p.txt", b"one\ntwo\n").unwrap();
        let (_, other) = encode("p.txt", b"one\nthree\n").unwrap();
        let err = decode("p.txt", &sha, &other).unwrap_err();
        assert!(
            matches!(err, ShippedPromptError::HashMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&sha), "{err}");
        let err = decode("p.txt", &sha, "not base64!").unwrap_err();
        assert!(matches!(err, ShippedPromptError::NotBase64 { .. }), "{err}");
    }
}
