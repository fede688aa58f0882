//! Errors of the inference engine. Every message names the file, tensor, key or row it is
//! about, so a user can act on it without a debugger.

pub use crate::model::without_backtrace;
use crate::model::ModelError;
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

    /// A model file wrong as a whole, in a way no key or tensor names.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },

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

/// The format layer's errors, as the engine has always reported them.
impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Io { path, source } => EngineError::Io { path, source },
            ModelError::Gguf { path, source } => EngineError::Gguf { path, source },
            ModelError::MissingKey { path, key } => EngineError::MissingKey { path, key },
            ModelError::BadKey { path, key, reason } => EngineError::BadKey { path, key, reason },
            ModelError::UnsupportedArchitecture { path, architecture } => {
                EngineError::UnsupportedArchitecture { path, architecture }
            }
            ModelError::Safetensors { path, source } => EngineError::Safetensors { path, source },
            ModelError::Config {
                path,
                field,
                reason,
            } => EngineError::Config {
                path,
                field,
                reason,
            },
            ModelError::UnsupportedHfArchitecture { path, architecture } => {
                EngineError::UnsupportedHfArchitecture { path, architecture }
            }
            ModelError::MissingTensor { path, name } => EngineError::MissingTensor { path, name },
            ModelError::BadTensor { path, name, reason } => {
                EngineError::BadTensor { path, name, reason }
            }
            ModelError::Invalid { path, reason } => EngineError::Invalid { path, reason },
        }
    }
}
