//! Hugging Face model directories: `config.json` plus `model.safetensors` or shards listed
//! by `model.safetensors.index.json`. Llama, Mistral and Qwen2 checkpoints become the same
//! `ModelWeights` the GGUF path produces, in the requested float precision or quantised
//! on load.
//!
//! HF checkpoints rotate the halves of each head (dimension i pairs with i + head_dim/2);
//! the forward pass rotates adjacent pairs, the layout llama.cpp's converter produces by
//! reordering Q/K rows. The same reordering is applied here at load (`to_interleaved`),
//! so both formats share one forward pass.

use super::error::EngineError;
use super::gguf::{ggml_name, LlamaConfig};
use super::model::{LayerWeights, ModelWeights};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Precision of the weights and of their matmuls (norms, softmax, attention and the KV
/// cache stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatPrecision {
    #[default]
    F32,
    F16,
    BF16,
}

impl FloatPrecision {
    fn ggml(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::BF16 => GgmlDType::BF16,
        }
    }

    /// `f32`, `f16`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }
}

/// Quantisation of a safetensors model's decoder-layer linear weights at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadQuantization {
    /// 8-bit blocks of 32 with an f16 scale (candle/ggml `Q8_0`).
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale (`Q4_0`). Chosen over `Q4_K` because K-quants
    /// need rows that are multiples of 256 (SmolLM2's 576 is not); Q4_0 has an AVX2 kernel.
    Q4_0,
}

impl LoadQuantization {
    fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
        }
    }
}

/// The architectures this loader accepts (`architectures[0]` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HfArch {
    Llama,
    Mistral,
    Qwen2,
}

impl HfArch {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Self::Llama),
            "MistralForCausalLM" => Some(Self::Mistral),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// The short name `TransformerShape::architecture` uses.
    fn short(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// What config.json (and its sibling files) say about the model.
#[derive(Debug, Clone)]
pub(crate) struct HfConfig {
    pub config_path: PathBuf,
    pub cfg: LlamaConfig,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub rope_freq_factors: Option<Vec<f32>>,
    /// `eos_token_id` of config.json and generation_config.json.
    pub eos_token_ids: Vec<u32>,
    /// `eos_token` of tokenizer_config.json.
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
}

/// Typed access to a JSON object with errors naming the file and field.
struct Json<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl<'a> Json<'a> {
    fn err(&self, field: &str, reason: impl Into<String>) -> EngineError {
        EngineError::Config {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// None when absent or null.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.v.get(field).filter(|v| !v.is_null())
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= u32::MAX as u64 => Ok(Some(n as usize)),
                _ => Err(self.err(field, format!("{v} is not a plausible size"))),
            },
        }
    }

    fn usize(&self, field: &str) -> Result<usize, EngineError> {
        self.opt_usize(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.err(field, format!("{v} is not a number"))),
            },
        }
    }

    fn f64(&self, field: &str) -> Result<f64, EngineError> {
        self.opt_f64(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(field, format!("{v} is not a boolean"))),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&'a str>, EngineError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.err(field, format!("{v} is not a string"))),
        }
    }

    /// An id or a list of ids (`eos_token_id` takes both forms).
    fn ids(&self, field: &str) -> Result<Vec<u32>, EngineError> {
        let one = |v: &Value| {
            v.as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| self.err(field, format!("{v} is not a token id")))
        };
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

fn read_json(path: &Path) -> Result<Value, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| EngineError::Config {
        path: path.to_path_buf(),
        field: "(file)".into(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// A sibling JSON file that may be absent (generation_config.json, tokenizer_config.json).
fn read_optional_json(path: &Path) -> Result<Option<Value>, EngineError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

impl HfConfig {
    pub(crate) fn read(dir: &Path) -> Result<Self, EngineError> {
        let config_path = dir.join("config.json");
        let root = read_json(&config_path)?;
        let j = Json {
            path: &config_path,
            v: &root,
        };
        let arch_name = match j.get("architectures") {
            Some(Value::Array(a)) if !a.is_empty() => a[0]
                .as_str()
                .ok_or_else(|| j.err("architectures", "not a list of strings"))?
                .to_string(),
            Some(_) => return Err(j.err("architectures", "not a non-empty list")),
            None => return Err(j.err("architectures", "missing")),
        };
        let arch = HfArch::from_name(&arch_name).ok_or_else(|| {
            EngineError::UnsupportedHfArchitecture {
                path: config_path.clone(),
                architecture: arch_name.clone(),
            }
        })?;
        if let Some(act) = j.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(j.err(
                    "hidden_act",
                    format!("`{act}` is not supported (silu only)"),
                ));
            }
        }
        if j.opt_bool("mlp_bias")? == Some(true) {
            return Err(j.err("mlp_bias", "MLP biases are not supported"));
        }

        let hidden_size = j.usize("hidden_size")?;
        let num_heads = j.usize("num_attention_heads")?;
        let num_kv_heads = j.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads % num_kv_heads != 0 {
            return Err(j.err(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
            ));
        }
        let head_dim = match j.opt_usize("head_dim")? {
            Some(n) => n,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(j.err(
                        "num_attention_heads",
                        format!("{num_heads} does not divide hidden_size {hidden_size}"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(j.err("head_dim", format!("{head_dim} is odd; rotary needs pairs")));
        }
        if let Some(f) = j.opt_f64("partial_rotary_factor")? {
            if f != 1.0 {
                return Err(j.err("partial_rotary_factor", "partial rotary is not supported"));
            }
        }
        let rope_theta = j.opt_f64("rope_theta")?.unwrap_or(10_000.0);
        let rope_freq_factors = rope_scaling_factors(&j, head_dim, rope_theta)?;
        let sliding_window = match arch {
            HfArch::Llama => None,
            HfArch::Mistral => j.opt_usize("sliding_window")?,
            // Qwen2 lists a window but uses it only when `use_sliding_window` is true.
            HfArch::Qwen2 => {
                if j.opt_bool("use_sliding_window")?.unwrap_or(false) {
                    j.opt_usize("sliding_window")?
                } else {
                    None
                }
            }
        };
        let attention_bias = j.opt_bool("attention_bias")?.unwrap_or(false);
        let cfg = LlamaConfig {
            architecture: arch.short().into(),
            hidden_size,
            intermediate_size: j.usize("intermediate_size")?,
            num_layers: j.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: j.usize("vocab_size")?,
            rms_norm_eps: j.f64("rms_norm_eps")?,
            rope_theta,
            context_length: j.opt_usize("max_position_embeddings")?.map(|n| n as u64),
            sliding_window,
            gemma3: None,
        };

        let mut eos_token_ids = j.ids("eos_token_id")?;
        let gen_path = dir.join("generation_config.json");
        if let Some(gen) = read_optional_json(&gen_path)? {
            let g = Json {
                path: &gen_path,
                v: &gen,
            };
            for id in g.ids("eos_token_id")? {
                if !eos_token_ids.contains(&id) {
                    eos_token_ids.push(id);
                }
            }
        }
        let tc_path = dir.join("tokenizer_config.json");
        let (eos_token, chat_template) = match read_optional_json(&tc_path)? {
            None => (None, None),
            Some(tc) => {
                let t = Json {
                    path: &tc_path,
                    v: &tc,
                };
                // `eos_token` is a string or an AddedToken object with `content`.
                let eos = match t.get("eos_token") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(v) => v.get("content").and_then(Value::as_str).map(str::to_string),
                    None => None,
                };
                (eos, t.opt_str("chat_template")?.map(str::to_string))
            }
        };

        // Llama, Mistral and Qwen2 configs all default to untied heads.
        let tie_word_embeddings = j.opt_bool("tie_word_embeddings")?.unwrap_or(false);
        Ok(Self {
            config_path: config_path.clone(),
            cfg,
            tie_word_embeddings,
            qkv_bias: arch == HfArch::Qwen2 || attention_bias,
            o_bias: arch != HfArch::Qwen2 && attention_bias,
            rope_freq_factors,
            eos_token_ids,
            eos_token,
            chat_template,
        })
    }
}

/// Divisors of the default rotary frequencies for `rope_scaling`: none for the default
/// rope, a constant for `linear`, the Llama 3.1 wavelength-dependent blend for `llama3`.
fn rope_scaling_factors(
    j: &Json,
    head_dim: usize,
    theta: f64,
) -> Result<Option<Vec<f32>>, EngineError> {
    let Some(rs) = j.get("rope_scaling") else {
        return Ok(None);
    };
    let s = Json {
        path: j.path,
        v: rs,
    };
    let field = |f: &str| format!("rope_scaling.{f}");
    let kind = match (s.opt_str("rope_type")?, s.opt_str("type")?) {
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => return Err(j.err(&field("rope_type"), "missing")),
    };
    let half = head_dim / 2;
    let inv_freq = |i: usize| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
    let number = |f: &str| -> Result<f64, EngineError> {
        s.opt_f64(f)?.ok_or_else(|| j.err(&field(f), "missing"))
    };
    match kind {
        "default" => Ok(None),
        "linear" => {
            let factor = number("factor")?;
            Ok(Some(vec![factor as f32; half]))
        }
        "llama3" => {
            let factor = number("factor")?;
            let low = number("low_freq_factor")?;
            let high = number("high_freq_factor")?;
            let old_ctx = number("original_max_position_embeddings")?;
            if high <= low {
                return Err(j.err(
                    &field("high_freq_factor"),
                    format!("{high} must exceed low_freq_factor {low}"),
                ));
            }
            let low_wavelen = old_ctx / low;
            let high_wavelen = old_ctx / high;
            let factors = (0..half)
                .map(|i| {
                    let f = inv_freq(i);
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    (f / scaled) as f32
                })
                .collect();
            Ok(Some(factors))
        }
        other => Err(j.err(
            &field("rope_type"),
            format!("`{other}` is not supported (default, linear, llama3)"),
        )),
    }
}

/// The safetensors files of a model directory, memory-mapped for the duration of the load.
pub(crate) struct SafetensorsSet {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// Tensor name → index into `files`.
    routing: HashMap<String, usize>,
    /// The file that lists the tensors (index or single file), named when one is missing.
    listing: PathBuf,
}

impl SafetensorsSet {
    pub(crate) fn open(dir: &Path) -> Result<Self, EngineError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let (listing, paths) = if single.is_file() {
            (single.clone(), vec![single])
        } else if index.is_file() {
            let root = read_json(&index)?;
            let map = root
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| EngineError::Config {
                    path: index.clone(),
                    field: "weight_map".into(),
                    reason: "missing or not an object".into(),
                })?;
            let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
            names.sort_unstable();
            names.dedup();
            let paths = names.iter().map(|n| dir.join(n)).collect();
            (index.clone(), paths)
        } else {
            return Err(EngineError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor model.safetensors.index.json is in the directory",
                ),
            });
        };
        let mut files = Vec::with_capacity(paths.len());
        let mut routing = HashMap::new();
        for (i, p) in paths.into_iter().enumerate() {
            if !p.is_file() {
                return Err(EngineError::Io {
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
                unsafe { MmapedSafetensors::new(&p) }.map_err(|e| EngineError::Safetensors {
                    path: p.clone(),
                    source: Box::new(super::error::without_backtrace(e)),
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
    pub(crate) fn tensor(&self, name: &str, dims: &[usize]) -> Result<Tensor, EngineError> {
        let Some(&i) = self.routing.get(name) else {
            return Err(EngineError::MissingTensor {
                path: self.listing.clone(),
                name: name.to_string(),
            });
        };
        let (path, st) = &self.files[i];
        let bad = |reason: String| EngineError::BadTensor {
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

/// HF's rotate-half layout → adjacent pairs: within each head, row `j * hd/2 + i` moves to
/// `2i + j`. Works on (heads * hd, in) matrices and (heads * hd) biases.
pub(crate) fn to_interleaved(t: &Tensor, heads: usize, hd: usize) -> candle_core::Result<Tensor> {
    let cols = t.elem_count() / (heads * hd);
    t.reshape((heads, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(t.shape())
}

/// What loading did to the weights, for `EngineInfo`.
#[derive(Debug, Clone)]
pub(crate) struct SafetensorsReport {
    /// Stored dtype → count, over the linear (matmul) weights.
    stored: BTreeMap<String, usize>,
    precision: FloatPrecision,
    quantization: Option<LoadQuantization>,
}

impl SafetensorsReport {
    fn stored(&self) -> String {
        let parts: Vec<String> = self.stored.keys().cloned().collect();
        parts.join("+")
    }

    /// e.g. `BF16`, `F16 (converted on load from BF16)`,
    /// `Q8_0 (quantised on load from BF16); embeddings and LM head F32`.
    pub(crate) fn weight_dtype(&self) -> String {
        let stored = self.stored();
        let float = ggml_name(self.precision.ggml());
        match self.quantization {
            Some(q) => format!(
                "{} (quantised on load from {stored}); embeddings and LM head {float}",
                ggml_name(q.ggml())
            ),
            None if stored == float => float.to_string(),
            None => format!("{float} (converted on load from {stored})"),
        }
    }

    /// e.g. `bf16 matmuls (f32 accumulation), f32 norms/softmax/attention/KV cache`.
    pub(crate) fn compute_dtype(&self) -> String {
        let p = self.precision.name();
        let rest = "f32 norms/softmax/attention/KV cache";
        match (self.quantization, self.precision) {
            (None, FloatPrecision::F32) => "f32".into(),
            (None, _) => format!("{p} matmuls (f32 accumulation), {rest}"),
            (Some(q), _) => format!(
                "{} linear matmuls (activations quantised to 8 bits), {p} LM head, {rest}",
                ggml_name(q.ggml())
            ),
        }
    }
}

/// Reads every weight the forward pass needs, converting matrices to `precision` (or
/// quantising the decoder layers' linear weights) and Q/K to the interleaved layout.
pub(crate) fn load_weights(
    st: &SafetensorsSet,
    hf: &HfConfig,
    precision: FloatPrecision,
    quantization: Option<LoadQuantization>,
) -> Result<(ModelWeights, SafetensorsReport), EngineError> {
    let cfg = &hf.cfg;
    let (h, hd, ffn) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (nh, nkv) = (cfg.num_heads, cfg.num_kv_heads);
    let mut report = SafetensorsReport {
        stored: BTreeMap::new(),
        precision,
        quantization,
    };
    let bad = |name: &str, what: &str, e: candle_core::Error| EngineError::BadTensor {
        path: hf.config_path.clone(),
        name: name.to_string(),
        reason: format!("{what}: {}", super::error::without_backtrace(e)),
    };

    // A linear weight, optionally re-ordered for interleaved rotary (Some(heads)).
    let mut matrix = |name: &str,
                      dims: [usize; 2],
                      rope_heads: Option<usize>,
                      quantize: bool|
     -> Result<QTensor, EngineError> {
        let t = st.tensor(name, &dims)?;
        *report
            .stored
            .entry(format!("{:?}", t.dtype()).to_uppercase())
            .or_default() += 1;
        let t = match rope_heads {
            Some(heads) => to_interleaved(&t, heads, hd).map_err(|e| bad(name, "reordering", e))?,
            None => t,
        };
        let target = match quantization {
            Some(q) if quantize => {
                let block = q.ggml().block_size();
                if !dims[1].is_multiple_of(block) {
                    return Err(EngineError::BadTensor {
                        path: hf.config_path.clone(),
                        name: name.to_string(),
                        reason: format!(
                            "cannot quantise to {}: {} columns are not a multiple of its block size {block}",
                            ggml_name(q.ggml()),
                            dims[1]
                        ),
                    });
                }
                q.ggml()
            }
            _ => precision.ggml(),
        };
        QTensor::quantize(&t, target).map_err(|e| bad(name, "converting", e))
    };
    let vector = |name: &str,
                  len: usize,
                  rope_heads: Option<usize>|
     -> Result<Tensor, EngineError> {
        let t = st.tensor(name, &[len])?;
        let t = match rope_heads {
            Some(heads) => to_interleaved(&t, heads, hd).map_err(|e| bad(name, "reordering", e))?,
            None => t,
        };
        t.to_dtype(DType::F32).map_err(|e| bad(name, "widening", e))
    };

    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        let qkv_bias = if hf.qkv_bias {
            let parts = [
                vector(&n("self_attn.q_proj.bias"), nh * hd, Some(nh))?,
                vector(&n("self_attn.k_proj.bias"), nkv * hd, Some(nkv))?,
                vector(&n("self_attn.v_proj.bias"), nkv * hd, None)?,
            ];
            Some(Tensor::cat(&parts, 0).map_err(|e| bad(&n("self_attn"), "biases", e))?)
        } else {
            None
        };
        let o_bias = if hf.o_bias {
            Some(vector(&n("self_attn.o_proj.bias"), h, None)?)
        } else {
            None
        };
        layers.push(LayerWeights {
            attn_norm: vector(&n("input_layernorm.weight"), h, None)?,
            q: matrix(&n("self_attn.q_proj.weight"), [nh * hd, h], Some(nh), true)?,
            k: matrix(
                &n("self_attn.k_proj.weight"),
                [nkv * hd, h],
                Some(nkv),
                true,
            )?,
            v: matrix(&n("self_attn.v_proj.weight"), [nkv * hd, h], None, true)?,
            qkv_bias,
            o: matrix(&n("self_attn.o_proj.weight"), [h, nh * hd], None, true)?,
            o_bias,
            ffn_norm: vector(&n("post_attention_layernorm.weight"), h, None)?,
            gate: matrix(&n("mlp.gate_proj.weight"), [ffn, h], None, true)?,
            up: matrix(&n("mlp.up_proj.weight"), [ffn, h], None, true)?,
            down: matrix(&n("mlp.down_proj.weight"), [h, ffn], None, true)?,
            gemma: None,
        });
    }
    let norm = vector("model.norm.weight", h, None)?;
    // As bitsandbytes does, the embedding and LM head stay in the float precision.
    let embed = Arc::new(matrix(
        "model.embed_tokens.weight",
        [cfg.vocab_size, h],
        None,
        false,
    )?);
    let output = if hf.tie_word_embeddings || !st.has("lm_head.weight") {
        if !hf.tie_word_embeddings {
            // Without the flag HF would fail; name what is missing.
            return Err(EngineError::MissingTensor {
                path: st.listing.clone(),
                name: "lm_head.weight (tie_word_embeddings is false)".into(),
            });
        }
        None
    } else {
        Some(matrix("lm_head.weight", [cfg.vocab_size, h], None, false)?)
    };
    Ok((
        ModelWeights {
            embed,
            layers,
            norm,
            output,
            rope_freq_factors: hf.rope_freq_factors.clone(),
        },
        report,
    ))
}
