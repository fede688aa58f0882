//! Speed figures for docs/engine.md (not a pass/fail test; timings depend on the machine):
//!
//! ```text
//! cargo test --release -p lem-agent --test engine_speed -- --ignored --nocapture
//! ```
//!
//! SmolLM2-135M-Instruct Q4_1, 2 threads: decode tok/s (batch 1 and 4), prefill tok/s,
//! TTFT; median of 3 runs after a warmup, with and without the Q8_0 re-quantisation.

use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};

#[path = "../../tests/support.rs"]
mod support;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fixed(n: u32) -> GenerationParams {
    GenerationParams {
        max_new_tokens: n,
        min_new_tokens: n,
        ..GenerationParams::default()
    }
}

fn measure(e: &mut Engine, label: &str) {
    let t = e.tokenizer();
    let chat = t
        .encode(&t.apply_chat_template("Tell me about the history of Paris."))
        .unwrap();
    let long_text =
        "The river flows through the old town, past the market and the bridge. ".repeat(14);
    let long = t.encode(&long_text).unwrap();
    e.generate(std::slice::from_ref(&chat), &fixed(8), &mut NoopObserver)
        .unwrap();

    let n = 64u32;
    let (mut decode, mut itl, mut ttft) = (vec![], vec![], vec![]);
    for _ in 0..3 {
        let out = e
            .generate(std::slice::from_ref(&chat), &fixed(n), &mut NoopObserver)
            .unwrap();
        let s = &out.sequences[0];
        decode.push((n - 1) as f64 / (out.decode_ns as f64 / 1e9));
        // Seen by a client: forward passes plus sampling and bookkeeping.
        itl.push((n - 1) as f64 / ((s.e2e_ns - s.ttft_ns) as f64 / 1e9));
        ttft.push(s.ttft_ns as f64 / 1e6);
    }
    let mut prefill = vec![];
    for _ in 0..3 {
        let out = e
            .generate(std::slice::from_ref(&long), &fixed(1), &mut NoopObserver)
            .unwrap();
        prefill.push(long.len() as f64 / (out.prefill_ns as f64 / 1e9));
    }
    let batch: Vec<Vec<u32>> = vec![chat.clone(); 4];
    let mut decode4 = vec![];
    for _ in 0..3 {
        let out = e.generate(&batch, &fixed(32), &mut NoopObserver).unwrap();
        decode4.push(4.0 * 31.0 / (out.decode_ns as f64 / 1e9));
    }
    println!(
        "{label}: decode b1 {:.1} tok/s (from ITL {:.1}) | decode b4 {:.1} tok/s | prefill ({} tokens) {:.0} tok/s | TTFT ({} tokens) {:.0} ms",
        median(decode),
        median(itl),
        median(decode4),
        long.len(),
        median(prefill),
        chat.len(),
        median(ttft)
    );
}

#[test]
#[ignore = "speed figures: run in release with --ignored --nocapture"]
fn smollm2_speed() {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    let path = support::smollm2_path();
    if !path.exists() {
        eprintln!("SKIPPED: SmolLM2 GGUF not found at {}", path.display());
        return;
    }
    for requant in [true, false] {
        let opts = LoadOptions {
            cpu_threads: Some(2),
            requantize_q4_1_to_q8_0: requant,
            ..LoadOptions::default()
        };
        let mut e = Engine::load_gguf(&path, None, &opts).unwrap();
        let label = format!(
            "{} (load {:.2} s)",
            e.info().weight_dtype,
            e.info().load_ns as f64 / 1e9
        );
        measure(&mut e, &label);
    }
}
