//! `LlamaParams` ↔ GGUF metadata (`llama.*`, `qwen2.*`, `gemma3.*`, the tokenizer's
//! special ids).

use super::error::ModelError;
use super::gguf::GgufFile;
use super::params::{Gemma3Params, LlamaParams};
use candle_core::quantized::gguf_file::Value;

/// The `general.architecture` values lem runs (and its converter reads and writes,
/// `gemma3` excepted).
pub const GGUF_ARCHITECTURES: [&str; 3] = ["llama", "qwen2", "gemma3"];

impl LlamaParams {
    /// From a GGUF file's metadata (`llama`, `qwen2` or `gemma3`).
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let arch = g.str("general.architecture")?;
        if !GGUF_ARCHITECTURES.contains(&arch) {
            return Err(ModelError::UnsupportedArchitecture {
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
                    return Err(ModelError::MissingTensor {
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
            tie_word_embeddings: !g.has_tensor("output.weight"),
            bos_token_id: token_id(g, "tokenizer.ggml.bos_token_id")?,
            eos_token_id: token_id(g, "tokenizer.ggml.eos_token_id")?,
            pad_token_id: token_id(g, "tokenizer.ggml.padding_token_id")?,
        })
    }
}

fn token_id(g: &GgufFile, key: &str) -> Result<Option<u32>, ModelError> {
    g.opt_u64(key)?
        .map(|n| u32::try_from(n).map_err(|_| g.bad_key(key, format!("{n} is not a token id"))))
        .transpose()
}

/// Gemma 3's keys beyond the Llama ones; refuses what the forward pass does not do.
fn gemma3_params(g: &GgufFile, num_layers: usize) -> Result<Gemma3Params, ModelError> {
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

impl LlamaParams {
    /// `general.architecture` and the shape keys under its prefix (`llama.*` or
    /// `qwen2.*`: the same names).
    pub(crate) fn gguf_metadata(&self) -> Vec<(String, Value)> {
        let u = |n: usize| Value::U32(n as u32);
        let arch = self.architecture.as_str();
        let k = |name: &str| format!("{arch}.{name}");
        let mut m = vec![
            (
                "general.architecture".to_string(),
                Value::String(arch.into()),
            ),
            (k("block_count"), u(self.num_layers)),
            (k("embedding_length"), u(self.hidden_size)),
            (k("feed_forward_length"), u(self.intermediate_size)),
            (k("attention.head_count"), u(self.num_heads)),
            (k("attention.head_count_kv"), u(self.num_kv_heads)),
            (k("rope.dimension_count"), u(self.head_dim)),
            (k("rope.freq_base"), Value::F32(self.rope_theta as f32)),
            (
                k("attention.layer_norm_rms_epsilon"),
                Value::F32(self.rms_norm_eps as f32),
            ),
            (k("vocab_size"), u(self.vocab_size)),
        ];
        if self.head_dim * self.num_heads != self.hidden_size {
            m.push((k("attention.key_length"), u(self.head_dim)));
            m.push((k("attention.value_length"), u(self.head_dim)));
        }
        if let Some(n) = self.context_length {
            m.push((k("context_length"), Value::U32(n as u32)));
        }
        m
    }
}
