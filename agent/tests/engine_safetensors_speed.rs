//! Speed and answers of the safetensors path at each precision and quantisation on the
//! real SmolLM2-135M-Instruct (the Q4_1 GGUF converted to F32 safetensors by
//! `lem_agent::convert`, so all variants start from the same values), beside the GGUF
//! default (Q8_0 requantised). Speeds are printed, not checked (the machine is shared).
//! Checked: the float precisions answer "Paris". SmolLM2's first token is a near tie
//! between "The" and "L" (French answer), < 0.3 logits apart in every variant; the Q8_0
//! variants, GGUF's included, pick "L", so they are printed, not checked.
//!
//! ```text
//! cargo test --release -p lem-agent --test engine_safetensors_speed -- --ignored --nocapture
//! ```

use lem_agent::convert::{self, TargetDtype, TargetFormat};
use lem_agent::engine::{
    Engine, FloatPrecision, GenerationParams, LoadOptions, LoadQuantization, NoopObserver,
};
use std::time::Instant;

#[path = "../../tests/support.rs"]
mod support;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "speed figures for docs/engine.md; run with --release --ignored --nocapture"]
fn safetensors_precisions_answer_and_their_speed() {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    let Some(source) = support::model_path() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("st-f32");
    convert::convert(
        &source,
        TargetFormat::Safetensors,
        TargetDtype::F32,
        &dir,
        false,
    )
    .expect("convert to safetensors");
    let variants = [
        ("gguf q8_0", FloatPrecision::F32, None),
        ("f32", FloatPrecision::F32, None),
        ("f16", FloatPrecision::F16, None),
        ("bf16", FloatPrecision::BF16, None),
        (
            "q8_0 (f32 head)",
            FloatPrecision::F32,
            Some(LoadQuantization::Q8_0),
        ),
        (
            "q8_0 (f16 head)",
            FloatPrecision::F16,
            Some(LoadQuantization::Q8_0),
        ),
        (
            "q4_0 (f16 head)",
            FloatPrecision::F16,
            Some(LoadQuantization::Q4_0),
        ),
    ];
    for (label, precision, quantization) in variants {
        let opts = LoadOptions {
            cpu_threads: Some(2),
            precision,
            quantization,
            ..LoadOptions::default()
        };
        let t0 = Instant::now();
        let mut e = if label == "gguf q8_0" {
            Engine::load_gguf(&source, None, &opts).expect("load gguf")
        } else {
            Engine::load_safetensors(&dir, None, &opts).expect("load")
        };
        let load_s = t0.elapsed().as_secs_f64();
        let t = e.tokenizer();
        let prompt = t
            .encode(&t.apply_chat_template("What is the capital of France?"))
            .unwrap();
        let greedy = GenerationParams {
            max_new_tokens: 16,
            ..GenerationParams::default()
        };
        let answer = e
            .generate(std::slice::from_ref(&prompt), &greedy, &mut NoopObserver)
            .unwrap()
            .sequences
            .remove(0)
            .text;
        let logits = e
            .next_token_logits(std::slice::from_ref(&prompt))
            .unwrap()
            .remove(0);
        let mut top: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let first: Vec<String> = top[..3]
            .iter()
            .map(|(id, l)| {
                format!(
                    "{:?} {l:.3}",
                    e.tokenizer().id_to_token(*id as u32).unwrap_or_default()
                )
            })
            .collect();
        eprintln!("{label}: first-token top 3 {first:?}");
        if quantization.is_none() && label != "gguf q8_0" {
            assert!(answer.contains("Paris"), "{label}: {answer:?}");
        }
        let fixed = GenerationParams {
            max_new_tokens: 64,
            min_new_tokens: 64,
            ..GenerationParams::default()
        };
        let mut decode = Vec::new();
        let mut prefill = Vec::new();
        for _ in 0..3 {
            let out = e
                .generate(std::slice::from_ref(&prompt), &fixed, &mut NoopObserver)
                .unwrap();
            decode.push(63.0 / (out.decode_ns as f64 / 1e9));
            prefill.push(prompt.len() as f64 / (out.prefill_ns as f64 / 1e9));
        }
        eprintln!(
            "{label:>16}: decode b=1 {:6.1} tok/s, prefill {:6.1} tok/s ({} tokens), load {load_s:.2} s | {} | {} | {answer:?}",
            median(decode),
            median(prefill),
            prompt.len(),
            e.info().weight_dtype,
            e.info().compute_dtype,
        );
    }
}
