//! Errors of the model-format layer. Each names the file and the key, field or tensor it
//! is about; the engine and the converter map them into their own error types.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is not a readable GGUF file: {source}")]
    Gguf {
        path: PathBuf,
        source: Box<candle_core::Error>,
    },

    #[error("{path}: GGUF metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: String },

    #[error("{path}: GGUF metadata key `{key}` is invalid: {reason}")]
    BadKey {
        path: PathBuf,
        key: String,
        reason: String,
    },

    /// `general.architecture` names a family lem has no parameters for.
    #[error(
        "{path}: unsupported architecture `{architecture}` (general.architecture); this engine runs `llama`, `qwen2` and `gemma3`"
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },

    #[error("{path} is not a readable safetensors file: {source}")]
    Safetensors {
        path: PathBuf,
        source: Box<candle_core::Error>,
    },

    /// A JSON file (config.json, tokenizer.json, an index) and the field that is wrong.
    #[error("{path}: `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },

    /// `architectures` in config.json names a class lem has no parameters for.
    #[error(
        "{path}: unsupported architecture `{architecture}` (`architectures` in config.json); this engine runs LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM"
    )]
    UnsupportedHfArchitecture { path: PathBuf, architecture: String },

    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },

    #[error("{path}: tensor `{name}`: {reason}")]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },

    /// Anything else wrong with a file as a whole (a tokenizer that cannot be expressed
    /// in the other format, a failed write).
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Self + '_ {
        move |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn bad_tensor(
        path: &std::path::Path,
        name: &str,
        reason: impl Into<String>,
    ) -> Self {
        ModelError::BadTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(path: &std::path::Path, reason: impl Into<String>) -> Self {
        ModelError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn config(path: &std::path::Path, field: &str, reason: impl Into<String>) -> Self {
        ModelError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// `e` without the backtrace candle attaches when `RUST_BACKTRACE` is set: its text
/// ends up in a user-facing message, where a 17-frame backtrace inside "bad file" only
/// hides what is wrong.
pub fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => without_backtrace(*inner),
        E::Context { inner, context } => E::Context {
            inner: Box::new(without_backtrace(*inner)),
            context,
        },
        E::WithPath { inner, path } => E::WithPath {
            inner: Box::new(without_backtrace(*inner)),
            path,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_backtrace_never_reaches_the_message() {
        let inner =
            candle_core::Error::Msg("unknown magic 0x6c6c6568".into()).context("reading header");
        let wrapped = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(
            wrapped.to_string().lines().count() > 2,
            "the fixture carries a backtrace"
        );
        let clean = without_backtrace(wrapped).to_string();
        assert_eq!(clean, "reading header\nunknown magic 0x6c6c6568");
    }

    #[test]
    fn the_architecture_refusal_lists_every_architecture_lem_runs() {
        let e = ModelError::UnsupportedArchitecture {
            path: "m.gguf".into(),
            architecture: "gpt2".into(),
        }
        .to_string();
        for arch in crate::model::gguf_params::GGUF_ARCHITECTURES {
            assert!(e.contains(&format!("`{arch}`")), "{e}");
        }
    }
}
