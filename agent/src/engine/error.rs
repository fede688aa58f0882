//! Errors of the inference engine. Every message names the file, tensor, key or row it is
//! about, so a user can act on it without a debugger.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
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

    #[error(
        "{path}: unsupported architecture `{architecture}` (general.architecture); this engine runs Llama-family models (`llama`)"
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },

    #[error("{path} is not a readable safetensors file: {source}")]
    Safetensors {
        path: PathBuf,
        source: Box<candle_core::Error>,
    },

    #[error("{path}: `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },

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

    #[error("tokenizer from {origin}: {message}")]
    Tokenizer { origin: String, message: String },

    #[error(
        "{path}: GGUF tokenizer model `{model}` (tokenizer.ggml.model) cannot be built from metadata yet; pass a tokenizer.json"
    )]
    UnsupportedTokenizer { path: PathBuf, model: String },

    #[error("invalid generation parameters: {0}")]
    InvalidParams(String),

    #[error("prompt {row}: {reason}")]
    BadPrompt { row: usize, reason: String },

    #[error("{op}: {source}")]
    Compute {
        op: &'static str,
        // Boxed: candle's error is 80 bytes and would make every Result large.
        source: Box<candle_core::Error>,
    },

    #[error("generation interrupted")]
    Interrupted,

    /// The requested compute device cannot be used (`device: cuda` without CUDA support
    /// in this build, or the CUDA device failed to open).
    #[error("{0}")]
    Device(String),
}

impl EngineError {
    /// Wraps a candle error from a compute step, naming the step.
    pub(crate) fn compute(op: &'static str) -> impl FnOnce(candle_core::Error) -> Self {
        move |source| EngineError::Compute {
            op,
            source: Box::new(without_backtrace(source)),
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
}
