//! Tensor names: GGUF (llama.cpp) ↔ Hugging Face, for the Llama layout.

use super::params::LlamaParams;

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
pub(crate) fn qk_heads(hf_name: &str, p: &LlamaParams) -> Option<usize> {
    if hf_name.ends_with(".self_attn.q_proj.weight") {
        Some(p.num_heads)
    } else if hf_name.ends_with(".self_attn.k_proj.weight") {
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
}
