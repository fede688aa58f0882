//! Real inference with SmolLM2-135M-Instruct (Q4_1 GGUF): tokenizer against an
//! independent implementation, greedy answers, determinism, batching, sampling, stops.
//!
//! The model comes from `LEM_TEST_MODEL` or the lem model cache
//! (`scripts/fetch-model.sh`, which the test support runs when the model is absent; a
//! failed fetch fails the tests with the command to run).

use lem_agent::engine::{Engine, GenerationObserver, GenerationParams, LoadOptions, NoopObserver};
use lem_common::domain::StopReason;
use std::sync::{Mutex, MutexGuard, OnceLock};

#[path = "../../tests/support.rs"]
mod support;
use support::model_path;

/// One engine for the whole file: loading takes a second and tests share 2 cores.
fn engine() -> Option<MutexGuard<'static, Engine>> {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    static ENGINE: OnceLock<Option<Mutex<Engine>>> = OnceLock::new();
    let e = ENGINE.get_or_init(|| {
        let path = model_path()?;
        let opts = LoadOptions {
            cpu_threads: Some(2),
            ..LoadOptions::default()
        };
        Some(Mutex::new(
            Engine::load_gguf(&path, None, &opts).expect("load SmolLM2"),
        ))
    });
    e.as_ref()
        .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

fn chat(e: &Engine, question: &str) -> Vec<u32> {
    let prompt = e.tokenizer().apply_chat_template(question);
    e.tokenizer().encode(&prompt).unwrap()
}

fn greedy(max_new_tokens: u32) -> GenerationParams {
    GenerationParams {
        max_new_tokens,
        ..GenerationParams::default()
    }
}

#[test]
fn info_describes_the_model() {
    let Some(e) = engine() else { return };
    let info = e.info();
    assert_eq!(info.format, "gguf");
    assert_eq!(info.weight_dtype, "Q4_1");
    // The kernel variant this CPU selects, as the dispatcher reports it.
    assert_eq!(
        info.compute_dtype,
        format!(
            "f32 (CPU kernels: {})",
            lem_kernels::dispatch::selected().name()
        )
    );
    assert_eq!(info.tokenizer_source, "gguf-metadata");
    // 30 layers x (4 attention + 3 MLP matrices + 2 norms) + tied embedding + final norm.
    let s = &info.shape;
    let per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3 + 576 * 2;
    assert_eq!(info.num_parameters, 30 * per_layer + 49152 * 576 + 576);
    assert_eq!(
        (
            s.hidden_size,
            s.num_layers,
            s.num_attention_heads,
            s.num_kv_heads,
            s.head_dim
        ),
        (576, 30, 9, 3, 64)
    );
    assert_eq!((s.intermediate_size, s.vocab_size), (1536, 49152));
    assert_eq!(info.context_length, Some(8192));
    assert_eq!(info.eos_token_ids, vec![2, 0]);
    assert_eq!(info.device.kind, "cpu");
    assert_eq!(info.device.threads, Some(2));
    assert!(info.device.note.as_deref().unwrap().contains("CPU"));
}

#[test]
fn tokenizer_matches_transformers_reference() {
    let Some(e) = engine() else { return };
    let t = e.tokenizer();
    // Reference ids: transformers' own GGUF -> tokenizer conversion of this file, printed
    // by `scripts/reference/smollm2_tokens.py` (transformers 5.24.0, gguf 0.19.0; the
    // converter `AutoTokenizer.from_pretrained(dir, gguf_file=...)` uses, then
    // `encode(s, add_special_tokens=True)`).
    let cases: &[(&str, &[u32])] = &[
        (
            "The quick brown fox jumps over the lazy dog.",
            &[504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30],
        ),
        ("12345", &[33, 34, 35, 36, 37]),
        (" leading space", &[2899, 1898]),
        ("café ☕", &[83, 1939, 2756, 4636, 242, 239]),
        (
            "Hello,  world!\n\tTabs and\nnewlines 3.14159",
            &[
                19556, 28, 216, 905, 17, 198, 197, 68, 7366, 284, 198, 2241, 5110, 216, 35, 30,
                33, 36, 33, 37, 41,
            ],
        ),
        (
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            &[
                1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
                411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47,
                2, 198, 1, 520, 9531, 198,
            ],
        ),
    ];
    for (text, want) in cases {
        let ids = t.encode(text).unwrap();
        assert_eq!(&ids, want, "encoding {text:?}");
        assert_eq!(t.count(text), want.len());
        if !text.contains("<|") {
            assert_eq!(&t.decode(&ids).unwrap(), text, "round trip of {text:?}");
        }
    }
    // The chat template is the GGUF's ChatML, default system message included.
    assert_eq!(
        t.apply_chat_template("What is the capital of France?"),
        cases[5].0
    );
    // Special tokens are single ids and are left out of decoded text.
    assert_eq!(t.encode("<|im_end|>").unwrap(), vec![2]);
    assert_eq!(t.decode(&[504, 2]).unwrap(), "The");
}

#[test]
fn greedy_answer_is_coherent_and_deterministic() {
    let Some(mut e) = engine() else { return };
    // Not the literal "What is the capital of France?": behind the default system message
    // that question is a near tie between "L" and "The" (llama.cpp on this Q4_1 file:
    // 24.330 vs 24.273, tests/fixtures/smollm2_llamacpp.json), and quantised kernels
    // answer "L'Étoile, ...". With f32 weights it answers Paris (engine_reference.rs).
    let p = chat(&e, "Name the capital of France.");
    let a = e
        .generate(std::slice::from_ref(&p), &greedy(24), &mut NoopObserver)
        .unwrap();
    let b = e.generate(&[p], &greedy(24), &mut NoopObserver).unwrap();
    let text = &a.sequences[0].text;
    eprintln!("greedy answer: {text:?}");
    assert!(text.contains("Paris"), "answer lacks Paris: {text:?}");
    assert_eq!(
        a.sequences[0].output_token_ids,
        b.sequences[0].output_token_ids
    );
}

#[test]
fn batch_of_identical_prompts_equals_single() {
    let Some(mut e) = engine() else { return };
    let p = chat(&e, "Name three colours.");
    let single = e
        .generate(std::slice::from_ref(&p), &greedy(16), &mut NoopObserver)
        .unwrap();
    let pair = e
        .generate(&[p.clone(), p], &greedy(16), &mut NoopObserver)
        .unwrap();
    for s in &pair.sequences {
        assert_eq!(s.output_token_ids, single.sequences[0].output_token_ids);
    }
}

#[test]
fn ragged_batch_equals_each_prompt_alone() {
    let Some(mut e) = engine() else { return };
    let prompts = vec![
        chat(&e, "What is the capital of France?"),
        chat(&e, "Hi"),
        chat(
            &e,
            "Write one sentence about the sea, the wind, and a small boat far from the harbour.",
        ),
    ];
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(lens[0] != lens[1] && lens[1] != lens[2], "{lens:?}");
    let batch = e
        .generate(&prompts, &greedy(16), &mut NoopObserver)
        .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = e
            .generate(std::slice::from_ref(p), &greedy(16), &mut NoopObserver)
            .unwrap();
        assert_eq!(
            batch.sequences[i].output_token_ids, alone.sequences[0].output_token_ids,
            "row {i}: batched {:?} vs alone {:?}",
            batch.sequences[i].text, alone.sequences[0].text
        );
        assert_eq!(batch.sequences[i].input_tokens as usize, p.len());
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let Some(mut e) = engine() else { return };
    let p = chat(&e, "Tell me a short story.");
    let params = |seed| GenerationParams {
        max_new_tokens: 20,
        do_sample: true,
        temperature: 1.0,
        top_p: 0.95,
        top_k: 50,
        seed,
        ..GenerationParams::default()
    };
    let a = e
        .generate(&[p.clone(), p.clone()], &params(7), &mut NoopObserver)
        .unwrap();
    let b = e
        .generate(&[p.clone(), p.clone()], &params(7), &mut NoopObserver)
        .unwrap();
    let c = e
        .generate(&[p.clone(), p], &params(8), &mut NoopObserver)
        .unwrap();
    let ids = |o: &lem_agent::engine::BatchOutput| {
        o.sequences
            .iter()
            .map(|s| s.output_token_ids.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    // Rows use different streams (seed + row), and another seed gives another text.
    assert_ne!(
        a.sequences[0].output_token_ids,
        a.sequences[1].output_token_ids
    );
    assert_ne!(
        a.sequences[0].output_token_ids,
        c.sequences[0].output_token_ids
    );
}

#[test]
fn max_new_tokens_and_timings() {
    let Some(mut e) = engine() else { return };
    let p = chat(&e, "Explain photosynthesis in detail.");
    let out = e
        .generate(std::slice::from_ref(&p), &greedy(5), &mut NoopObserver)
        .unwrap();
    let s = &out.sequences[0];
    assert_eq!(s.output_token_ids.len(), 5);
    assert_eq!(s.stop_reason, StopReason::MaxTokens);
    assert_eq!(s.input_tokens as usize, p.len());
    assert_eq!(s.itl_ns.len(), 4);
    assert!(s.ttft_ns > 0 && s.ttft_ns >= out.prefill_ns);
    assert_eq!(s.e2e_ns, s.ttft_ns + s.itl_ns.iter().sum::<u64>());
    assert!(out.decode_ns > 0 && out.decode_ns <= s.e2e_ns);
    assert!(out.wall_ns >= s.e2e_ns);
}

#[test]
fn stops_at_eos_unless_min_new_tokens() {
    let Some(mut e) = engine() else { return };
    let p = chat(&e, "Reply with only the word: yes");
    let out = e
        .generate(std::slice::from_ref(&p), &greedy(40), &mut NoopObserver)
        .unwrap();
    let s = &out.sequences[0];
    eprintln!(
        "short answer: {:?} ({} tokens)",
        s.text,
        s.output_token_ids.len()
    );
    assert_eq!(s.stop_reason, StopReason::Eos);
    assert_eq!(*s.output_token_ids.last().unwrap(), 2);
    assert!(s.output_token_ids.len() < 40);
    assert!(!s.text.contains("<|im_end|>"));

    let n = s.output_token_ids.len() as u32 + 3;
    let params = GenerationParams {
        min_new_tokens: n,
        ..greedy(n)
    };
    let out = e.generate(&[p], &params, &mut NoopObserver).unwrap();
    let s = &out.sequences[0];
    assert_eq!(s.output_token_ids.len(), n as usize);
    assert!(s.output_token_ids.iter().all(|t| *t != 2 && *t != 0));
}

#[test]
fn observer_sees_tokens_and_can_interrupt() {
    struct Counter {
        tokens: usize,
        prefills: usize,
        stop_after: usize,
    }
    impl GenerationObserver for Counter {
        fn on_prefill_done(&mut self, batch: usize) {
            self.prefills += batch;
        }
        fn on_token(&mut self, _row: usize, _token: u32) {
            self.tokens += 1;
        }
        fn should_stop(&self) -> bool {
            self.tokens >= self.stop_after
        }
    }
    let Some(mut e) = engine() else { return };
    let p = chat(&e, "Count to twenty.");
    let mut obs = Counter {
        tokens: 0,
        prefills: 0,
        stop_after: usize::MAX,
    };
    let out = e
        .generate(&[p.clone(), p.clone()], &greedy(4), &mut obs)
        .unwrap();
    assert_eq!(obs.prefills, 2);
    assert_eq!(
        obs.tokens,
        out.sequences
            .iter()
            .map(|s| s.output_token_ids.len())
            .sum::<usize>()
    );
    let mut obs = Counter {
        tokens: 0,
        prefills: 0,
        stop_after: 3,
    };
    let err = e.generate(&[p], &greedy(30), &mut obs).unwrap_err();
    assert!(
        matches!(err, lem_agent::engine::EngineError::Interrupted),
        "{err}"
    );
    assert_eq!(obs.tokens, 3);
}

#[test]
fn bad_inputs_are_refused() {
    let Some(mut e) = engine() else { return };
    let err = e
        .generate(&[vec![]], &greedy(4), &mut NoopObserver)
        .unwrap_err();
    assert!(err.to_string().contains("prompt 0"), "{err}");
    let err = e
        .generate(&[vec![1, 2], vec![99_999]], &greedy(4), &mut NoopObserver)
        .unwrap_err();
    assert!(
        err.to_string().contains("prompt 1") && err.to_string().contains("99999"),
        "{err}"
    );
    let err = e
        .generate(&[vec![1]], &greedy(5000), &mut NoopObserver)
        .unwrap_err();
    assert!(err.to_string().contains("max_seq_len"), "{err}");
    let bad_p = GenerationParams {
        top_p: 0.0,
        ..greedy(4)
    };
    let err = e
        .generate(&[vec![1]], &bad_p, &mut NoopObserver)
        .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}
