//! `lem token create`: a join token for one agent (or `--uses N` agents), recorded (by
//! hash only, with its use count) in the data dir's store and printed once. The cluster CA lives beside the store; it is
//! created on first use so the token can carry its hash.
//! `lem token list` shows every token by a short id (never the secret) and `lem token
//! revoke ID` stops one admitting agents; each works on the data dir or through
//! `--coordinator`, with the same rows and words.

use super::error::{outln, CliError};
use super::Outcome;
use crate::server::MAX_TOKEN_USES;
use crate::server::{revoke_join_token, token_summaries};
use crate::store::{Store, StoreError};
use lem_common::wire::cli::JoinTokenSummary;
use lem_common::wire::{CliReply, CliRequest};
use lem_net::pki::ClusterCa;
use lem_net::token::{create_join_token_for, JoinToken};
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
fn describe(id: &str, uses: u32, expires_unix_ms: u64) -> String {
    let kind = if uses == 1 {
        "single-use join token".to_owned()
    } else {
        format!("join token for {uses} agents")
    };
    format!(
        "{kind} {id}, valid until {}; this is its only copy:",
        rfc3339_or_words(expires_unix_ms)
    )
}

/// The data dir's store for `lem token <verb>`, or the address of the `lem serve` that
/// holds it (the command then goes through that server with the data dir's operator
/// credential, as the coordinator host's operator expects).
enum Opened {
    Here(Store),
    HeldBy(String),
}

/// Opens the data dir's store for `lem token <verb>` (`create` makes the store; the
/// others need one); another process holding it (not a server) is an error that says so.
fn open_store(data_dir: &Path, verb: &str) -> Result<Opened, CliError> {
    let opened = if verb == "create" {
        Store::open(data_dir, STORE_WAIT)
    } else {
        Store::open_existing(data_dir, STORE_WAIT)
    };
    match opened {
        Ok(store) => Ok(Opened::Here(store)),
        Err(StoreError::HeldByServer { addr, .. }) => Ok(Opened::HeldBy(addr)),
        Err(StoreError::Locked { path, .. }) => Err(CliError::failure(format!(
            "cannot {verb} join tokens: the store at {} is held by another process \
             (a running `lem` command or coordinator); with `lem serve` running, go \
             through the coordinator: `lem --data-dir {} --coordinator HOST:PORT token \
             {verb}` (its address is in {})",
            path.display(),
            data_dir.display(),
            data_dir.join(crate::server::ADDR_FILE).display()
        ))),
        Err(other) => Err(other.into()),
    }
}

/// The coordinator that holds `data_dir`, reached on this host with the data dir's
/// operator credential (an unspecified listen address is dialled on loopback, a name the
/// server certificate always carries).
fn through_local_server(data_dir: &Path, addr: &str) -> Result<super::remote::Remote, CliError> {
    let target = local_dial_target(addr);
    eprintln!(
        "`lem serve` at {addr} holds {}; going through it",
        data_dir.display()
    );
    super::remote::Remote::new(&target, None, data_dir)
}

/// `addr` as this host dials it: `0.0.0.0:P` / `[::]:P` become loopback.
fn local_dial_target(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if a.is_ipv6() {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(loopback, a.port()).to_string()
        }
        _ => addr.to_owned(),
    }
}

/// Creates the token and prints its text on stdout (the only copy), its expiry on stderr.
pub fn create(data_dir: &Path, ttl: Duration, uses: u32) -> Result<Outcome, CliError> {
    let store = match open_store(data_dir, "create")? {
        Opened::Here(store) => store,
        Opened::HeldBy(addr) => {
            return create_remote(&through_local_server(data_dir, &addr)?, ttl, uses)
        }
    };
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
    eprintln!(
        "{}",
        describe(&token.short_id(), uses, now_unix_ms.saturating_add(ttl_ms))
    );
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
            let id = JoinToken::parse(&token)
                .map(|t| t.short_id())
                .map_err(|e| CliError::failure(format!("the coordinator sent a bad token: {e}")))?;
            eprintln!("{}", describe(&id, uses, expires_unix_ms));
            outln!("{token}");
            Ok(Outcome::Success)
        }
        other => Err(super::remote::unexpected("token create", &other)),
    }
}

/// `lem token list` on the data dir.
pub fn list(data_dir: &Path, all: bool, json: bool) -> Result<Outcome, CliError> {
    let store = match open_store(data_dir, "list")? {
        Opened::Here(store) => store,
        Opened::HeldBy(addr) => {
            return list_remote(&through_local_server(data_dir, &addr)?, all, json)
        }
    };
    let rows = token_summaries(&store, (lem_net::system_clock())())?;
    print_list(rows, all, json)
}

/// `lem --coordinator X token list`.
pub fn list_remote(
    remote: &super::remote::Remote,
    all: bool,
    json: bool,
) -> Result<Outcome, CliError> {
    match remote.request(&CliRequest::ListJoinTokens)? {
        CliReply::JoinTokens(rows) => print_list(rows, all, json),
        other => Err(super::remote::unexpected("token list", &other)),
    }
}

/// `lem token revoke ID` on the data dir.
pub fn revoke(data_dir: &Path, id: &str) -> Result<Outcome, CliError> {
    let store = match open_store(data_dir, "revoke")? {
        Opened::Here(store) => store,
        Opened::HeldBy(addr) => return revoke_remote(&through_local_server(data_dir, &addr)?, id),
    };
    let reply = revoke_join_token(&store, id, (lem_net::system_clock())())
        .map_err(|e| CliError::failure(format!("cannot revoke join token: {e}")))?;
    print_revoked(&reply)
}

/// `lem --coordinator X token revoke ID` (an operator's credential).
pub fn revoke_remote(remote: &super::remote::Remote, id: &str) -> Result<Outcome, CliError> {
    let request = CliRequest::RevokeJoinToken { id: id.to_owned() };
    print_revoked(&remote.request(&request)?)
}

fn print_revoked(reply: &CliReply) -> Result<Outcome, CliError> {
    match reply {
        CliReply::JoinTokenRevoked {
            id,
            revoked_unix_ms,
            newly_revoked: true,
        } => {
            outln!(
                "revoked join token {id} at {}; no agent enrolls with it any more",
                rfc3339_or_words(*revoked_unix_ms)
            );
            Ok(Outcome::Success)
        }
        CliReply::JoinTokenRevoked {
            id,
            revoked_unix_ms,
            ..
        } => {
            outln!(
                "join token {id} was already revoked at {}; nothing changed",
                rfc3339_or_words(*revoked_unix_ms)
            );
            Ok(Outcome::Success)
        }
        other => Err(super::remote::unexpected("token revoke", other)),
    }
}

/// The listing: active tokens, or all with `--all`; how many are hidden is said.
fn print_list(rows: Vec<JoinTokenSummary>, all: bool, json: bool) -> Result<Outcome, CliError> {
    let (shown, hidden): (Vec<JoinTokenSummary>, Vec<JoinTokenSummary>) =
        rows.into_iter().partition(|r| all || r.state == "active");
    if json {
        let values: Vec<serde_json::Value> = shown
            .iter()
            .map(|r| {
                let mut value = serde_json::to_value(r).expect("plain data");
                value["uses_left"] = r.max_uses.saturating_sub(r.uses).into();
                value
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&values).expect("plain data")
        );
        return Ok(Outcome::Success);
    }
    if shown.is_empty() {
        outln!("No {}join tokens.", if all { "" } else { "active " });
    } else {
        let header = ["ID", "CREATED", "EXPIRES", "USES LEFT", "STATE"].map(String::from);
        let cells: Vec<[String; 5]> = shown
            .iter()
            .map(|r| {
                [
                    r.id.clone(),
                    r.created_unix_ms
                        .map(rfc3339_or_words)
                        .unwrap_or_else(|| "unknown".into()),
                    rfc3339_or_words(r.expires_unix_ms),
                    format!("{}/{}", r.max_uses.saturating_sub(r.uses), r.max_uses),
                    r.state.replace('_', " "),
                ]
            })
            .collect();
        let widths = super::table::column_widths(&header, &cells);
        for row in [&header].into_iter().chain(&cells) {
            // Uses left align right; the last column is not padded.
            let padded: Vec<String> = row
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(column, (cell, width))| match column {
                    3 => format!("{cell:>width$}"),
                    4 => cell.clone(),
                    _ => format!("{cell:<width$}"),
                })
                .collect();
            outln!("{}", padded.join("  "));
        }
    }
    if !hidden.is_empty() {
        outln!(
            "({} more not shown: expired, used up or revoked; `token list --all` lists them)",
            hidden.len()
        );
    }
    Ok(Outcome::Success)
}

fn rfc3339_or_words(unix_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(unix_ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "an unrepresentable time".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unspecified_listen_address_is_dialled_on_loopback() {
        assert_eq!(super::local_dial_target("0.0.0.0:7443"), "127.0.0.1:7443");
        assert_eq!(super::local_dial_target("[::]:7443"), "[::1]:7443");
        assert_eq!(super::local_dial_target("10.0.0.1:7443"), "10.0.0.1:7443");
        assert_eq!(super::local_dial_target("head:7443"), "head:7443");
    }

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
