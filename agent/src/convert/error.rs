//! Errors of `lem model convert`, each naming the file and the key or tensor.

use crate::model::ModelError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading or writing a model file: the format layer's errors, which name the file
    /// and the key, field or tensor.
    #[error(transparent)]
    Model(ModelError),
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
    move |source| {
        ConvertError::Model(ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
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

/// The format layer's errors, with the architecture refusals in the converter's terms
/// (the model layer's name what the engine runs).
impl From<ModelError> for ConvertError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::UnsupportedArchitecture { path, architecture } => ConvertError::Key {
                path,
                key: "general.architecture".into(),
                reason: super::source::unsupported_gguf(&architecture),
            },
            ModelError::UnsupportedHfArchitecture { path, architecture } => ConvertError::Key {
                path,
                key: "architectures".into(),
                reason: super::source::unsupported_hf(&architecture),
            },
            other => ConvertError::Model(other),
        }
    }
}
