//! The result spool, `<data-dir>/spool/`: each finished attempt's outcome (result body or
//! failure) is written here durably BEFORE it is sent, deleted only when the coordinator
//! acknowledges it, and resent after every (re)connection. A file that does not decode
//! is moved to `spool/corrupt/` with a `.reason` file beside it and a logged warning;
//! it never stops the agent.
//!
//! Entries are msgpack with named fields (the wire's encoding), so a result resent after
//! a restart is bit-for-bit the one first sent.

use super::durable::{remove_durably, remove_leftover_temps, sync_dir, write_atomically};
use lem_common::domain::RawResult;
use lem_common::wire::{AgentMessage, AttemptRef};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;

const SUFFIX: &str = ".msgpack";

/// What a finished attempt produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpooledOutcome {
    Result(Box<RawResult>),
    Failed { error: String },
}

/// One spooled outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolEntry {
    pub attempt: AttemptRef,
    pub outcome: SpooledOutcome,
}

impl SpoolEntry {
    /// The message that reports this outcome.
    pub fn to_message(&self) -> AgentMessage {
        match &self.outcome {
            SpooledOutcome::Result(result) => AgentMessage::AttemptResult {
                attempt: self.attempt,
                result: result.clone(),
            },
            SpooledOutcome::Failed { error } => AgentMessage::AttemptFailed {
                attempt: self.attempt,
                error: error.clone(),
            },
        }
    }
}

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool: attempt {attempt} epoch {epoch} does not encode: {message}")]
    Encode {
        attempt: u64,
        epoch: u64,
        message: String,
    },
}

/// The spool directory of one agent.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// The file name of an attempt's entry: attempt ids are global, the epoch tells a
/// re-leased attempt apart.
pub fn entry_name(attempt: AttemptRef) -> String {
    format!("{}-{}{SUFFIX}", attempt.attempt, attempt.epoch)
}

impl Spool {
    /// Opens (creating) `<data_dir>/spool`, removing half-written files of a crash.
    pub fn open(data_dir: &Path) -> Result<Self, SpoolError> {
        let dir = data_dir.join("spool");
        let io = |source| SpoolError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(dir.join("corrupt")).map_err(io)?;
        remove_leftover_temps(&dir).map_err(io)?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `entry` durably; only after this returns may it be sent.
    pub fn write(&self, entry: &SpoolEntry) -> Result<(), SpoolError> {
        let bytes = rmp_serde::to_vec_named(entry).map_err(|e| SpoolError::Encode {
            attempt: entry.attempt.attempt,
            epoch: entry.attempt.epoch,
            message: e.to_string(),
        })?;
        let name = entry_name(entry.attempt);
        write_atomically(&self.dir, &name, &bytes).map_err(|source| SpoolError::Io {
            path: self.dir.join(&name),
            source,
        })
    }

    /// Deletes the entry of an acknowledged attempt (absent is fine: an Ack may repeat).
    pub fn remove(&self, attempt: AttemptRef) -> Result<(), SpoolError> {
        let name = entry_name(attempt);
        remove_durably(&self.dir, &name).map_err(|source| SpoolError::Io {
            path: self.dir.join(&name),
            source,
        })
    }

    /// Every readable entry, in attempt order. Corrupt files are moved aside.
    pub fn load_all(&self) -> Result<Vec<SpoolEntry>, SpoolError> {
        let io = |source| SpoolError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io)? {
            let item = item.map_err(io)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if !name.ends_with(SUFFIX) || !item.path().is_file() {
                continue;
            }
            match self.read_entry(&item.path(), &name) {
                Ok(entry) => entries.push(entry),
                Err(reason) => self.move_aside(&name, &reason)?,
            }
        }
        entries.sort_by_key(|e| (e.attempt.attempt, e.attempt.epoch));
        Ok(entries)
    }

    fn read_entry(&self, path: &Path, name: &str) -> Result<SpoolEntry, String> {
        let bytes = fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
        let entry: SpoolEntry =
            rmp_serde::from_slice(&bytes).map_err(|e| format!("does not decode: {e}"))?;
        if entry_name(entry.attempt) != name {
            return Err(format!(
                "holds attempt {} epoch {}, which its name does not match",
                entry.attempt.attempt, entry.attempt.epoch
            ));
        }
        Ok(entry)
    }

    /// Moves a corrupt file into `corrupt/` with its reason, so it is kept for a person
    /// to look at and never resent.
    fn move_aside(&self, name: &str, reason: &str) -> Result<(), SpoolError> {
        let corrupt = self.dir.join("corrupt");
        tracing::warn!(file = %self.dir.join(name).display(), %reason, "spool entry moved aside to spool/corrupt/");
        let io = |source| SpoolError::Io {
            path: corrupt.join(name),
            source,
        };
        fs::rename(self.dir.join(name), corrupt.join(name)).map_err(io)?;
        write_atomically(
            &corrupt,
            &format!("{name}.reason"),
            format!("{reason}\n").as_bytes(),
        )
        .map_err(io)?;
        sync_dir(&self.dir).map_err(io)
    }
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
