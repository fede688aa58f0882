//! GGUF reading: typed access to metadata keys, tensors with bounds checks, the Llama
//! hyper-parameters, and the load-time Q4_1 → Q8_0 re-quantisation.

use super::error::EngineError;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// An open GGUF file: header parsed, tensor data read on demand.
pub(crate) struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    content: Content,
    file_len: u64,
}

impl GgufFile {
    pub(crate) fn open(path: &Path) -> Result<Self, EngineError> {
        let io_err = |source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|source| EngineError::Gguf {
            path: path.to_path_buf(),
            source: Box::new(super::error::without_backtrace(source)),
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

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A truncated download is the common corruption: say so up front, naming the first
    /// tensor that does not fit, rather than failing half-way through loading.
    fn check_tensor_extents(&self) -> Result<(), EngineError> {
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
                return Err(EngineError::BadTensor {
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

    pub(crate) fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn bad_key(&self, key: &str, reason: impl Into<String>) -> EngineError {
        EngineError::BadKey {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn missing_key(&self, key: &str) -> EngineError {
        EngineError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        }
    }

    /// Integer keys come in any integer width depending on the converter.
    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>, EngineError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = unsigned(v)
            .ok_or_else(|| self.bad_key(key, format!("expected an unsigned integer, got {v:?}")))?;
        Ok(Some(n))
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64, EngineError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing_key(key))
    }

    /// A dimension-like key: a non-zero integer that fits in usize.
    pub(crate) fn dim(&self, key: &str) -> Result<usize, EngineError> {
        let n = self.u64(key)?;
        if n == 0 || n > u32::MAX as u64 {
            return Err(self.bad_key(key, format!("{n} is not a plausible size")));
        }
        Ok(n as usize)
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, EngineError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        match v {
            Value::F32(x) => Ok(Some(*x as f64)),
            Value::F64(x) => Ok(Some(*x)),
            other => Err(self.bad_key(key, format!("expected a float, got {other:?}"))),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, EngineError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.bad_key(key, format!("expected a bool, got {other:?}"))),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&str>, EngineError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.bad_key(key, format!("expected a string, got {other:?}"))),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<&str, EngineError> {
        self.opt_str(key)?.ok_or_else(|| self.missing_key(key))
    }

    pub(crate) fn str_array(&self, key: &str) -> Result<Vec<&str>, EngineError> {
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

    pub(crate) fn opt_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>, EngineError> {
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

    pub(crate) fn f32_array(&self, key: &str) -> Result<Vec<f32>, EngineError> {
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

    pub(crate) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Shape (candle order: outermost first) and dtype of a tensor, without reading it.
    pub(crate) fn tensor_meta(&self, name: &str) -> Option<(Vec<usize>, GgmlDType)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| (i.shape.dims().to_vec(), i.ggml_dtype))
    }

    pub(crate) fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor, EngineError> {
        if !self.has_tensor(name) {
            return Err(EngineError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            });
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| EngineError::BadTensor {
                path: self.path.clone(),
                name: name.to_string(),
                reason: e.to_string(),
            })
    }

    /// A tensor that must have exactly `dims` (candle order).
    pub(crate) fn tensor_shaped(
        &mut self,
        name: &str,
        dims: &[usize],
        device: &Device,
    ) -> Result<QTensor, EngineError> {
        if let Some((got, _)) = self.tensor_meta(name) {
            if got != dims {
                return Err(EngineError::BadTensor {
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
    pub(crate) fn num_parameters(&self) -> u64 {
        self.content
            .tensor_infos
            .iter()
            .filter(|(name, _)| !name.starts_with("rope_freqs"))
            .map(|(_, i)| i.shape.elem_count() as u64)
            .sum()
    }
}

/// Hyper-parameters of a Llama-family model, from the `llama.*` keys (or `gemma3.*`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LlamaConfig {
    /// `llama` or `gemma3` for GGUF; `llama`, `mistral` or `qwen2` for safetensors.
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub context_length: Option<u64>,
    /// Mistral-style sliding-window attention span; lem attends over the full context, so
    /// sequences longer than this are refused (identical results up to the window).
    pub sliding_window: Option<usize>,
    /// What Gemma 3 adds to the Llama layout; None for every other architecture.
    pub gemma3: Option<Gemma3Params>,
}

/// Gemma 3's departures from Llama that the forward pass needs. The rest is fixed by the
/// architecture: embeddings scaled by sqrt(hidden), RMS norms on Q and K per head, norms
/// after attention and after the MLP, GELU (tanh) gating, half-split (NeoX) rotary. The
/// GGUF converter already folds Gemma's `1 + weight` into the norm weights.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gemma3Params {
    /// Keys a sliding-window layer attends to: the query's own position and the
    /// `sliding_window - 1` before it (`gemma3.attention.sliding_window`).
    pub sliding_window: usize,
    /// Every `global_layer_every`-th layer (1-based) attends over the whole context; the
    /// others use the window. 6 for Gemma 3, as llama.cpp hard-codes it (GGUF has no key).
    pub global_layer_every: usize,
    /// Rotary base of the sliding-window layers (`gemma3.rope.freq_base_swa`, else 10000);
    /// global layers use `rope_theta`.
    pub rope_theta_local: f64,
    /// `cap · tanh(logits / cap)` on the LM head's output when the file sets it.
    pub final_logit_softcap: Option<f64>,
}

impl Gemma3Params {
    /// Whether layer `i` (0-based) attends through the sliding window.
    pub(crate) fn is_local(&self, layer: usize) -> bool {
        !(layer + 1).is_multiple_of(self.global_layer_every)
    }
}

impl LlamaConfig {
    pub(crate) fn from_gguf(g: &GgufFile) -> Result<Self, EngineError> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" && arch != "gemma3" {
            return Err(EngineError::UnsupportedArchitecture {
                path: g.path().to_path_buf(),
                architecture: arch.to_string(),
            });
        }
        let arch = arch.to_string();
        // The same key names under the architecture's prefix.
        let k = |name: &str| format!("{arch}.{name}");
        let hidden_size = g.dim(&k("embedding_length"))?;
        let num_heads = g.dim(&k("attention.head_count"))?;
        let num_kv_heads = match g.opt_u64(&k("attention.head_count_kv"))? {
            Some(_) => g.dim(&k("attention.head_count_kv"))?,
            None => num_heads,
        };
        if num_heads % num_kv_heads != 0 {
            return Err(g.bad_key(
                &k("attention.head_count_kv"),
                format!("{num_kv_heads} does not divide head_count {num_heads}"),
            ));
        }
        let head_dim = match g.opt_u64(&k("attention.key_length"))? {
            Some(n) => n as usize,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(g.bad_key(
                        &k("attention.head_count"),
                        format!("{num_heads} does not divide embedding_length {hidden_size}"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(g.bad_key(
                &k("attention.key_length"),
                format!("head dimension {head_dim} is odd; rotary needs pairs"),
            ));
        }
        if let Some(rope_dim) = g.opt_u64(&k("rope.dimension_count"))? {
            if rope_dim as usize != head_dim {
                return Err(g.bad_key(
                    &k("rope.dimension_count"),
                    format!("partial rotary ({rope_dim} of {head_dim} dims) is not supported"),
                ));
            }
        }
        if let Some(kind) = g.opt_str(&k("rope.scaling.type"))? {
            if kind != "none" {
                return Err(g.bad_key(
                    &k("rope.scaling.type"),
                    format!("rope scaling `{kind}` is not supported"),
                ));
            }
        }
        let vocab_size = match g.opt_u64(&k("vocab_size"))? {
            Some(n) => n as usize,
            None => match g.tensor_meta("token_embd.weight") {
                Some((dims, _)) if dims.len() == 2 => dims[0],
                _ => {
                    return Err(EngineError::MissingTensor {
                        path: g.path().to_path_buf(),
                        name: "token_embd.weight".into(),
                    })
                }
            },
        };
        let num_layers = g.dim(&k("block_count"))?;
        let rms_norm_eps = g
            .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| g.missing_key(&k("attention.layer_norm_rms_epsilon")))?;
        // 10000 is the Llama default when converters omit the key.
        let rope_theta = g.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        let gemma3 = if arch == "gemma3" {
            Some(gemma3_params(g, num_layers)?)
        } else {
            None
        };
        Ok(Self {
            architecture: arch.clone(),
            hidden_size,
            intermediate_size: g.dim(&k("feed_forward_length"))?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps,
            rope_theta,
            context_length: g.opt_u64(&k("context_length"))?,
            sliding_window: None,
            gemma3,
        })
    }
}

/// Gemma 3's keys beyond the Llama ones; refuses what the forward pass does not do.
fn gemma3_params(g: &GgufFile, num_layers: usize) -> Result<Gemma3Params, EngineError> {
    if g.value("gemma3.attn_logit_softcapping").is_some() {
        return Err(g.bad_key(
            "gemma3.attn_logit_softcapping",
            "soft-capped attention scores are not supported",
        ));
    }
    // Gemma 3 27B (62 layers) scales queries by 1/sqrt(hidden/heads), which GGUF does not
    // record; every other size uses 1/sqrt(head_dim), as the forward pass does.
    if num_layers == 62 {
        return Err(g.bad_key(
            "gemma3.block_count",
            "62 layers (Gemma 3 27B): its query scaling is not supported",
        ));
    }
    if let (Some(kl), Some(vl)) = (
        g.opt_u64("gemma3.attention.key_length")?,
        g.opt_u64("gemma3.attention.value_length")?,
    ) {
        if kl != vl {
            return Err(g.bad_key(
                "gemma3.attention.value_length",
                format!("{vl} differs from key_length {kl}"),
            ));
        }
    }
    Ok(Gemma3Params {
        sliding_window: g.dim("gemma3.attention.sliding_window")?,
        global_layer_every: 6,
        rope_theta_local: g.opt_f64("gemma3.rope.freq_base_swa")?.unwrap_or(10_000.0),
        final_logit_softcap: g.opt_f64("gemma3.final_logit_softcapping")?,
    })
}

impl LlamaConfig {
    /// The architecture numbers results and FLOPs are computed from.
    pub(crate) fn shape(&self) -> lem_common::domain::TransformerShape {
        lem_common::domain::TransformerShape {
            architecture: self.architecture.clone(),
            hidden_size: self.hidden_size as u64,
            intermediate_size: self.intermediate_size as u64,
            num_layers: self.num_layers as u64,
            num_attention_heads: self.num_heads as u64,
            num_kv_heads: self.num_kv_heads as u64,
            head_dim: self.head_dim as u64,
            vocab_size: self.vocab_size as u64,
            // SwiGLU (gate, up, down) in every supported architecture; GeGLU in Gemma 3.
            gated_mlp: true,
            // Mistral-style windows are never exceeded (longer runs are refused), so only
            // Gemma 3's, which lem applies, changes what is computed.
            sliding_window: self
                .gemma3
                .as_ref()
                .map(|g| lem_common::domain::SlidingWindow {
                    window: g.sliding_window as u64,
                    layers: (0..self.num_layers).filter(|&i| g.is_local(i)).count() as u64,
                }),
        }
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

/// Q4_1 has no SIMD `vec_dot` in candle 0.11 while Q8_0 has an AVX2 one; the Q8_0 copy
/// is exact enough that greedy output does not change (see docs/engine.md).
pub(crate) fn requantize_q4_1(t: QTensor, path: &Path, name: &str) -> Result<QTensor, EngineError> {
    if t.dtype() != GgmlDType::Q4_1 {
        return Ok(t);
    }
    let bad = |e: candle_core::Error| EngineError::BadTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason: format!(
            "re-quantising Q4_1 to Q8_0: {}",
            super::error::without_backtrace(e)
        ),
    };
    let f = t.dequantize(&Device::Cpu).map_err(bad)?;
    QTensor::quantize(&f, GgmlDType::Q8_0).map_err(bad)
}
