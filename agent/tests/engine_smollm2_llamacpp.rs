//! SmolLM2-135M-Instruct (Q4_1 GGUF) against llama.cpp on the same file:
//! `scripts/reference/smollm2_llamacpp.py` wrote `tests/fixtures/smollm2_llamacpp.json`
//! (llama-cpp-python, CPU, f32 KV cache): prompt token ids, top-10 next-token logits and
//! 16 greedy tokens with llama.cpp's lead at each step. lem loads the weights as stored
//! (Q4_1, no re-quantisation to Q8_0) so both engines multiply the same blocks.

use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::path::Path;

#[path = "../../tests/support.rs"]
mod support;
use support::model_path;

/// Largest |lem − llama.cpp| on llama.cpp's top-10 logits (docs/models.md says why).
const TOP_LOGIT_TOLERANCE: f64 = 0.5;
/// Greedy steps llama.cpp decided by less than this may go either way: lem's and
/// llama.cpp's logits differ by up to ~0.3 here, so a lead below 2 × that is a close call.
const DECIDED_LEAD: f64 = 0.6;

fn fixture() -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

fn engine() -> Option<Engine> {
    lem_agent::threads::init(Some(2));
    let path = model_path()?;
    let opts = LoadOptions {
        cpu_threads: Some(2),
        requantize_q4_1_to_q8_0: false,
        ..LoadOptions::default()
    };
    Some(Engine::load_gguf(&path, None, &opts).unwrap())
}

#[test]
fn smollm2_matches_llamacpp() {
    let Some(mut e) = engine() else { return };
    let fx = fixture();
    // The file llama.cpp ran.
    let bytes = std::fs::read(model_path().unwrap()).unwrap();
    let sha = format!("{:x}", Sha256::digest(&bytes));
    assert_eq!(
        sha,
        fx["model_sha256"].as_str().unwrap(),
        "model file differs from the fixture's"
    );
    let prompts = fx["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3);
    let mut decided_steps = 0;
    for p in prompts {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["token_ids"]);
        // Tokenisation: lem's ids for the text equal llama.cpp's.
        assert_eq!(
            e.tokenizer().encode(p["text"].as_str().unwrap()).unwrap(),
            prompt,
            "{name}: token ids"
        );
        let logits = e
            .next_token_logits(std::slice::from_ref(&prompt))
            .unwrap()
            .remove(0);
        let mut worst: f64 = 0.0;
        for pair in p["top_logits"].as_array().unwrap() {
            let (id, want) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap(),
            );
            worst = worst.max((logits[id] as f64 - want).abs());
        }
        let lem_argmax = (0..logits.len())
            .max_by(|a, b| logits[*a].total_cmp(&logits[*b]))
            .unwrap();
        eprintln!(
            "{name}: max |lem - llama.cpp| over llama.cpp's top 10 = {worst:.4}; lem's argmax {lem_argmax}"
        );
        assert!(
            worst <= TOP_LOGIT_TOLERANCE,
            "{name}: {worst} > {TOP_LOGIT_TOLERANCE}"
        );

        // Greedy through lem's decode path, equal up to llama.cpp's first close call.
        let want = ids(&p["greedy"]);
        let margins: Vec<f64> = p["greedy_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        // lem stops at EOS; llama.cpp's list runs on past it.
        let eos = e.info().eos_token_ids.clone();
        let until_eos = want
            .iter()
            .position(|t| eos.contains(t))
            .map_or(want.len(), |p| p + 1);
        let decided = margins
            .iter()
            .position(|m| *m < DECIDED_LEAD)
            .unwrap_or(margins.len())
            .min(until_eos);
        let params = GenerationParams {
            max_new_tokens: until_eos as u32,
            ..GenerationParams::default()
        };
        let out = e
            .generate(std::slice::from_ref(&prompt), &params, &mut NoopObserver)
            .unwrap();
        let got = &out.sequences[0].output_token_ids;
        eprintln!("{name}: lem {got:?}\n{name}: llama.cpp {want:?} (decided for {decided})");
        assert_eq!(got[..decided], want[..decided], "{name}: greedy tokens");

        // Teacher-forced, every step llama.cpp decided: after the prompt and llama.cpp's
        // first s tokens, lem's argmax is llama.cpp's token s (one ragged batch).
        let steps: Vec<usize> = (0..until_eos)
            .filter(|s| margins[*s] >= DECIDED_LEAD)
            .collect();
        let prefixes: Vec<Vec<u32>> = steps
            .iter()
            .map(|s| [&prompt[..], &want[..*s]].concat())
            .collect();
        let rows = e.next_token_logits(&prefixes).unwrap();
        for (s, row) in steps.iter().zip(&rows) {
            let argmax = (0..row.len())
                .max_by(|a, b| row[*a].total_cmp(&row[*b]))
                .unwrap() as u32;
            assert_eq!(argmax, want[*s], "{name}: teacher-forced step {s}");
        }
        eprintln!("{name}: {} teacher-forced steps equal", steps.len());
        decided_steps += steps.len();
    }
    assert!(
        decided_steps >= 16,
        "only {decided_steps} decided steps checked"
    );
}
