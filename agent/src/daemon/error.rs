//! Why `lem-agent` stopped, each with what to do about it.

use super::settings::SettingsError;
use super::spool::SpoolError;
use lem_net::NetError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DaemonError {
    /// A bad command line (clap's own message names the flag).
    #[error("{0}")]
    Usage(#[from] clap::Error),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("gave up after {attempts} failed connection attempt(s) to {target} (--max-connect-attempts): {last}")]
    GaveUp {
        attempts: u32,
        target: String,
        last: NetError,
    },
    #[error("cannot serve metrics on {addr} (--metrics-listen): {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot install the SIGTERM/SIGINT handler: {0}")]
    Signal(String),
}

impl DaemonError {
    /// The process exit status: 2 for a usage or settings mistake, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Usage(e) => e.exit_code().clamp(0, 255) as u8,
            DaemonError::Settings(_) => 2,
            _ => 1,
        }
    }
}
