//! The SHA-256 a result records for the model it ran, so that readers can tell whether
//! two results come from the same weights (a path or a name does not say that).

use lem_common::domain::Measured;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// What was hashed, as recorded in `Measured::source`.
pub const FILE_SOURCE: &str = "sha256 of the model file";
pub const MANIFEST_SOURCE: &str =
    "sha256 of a sha256sum-style manifest (`<sha256>  <name>` lines, sorted by name) of the \
     model directory's files";

/// Hashes a model file, or every regular file directly inside a model directory (through
/// a manifest, so the result does not depend on how the files are concatenated).
pub fn weights_sha256(path: &Path) -> Measured<String> {
    let hashed = if path.is_dir() {
        manifest_sha256(path).map(|h| (h, MANIFEST_SOURCE))
    } else {
        file_sha256(path).map(|h| (h, FILE_SOURCE))
    };
    match hashed {
        Ok((hex, source)) => Measured::known(hex, source),
        Err(e) => Measured::unavailable(format!("hashing {}: {e}", path.display())),
    }
}

fn file_sha256(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn manifest_sha256(dir: &Path) -> io::Result<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // `metadata` follows symlinks: hub snapshots link to blobs.
        if std::fs::metadata(entry.path())?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut manifest = String::new();
    for name in &names {
        manifest.push_str(&file_sha256(&dir.join(name))?);
        manifest.push_str("  ");
        manifest.push_str(name);
        manifest.push('\n');
    }
    Ok(hex(&Sha256::digest(manifest.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answer: SHA-256("abc") from FIPS 180-2, appendix B.1.
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn a_file_hashes_to_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"abc").unwrap();
        let m = weights_sha256(&path);
        assert_eq!(m.value.as_deref(), Some(ABC_SHA256));
        assert_eq!(m.source.as_deref(), Some(FILE_SOURCE));
    }

    #[test]
    fn a_directory_hashes_its_sorted_manifest_and_changes_with_any_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.safetensors"), b"abc").unwrap();
        std::fs::write(dir.path().join("a.json"), b"abc").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let manifest = format!("{ABC_SHA256}  a.json\n{ABC_SHA256}  b.safetensors\n");
        let expected = hex(&Sha256::digest(manifest.as_bytes()));
        let m = weights_sha256(dir.path());
        assert_eq!(m.value.as_deref(), Some(expected.as_str()));
        assert_eq!(m.source.as_deref(), Some(MANIFEST_SOURCE));

        std::fs::write(dir.path().join("b.safetensors"), b"abd").unwrap();
        assert_ne!(weights_sha256(dir.path()).value, Some(expected));
    }

    #[test]
    fn a_missing_file_is_unavailable_naming_the_path() {
        let m = weights_sha256(Path::new("/nonexistent/lem/model.gguf"));
        assert_eq!(m.value, None);
        let reason = m.unavailable_reason.unwrap();
        assert!(reason.contains("/nonexistent/lem/model.gguf"), "{reason}");
    }
}
