//! Errors of `lem model convert`, each naming the file and the key or tensor.

use crate::model::ModelError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable GGUF file: {source}")]
    Gguf {
        path: PathBuf,
        source: Box<candle_core::Error>,
    },
    #[error("{path}: `{key}`: {reason}")]
    Key {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(crate) fn key_err(path: &Path, key: &str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Key {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn tensor_err(path: &Path, name: &str, reason: impl ToString) -> ConvertError {
    ConvertError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// The format layer's errors in the converter's terms.
impl From<ModelError> for ConvertError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Io { path, source } => ConvertError::Io { path, source },
            ModelError::Gguf { path, source } => ConvertError::Gguf { path, source },
            ModelError::MissingKey { path, key } => ConvertError::Key {
                path,
                key,
                reason: "missing".into(),
            },
            ModelError::BadKey { path, key, reason } => ConvertError::Key { path, key, reason },
            ModelError::Config {
                path,
                field,
                reason,
            } => ConvertError::Key {
                path,
                key: field,
                reason,
            },
            ModelError::UnsupportedArchitecture { path, architecture } => ConvertError::Key {
                path,
                key: "general.architecture".into(),
                reason: format!(
                    "`{architecture}` is not supported; lem converts Llama-family models (`llama`)"
                ),
            },
            ModelError::UnsupportedHfArchitecture { path, architecture } => ConvertError::Key {
                path,
                key: "architectures".into(),
                reason: format!("`{architecture}` is not supported; lem converts LlamaForCausalLM"),
            },
            ModelError::Safetensors { path, source } => ConvertError::Invalid {
                reason: format!("not a readable safetensors file: {source}"),
                path,
            },
            ModelError::MissingTensor { path, name } => ConvertError::Tensor {
                path,
                name,
                reason: "missing".into(),
            },
            ModelError::BadTensor { path, name, reason } => {
                ConvertError::Tensor { path, name, reason }
            }
            ModelError::Invalid { path, reason } => ConvertError::Invalid { path, reason },
        }
    }
}
