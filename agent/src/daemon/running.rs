//! Running markers, `<data-dir>/running/`: a small file per attempt, written durably
//! before its run starts and removed once its outcome is spooled (or the attempt is no
//! longer ours). Markers found when the agent starts belong to runs the previous process
//! died in: the agent reports them as `lost` in its Hello.

use super::durable::{remove_durably, remove_leftover_temps, write_atomically};
use lem_common::wire::AttemptRef;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunningMarkers {
    dir: PathBuf,
}

fn marker_name(attempt: AttemptRef) -> String {
    format!("{}-{}", attempt.attempt, attempt.epoch)
}

fn parse_marker_name(name: &str) -> Option<AttemptRef> {
    let (attempt, epoch) = name.split_once('-')?;
    Some(AttemptRef {
        attempt: attempt.parse().ok()?,
        epoch: epoch.parse().ok()?,
    })
}

impl RunningMarkers {
    /// Opens (creating) `<data_dir>/running`.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("running");
        fs::create_dir_all(&dir)?;
        remove_leftover_temps(&dir)?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that `attempt` is about to run.
    pub fn mark(&self, attempt: AttemptRef) -> std::io::Result<()> {
        write_atomically(&self.dir, &marker_name(attempt), b"")
    }

    /// The attempt is over (its outcome spooled, or it is no longer ours).
    pub fn clear(&self, attempt: AttemptRef) -> std::io::Result<()> {
        remove_durably(&self.dir, &marker_name(attempt))
    }

    /// Attempts marked running, in order. A file that names no attempt is removed with
    /// a warning: it cannot be reported.
    pub fn list(&self) -> std::io::Result<Vec<AttemptRef>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match parse_marker_name(&name) {
                Some(attempt) => found.push(attempt),
                None => {
                    tracing::warn!(file = %entry.path().display(), "removing a running marker that names no attempt");
                    remove_durably(&self.dir, &name)?;
                }
            }
        }
        found.sort_by_key(|a| (a.attempt, a.epoch));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_outlive_the_process_until_cleared() {
        let data = tempfile::tempdir().unwrap();
        let markers = RunningMarkers::open(data.path()).unwrap();
        let a = AttemptRef {
            attempt: 12,
            epoch: 4,
        };
        let b = AttemptRef {
            attempt: 3,
            epoch: 1,
        };
        markers.mark(a).unwrap();
        markers.mark(b).unwrap();
        std::fs::write(markers.dir().join("junk"), b"").unwrap();

        let reopened = RunningMarkers::open(data.path()).unwrap();
        assert_eq!(reopened.list().unwrap(), vec![b, a]);
        assert!(!reopened.dir().join("junk").exists());
        reopened.clear(b).unwrap();
        assert_eq!(reopened.list().unwrap(), vec![a]);
    }
}
