//! The forward pass against an independent implementation: SmolLM2's next-token logits
//! with f32 weights, compared with a numpy Llama forward pass over the same GGUF.
//!
//! candle's quantised matmuls also quantise the activations (Q8_0/Q8_1 blocks), which
//! moves logits by up to ~1; `CANDLE_DEQUANTIZE_ALL=1` makes `QMatMul` use dequantised f32
//! weights, so what remains to compare is the model code itself (embedding, RMS norm,
//! interleaved rotary, GQA, SwiGLU, tied LM head). Own test binary: the variable must be
//! set before the first `QMatMul` is built.

use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};

#[path = "../../tests/support.rs"]
mod support;
use support::model_path;

#[test]
fn f32_logits_match_numpy_reference() {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    let Some(path) = model_path() else { return };
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let opts = LoadOptions {
        cpu_threads: Some(2),
        requantize_q4_1_to_q8_0: false,
        ..LoadOptions::default()
    };
    let mut e = Engine::load_gguf(&path, None, &opts).unwrap();
    let prompt = e
        .tokenizer()
        .encode(
            &e.tokenizer()
                .apply_chat_template("What is the capital of France?"),
        )
        .unwrap();
    assert_eq!(prompt.len(), 37);
    let logits = e
        .next_token_logits(std::slice::from_ref(&prompt))
        .unwrap()
        .remove(0);

    // Printed by `scripts/reference/smollm2_logits.py` (numpy forward pass in float64 over
    // `gguf.quants.dequantize`d tensors of this file: interleaved rotary, theta 1e5, eps
    // 1e-5, tied embeddings; rerun with numpy 2.4.6 + gguf 0.19.0 on 2026-12-01, same
    // values). The neox rotation instead ranks <|im_end|> first, so the interleaved
    // convention is the right one.
    let want_top: [(usize, f64); 5] = [
        (504, 25.325383),
        (60, 25.243283),
        (15319, 24.942420),
        (2219, 24.401674),
        (7026, 24.314632),
    ];
    let want_first8: [f64; 8] = [
        10.166010, 6.212091, 6.837066, 6.255059, 5.384849, 4.910383, 2.386464, 4.922506,
    ];
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    for (rank, (id, value)) in want_top.iter().enumerate() {
        assert_eq!(order[rank], *id, "rank {rank}");
        assert!(
            (logits[*id] as f64 - value).abs() < 2e-3,
            "logit {id}: {} vs {value}",
            logits[*id]
        );
    }
    for (i, value) in want_first8.iter().enumerate() {
        assert!(
            (logits[i] as f64 - value).abs() < 2e-3,
            "logit {i}: {} vs {value}",
            logits[i]
        );
    }

    // And with f32 weights the literal question gets the expected answer.
    let params = GenerationParams {
        max_new_tokens: 12,
        ..GenerationParams::default()
    };
    let out = e.generate(&[prompt], &params, &mut NoopObserver).unwrap();
    assert_eq!(out.sequences[0].text, "The capital of France is Paris.");
}
