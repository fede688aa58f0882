//! Hugging Face safetensors weights: the one reader (a model directory's files,
//! memory-mapped, tensors checked against the shapes the config implies) and the
//! streaming writer lem's converter uses.

use super::error::{without_backtrace, ModelError};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One tensor of a safetensors model, as its file's header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsEntry {
    pub name: String,
    /// `F32`, `F16`, `BF16`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    pub file: PathBuf,
}

/// The weight files of a model directory and the file that lists them: `model.safetensors`;
/// else the shards `model.safetensors.index.json` lists; else every `*.safetensors`.
pub(crate) fn weight_files(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>), ModelError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.is_file() {
        return Ok((single.clone(), vec![single]));
    }
    if index.is_file() {
        let root = super::config_json::read_json(&index)?;
        let map = root
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ModelError::config(&index, "weight_map", "missing or not an object"))?;
        let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        names.sort_unstable();
        names.dedup();
        return Ok((index.clone(), names.iter().map(|n| dir.join(n)).collect()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(ModelError::io(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
        .collect();
    files.sort();
    match files.as_slice() {
        [] => Err(ModelError::Io {
            path: single,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither model.safetensors nor model.safetensors.index.json (nor any *.safetensors) is in the directory",
            ),
        }),
        [one] => Ok((one.clone(), files.clone())),
        _ => Ok((dir.to_path_buf(), files)),
    }
}

/// The safetensors files of a model directory, memory-mapped for the duration of the load.
pub struct SafetensorsSet {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// Tensor name → index into `files`.
    routing: HashMap<String, usize>,
    /// The file that lists the tensors (index or single file), named when one is missing.
    listing: PathBuf,
}

impl SafetensorsSet {
    pub(crate) fn open(dir: &Path) -> Result<Self, ModelError> {
        let (listing, paths) = weight_files(dir)?;
        let mut files = Vec::with_capacity(paths.len());
        let mut routing = HashMap::new();
        for (i, p) in paths.into_iter().enumerate() {
            if !p.is_file() {
                return Err(ModelError::Io {
                    path: p,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("listed in {} but not found", listing.display()),
                    ),
                });
            }
            // SAFETY: the map is only read during this load (tensors are copied out) and
            // lem does not write model files; a file changed concurrently by another
            // process is the caveat memmap2 documents.
            let st =
                unsafe { MmapedSafetensors::new(&p) }.map_err(|e| ModelError::Safetensors {
                    path: p.clone(),
                    source: Box::new(without_backtrace(e)),
                })?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            files.push((p, st));
        }
        Ok(Self {
            files,
            routing,
            listing,
        })
    }

    /// The file that lists the tensors (the index, or the single weights file).
    pub(crate) fn listing(&self) -> &Path {
        &self.listing
    }

    /// Every tensor as its header describes it, in name order.
    pub(crate) fn entries(&self) -> Vec<SafetensorsEntry> {
        let mut out: Vec<SafetensorsEntry> = self
            .files
            .iter()
            .flat_map(|(path, st)| {
                st.tensors()
                    .into_iter()
                    .map(|(name, view)| SafetensorsEntry {
                        name,
                        dtype: format!("{:?}", view.dtype()),
                        shape: view.shape().to_vec(),
                        file: path.clone(),
                    })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// Elements over all tensors, rotary buffers some exporters save left out.
    pub(crate) fn num_parameters(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|(_, st)| st.tensors())
            .filter(|(name, _)| !name.ends_with("rotary_emb.inv_freq"))
            .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
            .sum()
    }

    /// A float tensor of exactly `dims`, in its stored dtype.
    pub(crate) fn tensor(&self, name: &str, dims: &[usize]) -> Result<Tensor, ModelError> {
        let Some(&i) = self.routing.get(name) else {
            return Err(ModelError::MissingTensor {
                path: self.listing.clone(),
                name: name.to_string(),
            });
        };
        let (path, st) = &self.files[i];
        let bad = |reason: String| ModelError::BadTensor {
            path: path.clone(),
            name: name.to_string(),
            reason,
        };
        let view = st.get(name).map_err(|e| bad(e.to_string()))?;
        if view.shape() != dims {
            return Err(bad(format!(
                "shape {:?}, expected {dims:?} from config.json",
                view.shape()
            )));
        }
        let t = st
            .load(name, &Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => Ok(t),
            other => Err(bad(format!(
                "dtype {other:?} is not supported (F32, F16 or BF16)"
            ))),
        }
    }
}

/// Little-endian bytes of an f32 tensor cast to `dtype` (round to nearest even). Goes
/// through candle's (non-generic, optimised) GGUF float storage rather than
/// `Tensor::write_bytes`, whose per-element writer would be compiled into this crate
/// unoptimised in dev builds: ~8 s instead of ~1 s for SmolLM2 in the tests.
pub(crate) fn le_bytes(t: &Tensor, dtype: DType) -> candle_core::Result<Vec<u8>> {
    let ggml = match dtype {
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        _ => GgmlDType::F32,
    };
    Ok(QTensor::quantize(t, ggml)?.data()?.into_owned())
}

/// Streams tensors into one safetensors file: the header first (sizes are known from the
/// shapes), then each tensor fetched by `read` (as f32), cast to `dtype` and written in
/// turn, so memory holds one tensor at a time. Returns the file's size.
pub(crate) fn write<E: From<ModelError>>(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    dtype: DType,
    mut read: impl FnMut(&str) -> Result<Tensor, E>,
) -> Result<u64, E> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * dtype.size_in_bytes();
        header.insert(
            name.clone(),
            json!({
                "dtype": dtype_name(dtype),
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut header = serde_json::to_string(&Value::Object(header)).expect("JSON serialises");
    // The data starts 8-byte aligned, padded with spaces as the reference writer does.
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let io = ModelError::io(path);
    let file = File::create(path).map_err(&io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|_| w.write_all(header.as_bytes()))
        .map_err(&io)?;
    for (name, _) in tensors {
        let bytes = le_bytes(&read(name)?, dtype)
            .map_err(|e| ModelError::bad_tensor(path, name, format!("casting: {e}")))?;
        w.write_all(&bytes).map_err(&io)?;
    }
    w.flush().map_err(&io)?;
    Ok(8 + header.len() as u64 + offset as u64)
}

/// The safetensors spelling of a float dtype.
pub(crate) fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        _ => "F32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casting_follows_ieee_rounding() {
        let src = Tensor::new(
            &[1.0f32, -2.5, 65504.0, 1.0 + 1.0 / 1024.0, 0.1],
            &Device::Cpu,
        )
        .unwrap();
        let bytes = |d: DType| {
            // le_bytes must agree with candle's own cast.
            let mut v = Vec::new();
            src.to_dtype(d).unwrap().write_bytes(&mut v).unwrap();
            assert_eq!(le_bytes(&src, d).unwrap(), v, "{d:?}");
            v
        };
        let f32b = bytes(DType::F32);
        assert_eq!(f32b.len(), 20);
        assert_eq!(f32::from_le_bytes(f32b[16..20].try_into().unwrap()), 0.1);
        let h = bytes(DType::F16);
        let h: Vec<u16> = h
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        // 1.0, -2.5, f16::MAX, 1 + 2^-10 (exact in f16), 0.1 rounded to 0x2E66.
        assert_eq!(h, vec![0x3C00, 0xC100, 0x7BFF, 0x3C01, 0x2E66]);
        let b = bytes(DType::BF16);
        let b: Vec<u16> = b
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        // bf16 keeps f32's exponent: 1 + 2^-10 rounds to 1.0; 0.1 (0x3DCCCCCD) up to 0x3DCD.
        assert_eq!(b, vec![0x3F80, 0xC020, 0x4780, 0x3F80, 0x3DCD]);
    }
}
