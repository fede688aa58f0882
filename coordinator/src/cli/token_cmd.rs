//! `lem token create`: a join token for one agent (or `--uses N` agents), recorded (by
//! hash only, with its use count) in the data dir's store and printed once. The cluster CA lives beside the store; it is
//! created on first use so the token can carry its hash.

use super::error::{outln, CliError};
use super::Outcome;
use crate::server::MAX_TOKEN_USES;
use crate::store::{Store, StoreError};
use lem_net::pki::ClusterCa;
use lem_net::token::create_join_token_for;
use std::path::Path;
use std::time::Duration;

/// How long `token create` waits for another process to release the store: a moment,
/// not the 30 s a results read waits, since the holder is usually a long-lived server.
const STORE_WAIT: Duration = Duration::from_secs(2);

/// The longest TTL accepted: a join token is a short-lived secret.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `--ttl`: a whole number with a unit, `s`, `m`, `h` or `d` (e.g. `15m`), at most 7 days.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 15m (units s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let count: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number (e.g. 15m)"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        other => {
            return Err(format!(
                "unit `{other}` in `{text}` is not one of s, m, h, d"
            ))
        }
    };
    let ttl = Duration::from_secs(count.saturating_mul(unit_s));
    if ttl.is_zero() {
        return Err("a TTL of zero would make a token that is already expired".into());
    }
    if ttl > MAX_TTL {
        return Err(format!(
            "`{text}` is longer than the 7 d a join token may live"
        ));
    }
    Ok(ttl)
}

/// `--uses`: a whole number of enrollments, 1 to [`MAX_TOKEN_USES`].
pub fn parse_uses(text: &str) -> Result<u32, String> {
    let uses: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of enrollments (e.g. --uses 3)"))?;
    if uses == 0 || uses > MAX_TOKEN_USES {
        return Err(format!(
            "a join token admits 1 to {MAX_TOKEN_USES} enrollments, not {uses}"
        ));
    }
    Ok(uses)
}

/// What stderr says about a new token, before its text.
fn describe(uses: u32, expires_unix_ms: u64) -> String {
    let kind = if uses == 1 {
        "single-use join token".to_owned()
    } else {
        format!("join token for {uses} agents")
    };
    format!(
        "{kind}, valid until {}; this is its only copy:",
        rfc3339_or_words(expires_unix_ms)
    )
}

/// Creates the token and prints its text on stdout (the only copy), its expiry on stderr.
pub fn create(data_dir: &Path, ttl: Duration, uses: u32) -> Result<Outcome, CliError> {
    let store = Store::open(data_dir, STORE_WAIT).map_err(|e| match e {
        StoreError::Locked { path, .. } => CliError::failure(format!(
            "cannot create a join token: the store at {} is held by another process \
             (a running `lem` command or coordinator); with `lem serve` running, create it \
             through the coordinator: `lem --data-dir {} --coordinator HOST:PORT token \
             create` (its address is in {})",
            path.display(),
            data_dir.display(),
            data_dir.join(crate::server::ADDR_FILE).display()
        )),
        StoreError::HeldByServer { addr, .. } => CliError::failure(format!(
            "cannot create a join token here: `lem serve` at {addr} holds the store; create \
             it through the coordinator: `lem --data-dir {} --coordinator {addr} token create`",
            data_dir.display()
        )),
        other => other.into(),
    })?;
    let (ca, created) = ClusterCa::load_or_create(data_dir).map_err(|e| {
        CliError::failure(format!(
            "cluster CA in {}: {e}",
            std::path::absolute(data_dir)
                .unwrap_or_else(|_| data_dir.to_path_buf())
                .display()
        ))
    })?;
    if created {
        eprintln!(
            "created the cluster CA in {} (ca.pem, ca.key.pem); keep ca.key.pem private",
            data_dir.display()
        );
    }
    let now_unix_ms = (lem_net::system_clock())();
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let token = create_join_token_for(&store, ca.sha256(), now_unix_ms, ttl_ms, uses)
        .map_err(|e| CliError::failure(format!("cannot create a join token: {e}")))?;
    eprintln!("{}", describe(uses, now_unix_ms.saturating_add(ttl_ms)));
    outln!("{}", token.to_text());
    Ok(Outcome::Success)
}

/// `lem --coordinator X token create`: the running coordinator makes the token.
pub fn create_remote(
    remote: &super::remote::Remote,
    ttl: Duration,
    uses: u32,
) -> Result<Outcome, CliError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let request = lem_common::wire::CliRequest::CreateJoinToken { ttl_ms, uses };
    match remote.request(&request)? {
        lem_common::wire::CliReply::JoinToken {
            token,
            expires_unix_ms,
            uses,
        } => {
            eprintln!("{}", describe(uses, expires_unix_ms));
            outln!("{token}");
            Ok(Outcome::Success)
        }
        other => Err(super::remote::unexpected("token create", &other)),
    }
}

fn rfc3339_or_words(unix_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(unix_ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "an unrepresentable time".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units_convert_to_seconds() {
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(15 * 60)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(2 * 3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn uses_are_whole_numbers_from_one_to_the_cap() {
        assert_eq!(parse_uses("1"), Ok(1));
        assert_eq!(parse_uses("250"), Ok(250));
        assert_eq!(parse_uses(&MAX_TOKEN_USES.to_string()), Ok(MAX_TOKEN_USES));
        for (text, says) in [
            ("0", "not 0"),
            ("10001", "not 10001"),
            ("-1", "whole number"),
            ("three", "whole number"),
        ] {
            let err = parse_uses(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn bad_ttls_say_what_is_wrong() {
        for (text, says) in [
            ("15", "no unit"),
            ("m", "whole number"),
            ("15w", "not one of"),
            ("0m", "zero"),
            ("8d", "7 d"),
            ("-5m", "whole number"),
        ] {
            let err = parse_ttl(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
