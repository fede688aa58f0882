//! Model hyper-parameters: one struct for every family lem runs or converts. GGUF
//! metadata reads and writes it in `gguf_params.rs`, config.json in `config_json.rs`.

/// Hyper-parameters of a Llama-family model, as GGUF (`llama.*`, `gemma3.*`) and
/// Hugging Face `config.json` express them: the one parameter struct the engine and the
/// converter share. Gemma 3's additions are in `gemma3`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    /// `llama`, `qwen2` or `gemma3` for GGUF; `llama`, `mistral` or `qwen2` for
    /// safetensors.
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
    /// The LM head is the embedding (GGUF: no `output.weight`).
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// The primary EOS id (the first, where config.json lists several).
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// Gemma 3's departures from Llama that the forward pass needs. The rest is fixed by the
/// architecture: embeddings scaled by sqrt(hidden), RMS norms on Q and K per head, norms
/// after attention and after the MLP, GELU (tanh) gating, half-split (NeoX) rotary. The
/// GGUF converter already folds Gemma's `1 + weight` into the norm weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Params {
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

impl LlamaParams {
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

impl LlamaParams {
    /// Qwen2 has biases on Q, K and V (and on nothing else).
    pub fn has_qkv_bias(&self) -> bool {
        self.architecture == "qwen2"
    }

    /// Whether a GGUF file of this architecture stores Q/K rows (and biases) in the
    /// interleaved rotary order: llama.cpp's converter permutes them for `llama` only;
    /// `qwen2` and `gemma3` keep the checkpoint's rotate-half order, which llama.cpp
    /// rotates as halves (NeoX).
    pub fn gguf_qk_interleaved(&self) -> bool {
        self.architecture == "llama"
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
            if self.has_qkv_bias() {
                for (name, len) in [
                    ("self_attn.q_proj.bias", q),
                    ("self_attn.k_proj.bias", kv),
                    ("self_attn.v_proj.bias", kv),
                ] {
                    out.push((format!("{p}{name}"), vec![len]));
                }
            }
        }
        out.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        out
    }
}

/// A two-layer Llama small enough to write out in a unit test.
#[cfg(test)]
pub(crate) fn tiny_llama_params() -> LlamaParams {
    LlamaParams {
        architecture: "llama".into(),
        hidden_size: 8,
        intermediate_size: 16,
        num_layers: 2,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 4,
        vocab_size: 10,
        rms_norm_eps: 1e-5,
        rope_theta: 1e4,
        context_length: Some(128),
        sliding_window: None,
        gemma3: None,
        tie_word_embeddings: true,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: None,
    }
}
