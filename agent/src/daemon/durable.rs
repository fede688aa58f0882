//! Files that survive a crash: written to a temporary name, fsync'd, renamed into place
//! and the directory fsync'd, so after a power cut a file is either whole or absent.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// The suffix of files being written; leftovers of a crash are removed on open.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `dir/name` atomically and durably.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temp, dir.join(name))?;
    sync_dir(dir)
}

/// Removes `dir/name` (absent is fine) and makes the removal durable.
pub fn remove_durably(dir: &Path, name: &str) -> std::io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync on the directory: makes renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `*.tmp` files a crash left in `dir`: they were never renamed into place, so
/// nothing was sent from them.
pub fn remove_leftover_temps(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
