//! The coordinator's store (sled), one tree per kind of thing:
//!
//! - `experiments`: experiment id → [`ExperimentRecord`]; created once, then only its
//!   status and run fields are updated (`experiments.rs`)
//! - `raw`: `"{experiment}/{cycle:04}/{attempt:04}"` → `RawResult`; written once, never
//!   overwritten (`raw.rs`)
//! - `aggregates`: experiment id → aggregate; derived, may be recomputed (`aggregates.rs`)
//! - `records`: sequence number → the scheduler's `Record`, in persist order; what
//!   `Scheduler::recover` replays (`records.rs`)
//! - `sweeps`, `jobs`, `attempts`: rows derived from those records in the same
//!   transaction, for reading without a replay (`scheduler_rows.rs`)
//! - `results`: attempt → result body, accepted or superseded; `accepted`: job → its one
//!   accepted attempt, explicit (`results.rs`)
//! - `agents`: enrolled agents (`agents.rs`)
//! - `join_tokens`: lem-net's `StoredToken` by the SHA-256 of the token's secret, never
//!   the token; the store is the coordinator's `JoinTokenBook` (`join_tokens.rs`)
//!
//! Every write is flushed before the call returns, so a run reported done is on disk.
//! sled holds an exclusive lock on the directory while open, so embedded runs open the
//! store briefly for each commit; readers in another terminal then wait at most a moment.
//! `lem serve` holds it for its whole life and writes its address to
//! [`SERVE_ADDR_FILE`] beside it: an open that finds the lock held and that file present
//! fails at once, naming the server, instead of waiting.

mod agents;
mod aggregates;
mod codec;
mod error;
mod experiments;
mod join_tokens;
mod raw;
mod records;
mod results;
mod scheduler_rows;

pub use agents::AgentRecord;
pub use error::StoreError;
pub use experiments::{ExperimentRecord, ExperimentStatus};
pub use join_tokens::{Revocation, RevokeError, MIN_TOKEN_ID_HEX_DIGITS};
pub use raw::raw_key;
pub use records::Persisted;
pub use results::{AcceptedResult, Disposition, StoredResult};
pub use scheduler_rows::{AttemptRow, JobRow, SweepRow};

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Store {
    db: sled::Db,
    path: PathBuf,
    /// Serialises appends to the record log, so sequence numbers are handed out in the
    /// order records are persisted.
    append_lock: Mutex<()>,
}

/// The sled directory inside a data dir.
const STORE_DIR: &str = "lem.sled";

/// Where `lem serve` writes the address it listens on, in its data dir.
pub const SERVE_ADDR_FILE: &str = "serve.addr";

impl Store {
    /// Opens (creating if needed) the store under `data_dir`, waiting up to `wait` for
    /// another lem process to release it.
    pub fn open(data_dir: &Path, wait: Duration) -> Result<Store, StoreError> {
        let path = data_dir.join(STORE_DIR);
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: sled::Error::Io(e),
        })?;
        Self::open_path(path, wait)
    }

    /// Opens the store under `data_dir` only if it exists: read-only commands never
    /// create a data dir.
    pub fn open_existing(data_dir: &Path, wait: Duration) -> Result<Store, StoreError> {
        let path = data_dir.join(STORE_DIR);
        if !path.is_dir() {
            return Err(StoreError::NoStore {
                path: display_path(data_dir),
            });
        }
        Self::open_path(path, wait)
    }

    fn open_path(path: PathBuf, wait: Duration) -> Result<Store, StoreError> {
        let started = Instant::now();
        loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => {
                    return Ok(Store {
                        db,
                        path,
                        append_lock: Mutex::new(()),
                    })
                }
                Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                    if let Some(addr) = serving_addr(&path) {
                        return Err(StoreError::HeldByServer { path, addr });
                    }
                    if started.elapsed() >= wait {
                        return Err(StoreError::Locked {
                            path,
                            waited_s: wait.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => return Err(StoreError::Open { path, source }),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes everything buffered to disk (every write already flushes; this is for a
    /// server shutting down).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }
}

/// The address in `serve.addr` beside the store at `store_path`, if there is one. Only
/// asked once the lock is found held, so a file a killed server left is never believed
/// on its own.
fn serving_addr(store_path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(store_path.parent()?.join(SERVE_ADDR_FILE)).ok()?;
    let addr = text.trim();
    (!addr.is_empty()).then(|| addr.to_owned())
}

/// `path` made absolute (without resolving links) so a message names the store
/// whatever directory the user stands in.
fn display_path(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn is_lock_error(e: &std::io::Error) -> bool {
    // sled reports a held `flock` as WouldBlock ("could not acquire lock").
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.raw_os_error() == Some(libc::EWOULDBLOCK)
        || e.to_string().contains("lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn opening_for_reading_never_creates_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("results");
        let err = Store::open_existing(&data, WAIT)
            .err()
            .expect("no store yet");
        assert!(
            matches!(&err, StoreError::NoStore { path } if path.ends_with("results")),
            "{err}"
        );
        assert!(!data.exists(), "a read created {}", data.display());
        // Once a run created it, readers open it.
        drop(Store::open(&data, WAIT).unwrap());
        assert!(Store::open_existing(&data, WAIT).is_ok());
    }
}
