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
use super::model::{LayerWeights, ModelWeights};
use crate::model::config_json::HfConfig;
use crate::model::ggml_name;
use crate::model::rope_permute::to_interleaved;
use crate::model::safetensors::SafetensorsSet;
use crate::model::ModelError;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;
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
    let bad = |name: &str, what: &str, e: candle_core::Error| {
        EngineError::from(ModelError::BadTensor {
            path: hf.config_path.clone(),
            name: name.to_string(),
            reason: format!("{what}: {}", super::error::without_backtrace(e)),
        })
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
            Some(heads) => to_interleaved(&t, heads).map_err(|e| bad(name, "reordering", e))?,
            None => t,
        };
        let target = match quantization {
            Some(q) if quantize => {
                let block = q.ggml().block_size();
                if !dims[1].is_multiple_of(block) {
                    return Err(EngineError::from(ModelError::BadTensor {
                        path: hf.config_path.clone(),
                        name: name.to_string(),
                        reason: format!(
                            "cannot quantise to {}: {} columns are not a multiple of its block size {block}",
                            ggml_name(q.ggml()),
                            dims[1]
                        ),
                    }));
                }
                q.ggml()
            }
            _ => precision.ggml(),
        };
        QTensor::quantize(&t, target).map_err(|e| bad(name, "converting", e))
    };
    let vector =
        |name: &str, len: usize, rope_heads: Option<usize>| -> Result<Tensor, EngineError> {
            let t = st.tensor(name, &[len])?;
            let t = match rope_heads {
                Some(heads) => to_interleaved(&t, heads).map_err(|e| bad(name, "reordering", e))?,
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
    let output = if hf.cfg.tie_word_embeddings || !st.has("lm_head.weight") {
        if !hf.cfg.tie_word_embeddings {
            // Without the flag HF would fail; name what is missing.
            return Err(EngineError::from(ModelError::MissingTensor {
                path: st.listing().to_path_buf(),
                name: "lm_head.weight (tie_word_embeddings is false)".into(),
            }));
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
            // Q/K rows were reordered to adjacent pairs above.
            rotary_half_split: false,
        },
        report,
    ))
}
