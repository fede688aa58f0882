//! Files the CLI writes for the user (a report, an export): through a temporary file
//! beside the target and a rename, so a reader never sees half a file and a failed write
//! leaves an earlier file as it was.

use std::error::Error;
use std::io::Write;
use std::path::Path;

/// Writes `path` with `write`, flushed to disk before the rename. `tool` names the
/// temporary file (`.<file name>.lem-<tool>-<pid>`), removed again when anything fails.
pub(super) fn write_atomically<E: Into<Box<dyn Error>>>(
    path: &Path,
    tool: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), Box<dyn Error>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or("the path names no file")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.lem-{tool}-{}", std::process::id()));
    let result = (|| -> Result<(), Box<dyn Error>> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut file).map_err(Into::into)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "earlier, longer content\n").unwrap();
        write_atomically(&path, "export", |f| f.write_all(b"a,b\n1,2\n")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n1,2\n");
        assert_eq!(names_in(dir.path()), ["out.csv"]);
    }

    #[test]
    fn a_failed_write_leaves_the_earlier_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.html");
        std::fs::write(&path, "earlier").unwrap();
        let err = write_atomically(&path, "report", |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("the renderer failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the renderer failed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "earlier");
        assert_eq!(names_in(dir.path()), ["report.html"]);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write_atomically(Path::new("/"), "report", |f| f.write_all(b"x")).unwrap_err();
        assert_eq!(err.to_string(), "the path names no file");
    }
}
