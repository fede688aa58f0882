//! Gemma 3 270M (Q4_K_M GGUF) against llama.cpp on the same file: token ids, next-token
//! logits and greedy continuations, compared with `tests/fixtures/gemma3_llamacpp.json`,
//! which `scripts/reference/gemma3_llamacpp.py` writes with llama-cpp-python.
//!
//! Skips with a printed reason when the model is absent (fetch it with
//! `scripts/fetch-gemma3.sh`); fails instead when `CI` is set.

use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};
use serde::Deserialize;
use std::sync::{Mutex, OnceLock};

#[path = "../../tests/support.rs"]
mod support;

/// Largest |lem − llama.cpp| allowed on a next-token logit. Both quantise activations to
/// 8 bits for the quantised matmuls and differ in rounding elsewhere: llama.cpp's GELU
/// reads an f16 table, its rotary angles are built by repeated f32 products, reductions
/// (RMS norm, softmax, dot products) run in other orders. Those differences, amplified
/// through 18 layers, were measured at most ~0.05 on logits of magnitude up to ~30
/// (docs/models.md); 0.25 leaves room for other CPUs' kernels while still catching any
/// wrong operation (a missing norm or a wrong rotary base moves logits by whole units).
const LOGIT_TOLERANCE: f32 = 0.25;

#[derive(Deserialize)]
struct Fixture {
    model_file: String,
    eog_token_ids: Vec<u32>,
    greedy_tokens: u32,
    prompts: Vec<Prompt>,
}

#[derive(Deserialize)]
struct Prompt {
    name: String,
    text: String,
    chat_user: Option<String>,
    token_ids: Vec<u32>,
    /// (token id, llama.cpp's logit), best first.
    top_logits: Vec<(u32, f32)>,
    /// Argmax tokens, EOS not stopping them.
    greedy: Vec<u32>,
}

fn fixture() -> Fixture {
    let path = support::repo_root().join("agent/tests/fixtures/gemma3_llamacpp.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One engine for the whole binary (loading takes seconds; tests run in parallel).
fn engine() -> Option<&'static Mutex<Engine>> {
    static ENGINE: OnceLock<Option<Mutex<Engine>>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let path = support::gemma3_path()?;
            let f = fixture();
            assert_eq!(
                path.file_name().and_then(|n| n.to_str()),
                Some(f.model_file.as_str()),
                "the fixture was made from another file"
            );
            let opts = LoadOptions {
                cpu_threads: Some(2),
                ..LoadOptions::default()
            };
            Some(Mutex::new(Engine::load_gguf(&path, None, &opts).unwrap()))
        })
        .as_ref()
}

fn lock(e: &Mutex<Engine>) -> std::sync::MutexGuard<'_, Engine> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn loads_as_gemma3_with_its_weight_types() {
    let Some(e) = engine() else { return };
    let e = lock(e);
    let info = e.info();
    assert_eq!(info.shape.architecture, "gemma3");
    assert_eq!(info.shape.num_layers, 18);
    assert_eq!(info.shape.head_dim, 256);
    // The file's matmul weights are mixed K-quants and legacy quants, kept as stored.
    for t in ["Q4_K", "Q6_K", "Q5_0", "Q8_0"] {
        assert!(info.weight_dtype.contains(t), "{}", info.weight_dtype);
    }
    assert_eq!(info.tokenizer_source, "gguf-metadata");
    // EOS and <end_of_turn>, llama.cpp's end-of-generation tokens for this file.
    let mut eos = info.eos_token_ids.clone();
    eos.sort();
    assert_eq!(eos, fixture().eog_token_ids);
}

#[test]
fn token_ids_equal_llamacpp() {
    let Some(e) = engine() else { return };
    let e = lock(e);
    for p in fixture().prompts {
        let ids = e.tokenizer().encode(&p.text).unwrap();
        assert_eq!(ids, p.token_ids, "prompt `{}`", p.name);
        if let Some(user) = &p.chat_user {
            assert_eq!(e.tokenizer().apply_chat_template(user), p.text);
        }
    }
}

#[test]
fn next_token_logits_match_llamacpp() {
    let Some(e) = engine() else { return };
    let mut e = lock(e);
    let mut failures = Vec::new();
    for p in fixture().prompts {
        let logits = e
            .next_token_logits(std::slice::from_ref(&p.token_ids))
            .unwrap()
            .remove(0);
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        if best as u32 != p.top_logits[0].0 {
            failures.push(format!(
                "prompt `{}`: argmax {best}, llama.cpp {}",
                p.name, p.top_logits[0].0
            ));
        }
        let mut worst = 0f32;
        for &(id, want) in &p.top_logits {
            let got = logits[id as usize];
            worst = worst.max((got - want).abs());
            if (got - want).abs() > LOGIT_TOLERANCE {
                failures.push(format!(
                    "prompt `{}`: logit of {id} is {got}, llama.cpp {want}",
                    p.name
                ));
            }
        }
        eprintln!("prompt `{}`: largest logit difference {worst}", p.name);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Short prompts run as one left-padded batch (exercising the per-row paths); a long one
/// alone, so the batch is not padded to its length (which would multiply the prefill).
const LONG_PROMPT_TOKENS: usize = 64;

#[test]
fn greedy_continuations_equal_llamacpp_short_ones_in_a_ragged_batch() {
    let Some(e) = engine() else { return };
    let mut e = lock(e);
    let f = fixture();
    let params = GenerationParams {
        max_new_tokens: f.greedy_tokens,
        ..GenerationParams::default()
    };
    let (short, long): (Vec<&Prompt>, Vec<&Prompt>) = f
        .prompts
        .iter()
        .partition(|p| p.token_ids.len() <= LONG_PROMPT_TOKENS);
    assert!(short.len() > 1 && !long.is_empty(), "the fixture needs both kinds");
    let mut groups: Vec<Vec<&Prompt>> = vec![short];
    groups.extend(long.into_iter().map(|p| vec![p]));
    for group in groups {
        let ids: Vec<Vec<u32>> = group.iter().map(|p| p.token_ids.clone()).collect();
        let out = e.generate(&ids, &params, &mut NoopObserver).unwrap();
        for (p, seq) in group.iter().zip(&out.sequences) {
            // lem stops at an end-of-generation token (keeping it); llama.cpp's list goes on.
            let stop = p
                .greedy
                .iter()
                .position(|t| f.eog_token_ids.contains(t))
                .map_or(p.greedy.len(), |i| i + 1);
            assert_eq!(seq.output_token_ids, p.greedy[..stop], "prompt `{}`", p.name);
        }
    }
}
