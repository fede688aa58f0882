//! Analytic FLOPs of a Llama-style decoder-only transformer. Pure.
//!
//! A multiply-add counts as 2 FLOPs. Counted: the Q/K/V/O projections, the MLP, the
//! attention scores (QKᵀ) and the attention-weighted values (AV) at the real causal
//! context of every token, and the LM head. Omitted (each well under 1% for real shapes):
//! RMSNorm, rotary embeddings, softmax, the SwiGLU activation, residual adds, the
//! embedding lookup, and any padding an engine computes. Formulas and the reasoning are in
//! docs/flops.md; everything here is a closed form, not a loop over tokens. Sliding-window
//! layers (Gemma 3) count at most `window` keys per token.
//!
//! Values are `f64`: counts are exact integers up to 2^53 (≈ 9e15), beyond which the
//! relative error stays ~1e-16.

use crate::domain::{FlopsBreakdown, RequestRecord, TransformerShape};

/// Per-token FLOPs of one layer's matrix multiplications that do not depend on context
/// (Q, K, V, O projections and the MLP).
fn layer_linear_flops(s: &TransformerShape) -> f64 {
    let h = s.hidden_size as f64;
    let q_width = (s.num_attention_heads * s.head_dim) as f64;
    let kv_width = (s.num_kv_heads * s.head_dim) as f64;
    let mlp_mats = if s.gated_mlp { 3.0 } else { 2.0 };
    2.0 * h * q_width // Q
        + 2.0 * 2.0 * h * kv_width // K and V
        + 2.0 * q_width * h // O
        + mlp_mats * 2.0 * h * s.intermediate_size as f64
}

/// FLOPs per attended key per token per layer: QKᵀ (2·n_heads·d) plus AV (2·n_heads·d).
fn attention_flops_per_key(s: &TransformerShape) -> f64 {
    4.0 * (s.num_attention_heads * s.head_dim) as f64
}

/// FLOPs of the LM head for one position.
fn lm_head_flops(s: &TransformerShape) -> f64 {
    2.0 * s.hidden_size as f64 * s.vocab_size as f64
}

/// Weights a token's forward pass multiplies by: all layer matrices plus the LM head
/// (embedding lookup and norms excluded). 2 × this is the FLOPs of one token at zero
/// context, the usual "2 · params" rule of thumb.
pub fn matmul_params(s: &TransformerShape) -> f64 {
    (s.num_layers as f64 * layer_linear_flops(s) + lm_head_flops(s)) / 2.0
}

/// Σ_{j=1}^{n} min(j, window): the keys attended by tokens that see j = 1..=n keys
/// before a window caps them.
fn capped_key_sum(n: f64, window: f64) -> f64 {
    if n <= window {
        n * (n + 1.0) / 2.0
    } else {
        window * (window + 1.0) / 2.0 + (n - window) * window
    }
}

/// Keys attended over all layers by tokens that would see `from + 1 ..= to` keys without
/// a window: global layers see them all, sliding-window layers at most `window` each.
fn keys_over_layers(shape: &TransformerShape, from: f64, to: f64) -> f64 {
    let layers = shape.num_layers as f64;
    let all = to * (to + 1.0) / 2.0 - from * (from + 1.0) / 2.0;
    match shape.sliding_window {
        None => layers * all,
        Some(sw) => {
            let local = sw.layers.min(shape.num_layers) as f64;
            let w = sw.window as f64;
            (layers - local) * all + local * (capped_key_sum(to, w) - capped_key_sum(from, w))
        }
    }
}

/// FLOPs of processing a prompt of `prompt_len` tokens in one forward pass, with causal
/// attention (token t, 0-based, attends to t + 1 keys), and the LM head at the last
/// position only (the logits that give the first output token). 0 for an empty prompt.
pub fn prefill_flops(shape: &TransformerShape, prompt_len: u64) -> f64 {
    if prompt_len == 0 {
        return 0.0;
    }
    let p = prompt_len as f64;
    let layers = shape.num_layers as f64;
    if shape.sliding_window.is_some() {
        return layers * p * layer_linear_flops(shape)
            + attention_flops_per_key(shape) * keys_over_layers(shape, 0.0, p)
            + lm_head_flops(shape);
    }
    // Σ_{t=0}^{p-1} (t + 1) keys attended.
    let keys = p * (p + 1.0) / 2.0;
    layers * (p * layer_linear_flops(shape) + attention_flops_per_key(shape) * keys)
        + lm_head_flops(shape)
}

/// FLOPs of one decode step: one new token with `kv_len_before` entries already in the
/// KV cache, so it attends to `kv_len_before + 1` keys (itself included); LM head once.
pub fn decode_step_flops(shape: &TransformerShape, kv_len_before: u64) -> f64 {
    let layers = shape.num_layers as f64;
    if shape.sliding_window.is_some() {
        let kv = kv_len_before as f64;
        return layers * layer_linear_flops(shape)
            + attention_flops_per_key(shape) * keys_over_layers(shape, kv, kv + 1.0)
            + lm_head_flops(shape);
    }
    let keys = kv_len_before as f64 + 1.0;
    layers * (layer_linear_flops(shape) + attention_flops_per_key(shape) * keys)
        + lm_head_flops(shape)
}

/// FLOPs of one request with a KV cache, at its real lengths.
///
/// `output_tokens` counts every generated token, including the first, which comes from
/// the prefill's logits. So there are `output_tokens - 1` decode steps; step s (1-based)
/// feeds output token s and starts with `input_tokens + s - 1` cached entries. A request
/// with `output_tokens == 0` still counts its prefill (the prompt was processed).
pub fn request_flops(
    shape: &TransformerShape,
    input_tokens: u64,
    output_tokens: u64,
) -> FlopsBreakdown {
    let prefill_flops = prefill_flops(shape, input_tokens);
    let steps = output_tokens.saturating_sub(1) as f64;
    if steps == 0.0 {
        return FlopsBreakdown {
            prefill_flops,
            decode_flops: 0.0,
        };
    }
    let layers = shape.num_layers as f64;
    let p = input_tokens as f64;
    if shape.sliding_window.is_some() {
        let decode_flops = steps * (layers * layer_linear_flops(shape) + lm_head_flops(shape))
            + attention_flops_per_key(shape) * keys_over_layers(shape, p, p + steps);
        return FlopsBreakdown {
            prefill_flops,
            decode_flops,
        };
    }
    // Σ_{s=1}^{steps} (p + s) keys attended.
    let keys = steps * p + steps * (steps + 1.0) / 2.0;
    let decode_flops = steps * (layers * layer_linear_flops(shape) + lm_head_flops(shape))
        + layers * attention_flops_per_key(shape) * keys;
    FlopsBreakdown {
        prefill_flops,
        decode_flops,
    }
}

/// Sum of `request_flops` over a job's requests (each sequence at its own length; padding
/// in a batch is not counted).
pub fn job_flops(shape: &TransformerShape, requests: &[RequestRecord]) -> FlopsBreakdown {
    requests.iter().fold(FlopsBreakdown::default(), |acc, r| {
        let f = request_flops(shape, r.input_tokens as u64, r.output_tokens as u64);
        FlopsBreakdown {
            prefill_flops: acc.prefill_flops + f.prefill_flops,
            decode_flops: acc.decode_flops + f.decode_flops,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StopReason;
    use proptest::prelude::*;

    fn tiny(gated_mlp: bool) -> TransformerShape {
        TransformerShape {
            architecture: "llama".into(),
            hidden_size: 4,
            intermediate_size: 8,
            num_layers: 1,
            num_attention_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
            vocab_size: 10,
            gated_mlp,
            sliding_window: None,
        }
    }

    fn smollm2_135m() -> TransformerShape {
        TransformerShape {
            architecture: "llama".into(),
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_attention_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            gated_mlp: true,
            sliding_window: None,
        }
    }

    // Tiny shape by hand: h=4, i=8, 1 layer, 2 heads, 1 kv head, d=2, vocab 10.
    //   Q 2·4·(2·2)=32, K 2·4·(1·2)=16, V 16, O 2·4·4=32, MLP 3·(2·4·8)=192 → 288/token
    //   attention per key: QKᵀ 2·2·2=8 + AV 8 = 16;  LM head 2·4·10 = 80
    //   prefill, prompt 3: 3·288 + 16·(1+2+3) + 80 = 864 + 96 + 80 = 1040
    //   output 2 → 1 decode step, kv 3 before, 4 keys: 288 + 16·4 + 80 = 432
    #[test]
    fn tiny_shape_by_hand() {
        let s = tiny(true);
        assert_eq!(prefill_flops(&s, 3), 1040.0);
        assert_eq!(decode_step_flops(&s, 3), 432.0);
        let r = request_flops(&s, 3, 2);
        assert_eq!(r.prefill_flops, 1040.0);
        assert_eq!(r.decode_flops, 432.0);
        assert_eq!(r.total(), 1472.0);
        assert_eq!(matmul_params(&s), (288.0 + 80.0) / 2.0);
    }

    // Two-matrix MLP: 2·(2·4·8) = 128 → 224/token; prefill 3·224 + 96 + 80 = 848;
    // output 3 → steps with 4 and 5 keys: (224+64+80) + (224+80+80) = 752.
    #[test]
    fn tiny_shape_ungated_by_hand() {
        let s = tiny(false);
        assert_eq!(prefill_flops(&s, 3), 848.0);
        let r = request_flops(&s, 3, 3);
        assert_eq!(r.decode_flops, 752.0);
    }

    #[test]
    fn edge_lengths() {
        let s = tiny(true);
        // No output: the prompt was still processed.
        assert_eq!(request_flops(&s, 3, 0), request_flops(&s, 3, 1));
        assert_eq!(request_flops(&s, 3, 1).decode_flops, 0.0);
        assert_eq!(prefill_flops(&s, 0), 0.0);
        // One-token prompt: 288 + 16 + 80.
        assert_eq!(prefill_flops(&s, 1), 384.0);
        assert_eq!(decode_step_flops(&s, 0), 384.0);
    }

    #[test]
    fn smollm2_matches_two_times_params_at_short_context() {
        let s = smollm2_135m();
        // Per layer: q 576², k,v 576·192 each, o 576², MLP 3·576·1536 = 3,538,944 params;
        // × 30 = 106,168,320; LM head (tied embedding) 576·49152 = 28,311,552.
        let layer_params = 106_168_320.0;
        let head_params = 28_311_552.0;
        assert_eq!(matmul_params(&s), layer_params + head_params);
        // One token at zero context: 2·params + attention over 1 key (4·9·64·30 = 69,120).
        assert_eq!(decode_step_flops(&s, 0), 2.0 * 134_479_872.0 + 69_120.0);
        // Short decode: 8 steps over 9..=16 keys (mean 12.5), within 0.5% of 2·params.
        let r = request_flops(&s, 8, 9);
        let per_step = r.decode_flops / 8.0;
        assert_eq!(per_step, 2.0 * 134_479_872.0 + 69_120.0 * 12.5);
        let rel = per_step / (2.0 * matmul_params(&s)) - 1.0;
        assert!(rel > 0.0 && rel < 5e-3, "{rel}");
        // Short prefill: LM head once, so per token ≈ 2·layer params.
        let per_prompt_token = prefill_flops(&s, 16) / 16.0;
        let rel = per_prompt_token / (2.0 * layer_params) - 1.0;
        assert!(rel > 0.0 && rel < 0.03, "{rel}");
    }

    #[test]
    fn attention_grows_quadratically_with_prompt() {
        let s = smollm2_135m();
        // Prefill(2p) - 2·Prefill(p) = attention cross terms minus one LM head:
        // L·4·nh·d·(p(2p+1) - p(p+1)) - 2hV = 69,120·p² - 2hV.
        let p = 1000u64;
        let diff = prefill_flops(&s, 2 * p) - 2.0 * prefill_flops(&s, p);
        assert_eq!(diff, 69_120.0 * (p * p) as f64 - 2.0 * 576.0 * 49152.0);
    }

    #[test]
    fn job_sums_requests() {
        let s = tiny(true);
        let rec = |input_tokens, output_tokens| RequestRecord {
            index: 0,
            input_tokens,
            output_tokens,
            ttft_ns: 0,
            itl_ns: vec![],
            e2e_ns: 0,
            stop_reason: StopReason::MaxTokens,
            output_text: None,
            arrival_offset_ns: None,
            start_offset_ns: None,
            finish_offset_ns: None,
        };
        let j = job_flops(&s, &[rec(3, 2), rec(1, 1)]);
        assert_eq!(j.prefill_flops, 1040.0 + 384.0);
        assert_eq!(j.decode_flops, 432.0);
        assert_eq!(job_flops(&s, &[]), FlopsBreakdown::default());
    }

    // Window 2 on one of two layers of the tiny shape (per layer: 288 linear, 16/key).
    //   prompt 4: linear 2·4·288 = 2304; global layer keys 1+2+3+4 = 10, windowed layer
    //   1+2+2+2 = 7 → 16·17 = 272; LM head 80 → 2656.
    //   decode step with 4 cached: 2·288 + 16·(5 + 2) + 80 = 768.
    #[test]
    fn sliding_window_caps_keys_by_hand() {
        let mut s = tiny(true);
        s.num_layers = 2;
        s.sliding_window = Some(crate::domain::SlidingWindow {
            window: 2,
            layers: 1,
        });
        assert_eq!(prefill_flops(&s, 4), 2656.0);
        assert_eq!(decode_step_flops(&s, 4), 768.0);
        // Output 3 → steps with 4 and 5 cached: 768 + (576 + 16·(6 + 2) + 80).
        assert_eq!(request_flops(&s, 4, 3).decode_flops, 768.0 + 784.0);
        // A window wider than the context changes nothing.
        let mut wide = s.clone();
        wide.sliding_window = Some(crate::domain::SlidingWindow {
            window: 100,
            layers: 1,
        });
        let mut none = s.clone();
        none.sliding_window = None;
        assert_eq!(request_flops(&wide, 4, 3), request_flops(&none, 4, 3));
    }

    proptest! {
        // With a window, the closed forms equal per-token sums of min(keys, window).
        #[test]
        fn windowed_closed_forms_equal_loops(
            layers in 1u64..8, local in 0u64..8, window in 1u64..20,
            prompt in 0u64..40, output in 0u64..40,
        ) {
            let mut s = tiny(true);
            s.num_layers = layers;
            s.sliding_window = Some(crate::domain::SlidingWindow { window, layers: local });
            let local = local.min(layers);
            let lin = layer_linear_flops(&s);
            let per_key = attention_flops_per_key(&s);
            let token = |keys: u64| {
                layers as f64 * lin
                    + per_key * ((layers - local) * keys + local * keys.min(window)) as f64
            };
            let mut prefill: f64 = (0..prompt).map(|t| token(t + 1)).sum();
            if prompt > 0 {
                prefill += lm_head_flops(&s);
            }
            let decode: f64 = (1..output)
                .map(|step| token(prompt + step) + lm_head_flops(&s))
                .sum();
            let r = request_flops(&s, prompt, output);
            prop_assert_eq!(prefill_flops(&s, prompt), prefill);
            prop_assert_eq!(r.prefill_flops, prefill);
            prop_assert_eq!(r.decode_flops, decode);
        }

        // The closed forms equal the token-by-token sums they replace.
        #[test]
        fn closed_forms_equal_loops(
            h in 1u64..64, i in 1u64..128, layers in 1u64..4, heads in 1u64..8,
            kv_div in 1u64..4, d in 1u64..16, vocab in 1u64..200, gated: bool,
            prompt in 0u64..40, output in 0u64..40,
        ) {
            let s = TransformerShape {
                architecture: "llama".into(), hidden_size: h, intermediate_size: i,
                num_layers: layers, num_attention_heads: heads,
                num_kv_heads: heads.div_ceil(kv_div), head_dim: d, vocab_size: vocab,
                gated_mlp: gated,
            sliding_window: None,
            };
            let lin = layer_linear_flops(&s);
            let per_key = attention_flops_per_key(&s);
            let mut prefill = 0.0;
            for t in 0..prompt {
                prefill += layers as f64 * (lin + per_key * (t + 1) as f64);
            }
            if prompt > 0 {
                prefill += lm_head_flops(&s);
            }
            let mut decode = 0.0;
            for step in 1..output {
                decode += decode_step_flops(&s, prompt + step - 1);
            }
            let r = request_flops(&s, prompt, output);
            prop_assert_eq!(prefill_flops(&s, prompt), prefill);
            prop_assert_eq!(r.prefill_flops, prefill);
            prop_assert_eq!(r.decode_flops, decode);
        }
    }
}
