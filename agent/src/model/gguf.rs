//! GGUF files: the one reader (typed metadata access with errors naming the key, tensor
//! table with bounds checks, tensors on demand) and the writer lem's converter uses.

use super::error::{without_backtrace, ModelError};
use candle_core::quantized::gguf_file::{self, Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// An open GGUF file: header parsed, tensor data read on demand.
pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    content: Content,
    file_len: u64,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let io_err = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|source| ModelError::Gguf {
            path: path.to_path_buf(),
            source: Box::new(without_backtrace(source)),
        })?;
        let g = Self {
            path: path.to_path_buf(),
            reader,
            content,
            file_len,
        };
        g.check_tensor_extents()?;
        Ok(g)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every metadata key and value, as the file has them.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// The tensor table: name → shape, storage type and offset.
    pub fn tensor_infos(&self) -> &HashMap<String, TensorInfo> {
        &self.content.tensor_infos
    }

    /// A truncated download is the common corruption: say so up front, naming the first
    /// tensor that does not fit, rather than failing half-way through loading.
    fn check_tensor_extents(&self) -> Result<(), ModelError> {
        let mut infos: Vec<_> = self.content.tensor_infos.iter().collect();
        infos.sort_by_key(|(_, i)| i.offset);
        for (name, info) in infos {
            let elems = info.shape.elem_count() as u64;
            let block = info.ggml_dtype.block_size() as u64;
            let bytes = elems / block * info.ggml_dtype.type_size() as u64;
            let end = self
                .content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(bytes);
            if end > self.file_len {
                return Err(ModelError::BadTensor {
                    path: self.path.clone(),
                    name: name.clone(),
                    reason: format!(
                        "data ends at byte {end} but the file has only {} bytes (truncated file?)",
                        self.file_len
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn bad_key(&self, key: &str, reason: impl Into<String>) -> ModelError {
        ModelError::BadKey {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    pub fn missing_key(&self, key: &str) -> ModelError {
        ModelError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        }
    }

    /// Integer keys come in any integer width depending on the converter.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ModelError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = unsigned(v)
            .ok_or_else(|| self.bad_key(key, format!("expected an unsigned integer, got {v:?}")))?;
        Ok(Some(n))
    }

    pub fn u64(&self, key: &str) -> Result<u64, ModelError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing_key(key))
    }

    /// A dimension-like key: a non-zero integer that fits in usize.
    pub fn dim(&self, key: &str) -> Result<usize, ModelError> {
        let n = self.u64(key)?;
        if n == 0 || n > u32::MAX as u64 {
            return Err(self.bad_key(key, format!("{n} is not a plausible size")));
        }
        Ok(n as usize)
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ModelError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        match v {
            Value::F32(x) => Ok(Some(*x as f64)),
            Value::F64(x) => Ok(Some(*x)),
            other => Err(self.bad_key(key, format!("expected a float, got {other:?}"))),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.bad_key(key, format!("expected a bool, got {other:?}"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, ModelError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.bad_key(key, format!("expected a string, got {other:?}"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str, ModelError> {
        self.opt_str(key)?.ok_or_else(|| self.missing_key(key))
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, ModelError> {
        let Some(v) = self.value(key) else {
            return Err(self.missing_key(key));
        };
        let Value::Array(items) = v else {
            return Err(self.bad_key(key, "expected an array of strings"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.bad_key(key, format!("element {i} is {other:?}, not a string"))),
            })
            .collect()
    }

    pub fn opt_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>, ModelError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.bad_key(key, "expected an array of integers"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::I32(x) => Ok(*x as i64),
                Value::U32(x) => Ok(*x as i64),
                Value::I8(x) => Ok(*x as i64),
                Value::U8(x) => Ok(*x as i64),
                Value::I16(x) => Ok(*x as i64),
                Value::U16(x) => Ok(*x as i64),
                Value::I64(x) => Ok(*x),
                other => {
                    Err(self.bad_key(key, format!("element {i} is {other:?}, not an integer")))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>, ModelError> {
        let Some(v) = self.value(key) else {
            return Err(self.missing_key(key));
        };
        let Value::Array(items) = v else {
            return Err(self.bad_key(key, "expected an array of floats"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::F32(x) => Ok(*x),
                other => Err(self.bad_key(key, format!("element {i} is {other:?}, not an f32"))),
            })
            .collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Shape (candle order: outermost first) and dtype of a tensor, without reading it.
    pub fn tensor_meta(&self, name: &str) -> Option<(Vec<usize>, GgmlDType)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| (i.shape.dims().to_vec(), i.ggml_dtype))
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor, ModelError> {
        if !self.has_tensor(name) {
            return Err(ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            });
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| ModelError::BadTensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: e.to_string(),
            })
    }

    /// A tensor that must have exactly `dims` (candle order).
    pub fn tensor_shaped(
        &mut self,
        name: &str,
        dims: &[usize],
        device: &Device,
    ) -> Result<QTensor, ModelError> {
        if let Some((got, _)) = self.tensor_meta(name) {
            if got != dims {
                return Err(ModelError::BadTensor {
                    path: self.path.clone(),
                    name: name.to_string(),
                    reason: format!("shape {got:?}, expected {dims:?} from the metadata"),
                });
            }
        }
        self.tensor(name, device)
    }

    /// Total elements over all weight tensors (tied embeddings are stored once, so they
    /// count once; `rope_freqs` is a constant, not a parameter).
    pub fn num_parameters(&self) -> u64 {
        self.content
            .tensor_infos
            .iter()
            .filter(|(name, _)| !name.starts_with("rope_freqs"))
            .map(|(_, i)| i.shape.elem_count() as u64)
            .sum()
    }
}

/// A GGUF integer of any width as u64; `None` for a negative or non-integer value.
/// Converters write integer keys in whatever width they like.
pub fn unsigned(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

/// ggml's own spelling of a storage type (`Q4_K`, not candle's `Q4K`).
pub fn ggml_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a whole-model storage type.
pub(crate) fn file_type(d: GgmlDType) -> u32 {
    match d {
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q8_0 => 7,
        _ => 0,
    }
}

/// GGUF storage type of one tensor: norms (1-D) stay f32 as in llama.cpp; a row length
/// that does not split into quantisation blocks falls back to f16.
pub(crate) fn tensor_dtype(shape: &[usize], target: GgmlDType) -> GgmlDType {
    if shape.len() < 2 {
        return GgmlDType::F32;
    }
    let cols = *shape.last().unwrap_or(&0);
    if !cols.is_multiple_of(target.block_size()) {
        GgmlDType::F16
    } else {
        target
    }
}

/// Writes a GGUF file: metadata in the order given, then the tensors (candle's writer,
/// 32-byte alignment). Returns the file's size.
pub(crate) fn write(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[(String, QTensor)],
) -> Result<u64, ModelError> {
    let file = File::create(path).map_err(ModelError::io(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &md, &ts).map_err(|e| ModelError::Invalid {
        path: path.to_path_buf(),
        reason: format!("writing GGUF: {}", without_backtrace(e)),
    })?;
    w.flush().map_err(ModelError::io(path))?;
    Ok(std::fs::metadata(path).map_err(ModelError::io(path))?.len())
}
