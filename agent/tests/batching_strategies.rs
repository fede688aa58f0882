//! Ragged batching under every batching strategy: with SmolLM2, each prompt's greedy
//! tokens are the same whether it runs alone or in the batches that `static`,
//! `sorted_static`, `dynamic` and `sorted_dynamic` form from prompts of different
//! lengths. Skips without the model, except under CI.

use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};
use lem_agent::runner::plan_batches;
use lem_common::config::{BatchingStrategy, ExperimentConfig};

#[path = "../../tests/support.rs"]
mod support;

#[test]
fn every_strategy_gives_each_prompt_its_solo_output() {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    let Some(path) = support::model_path() else {
        return;
    };
    let opts = LoadOptions {
        cpu_threads: Some(2),
        ..LoadOptions::default()
    };
    let mut engine = Engine::load_gguf(&path, None, &opts).expect("load SmolLM2");
    let questions = [
        "Name the capital of France.",
        "Hi",
        "Write one sentence about the sea, the wind and a small boat leaving the harbour at dawn.",
        "What is 2 + 2?",
        "List three colours.",
        "Why is the sky blue? Answer briefly.",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            let p = engine.tokenizer().apply_chat_template(q);
            engine.tokenizer().encode(&p).unwrap()
        })
        .collect();
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().min() < lengths.iter().max(),
        "prompts must differ in length: {lengths:?}"
    );
    let params = GenerationParams {
        max_new_tokens: 6,
        ..GenerationParams::default()
    };
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            engine
                .generate(std::slice::from_ref(p), &params, &mut NoopObserver)
                .unwrap()
                .sequences[0]
                .output_token_ids
                .clone()
        })
        .collect();

    // A token budget that splits the prompts into uneven dynamic batches.
    let budget = (lengths.iter().sum::<usize>() / 3) as u32;
    for strategy in [
        BatchingStrategy::Static,
        BatchingStrategy::SortedStatic,
        BatchingStrategy::Dynamic,
        BatchingStrategy::SortedDynamic,
    ] {
        let mut cfg = ExperimentConfig::default_for("t", "m");
        cfg.batching_options.batch_size = 3;
        cfg.batching_options.strategy = strategy;
        cfg.batching_options.max_tokens_per_batch = Some(budget);
        let batches = plan_batches(&cfg, &prompts);
        assert!(
            batches.iter().any(|b| b.len() > 1),
            "{strategy:?} formed no multi-prompt batch: {batches:?}"
        );
        let mut seen = vec![false; prompts.len()];
        for batch in &batches {
            let inputs: Vec<Vec<u32>> = batch.iter().map(|&i| prompts[i].clone()).collect();
            let out = engine
                .generate(&inputs, &params, &mut NoopObserver)
                .unwrap();
            for (seq, &i) in out.sequences.iter().zip(batch) {
                assert_eq!(
                    seq.output_token_ids, solo[i],
                    "{strategy:?}: prompt {i} ({} tokens) in batch {batch:?} differs from its solo run",
                    lengths[i]
                );
                assert_eq!(seq.input_tokens as usize, lengths[i], "no padding counted");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "{strategy:?}: every prompt ran");
    }
}
