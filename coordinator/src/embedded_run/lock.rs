//! One driver per data dir. Sweep, job and attempt ids are minted by the scheduler from
//! the record log it recovered, so two lem processes driving one store would mint the
//! same ids: a second `lem experiment` on a data dir waits for the first (saying so)
//! instead. Readers (`lem results …`) never take this lock.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The lock file beside the store.
pub const LOCK_FILE: &str = "driver.lock";

/// How often a waiting process looks at the lock and its stop flag.
const RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the driver lock {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interrupted while waiting for another lem process to finish with {data_dir}")]
    Interrupted { data_dir: PathBuf },
}

/// Held while this process drives the data dir's scheduler; released on drop (and by
/// the OS when the process dies, so a killed run never leaves it held).
#[derive(Debug)]
pub struct DriverLock {
    _file: File,
}

impl DriverLock {
    /// Takes the lock, waiting (and saying once why) while another process holds it,
    /// until `stop` is set.
    pub fn acquire(data_dir: &Path, stop: &AtomicBool) -> Result<Self, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let open = |source| LockError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(open)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(open)?;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(open(e)),
            }
            if stop.load(Ordering::SeqCst) {
                return Err(LockError::Interrupted {
                    data_dir: data_dir.to_path_buf(),
                });
            }
            if !said {
                eprintln!(
                    "Another lem process is running experiments in {}; waiting for it to finish.",
                    data_dir.display()
                );
                said = true;
            }
            std::thread::sleep(RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go_and_a_stop_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DriverLock::acquire(&data, &AtomicBool::new(false)).unwrap();
        // Held: a waiter whose stop flag is set gives up instead of waiting forever.
        let err = DriverLock::acquire(&data, &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(err, LockError::Interrupted { .. }), "{err}");
        let waiter = std::thread::spawn(move || {
            DriverLock::acquire(&data, &AtomicBool::new(false)).map(|_| ())
        });
        drop(first);
        waiter.join().unwrap().unwrap();
    }
}
