//! Errors of the inference engine. Every message names the file, tensor, key or row it is
//! about, so a user can act on it without a debugger.

pub use crate::model::without_backtrace;
use crate::model::ModelError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading the model's files: the format layer's errors, which name the file and
    /// the key, field or tensor.
    #[error(transparent)]
    Model(#[from] ModelError),

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
