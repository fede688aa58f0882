//! Model conversion between GGUF files and Hugging Face safetensors directories, at a
//! chosen precision, so precision × quantisation sweeps can run offline from one model.
//!
//! - GGUF → safetensors: every tensor is dequantised to f32 and cast to `f32|f16|bf16`,
//!   renamed to Hugging Face names, with `config.json`, `generation_config.json`,
//!   `tokenizer.json` (the engine's GGUF-metadata tokenizer, serialised),
//!   `tokenizer_config.json` and a `lem-convert.json` provenance file.
//! - safetensors → GGUF: `llama.*` metadata from config.json, `tokenizer.ggml.*` from
//!   tokenizer.json, tensors quantised with candle to `f32|f16|q8_0|q4_0` (norms stay f32).
//! - GGUF → GGUF re-quantises; safetensors → safetensors re-casts.
//!
//! llama.cpp's converter permutes the rows of the Q and K projections so that GGUF Llama
//! rotates adjacent pairs (interleaved rotary); Hugging Face checkpoints rotate halves.
//! Converting undoes (or redoes) that permutation, so both outputs are true checkpoints of
//! their format. Outputs are written to a temporary sibling and renamed into place, so a
//! failed conversion never leaves a half-written model where resolution would find it.

use crate::engine::{ggml_name, gguf_unsigned, without_backtrace, LemTokenizer};
use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// The provenance file written into converted safetensors directories.
pub const PROVENANCE_FILE: &str = "lem-convert.json";
/// GGUF metadata key prefix for the same provenance in converted GGUF files.
pub const PROVENANCE_KEY_PREFIX: &str = "lem.convert.";

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// A safetensors header larger than this is not a header (guards a bogus length prefix).
const MAX_HEADER_BYTES: u64 = 100 << 20;

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

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn key_err(path: &Path, key: &str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Key {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn tensor_err(path: &Path, name: &str, reason: impl ToString) -> ConvertError {
    ConvertError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFormat {
    Safetensors,
    Gguf,
}

impl TargetFormat {
    pub fn name(self) -> &'static str {
        match self {
            TargetFormat::Safetensors => "safetensors",
            TargetFormat::Gguf => "gguf",
        }
    }
}

impl FromStr for TargetFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "safetensors" => Ok(TargetFormat::Safetensors),
            "gguf" => Ok(TargetFormat::Gguf),
            _ => Err(format!("unknown format `{s}`; use safetensors or gguf")),
        }
    }
}

/// Precision of the written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetDtype {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
}

impl TargetDtype {
    pub const ALL: [TargetDtype; 5] = [
        TargetDtype::F32,
        TargetDtype::F16,
        TargetDtype::Bf16,
        TargetDtype::Q8_0,
        TargetDtype::Q4_0,
    ];

    /// Lower-case name, also the suffix of default output names.
    pub fn name(self) -> &'static str {
        match self {
            TargetDtype::F32 => "f32",
            TargetDtype::F16 => "f16",
            TargetDtype::Bf16 => "bf16",
            TargetDtype::Q8_0 => "q8_0",
            TargetDtype::Q4_0 => "q4_0",
        }
    }

    /// The safetensors dtype, for the float types.
    pub fn safetensors_dtype(self) -> Option<DType> {
        match self {
            TargetDtype::F32 => Some(DType::F32),
            TargetDtype::F16 => Some(DType::F16),
            TargetDtype::Bf16 => Some(DType::BF16),
            TargetDtype::Q8_0 | TargetDtype::Q4_0 => None,
        }
    }

    /// The GGUF storage type. bf16 is left out: candle 0.11 has no CPU matmul for BF16
    /// GGUF weights, so lem could not run what it wrote.
    pub fn ggml_dtype(self) -> Option<GgmlDType> {
        match self {
            TargetDtype::F32 => Some(GgmlDType::F32),
            TargetDtype::F16 => Some(GgmlDType::F16),
            TargetDtype::Q8_0 => Some(GgmlDType::Q8_0),
            TargetDtype::Q4_0 => Some(GgmlDType::Q4_0),
            TargetDtype::Bf16 => None,
        }
    }

    pub fn supported_by(self, format: TargetFormat) -> bool {
        match format {
            TargetFormat::Safetensors => self.safetensors_dtype().is_some(),
            TargetFormat::Gguf => self.ggml_dtype().is_some(),
        }
    }

    /// The dtypes `format` can hold, for messages.
    pub fn names_for(format: TargetFormat) -> String {
        Self::ALL
            .iter()
            .filter(|d| d.supported_by(format))
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join("|")
    }
}

impl FromStr for TargetDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(TargetDtype::F32),
            "f16" | "float16" | "fp16" => Ok(TargetDtype::F16),
            "bf16" | "bfloat16" => Ok(TargetDtype::Bf16),
            "q8_0" => Ok(TargetDtype::Q8_0),
            "q4_0" => Ok(TargetDtype::Q4_0),
            _ => Err(format!(
                "unknown dtype `{s}`; use one of f32, f16, bf16, q8_0, q4_0"
            )),
        }
    }
}

fn torch_dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

fn safetensors_dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        _ => "F32",
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a whole-model storage type.
fn gguf_file_type(d: GgmlDType) -> u32 {
    match d {
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q8_0 => 7,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------
// Names and the rotary permutation

/// Per-layer tensors: GGUF suffix after `blk.N.`, Hugging Face suffix after
/// `model.layers.N.`.
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// `(layer, suffix)` of `<prefix>N.<suffix>`, with N in canonical decimal form.
fn split_layer<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (layer, part) = name.strip_prefix(prefix)?.split_once('.')?;
    let n: usize = layer.parse().ok()?;
    (n.to_string() == layer).then_some((n, part))
}

/// The Hugging Face name of a GGUF Llama tensor; `None` for tensors lem does not map.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == name) {
        return Some(hf.to_string());
    }
    let (layer, part) = split_layer(name, "blk.")?;
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{hf}"))
}

/// The GGUF name of a Hugging Face Llama tensor; `None` for tensors lem does not map.
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, hf)| *hf == name) {
        return Some(g.to_string());
    }
    let (layer, part) = split_layer(name, "model.layers.")?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, hf)| *hf == part)?;
    Some(format!("blk.{layer}.{g}"))
}

/// Which rotary permutation a tensor needs: `Some(heads)` for Q (attention heads) and K
/// (KV heads), by Hugging Face name.
fn qk_heads(hf_name: &str, p: &LlamaParams) -> Option<usize> {
    if hf_name.ends_with(".self_attn.q_proj.weight") {
        Some(p.num_heads)
    } else if hf_name.ends_with(".self_attn.k_proj.weight") {
        Some(p.num_kv_heads)
    } else {
        None
    }
}

fn head_split(w: &Tensor, n_head: usize) -> candle_core::Result<(usize, usize, usize)> {
    let (rows, cols) = w.dims2()?;
    if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        candle_core::bail!("{rows} rows do not split into {n_head} heads of even size");
    }
    Ok((rows, cols, rows / n_head / 2))
}

/// Hugging Face (rotate-half) rows → GGUF (interleaved) rows: within each head, row
/// `j * hd/2 + i` moves to `2 * i + j`. This is llama.cpp's `permute` in convert_hf_to_gguf.
pub fn qk_hf_to_gguf(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (rows, cols, half) = head_split(w, n_head)?;
    w.reshape((n_head, 2, half, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// The inverse of [`qk_hf_to_gguf`]: GGUF rows back to Hugging Face's rotate-half order.
pub fn qk_gguf_to_hf(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (rows, cols, half) = head_split(w, n_head)?;
    w.reshape((n_head, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

// ---------------------------------------------------------------------------------------
// Hyper-parameters

/// Llama hyper-parameters as both formats express them.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: Option<u64>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// GGUF stores these as f32: print the shortest decimal that reads back to the same f32
/// (`1e-5`, not `9.999999747378752e-06`).
fn tidy_f32(x: f64) -> f64 {
    (x as f32).to_string().parse().unwrap_or(x)
}

fn meta<'a>(c: &'a Content, key: &str) -> Option<&'a Value> {
    c.metadata.get(key)
}

fn meta_u64(c: &Content, path: &Path, key: &str) -> Result<Option<u64>, ConvertError> {
    let Some(v) = meta(c, key) else {
        return Ok(None);
    };
    let n = gguf_unsigned(v).ok_or_else(|| {
        key_err(
            path,
            key,
            format!("expected an unsigned integer, got {v:?}"),
        )
    })?;
    Ok(Some(n))
}

fn meta_dim(c: &Content, path: &Path, key: &str) -> Result<usize, ConvertError> {
    match meta_u64(c, path, key)? {
        Some(n) if n > 0 && n <= u32::MAX as u64 => Ok(n as usize),
        Some(n) => Err(key_err(path, key, format!("{n} is not a plausible size"))),
        None => Err(key_err(path, key, "missing")),
    }
}

fn meta_f64(c: &Content, path: &Path, key: &str) -> Result<Option<f64>, ConvertError> {
    match meta(c, key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(tidy_f32(*x as f64))),
        Some(Value::F64(x)) => Ok(Some(*x)),
        Some(other) => Err(key_err(
            path,
            key,
            format!("expected a float, got {other:?}"),
        )),
    }
}

fn meta_str<'a>(c: &'a Content, path: &Path, key: &str) -> Result<Option<&'a str>, ConvertError> {
    match meta(c, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(key_err(
            path,
            key,
            format!("expected a string, got {other:?}"),
        )),
    }
}

fn u32_id(path: &Path, key: &str, n: Option<u64>) -> Result<Option<u32>, ConvertError> {
    n.map(|n| u32::try_from(n).map_err(|_| key_err(path, key, format!("{n} is not a token id"))))
        .transpose()
}

impl LlamaParams {
    /// From the `llama.*` keys of a GGUF file; refuses what lem cannot express in a
    /// Hugging Face Llama config (partial rotary, rope scaling).
    pub fn from_gguf(c: &Content, path: &Path) -> Result<Self, ConvertError> {
        let arch = meta_str(c, path, "general.architecture")?
            .ok_or_else(|| key_err(path, "general.architecture", "missing"))?;
        if arch != "llama" {
            return Err(key_err(
                path,
                "general.architecture",
                format!("`{arch}` is not supported; lem converts Llama-family models (`llama`)"),
            ));
        }
        let hidden_size = meta_dim(c, path, "llama.embedding_length")?;
        let num_heads = meta_dim(c, path, "llama.attention.head_count")?;
        let num_kv_heads = match meta_u64(c, path, "llama.attention.head_count_kv")? {
            Some(_) => meta_dim(c, path, "llama.attention.head_count_kv")?,
            None => num_heads,
        };
        let head_dim = match meta_u64(c, path, "llama.attention.key_length")? {
            Some(n) => n as usize,
            None => hidden_size / num_heads,
        };
        if let Some(rope) = meta_u64(c, path, "llama.rope.dimension_count")? {
            if rope as usize != head_dim {
                return Err(key_err(
                    path,
                    "llama.rope.dimension_count",
                    format!("partial rotary ({rope} of {head_dim} dims) is not supported"),
                ));
            }
        }
        if let Some(kind) = meta_str(c, path, "llama.rope.scaling.type")? {
            if kind != "none" {
                return Err(key_err(
                    path,
                    "llama.rope.scaling.type",
                    format!("rope scaling `{kind}` is not supported"),
                ));
            }
        }
        let vocab_size = match meta_u64(c, path, "llama.vocab_size")? {
            Some(n) => n as usize,
            None => match c.tensor_infos.get("token_embd.weight") {
                Some(i) if i.shape.dims().len() == 2 => i.shape.dims()[0],
                _ => return Err(tensor_err(path, "token_embd.weight", "missing")),
            },
        };
        let eps_key = "llama.attention.layer_norm_rms_epsilon";
        let rms_norm_eps =
            meta_f64(c, path, eps_key)?.ok_or_else(|| key_err(path, eps_key, "missing"))?;
        let id = |key: &str| u32_id(path, key, meta_u64(c, path, key)?);
        Ok(Self {
            hidden_size,
            intermediate_size: meta_dim(c, path, "llama.feed_forward_length")?,
            num_layers: meta_dim(c, path, "llama.block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps,
            // 10000 is the Llama default when converters omit the key.
            rope_theta: meta_f64(c, path, "llama.rope.freq_base")?.unwrap_or(10_000.0),
            max_position_embeddings: meta_u64(c, path, "llama.context_length")?,
            tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
            pad_token_id: id("tokenizer.ggml.padding_token_id")?,
        })
    }

    /// From a Hugging Face `config.json` of a `LlamaForCausalLM`.
    pub fn from_config_json(cfg: &Json, path: &Path) -> Result<Self, ConvertError> {
        let is_llama = cfg["model_type"] == "llama"
            || cfg["architectures"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "LlamaForCausalLM"));
        if !is_llama {
            return Err(key_err(
                path,
                "architectures",
                format!(
                    "{} is not supported; lem converts LlamaForCausalLM",
                    cfg.get("architectures").unwrap_or(&cfg["model_type"])
                ),
            ));
        }
        let uint = |key: &str| -> Result<Option<u64>, ConvertError> {
            match cfg.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| key_err(path, key, format!("expected an integer, got {v}"))),
            }
        };
        let dim = |key: &str| -> Result<usize, ConvertError> {
            match uint(key)? {
                Some(n) if n > 0 && n <= u32::MAX as u64 => Ok(n as usize),
                Some(n) => Err(key_err(path, key, format!("{n} is not a plausible size"))),
                None => Err(key_err(path, key, "missing")),
            }
        };
        let float = |key: &str| -> Result<Option<f64>, ConvertError> {
            match cfg.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| key_err(path, key, format!("expected a number, got {v}"))),
            }
        };
        // `eos_token_id` may be a list; GGUF has one EOS key, the first is the primary one.
        let id = |key: &str| -> Result<Option<u32>, ConvertError> {
            let v = match cfg.get(key) {
                Some(Json::Array(a)) => a.first().cloned().unwrap_or(Json::Null),
                Some(v) => v.clone(),
                None => Json::Null,
            };
            match v {
                Json::Null => Ok(None),
                v => u32_id(
                    path,
                    key,
                    Some(
                        v.as_u64()
                            .ok_or_else(|| key_err(path, key, format!("{v} is not a token id")))?,
                    ),
                ),
            }
        };
        if let Some(act) = cfg.get("hidden_act").and_then(Json::as_str) {
            if act != "silu" {
                return Err(key_err(
                    path,
                    "hidden_act",
                    format!("`{act}` is not supported (Llama uses silu)"),
                ));
            }
        }
        if !matches!(cfg.get("rope_scaling"), None | Some(Json::Null)) {
            return Err(key_err(
                path,
                "rope_scaling",
                "rope scaling is not supported by lem's engine",
            ));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if cfg.get(key) == Some(&Json::Bool(true)) {
                return Err(key_err(path, key, "biases are not supported"));
            }
        }
        let hidden_size = dim("hidden_size")?;
        let num_heads = dim("num_attention_heads")?;
        let num_kv_heads = match uint("num_key_value_heads")? {
            Some(_) => dim("num_key_value_heads")?,
            None => num_heads,
        };
        let head_dim = match uint("head_dim")? {
            Some(_) => dim("head_dim")?,
            None => hidden_size / num_heads,
        };
        Ok(Self {
            hidden_size,
            intermediate_size: dim("intermediate_size")?,
            num_layers: dim("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: dim("vocab_size")?,
            rms_norm_eps: float("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: float("rope_theta")?.unwrap_or(10_000.0),
            max_position_embeddings: uint("max_position_embeddings")?,
            // LlamaConfig's default is untied.
            tie_word_embeddings: cfg
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            bos_token_id: id("bos_token_id")?,
            eos_token_id: id("eos_token_id")?,
            pad_token_id: id("pad_token_id")?,
        })
    }

    /// A `config.json` for `LlamaForCausalLM` with weights stored as `dtype`.
    pub fn to_config_json(&self, dtype: DType) -> Json {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings.unwrap_or(2048),
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": true,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": torch_dtype_name(dtype),
        })
    }

    /// `general.architecture` and the `llama.*` keys.
    fn gguf_metadata(&self) -> Vec<(String, Value)> {
        let u = |n: usize| Value::U32(n as u32);
        let mut m = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".into(), u(self.num_layers)),
            ("llama.embedding_length".into(), u(self.hidden_size)),
            (
                "llama.feed_forward_length".into(),
                u(self.intermediate_size),
            ),
            ("llama.attention.head_count".into(), u(self.num_heads)),
            ("llama.attention.head_count_kv".into(), u(self.num_kv_heads)),
            ("llama.rope.dimension_count".into(), u(self.head_dim)),
            (
                "llama.rope.freq_base".into(),
                Value::F32(self.rope_theta as f32),
            ),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Value::F32(self.rms_norm_eps as f32),
            ),
            ("llama.vocab_size".into(), u(self.vocab_size)),
        ];
        if self.head_dim * self.num_heads != self.hidden_size {
            m.push(("llama.attention.key_length".into(), u(self.head_dim)));
            m.push(("llama.attention.value_length".into(), u(self.head_dim)));
        }
        if let Some(n) = self.max_position_embeddings {
            m.push(("llama.context_length".into(), Value::U32(n as u32)));
        }
        m
    }

    /// Every tensor of the model: Hugging Face name and shape (outermost first), in
    /// llama.cpp's order (embedding, layers, final norm, head).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let (q, kv) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_layers {
            let p = format!("model.layers.{l}.");
            for (name, shape) in [
                ("input_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![q, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, q]),
                ("post_attention_layernorm.weight", vec![h]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ] {
                out.push((format!("{p}{name}"), shape));
            }
        }
        out.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// safetensors reading

/// One tensor in a safetensors file, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsEntry {
    pub file: PathBuf,
    /// `F32`, `F16`, `BF16`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

fn st_dtype(name: &str) -> Option<DType> {
    match name {
        "F32" => Some(DType::F32),
        "F16" => Some(DType::F16),
        "BF16" => Some(DType::BF16),
        _ => None,
    }
}

/// The tensors of one safetensors file and its `__metadata__`.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsHeader {
    pub tensors: BTreeMap<String, SafetensorsEntry>,
    pub metadata: Map<String, Json>,
}

/// Reads a safetensors header, checking every tensor's extent against the file length.
pub fn read_safetensors_header(file: &Path) -> Result<SafetensorsHeader, ConvertError> {
    let mut f = File::open(file).map_err(io_err(file))?;
    let file_len = f.metadata().map_err(io_err(file))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io_err(file))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(invalid(
            file,
            format!("header length {header_len} does not fit a {file_len}-byte file"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(io_err(file))?;
    let header: Map<String, Json> = serde_json::from_slice(&header)
        .map_err(|e| invalid(file, format!("header is not a JSON object: {e}")))?;
    let data_start = 8 + header_len;
    let mut entries = BTreeMap::new();
    let mut metadata = Map::new();
    for (name, v) in header {
        if name == "__metadata__" {
            if let Json::Object(m) = v {
                metadata = m;
            }
            continue;
        }
        let bad = |why: &str| tensor_err(file, &name, why);
        let dtype = v["dtype"]
            .as_str()
            .ok_or_else(|| bad("no dtype"))?
            .to_string();
        let shape = v["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad("no shape"))?;
        let offsets: Vec<u64> = v["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(Json::as_u64).collect())
            .filter(|o: &Vec<u64>| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| bad("no valid data_offsets"))?;
        let (start, end) = (data_start + offsets[0], data_start + offsets[1]);
        if end > file_len {
            return Err(bad(&format!(
                "data ends at byte {end} but the file has {file_len} bytes (truncated file?)"
            )));
        }
        entries.insert(
            name,
            SafetensorsEntry {
                file: file.to_path_buf(),
                dtype,
                shape,
                start,
                end,
            },
        );
    }
    Ok(SafetensorsHeader {
        tensors: entries,
        metadata,
    })
}

/// The weight files of a safetensors model directory: the index's shards when there is
/// one, else every `*.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = read_json(&index)?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| key_err(&index, "weight_map", "missing or not an object"))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(Json::as_str)
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(invalid(dir, "no *.safetensors file"));
    }
    Ok(files)
}

fn read_json(path: &Path) -> Result<Json, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, format!("invalid JSON: {e}")))
}

fn read_json_opt(path: &Path) -> Result<Option<Json>, ConvertError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// Sources

enum Weights {
    Gguf {
        content: Content,
        reader: BufReader<File>,
    },
    Safetensors {
        entries: BTreeMap<String, SafetensorsEntry>,
    },
}

/// An opened model: hyper-parameters and, per Hugging Face name, the stored tensor.
struct Source {
    /// The GGUF file or the safetensors directory.
    path: PathBuf,
    params: LlamaParams,
    weights: Weights,
    /// Hugging Face name → name in the source.
    names: BTreeMap<String, String>,
    /// Stored type → number of tensors.
    dtypes: BTreeMap<String, usize>,
}

impl Source {
    fn open(path: &Path) -> Result<Self, ConvertError> {
        if path.is_dir() {
            Self::open_safetensors(path)
        } else {
            Self::open_gguf(path)
        }
    }

    fn open_gguf(path: &Path) -> Result<Self, ConvertError> {
        let file = File::open(path).map_err(io_err(path))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| ConvertError::Gguf {
            path: path.to_path_buf(),
            source: Box::new(without_backtrace(e)),
        })?;
        let params = LlamaParams::from_gguf(&content, path)?;
        let mut names = BTreeMap::new();
        let mut shapes = BTreeMap::new();
        let mut dtypes = BTreeMap::new();
        for (name, info) in &content.tensor_infos {
            if name == "rope_freqs.weight" {
                return Err(tensor_err(
                    path,
                    name,
                    "Llama 3.1 rope frequency factors have no plain Llama config equivalent; \
                     converting this model is not supported",
                ));
            }
            let hf = gguf_to_hf_name(name).ok_or_else(|| {
                tensor_err(path, name, "not a Llama tensor lem knows how to convert")
            })?;
            *dtypes
                .entry(ggml_name(info.ggml_dtype).to_string())
                .or_insert(0) += 1;
            shapes.insert(hf.clone(), info.shape.dims().to_vec());
            names.insert(hf, name.clone());
        }
        check_tensors(path, &params, &mut names, &shapes)?;
        Ok(Self {
            path: path.to_path_buf(),
            params,
            weights: Weights::Gguf { content, reader },
            names,
            dtypes,
        })
    }

    fn open_safetensors(dir: &Path) -> Result<Self, ConvertError> {
        let config_path = dir.join("config.json");
        let params = LlamaParams::from_config_json(&read_json(&config_path)?, &config_path)?;
        let mut entries = BTreeMap::new();
        for file in safetensors_files(dir)? {
            let found = read_safetensors_header(&file)?.tensors;
            for (name, e) in found {
                // Old checkpoints store the rotary table; it is recomputed, not a weight.
                if name.ends_with(".rotary_emb.inv_freq") {
                    continue;
                }
                if st_dtype(&e.dtype).is_none() {
                    return Err(tensor_err(
                        &file,
                        &name,
                        format!("dtype {} is not supported (F32, F16, BF16)", e.dtype),
                    ));
                }
                if hf_to_gguf_name(&name).is_none() {
                    return Err(tensor_err(
                        &file,
                        &name,
                        "not a Llama tensor lem knows how to convert",
                    ));
                }
                entries.insert(name, e);
            }
        }
        let mut names: BTreeMap<String, String> =
            entries.keys().map(|n| (n.clone(), n.clone())).collect();
        let shapes: BTreeMap<String, Vec<usize>> = entries
            .iter()
            .map(|(n, e)| (n.clone(), e.shape.clone()))
            .collect();
        check_tensors(dir, &params, &mut names, &shapes)?;
        let mut dtypes = BTreeMap::new();
        for n in names.values() {
            *dtypes.entry(entries[n].dtype.clone()).or_insert(0) += 1;
        }
        Ok(Self {
            path: dir.to_path_buf(),
            params,
            weights: Weights::Safetensors { entries },
            names,
            dtypes,
        })
    }

    fn format(&self) -> &'static str {
        match self.weights {
            Weights::Gguf { .. } => "gguf",
            Weights::Safetensors { .. } => "safetensors",
        }
    }

    /// A tensor as f32 in Hugging Face layout (rotate-half Q/K rows).
    fn read(&mut self, hf_name: &str) -> Result<Tensor, ConvertError> {
        let src_name = self.names[hf_name].clone();
        let heads = qk_heads(hf_name, &self.params);
        let (t, err_path) = match &mut self.weights {
            Weights::Gguf { content, reader } => {
                let q = content
                    .tensor(reader, &src_name, &Device::Cpu)
                    .map_err(|e| tensor_err(&self.path, &src_name, e))?;
                let t = q.dequantize(&Device::Cpu).map_err(|e| {
                    tensor_err(
                        &self.path,
                        &src_name,
                        format!("dequantising: {}", without_backtrace(e)),
                    )
                })?;
                (t, self.path.clone())
            }
            Weights::Safetensors { entries } => {
                let e = &entries[&src_name];
                (read_safetensors_tensor(e, &src_name)?, e.file.clone())
            }
        };
        match heads {
            // GGUF rows are interleaved; safetensors rows are already rotate-half.
            Some(n) if matches!(self.weights, Weights::Gguf { .. }) => qk_gguf_to_hf(&t, n)
                .map_err(|e| {
                    tensor_err(
                        &err_path,
                        &src_name,
                        format!("un-permuting: {}", without_backtrace(e)),
                    )
                }),
            _ => Ok(t),
        }
    }

    /// Source file description for provenance.
    fn provenance(&self) -> Json {
        let weight_files: Vec<PathBuf> = match &self.weights {
            Weights::Gguf { .. } => vec![self.path.clone()],
            Weights::Safetensors { entries } => {
                let mut f: Vec<PathBuf> = entries.values().map(|e| e.file.clone()).collect();
                f.sort();
                f.dedup();
                f
            }
        };
        let mut size = 0u64;
        let mut modified: Option<std::time::SystemTime> = None;
        for f in &weight_files {
            if let Ok(m) = std::fs::metadata(f) {
                size += m.len();
                if let Ok(t) = m.modified() {
                    modified = Some(modified.map_or(t, |old| old.max(t)));
                }
            }
        }
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        json!({
            "path": path.display().to_string(),
            "format": self.format(),
            "size_bytes": size,
            "modified": modified.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
            "dtypes": self.dtypes,
        })
    }
}

fn read_safetensors_tensor(e: &SafetensorsEntry, name: &str) -> Result<Tensor, ConvertError> {
    let dtype = st_dtype(&e.dtype)
        .ok_or_else(|| tensor_err(&e.file, name, format!("dtype {} is not supported", e.dtype)))?;
    let want = e.shape.iter().product::<usize>() * dtype.size_in_bytes();
    if (e.end - e.start) as usize != want {
        return Err(tensor_err(
            &e.file,
            name,
            format!(
                "{} bytes for shape {:?} of {}, expected {want}",
                e.end - e.start,
                e.shape,
                e.dtype
            ),
        ));
    }
    let mut f = File::open(&e.file).map_err(io_err(&e.file))?;
    f.seek(SeekFrom::Start(e.start)).map_err(io_err(&e.file))?;
    let mut bytes = vec![0u8; want];
    f.read_exact(&mut bytes).map_err(io_err(&e.file))?;
    Tensor::from_raw_buffer(&bytes, dtype, &e.shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(|err| tensor_err(&e.file, name, err))
}

/// Every expected tensor is present with its expected shape; a tied model's stored
/// `lm_head` is dropped (it equals the embedding).
fn check_tensors(
    path: &Path,
    p: &LlamaParams,
    names: &mut BTreeMap<String, String>,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<(), ConvertError> {
    if p.tie_word_embeddings {
        names.remove("lm_head.weight");
    }
    let expected = p.expected_tensors();
    for (hf, shape) in &expected {
        let Some(src) = names.get(hf) else {
            let gguf = hf_to_gguf_name(hf).unwrap_or_default();
            return Err(tensor_err(
                path,
                hf,
                format!("missing (GGUF name `{gguf}`)"),
            ));
        };
        if &shapes[hf] != shape {
            return Err(tensor_err(
                path,
                src,
                format!("shape {:?}, expected {shape:?} from the config", shapes[hf]),
            ));
        }
    }
    if let Some(extra) = names
        .keys()
        .find(|n| !expected.iter().any(|(e, _)| e == *n))
    {
        return Err(tensor_err(
            path,
            &names[extra],
            "unexpected for this config (more layers than num_hidden_layers?)",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tokenizer

/// tokenizer.json text (and tokenizer_config.json) for a GGUF's metadata tokenizer.
fn tokenizer_files_from_gguf(
    path: &Path,
    c: &Content,
    p: &LlamaParams,
) -> Result<(String, Json), ConvertError> {
    let tok = LemTokenizer::from_gguf_metadata(path).map_err(|e| invalid(path, e.to_string()))?;
    let (inner, bos_to_add) = tok.pipeline_and_bos().ok_or_else(|| {
        invalid(
            path,
            "a SentencePiece-style GGUF vocabulary cannot be written as tokenizer.json yet"
                .to_string(),
        )
    })?;
    let mut inner = inner.clone();
    if let Some(bos) = bos_to_add {
        // The GGUF wrapper prepends BOS itself; in tokenizer.json the post-processor does.
        let bos_tok = inner
            .id_to_token(bos)
            .ok_or_else(|| key_err(path, "tokenizer.ggml.bos_token_id", "not in the vocabulary"))?;
        let template = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single(format!("{bos_tok} $A"))
            .and_then(|b| b.try_pair(format!("{bos_tok} $A {bos_tok} $B")))
            .map_err(|e| invalid(path, format!("BOS template: {e}")))?
            .special_tokens(vec![(bos_tok.clone(), bos)])
            .build()
            .map_err(|e| invalid(path, format!("BOS template: {e}")))?;
        inner.with_post_processor(Some(template));
    }
    let token = |id: Option<u32>| id.and_then(|i| inner.id_to_token(i));
    let json_text = inner
        .to_string(true)
        .map_err(|e| invalid(path, format!("serialising the tokenizer: {e}")))?;
    let unk = u32_id(
        path,
        "tokenizer.ggml.unknown_token_id",
        meta_u64(c, path, "tokenizer.ggml.unknown_token_id")?,
    )?;
    let mut cfg = json!({
        "add_bos_token": bos_to_add.is_some(),
        "add_eos_token": false,
        "bos_token": token(p.bos_token_id),
        "eos_token": token(p.eos_token_id),
        "pad_token": token(p.pad_token_id),
        "unk_token": token(unk),
        "clean_up_tokenization_spaces": false,
        "model_max_length": p.max_position_embeddings.unwrap_or(2048),
        "tokenizer_class": "GPT2Tokenizer",
    });
    if let Some(t) = meta_str(c, path, "tokenizer.chat_template")? {
        cfg["chat_template"] = Json::String(t.to_string());
    }
    Ok((json_text, cfg))
}

/// The `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) from a byte-level BPE
/// tokenizer.json, as llama.cpp's converter writes them.
pub fn gguf_tokenizer_metadata(
    tokenizer: &Json,
    tokenizer_config: Option<&Json>,
    chat_template_file: Option<&str>,
    p: &LlamaParams,
    path: &Path,
) -> Result<Vec<(String, Value)>, ConvertError> {
    let model = &tokenizer["model"];
    if model["type"] != "BPE" {
        return Err(key_err(
            path,
            "model.type",
            format!(
                "{} tokenizers are not supported; lem writes byte-level BPE (gpt2) tokenizers",
                model["type"]
            ),
        ));
    }
    let text = tokenizer.to_string();
    if !text.contains("\"ByteLevel\"") {
        return Err(key_err(
            path,
            "pre_tokenizer",
            "no ByteLevel pre-tokenizer/decoder; lem writes byte-level BPE (gpt2) tokenizers",
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| key_err(path, "model.vocab", "missing or not an object"))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut put = |tok: &str, id: u64, ty: i32| {
        let id = id as usize;
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, TOKEN_UNUSED);
        }
        tokens[id] = Some(tok.to_string());
        types[id] = ty;
    };
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| key_err(path, "model.vocab", format!("`{tok}` has no integer id")))?;
        put(tok, id, TOKEN_NORMAL);
    }
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(key_err(
                path,
                "added_tokens",
                format!("malformed entry {added}"),
            ));
        };
        let ty = if added["special"] == true {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
        put(content, id, ty);
    }
    // llama.cpp pads the vocabulary to the embedding's row count with placeholder tokens.
    if tokens.len() < p.vocab_size {
        tokens.resize(p.vocab_size, None);
        types.resize(p.vocab_size, TOKEN_UNUSED);
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| Value::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let mut merges = Vec::new();
    for (i, m) in model["merges"].as_array().into_iter().flatten().enumerate() {
        // Older files spell a merge "a b", newer ones ["a", "b"].
        let s = match m {
            Json::String(s) => s.clone(),
            Json::Array(pair) if pair.len() == 2 => {
                format!(
                    "{} {}",
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default()
                )
            }
            other => {
                return Err(key_err(
                    path,
                    "model.merges",
                    format!("merge {i} is {other}, not a pair"),
                ))
            }
        };
        merges.push(Value::String(s));
    }
    if merges.is_empty() {
        return Err(key_err(path, "model.merges", "no merges"));
    }
    // SmolLM/StarCoder split digits one by one before the byte-level regex.
    let pre = match tokenizer["pre_tokenizer"].to_string() {
        s if s.contains("\"Digits\"") && s.contains("\"individual_digits\":true") => "smollm",
        _ => "gpt2",
    };
    let add_bos = match tokenizer_config.and_then(|c| c.get("add_bos_token")) {
        Some(Json::Bool(b)) => *b,
        _ => {
            // A TemplateProcessing that starts with the BOS token adds it.
            let first = &tokenizer["post_processor"]["single"][0]["SpecialToken"]["id"];
            let bos = p
                .bos_token_id
                .and_then(|id| vocab.iter().find(|(_, v)| v.as_u64() == Some(id as u64)));
            matches!((first.as_str(), bos), (Some(f), Some((b, _))) if f == b)
        }
    };
    let mut m = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)),
    ];
    let ids = [
        ("tokenizer.ggml.bos_token_id", p.bos_token_id),
        ("tokenizer.ggml.eos_token_id", p.eos_token_id),
        ("tokenizer.ggml.padding_token_id", p.pad_token_id),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            m.push((key.to_string(), Value::U32(id)));
        }
    }
    let unk = model["unk_token"]
        .as_str()
        .and_then(|u| vocab.get(u))
        .and_then(Json::as_u64);
    if let Some(id) = unk {
        m.push((
            "tokenizer.ggml.unknown_token_id".into(),
            Value::U32(id as u32),
        ));
    }
    let template = match tokenizer_config.and_then(|c| c.get("chat_template")) {
        Some(Json::String(s)) => Some(s.clone()),
        // A list of named templates: the default one.
        Some(Json::Array(list)) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => chat_template_file.map(str::to_string),
    };
    if let Some(t) = template {
        m.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------
// Writing

/// What a conversion did.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertReport {
    /// The directory (safetensors) or file (GGUF) written.
    pub output: PathBuf,
    pub format: TargetFormat,
    pub dtype: TargetDtype,
    pub source_format: &'static str,
    /// Stored type → tensor count, in the source and in the output.
    pub source_dtypes: BTreeMap<String, usize>,
    pub output_dtypes: BTreeMap<String, usize>,
    pub tensors: usize,
    /// Size of the weights file written.
    pub weights_bytes: u64,
    pub elapsed_s: f64,
    /// Things the user should know (kept norms, fallbacks, missing tokenizer).
    pub notes: Vec<String>,
}

/// Converts the model at `input` (a GGUF file or a safetensors directory) into `output`
/// (a directory for safetensors, a `.gguf` file for GGUF). An existing output is replaced
/// only with `force`, and then only if it looks like a converted model.
pub fn convert(
    input: &Path,
    format: TargetFormat,
    dtype: TargetDtype,
    output: &Path,
    force: bool,
) -> Result<ConvertReport, ConvertError> {
    let t0 = Instant::now();
    if !dtype.supported_by(format) {
        return Err(invalid(
            output,
            format!(
                "{} cannot hold {} weights; use one of {}",
                format.name(),
                dtype.name(),
                TargetDtype::names_for(format)
            ),
        ));
    }
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(input, output) || output.starts_with(input) && input.is_dir() {
        return Err(invalid(output, "the output would overwrite the input"));
    }
    check_output(output, format, force)?;
    let mut src = Source::open(input)?;
    let mut report = match format {
        TargetFormat::Safetensors => write_safetensors_dir(&mut src, output, dtype)?,
        TargetFormat::Gguf => write_gguf_file(&mut src, output, dtype)?,
    };
    report.elapsed_s = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Refuses an existing output unless `force`; with `force`, still refuses to replace
/// something that is not a converted model of the same kind (e.g. `--out ~`).
fn check_output(output: &Path, format: TargetFormat, force: bool) -> Result<(), ConvertError> {
    if format == TargetFormat::Gguf
        && !output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Err(invalid(
            output,
            "a GGUF output must be a file ending in .gguf",
        ));
    }
    if !output.exists() && output.symlink_metadata().is_err() {
        return Ok(());
    }
    if !force {
        return Err(ConvertError::Exists {
            path: output.to_path_buf(),
        });
    }
    match format {
        TargetFormat::Gguf if output.is_file() => Ok(()),
        TargetFormat::Gguf => Err(invalid(
            output,
            "exists and is not a file; not replacing it",
        )),
        TargetFormat::Safetensors => {
            let empty = std::fs::read_dir(output)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if output.is_dir() && (empty || output.join(PROVENANCE_FILE).is_file()) {
                Ok(())
            } else {
                Err(invalid(
                    output,
                    format!(
                        "exists and is not a directory written by `lem model convert` \
                         (no {PROVENANCE_FILE}); not replacing it even with --force"
                    ),
                ))
            }
        }
    }
}

/// A hidden sibling to write into before renaming over `output`.
fn staging_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Moves `staged` to `output`, replacing what `check_output` allowed to be replaced.
fn commit(staged: &Path, output: &Path) -> Result<(), ConvertError> {
    if output.is_dir() {
        std::fs::remove_dir_all(output).map_err(io_err(output))?;
    }
    std::fs::rename(staged, output).map_err(io_err(output))
}

/// Runs `write` into a staging path, cleaning up on failure.
fn staged<T>(
    output: &Path,
    dir: bool,
    write: impl FnOnce(&Path) -> Result<T, ConvertError>,
) -> Result<T, ConvertError> {
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = staging_path(output);
    let cleanup = |tmp: &Path| {
        let _ = if dir {
            std::fs::remove_dir_all(tmp)
        } else {
            std::fs::remove_file(tmp)
        };
    };
    cleanup(&tmp);
    if dir {
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let result = write(&tmp).and_then(|v| commit(&tmp, output).map(|_| v));
    if result.is_err() {
        cleanup(&tmp);
    }
    result
}

fn write_json(path: &Path, v: &Json) -> Result<(), ConvertError> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    std::fs::write(path, text + "\n").map_err(io_err(path))
}

fn provenance(src: &Source, format: TargetFormat, dtype: TargetDtype) -> Json {
    json!({
        "lem_version": env!("CARGO_PKG_VERSION"),
        "created": chrono::Utc::now().to_rfc3339(),
        "source": src.provenance(),
        "target": { "format": format.name(), "dtype": dtype.name() },
        "qk_rows": "Hugging Face rotate-half order in safetensors, llama.cpp interleaved order in GGUF",
    })
}

fn write_safetensors_dir(
    src: &mut Source,
    output: &Path,
    dtype: TargetDtype,
) -> Result<ConvertReport, ConvertError> {
    let st_dtype = dtype.safetensors_dtype().expect("checked by convert");
    let tensors = src.params.expected_tensors();
    let weights = "model.safetensors";
    let mut notes = Vec::new();
    let (tok_json, tok_config) = match &src.weights {
        Weights::Gguf { content, .. } => {
            let (j, c) = tokenizer_files_from_gguf(&src.path, content, &src.params)?;
            (Some(j), Some(c))
        }
        Weights::Safetensors { .. } => (None, None),
    };
    let copied = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ];
    let weights_bytes = staged(output, true, |dir| {
        let path = dir.join(weights);
        let bytes = write_safetensors(src, &tensors, st_dtype, &path)?;
        let config = src.params.to_config_json(st_dtype);
        write_json(&dir.join("config.json"), &config)?;
        let gen = json!({
            "bos_token_id": src.params.bos_token_id,
            "eos_token_id": src.params.eos_token_id,
            "pad_token_id": src.params.pad_token_id,
        });
        write_json(&dir.join("generation_config.json"), &gen)?;
        match (&tok_json, &tok_config) {
            (Some(j), Some(c)) => {
                let p = dir.join("tokenizer.json");
                std::fs::write(&p, j).map_err(io_err(&p))?;
                write_json(&dir.join("tokenizer_config.json"), c)?;
            }
            _ => {
                for f in copied {
                    let from = src.path.join(f);
                    if from.is_file() {
                        let to = dir.join(f);
                        std::fs::copy(&from, &to).map_err(io_err(&to))?;
                    }
                }
                if !dir.join("tokenizer.json").is_file() {
                    notes.push(format!(
                        "{} has no tokenizer.json; none was written",
                        src.path.display()
                    ));
                }
            }
        }
        write_json(
            &dir.join(PROVENANCE_FILE),
            &provenance(src, TargetFormat::Safetensors, dtype),
        )?;
        Ok(bytes)
    })?;
    Ok(ConvertReport {
        output: output.to_path_buf(),
        format: TargetFormat::Safetensors,
        dtype,
        source_format: src.format(),
        source_dtypes: src.dtypes.clone(),
        output_dtypes: BTreeMap::from([(
            safetensors_dtype_name(st_dtype).to_string(),
            tensors.len(),
        )]),
        tensors: tensors.len(),
        weights_bytes,
        elapsed_s: 0.0,
        notes,
    })
}

/// Little-endian bytes of an f32 tensor cast to `dtype` (round to nearest even). Goes
/// through candle's (non-generic, optimised) GGUF float storage rather than
/// `Tensor::write_bytes`, whose per-element writer would be compiled into this crate
/// unoptimised in dev builds: ~8 s instead of ~1 s for SmolLM2 in the tests.
fn le_bytes(t: &Tensor, dtype: DType) -> candle_core::Result<Vec<u8>> {
    let ggml = match dtype {
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        _ => GgmlDType::F32,
    };
    Ok(QTensor::quantize(t, ggml)?.data()?.into_owned())
}

/// Streams tensors into one safetensors file: the header first (sizes are known from the
/// shapes), then each tensor read, converted and written in turn, so memory holds one
/// tensor at a time.
fn write_safetensors(
    src: &mut Source,
    tensors: &[(String, Vec<usize>)],
    dtype: DType,
    path: &Path,
) -> Result<u64, ConvertError> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * dtype.size_in_bytes();
        header.insert(
            name.clone(),
            json!({
                "dtype": safetensors_dtype_name(dtype),
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut header = serde_json::to_string(&Json::Object(header)).expect("JSON serialises");
    // The data starts 8-byte aligned, padded with spaces as the reference writer does.
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let file = File::create(path).map_err(io_err(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|_| w.write_all(header.as_bytes()))
        .map_err(io_err(path))?;
    for (name, _) in tensors {
        let bytes = le_bytes(&src.read(name)?, dtype)
            .map_err(|e| tensor_err(path, name, format!("casting: {e}")))?;
        w.write_all(&bytes).map_err(io_err(path))?;
    }
    w.flush().map_err(io_err(path))?;
    Ok(8 + header.len() as u64 + offset as u64)
}

/// GGUF storage type of one tensor: norms (1-D) stay f32 as in llama.cpp; a row length
/// that does not split into quantisation blocks falls back to f16.
fn gguf_tensor_dtype(shape: &[usize], target: GgmlDType) -> GgmlDType {
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

fn write_gguf_file(
    src: &mut Source,
    output: &Path,
    dtype: TargetDtype,
) -> Result<ConvertReport, ConvertError> {
    let target = dtype.ggml_dtype().expect("checked by convert");
    let mut metadata = src.params.gguf_metadata();
    let mut notes = Vec::new();
    match &src.weights {
        Weights::Gguf { content, .. } => {
            // Keep the tokenizer and descriptive keys; re-derive the shape and file type.
            // `general.alignment` goes too: candle's writer always aligns to 32 bytes.
            let mut keys: Vec<&String> = content.metadata.keys().collect();
            keys.sort();
            for k in keys {
                let derived = k.starts_with("llama.")
                    || k.starts_with(PROVENANCE_KEY_PREFIX)
                    || matches!(
                        k.as_str(),
                        "general.architecture"
                            | "general.file_type"
                            | "general.quantization_version"
                            | "general.alignment"
                    );
                if !derived {
                    metadata.push((k.clone(), content.metadata[k].clone()));
                }
            }
        }
        Weights::Safetensors { .. } => {
            let dir = src.path.clone();
            let tok_path = dir.join("tokenizer.json");
            if !tok_path.is_file() {
                return Err(invalid(
                    &dir,
                    "no tokenizer.json; a GGUF needs one to carry the tokenizer",
                ));
            }
            let tok = read_json(&tok_path)?;
            let tok_cfg = read_json_opt(&dir.join("tokenizer_config.json"))?;
            let jinja_path = dir.join("chat_template.jinja");
            let jinja = if jinja_path.is_file() {
                Some(std::fs::read_to_string(&jinja_path).map_err(io_err(&jinja_path))?)
            } else {
                None
            };
            metadata.extend(gguf_tokenizer_metadata(
                &tok,
                tok_cfg.as_ref(),
                jinja.as_deref(),
                &src.params,
                &tok_path,
            )?);
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            metadata.push(("general.name".into(), Value::String(name)));
        }
    }
    metadata.push((
        "general.file_type".into(),
        Value::U32(gguf_file_type(target)),
    ));
    metadata.push(("general.quantization_version".into(), Value::U32(2)));
    let prov = provenance(src, TargetFormat::Gguf, dtype);
    let p = |k: &str| format!("{PROVENANCE_KEY_PREFIX}{k}");
    let s = |v: &Json| Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_string));
    metadata.push((p("lem_version"), s(&prov["lem_version"])));
    metadata.push((p("created"), s(&prov["created"])));
    metadata.push((p("source"), s(&prov["source"]["path"])));
    metadata.push((p("source_format"), s(&prov["source"]["format"])));
    metadata.push((p("source_size_bytes"), s(&prov["source"]["size_bytes"])));
    metadata.push((p("source_modified"), s(&prov["source"]["modified"])));
    metadata.push((p("source_dtypes"), s(&prov["source"]["dtypes"])));
    metadata.push((p("target_dtype"), Value::String(dtype.name().into())));

    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    let mut output_dtypes = BTreeMap::new();
    for (hf, shape) in src.params.expected_tensors() {
        let gguf_name = hf_to_gguf_name(&hf).expect("expected tensors all map");
        let mut t = src.read(&hf)?;
        if let Some(n) = qk_heads(&hf, &src.params) {
            t = qk_hf_to_gguf(&t, n)
                .map_err(|e| tensor_err(&src.path, &hf, format!("permuting: {e}")))?;
        }
        let ty = gguf_tensor_dtype(&shape, target);
        if ty != target && shape.len() >= 2 {
            notes.push(format!(
                "{gguf_name}: rows of {} do not split into {} blocks; stored as F16",
                shape[shape.len() - 1],
                ggml_name(target)
            ));
        }
        let q = QTensor::quantize(&t, ty)
            .map_err(|e| tensor_err(&src.path, &hf, format!("quantising: {e}")))?;
        *output_dtypes.entry(ggml_name(ty).to_string()).or_insert(0) += 1;
        qtensors.push((gguf_name, q));
    }
    if target != GgmlDType::F32 {
        notes.push("norm weights (1-D) are stored as F32, as llama.cpp does".into());
    }
    let weights_bytes = staged(output, false, |tmp| {
        let file = File::create(tmp).map_err(io_err(tmp))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &md, &ts)
            .map_err(|e| invalid(output, format!("writing GGUF: {e}")))?;
        w.flush().map_err(io_err(tmp))?;
        Ok(std::fs::metadata(tmp).map_err(io_err(tmp))?.len())
    })?;
    Ok(ConvertReport {
        output: output.to_path_buf(),
        format: TargetFormat::Gguf,
        dtype,
        source_format: src.format(),
        source_dtypes: src.dtypes.clone(),
        output_dtypes,
        tensors: qtensors.len(),
        weights_bytes,
        elapsed_s: 0.0,
        notes,
    })
}

// ---------------------------------------------------------------------------------------
// Naming and inspection (for the CLI)

/// `name` without a trailing precision/format tag (`-f16`, `.Q4_1`, `-GGUF`), so converted
/// models are named after the model, not after what they were converted from.
pub fn strip_dtype_suffix(name: &str) -> &str {
    let Some(i) = name.rfind(['-', '.']).filter(|&i| i > 0) else {
        return name;
    };
    let tag = name[i + 1..].to_ascii_lowercase();
    // q4_1, q8_0, q4_k_m, ...
    let quant = tag.strip_prefix('q').is_some_and(|r| {
        r.starts_with(|c: char| c.is_ascii_digit())
            && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    let float = matches!(
        tag.as_str(),
        "f32" | "f16" | "bf16" | "fp32" | "fp16" | "gguf"
    );
    if quant || float {
        &name[..i]
    } else {
        name
    }
}

/// The `org/name` a converted model is named after: the repo id when `input` is one,
/// else the folder of the lem model dir or Hugging Face cache holding `resolved`, else
/// `local/<file or folder name>`. Any precision tag is stripped.
pub fn base_model_id(
    input: &str,
    resolved: &Path,
    lem_model_dir: &Path,
    hf_cache_dir: &Path,
) -> String {
    let input = input.trim();
    let without_selector = input.split_once(':').map_or(input, |(b, _)| b);
    let id = if !Path::new(input).exists() && crate::hub::is_repo_id(without_selector) {
        without_selector.to_string()
    } else {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let resolved = canon(resolved);
        let first_component = |root: &Path| {
            resolved
                .strip_prefix(canon(root))
                .ok()
                .and_then(|rel| rel.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
        };
        if let Some(folder) = first_component(lem_model_dir).filter(|f| f.contains("--")) {
            folder.replacen("--", "/", 1)
        } else if let Some(folder) = first_component(hf_cache_dir)
            .and_then(|f| f.strip_prefix("models--").map(str::to_string))
        {
            folder.replacen("--", "/", 1)
        } else {
            let stem = if resolved.is_file() {
                resolved.file_stem()
            } else {
                resolved.file_name()
            };
            format!(
                "local/{}",
                stem.map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            )
        }
    };
    let (org, name) = id.split_once('/').unwrap_or(("local", id.as_str()));
    format!("{org}/{}", strip_dtype_suffix(name))
}

/// Where a conversion goes by default, and the `model_name` that resolves to it:
/// safetensors into `<lem_model_dir>/<org>--<name>-<dtype>/` (`org/name-dtype`); GGUF
/// into `<lem_model_dir>/<org>--<name>-GGUF/<name>-<dtype>.gguf` (`org/name-GGUF:dtype`),
/// one folder for all precisions as GGUF repos on the hub do. A GGUF never goes beside
/// the original or into a safetensors folder: a second GGUF there would make the
/// original's name ambiguous, and a GGUF shadows safetensors in the same folder.
pub fn default_output(
    lem_model_dir: &Path,
    base_id: &str,
    format: TargetFormat,
    dtype: TargetDtype,
) -> (PathBuf, String) {
    let (org, name) = base_id.split_once('/').unwrap_or(("local", base_id));
    let tag = dtype.name();
    match format {
        TargetFormat::Safetensors => (
            lem_model_dir.join(format!("{org}--{name}-{tag}")),
            format!("{org}/{name}-{tag}"),
        ),
        TargetFormat::Gguf => (
            lem_model_dir
                .join(format!("{org}--{name}-GGUF"))
                .join(format!("{name}-{tag}.gguf")),
            format!("{org}/{name}-GGUF:{tag}"),
        ),
    }
}

/// What a stored model holds, for `lem models`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredInfo {
    /// Stored type (`Q4_1`, `F16`, ...) → tensor count.
    pub dtypes: BTreeMap<String, usize>,
    /// `torch_dtype` (or `dtype`) from config.json.
    pub torch_dtype: Option<String>,
    /// The source path, for models `lem model convert` wrote.
    pub converted_from: Option<String>,
}

/// Tensor types of a GGUF file or a safetensors directory, from headers only.
pub fn inspect_stored(format: &str, path: &Path) -> Result<StoredInfo, ConvertError> {
    let mut info = StoredInfo::default();
    if format == "gguf" {
        let mut r = BufReader::new(File::open(path).map_err(io_err(path))?);
        let c = Content::read(&mut r).map_err(|e| ConvertError::Gguf {
            path: path.to_path_buf(),
            source: Box::new(without_backtrace(e)),
        })?;
        for i in c.tensor_infos.values() {
            *info
                .dtypes
                .entry(ggml_name(i.ggml_dtype).to_string())
                .or_insert(0) += 1;
        }
        let key = format!("{PROVENANCE_KEY_PREFIX}source");
        info.converted_from = meta_str(&c, path, &key)?.map(str::to_string);
    } else {
        for f in safetensors_files(path)? {
            for e in read_safetensors_header(&f)?.tensors.into_values() {
                *info.dtypes.entry(e.dtype).or_insert(0) += 1;
            }
        }
        if let Some(cfg) = read_json_opt(&path.join("config.json"))? {
            info.torch_dtype = cfg
                .get("torch_dtype")
                .or_else(|| cfg.get("dtype"))
                .and_then(Json::as_str)
                .map(str::to_string);
        }
        if let Some(p) = read_json_opt(&path.join(PROVENANCE_FILE))? {
            info.converted_from = p["source"]["path"].as_str().map(str::to_string);
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> LlamaParams {
        LlamaParams {
            hidden_size: 8,
            intermediate_size: 16,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            vocab_size: 10,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            max_position_embeddings: Some(128),
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: None,
        }
    }

    #[test]
    fn names_map_both_ways_for_every_tensor() {
        let mut p = params();
        p.tie_word_embeddings = false;
        let tensors = p.expected_tensors();
        assert_eq!(tensors.len(), 1 + 2 * 9 + 2);
        for (hf, _) in &tensors {
            let g = hf_to_gguf_name(hf).unwrap_or_else(|| panic!("{hf} has no GGUF name"));
            assert_eq!(gguf_to_hf_name(&g).as_deref(), Some(hf.as_str()), "{g}");
        }
        assert_eq!(
            hf_to_gguf_name("model.layers.12.self_attn.q_proj.weight").as_deref(),
            Some("blk.12.attn_q.weight")
        );
        assert_eq!(
            gguf_to_hf_name("blk.3.ffn_down.weight").as_deref(),
            Some("model.layers.3.mlp.down_proj.weight")
        );
        assert_eq!(
            gguf_to_hf_name("output.weight").as_deref(),
            Some("lm_head.weight")
        );
        for bad in [
            "blk.01.attn_q.weight",
            "blk.x.attn_q.weight",
            "rope_freqs.weight",
        ] {
            assert_eq!(gguf_to_hf_name(bad), None, "{bad}");
        }
        assert_eq!(
            hf_to_gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
    }

    fn rows(t: &Tensor) -> Vec<f32> {
        // Column 0 holds each row's original index.
        t.narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn qk_permutation_matches_llama_cpp_and_round_trips() {
        // 2 heads of dim 8, 3 columns; value = row * 10 + col.
        let (heads, hd, cols) = (2usize, 8usize, 3usize);
        let data: Vec<f32> = (0..heads * hd * cols)
            .map(|i| ((i / cols) * 10 + i % cols) as f32)
            .collect();
        let hf = Tensor::from_vec(data, (heads * hd, cols), &Device::Cpu).unwrap();
        let g = qk_hf_to_gguf(&hf, heads).unwrap();
        // llama.cpp: reshape(n_head, 2, hd/2, cols).swapaxes(1, 2): GGUF row 2i+j of a head
        // is HF row j*hd/2+i, so the first head reads 0,4,1,5,2,6,3,7.
        let want: Vec<f32> = [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
            .iter()
            .map(|r| (r * 10) as f32)
            .collect();
        assert_eq!(rows(&g), want);
        let back = qk_gguf_to_hf(&g, heads).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            hf.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(qk_hf_to_gguf(&hf, 3).is_err(), "16 rows are not 3 heads");
    }

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

    #[test]
    fn dtypes_parse_and_fit_formats() {
        assert_eq!("F16".parse::<TargetDtype>(), Ok(TargetDtype::F16));
        assert_eq!("bfloat16".parse::<TargetDtype>(), Ok(TargetDtype::Bf16));
        assert!("q5_k".parse::<TargetDtype>().unwrap_err().contains("q4_0"));
        assert!(TargetDtype::Bf16.supported_by(TargetFormat::Safetensors));
        assert!(!TargetDtype::Bf16.supported_by(TargetFormat::Gguf));
        assert!(!TargetDtype::Q8_0.supported_by(TargetFormat::Safetensors));
        assert_eq!(
            TargetDtype::names_for(TargetFormat::Gguf),
            "f32|f16|q8_0|q4_0"
        );
        assert_eq!(gguf_tensor_dtype(&[576], GgmlDType::Q8_0), GgmlDType::F32);
        assert_eq!(
            gguf_tensor_dtype(&[4, 64], GgmlDType::Q4_0),
            GgmlDType::Q4_0
        );
        assert_eq!(gguf_tensor_dtype(&[4, 48], GgmlDType::Q4_0), GgmlDType::F16);
    }

    #[test]
    fn config_json_round_trips_and_refuses_what_lem_cannot_run() {
        let p = params();
        let cfg = p.to_config_json(DType::BF16);
        assert_eq!(cfg["torch_dtype"], "bfloat16");
        assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
        let back = LlamaParams::from_config_json(&cfg, Path::new("c.json")).unwrap();
        assert_eq!(back, p);
        let mut scaled = cfg.clone();
        scaled["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
        let e = LlamaParams::from_config_json(&scaled, Path::new("c.json")).unwrap_err();
        assert!(e.to_string().contains("c.json: `rope_scaling`"), "{e}");
        let mut other = cfg;
        other["architectures"] = json!(["GPT2LMHeadModel"]);
        other["model_type"] = json!("gpt2");
        let e = LlamaParams::from_config_json(&other, Path::new("c.json")).unwrap_err();
        assert!(e.to_string().contains("GPT2LMHeadModel"), "{e}");
        assert_eq!(tidy_f32(9.999999747378752e-06), 1e-5);
    }

    #[test]
    fn default_names_resolve_as_repo_ids() {
        assert_eq!(
            strip_dtype_suffix("SmolLM2-135M-Instruct-f16"),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(
            strip_dtype_suffix("SmolLM2-135M-Instruct.Q4_1"),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(
            strip_dtype_suffix("SmolLM2-135M-Instruct-q8_0"),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(strip_dtype_suffix("Llama-2-7B-GGUF"), "Llama-2-7B");
        assert_eq!(strip_dtype_suffix("Qwen2.5-0.5B"), "Qwen2.5-0.5B");
        assert_eq!(
            strip_dtype_suffix("SmolLM2-135M-Instruct"),
            "SmolLM2-135M-Instruct"
        );
        let lem = Path::new("/m");
        let (out, name) = default_output(
            lem,
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            TargetFormat::Safetensors,
            TargetDtype::F16,
        );
        assert_eq!(
            out,
            Path::new("/m/HuggingFaceTB--SmolLM2-135M-Instruct-f16")
        );
        assert_eq!(name, "HuggingFaceTB/SmolLM2-135M-Instruct-f16");
        let (out, name) = default_output(lem, "org/m", TargetFormat::Gguf, TargetDtype::Q8_0);
        assert_eq!(out, Path::new("/m/org--m-GGUF/m-q8_0.gguf"));
        assert_eq!(name, "org/m-GGUF:q8_0");
        let id = base_model_id(
            "HuggingFaceTB/SmolLM2-135M-Instruct-f32:Q4_1",
            Path::new("/nowhere"),
            lem,
            Path::new("/hf"),
        );
        assert_eq!(id, "HuggingFaceTB/SmolLM2-135M-Instruct");
    }

    #[test]
    fn base_id_from_paths_in_caches_and_elsewhere() {
        let tmp = tempfile::tempdir().unwrap();
        let lem = tmp.path().join("lem");
        let hf = tmp.path().join("hf");
        let g = lem.join("org--m/m.Q4_1.gguf");
        let s = hf.join("models--org--n/snapshots/abc");
        let other = tmp.path().join("work/tiny-f16");
        for d in [g.parent().unwrap(), s.as_path(), other.as_path()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&g, b"x").unwrap();
        let id = |p: &Path| base_model_id(p.to_str().unwrap(), p, &lem, &hf);
        assert_eq!(id(&g), "org/m");
        assert_eq!(id(&s), "org/n");
        assert_eq!(id(&other), "local/tiny");
    }

    #[test]
    fn tokenizer_metadata_from_a_bpe_tokenizer_json() {
        let tok = json!({
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "special": true},
                {"id": 4, "content": "<extra>", "special": false}
            ],
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false}]},
            "model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3},
                      "merges": [["a", "b"]]}
        });
        let mut p = params();
        p.vocab_size = 6;
        let cfg = json!({"chat_template": "{{ x }}"});
        let m = gguf_tokenizer_metadata(&tok, Some(&cfg), None, &p, Path::new("t.json")).unwrap();
        let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let strings = |v: Option<Value>| match v {
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => s,
                    Value::I32(i) => i.to_string(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            strings(get("tokenizer.ggml.tokens")),
            ["<|endoftext|>", "a", "b", "ab", "<extra>", "[PAD5]"]
        );
        assert_eq!(
            strings(get("tokenizer.ggml.token_type")),
            ["3", "1", "1", "1", "4", "5"]
        );
        assert_eq!(strings(get("tokenizer.ggml.merges")), ["a b"]);
        assert!(matches!(get("tokenizer.ggml.pre"), Some(Value::String(s)) if s == "smollm"));
        assert!(matches!(
            get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(false))
        ));
        assert!(matches!(get("tokenizer.chat_template"), Some(Value::String(s)) if s == "{{ x }}"));
        let mut wp = tok.clone();
        wp["model"]["type"] = json!("WordPiece");
        let e = gguf_tokenizer_metadata(&wp, None, None, &p, Path::new("t.json")).unwrap_err();
        assert!(e.to_string().contains("t.json: `model.type`"), "{e}");
    }
}
