//! Gemma 3 270M (Q4_K_M GGUF) against llama.cpp on the same file.

use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};

#[path = "../../tests/support.rs"]
mod support;

#[test]
fn smoke() {
    let Some(path) = support::gemma3_path() else { return };
    let opts = LoadOptions {
        cpu_threads: Some(2),
        ..LoadOptions::default()
    };
    let mut e = Engine::load_gguf(&path, None, &opts).unwrap();
    eprintln!("{:?}", e.info());
    for text in ["The capital of France is", &e.tokenizer().apply_chat_template("What is the capital of France?")] {
        let ids = e.tokenizer().encode(text).unwrap();
        eprintln!("{text:?} -> {ids:?}");
        let lg = e.next_token_logits(std::slice::from_ref(&ids)).unwrap().remove(0);
        let mut order: Vec<usize> = (0..lg.len()).collect();
        order.sort_by(|&a, &b| lg[b].total_cmp(&lg[a]));
        eprintln!("{:?}", order[..8].iter().map(|&i| (i, lg[i])).collect::<Vec<_>>());
        let params = GenerationParams { max_new_tokens: 16, ..GenerationParams::default() };
        let out = e.generate(&[ids], &params, &mut NoopObserver).unwrap();
        eprintln!("{:?} {:?}", out.sequences[0].output_token_ids, out.sequences[0].text);
    }
}
