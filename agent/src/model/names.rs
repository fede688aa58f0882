//! Tensor names: GGUF (llama.cpp) ↔ Hugging Face, for the Llama layout (Qwen2's Q/K/V
//! biases included).

use super::params::LlamaParams;

/// Per-layer tensors: GGUF suffix after `blk.N.`, Hugging Face suffix after
/// `model.layers.N.`.
const LAYER_NAMES: [(&str, &str); 12] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
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

/// Which rotary permutation a tensor needs between Hugging Face and GGUF order:
/// `Some(heads)` for Q (attention heads) and K (KV heads), weights and biases, by Hugging
/// Face name, in an architecture whose GGUF files interleave them (`llama`); None for
/// every other tensor and architecture.
pub(crate) fn qk_heads(hf_name: &str, p: &LlamaParams) -> Option<usize> {
    if !p.gguf_qk_interleaved() {
        return None;
    }
    if hf_name.ends_with(".self_attn.q_proj.weight") || hf_name.ends_with(".self_attn.q_proj.bias")
    {
        Some(p.num_heads)
    } else if hf_name.ends_with(".self_attn.k_proj.weight")
        || hf_name.ends_with(".self_attn.k_proj.bias")
    {
        Some(p.num_kv_heads)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_for_every_tensor() {
        let mut p = crate::model::params::tiny_llama_params();
        p.tie_word_embeddings = false;
        p.architecture = "qwen2".into();
        let tensors = p.expected_tensors();
        // Per layer: 9 matrices and norms, 3 biases (Qwen2).
        assert_eq!(tensors.len(), 1 + 2 * (9 + 3) + 2);
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
        assert_eq!(
            hf_to_gguf_name("model.layers.1.self_attn.k_proj.bias").as_deref(),
            Some("blk.1.attn_k.bias")
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

    #[test]
    fn only_llama_gguf_files_permute_q_and_k() {
        let mut p = crate::model::params::tiny_llama_params();
        let q = "model.layers.0.self_attn.q_proj.weight";
        let kb = "model.layers.1.self_attn.k_proj.bias";
        let v = "model.layers.0.self_attn.v_proj.weight";
        assert_eq!(qk_heads(q, &p), Some(p.num_heads));
        assert_eq!(qk_heads(kb, &p), Some(p.num_kv_heads));
        assert_eq!(qk_heads(v, &p), None);
        // llama.cpp's Qwen2 files keep the checkpoint's rotate-half rows.
        p.architecture = "qwen2".into();
        assert_eq!(qk_heads(q, &p), None);
        assert_eq!(qk_heads(kb, &p), None);
    }
}
