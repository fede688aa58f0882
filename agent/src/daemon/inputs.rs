//! Shipped inputs, `<data-dir>/inputs/`: a prompt file that came inside a lease's config is
//! written to `inputs/<sha256>/<file name>` (checked against its hash first) and the config
//! is pointed at that copy, so the runner reads the submitted bytes and never a path that
//! only meant something on the submitting machine. Files are keyed by content, so every
//! cycle of an experiment reuses one copy.

use super::durable::write_atomically;
use lem_common::config::{ExperimentConfig, PromptSource};
use lem_common::shipped_prompt;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ShippedInputs {
    dir: PathBuf,
}

impl ShippedInputs {
    /// Uses `<data_dir>/inputs` (created when the first file arrives).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("inputs"),
        }
    }

    /// Writes a shipped prompt file of `config` here and points the config at it (its
    /// `sha256` stays, so the result records which content ran). A config without shipped
    /// content is left as it is.
    pub fn materialize(&self, config: &mut ExperimentConfig) -> Result<(), String> {
        let Some(PromptSource::File {
            path,
            sha256,
            content_base64,
            ..
        }) = &mut config.prompt_source
        else {
            return Ok(());
        };
        let Some(content) = content_base64.take() else {
            return Ok(());
        };
        let Some(hash) = sha256.clone() else {
            return Err(format!(
                "shipped prompt file {path} comes without its sha256; resubmit the sweep"
            ));
        };
        let bytes = shipped_prompt::decode(path, &hash, &content).map_err(|e| e.to_string())?;
        let file_name = Path::new(path.as_str())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prompts.txt".into());
        // The hash was checked above, so it is 64 hex digits: safe as a directory name.
        let dir = self.dir.join(hash.to_ascii_lowercase());
        let target = dir.join(&file_name);
        if !target.exists() {
            fs::create_dir_all(&dir)
                .and_then(|()| write_atomically(&dir, &file_name, &bytes))
                .map_err(|e| {
                    format!("cannot write shipped prompt file {}: {e}", target.display())
                })?;
        }
        *path = target.to_string_lossy().into_owned();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(path: &str, bytes: &[u8]) -> ExperimentConfig {
        let (sha256, content) = shipped_prompt::encode(path, bytes).unwrap();
        let mut config = ExperimentConfig::default_for("c", "m");
        config.prompt_source = Some(PromptSource::File {
            path: path.into(),
            column: None,
            sample_size: None,
            shuffle: false,
            seed: 0,
            sha256: Some(sha256),
            content_base64: Some(content),
        });
        config
    }

    #[test]
    fn shipped_bytes_land_under_their_hash_and_the_config_points_there() {
        let data = tempfile::tempdir().unwrap();
        let inputs = ShippedInputs::new(data.path());
        let body = b"{\"text\": \"first\"}\n{\"text\": \"second\"}\n";
        let mut config = shipped("/home/someone/prompts.jsonl", body);
        inputs.materialize(&mut config).unwrap();

        let Some(PromptSource::File {
            path,
            sha256,
            content_base64,
            ..
        }) = &config.prompt_source
        else {
            panic!("still a file source");
        };
        let expected_sha = shipped_prompt::sha256_hex(body);
        let expected_path = data
            .path()
            .join("inputs")
            .join(&expected_sha)
            .join("prompts.jsonl");
        assert_eq!(Path::new(path), expected_path);
        assert_eq!(std::fs::read(path).unwrap(), body);
        assert_eq!(sha256.as_deref(), Some(expected_sha.as_str()));
        assert_eq!(*content_base64, None, "the bytes are not carried on");
    }

    #[test]
    fn content_that_does_not_match_its_hash_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let mut config = shipped("p.txt", b"a\nb\n");
        if let Some(PromptSource::File { sha256, .. }) = &mut config.prompt_source {
            *sha256 = Some(shipped_prompt::sha256_hex(b"other"));
        }
        let err = ShippedInputs::new(data.path())
            .materialize(&mut config)
            .unwrap_err();
        assert!(err.contains("p.txt") && err.contains("SHA-256"), "{err}");
        assert!(!data.path().join("inputs").exists());
    }

    #[test]
    fn a_config_without_shipped_content_is_untouched() {
        let data = tempfile::tempdir().unwrap();
        let mut config = ExperimentConfig::default_for("c", "m");
        let before = config.clone();
        ShippedInputs::new(data.path())
            .materialize(&mut config)
            .unwrap();
        assert_eq!(config, before);
    }
}
