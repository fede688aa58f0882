//! The CLI's side of a coordinator: dial `--coordinator` with a CLI credential on the
//! `lem-cli/1` ALPN, send one request, read its reply. A request that may be repeated
//! safely (read-only, or a submission carrying its idempotency token) is sent again on a
//! new connection when the first try timed out or lost its connection.

use super::CliError;
use crate::server::OPERATOR_DIR;
use lem_common::wire::{CliReply, CliRequest};
use lem_net::{Alpn, ClientCredential, ClientOptions, NetError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one try waits for its reply (a submission persists its sweep first).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of a repeatable request before giving up.
const MAX_TRIES: u32 = 3;

/// A coordinator to talk to, and the credential to talk with.
pub struct Remote {
    target: String,
    credential: ClientCredential,
}

impl Remote {
    /// `credential_dir`: `--credential` / `LEM_CREDENTIAL`; without it, the data dir's
    /// operator credential (what `lem serve` writes on the coordinator host).
    pub fn new(
        target: &str,
        credential_dir: Option<&Path>,
        data_dir: &Path,
    ) -> Result<Self, CliError> {
        let dir: PathBuf = match credential_dir {
            Some(dir) => dir.to_path_buf(),
            None if data_dir.join(OPERATOR_DIR).is_dir() => data_dir.join(OPERATOR_DIR),
            None => {
                return Err(CliError::usage(format!(
                    "--coordinator {target} needs a CLI credential: pass --credential DIR (or \
                     LEM_CREDENTIAL); `lem user add NAME --role viewer|operator --out DIR` on \
                     the coordinator host issues one, and there `{}` is used by default",
                    data_dir.join(OPERATOR_DIR).display()
                )))
            }
        };
        let credential = ClientCredential::load(&dir)
            .map_err(|e| CliError::failure(format!("credential in {}: {e}", dir.display())))?
            .ok_or_else(|| {
                CliError::usage(format!(
                    "no CLI credential in {} (key.pem, cert.pem, ca.pem)",
                    dir.display()
                ))
            })?;
        Ok(Self {
            target: target.to_owned(),
            credential,
        })
    }

    /// The coordinator's address, as given.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends `request` and returns the reply; a refusal is an error carrying the
    /// coordinator's words.
    pub fn request(&self, request: &CliRequest) -> Result<CliReply, CliError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::failure(format!("cannot start the network runtime: {e}")))?;
        // Read-only requests and submissions (idempotency token) are safe to repeat.
        let repeatable = request.is_read_only() || matches!(request, CliRequest::SubmitSweep(_));
        let tries = if repeatable { MAX_TRIES } else { 1 };
        let mut last = None;
        for attempt in 1..=tries {
            match runtime.block_on(self.exchange(request)) {
                Ok(CliReply::Refused { reason }) => {
                    return Err(CliError::failure(format!(
                        "the coordinator at {} refused `{}`: {reason}",
                        self.target,
                        request.name()
                    )))
                }
                Ok(reply) => return Ok(reply),
                Err(error) if error.is_retryable() && attempt < tries => {
                    tracing::info!(%error, attempt, "no reply; trying again");
                    last = Some(error);
                    // A moment for a restarting coordinator; bounded by MAX_TRIES.
                    std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                }
                Err(error) => {
                    last = Some(error);
                    break;
                }
            }
        }
        let error = last.expect("at least one try was made");
        Err(CliError::failure(format!(
            "`{}` through the coordinator at {}: {error}",
            request.name(),
            self.target
        )))
    }

    async fn exchange(&self, request: &CliRequest) -> Result<CliReply, NetError> {
        let options = ClientOptions::default();
        let mut session =
            lem_net::connect(&self.target, &self.credential, Alpn::Cli, &options).await?;
        let exchange = async {
            session.send.send(request).await?;
            session.recv.expect::<CliReply>("a reply").await
        };
        let reply = tokio::time::timeout(REPLY_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(NetError::Timeout {
                    peer: format!("coordinator {}", self.target),
                    what: "reply",
                    timeout: REPLY_TIMEOUT,
                })
            });
        session.close().await;
        reply
    }
}

/// A reply of another kind than the request asks for: the coordinator is of another
/// build, or broken.
pub fn unexpected(request: &str, reply: &CliReply) -> CliError {
    CliError::failure(format!(
        "the coordinator answered `{request}` with an unexpected reply: {reply:?}"
    ))
}
