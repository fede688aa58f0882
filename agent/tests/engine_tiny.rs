//! The engine on tiny random-weight Llama GGUFs written by the test itself (no download):
//! loading, tokenizer from metadata, batched and ragged generation, sampling, and clear
//! errors for broken files.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lem_agent::engine::{Engine, EngineError, GenerationParams, LoadOptions, NoopObserver};
use lem_agent::model::ModelError;
use lem_common::domain::StopReason;
use lem_common::rng::SplitMix64;
use std::path::{Path, PathBuf};

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 96;
const LAYERS: usize = 2;

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "Ġ"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(('a'..='z').map(String::from));
    v.extend(('a'..='z').map(|c| format!("Ġ{c}")));
    v.extend(('0'..='9').map(String::from));
    v // 66 tokens
}

fn random(shape: &[usize], scale: f32, rng: &mut SplitMix64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

struct Spec {
    architecture: &'static str,
    skip_tensor: Option<&'static str>,
    skip_key: Option<&'static str>,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            architecture: "llama",
            skip_tensor: None,
            skip_key: None,
        }
    }
}

/// Writes a tiny Llama GGUF (Q4_1 matrices, Q8_0 embedding, F32 norms) and returns it.
fn write_tiny(dir: &Path, name: &str, spec: &Spec) -> PathBuf {
    let mut rng = SplitMix64::new(42);
    let tokens = vocab();
    let hd = HIDDEN / HEADS;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let q = |t: Tensor, d: GgmlDType| QTensor::quantize(&t, d).unwrap();
    tensors.push((
        "token_embd.weight".into(),
        q(
            random(&[tokens.len(), HIDDEN], 1.0, &mut rng),
            GgmlDType::Q8_0,
        ),
    ));
    tensors.push((
        "output_norm.weight".into(),
        q(
            (random(&[HIDDEN], 0.1, &mut rng) + 1.0).unwrap(),
            GgmlDType::F32,
        ),
    ));
    for i in 0..LAYERS {
        let mut mat = |n: &str, rows: usize, cols: usize, rng: &mut SplitMix64| {
            let w = random(&[rows, cols], 0.3, rng);
            tensors.push((format!("blk.{i}.{n}.weight"), q(w, GgmlDType::Q4_1)));
        };
        mat("attn_q", HEADS * hd, HIDDEN, &mut rng);
        mat("attn_k", KV_HEADS * hd, HIDDEN, &mut rng);
        mat("attn_v", KV_HEADS * hd, HIDDEN, &mut rng);
        mat("attn_output", HIDDEN, HEADS * hd, &mut rng);
        mat("ffn_gate", FFN, HIDDEN, &mut rng);
        mat("ffn_up", FFN, HIDDEN, &mut rng);
        mat("ffn_down", HIDDEN, FFN, &mut rng);
        for n in ["attn_norm", "ffn_norm"] {
            let w = (random(&[HIDDEN], 0.1, &mut rng) + 1.0).unwrap();
            tensors.push((format!("blk.{i}.{n}.weight"), q(w, GgmlDType::F32)));
        }
    }
    tensors.retain(|(n, _)| Some(n.as_str()) != spec.skip_tensor);

    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i < 3 { 3 } else { 1 }))
        .collect();
    let merges: Vec<String> = ('a'..='z').map(|c| format!("Ġ {c}")).collect();
    let metadata: Vec<(&str, Value)> = vec![
        (
            "general.architecture",
            Value::String(spec.architecture.into()),
        ),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.rope.dimension_count", Value::U32(hd as u32)),
        ("llama.context_length", Value::U32(256)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ];
    let metadata: Vec<(&str, &Value)> = metadata
        .iter()
        .filter(|(k, _)| Some(*k) != spec.skip_key)
        .map(|(k, v)| (*k, v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut f, &metadata, &tensor_refs).unwrap();
    path
}

fn opts() -> LoadOptions {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    LoadOptions {
        cpu_threads: Some(2),
        max_seq_len: 128,
        ..LoadOptions::default()
    }
}

fn load_err(path: &Path) -> EngineError {
    Engine::load_gguf(path, None, &opts()).expect_err("load should fail")
}

/// Fixed-length greedy runs (EOS suppressed): random weights would otherwise stop anywhere.
fn fixed(n: u32) -> GenerationParams {
    GenerationParams {
        max_new_tokens: n,
        min_new_tokens: n,
        ..GenerationParams::default()
    }
}

#[test]
fn loads_and_describes_a_tiny_llama() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::load_gguf(
        &write_tiny(dir.path(), "t.gguf", &Spec::default()),
        None,
        &opts(),
    )
    .unwrap();
    let info = e.info();
    // Default: the Q4_1 weights run as stored (lem's Q4_1 kernel).
    assert_eq!(info.weight_dtype, "Q4_1");
    assert_eq!(info.shape.head_dim, 16);
    assert_eq!(info.shape.vocab_size, 66);
    // q, o: 64x64; k, v: 32x64; gate, up, down: 96x64; two norms.
    let per_layer = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 96 * 64 + 2 * 64;
    assert_eq!(info.num_parameters, (2 * per_layer + 66 * 64 + 64) as u64);
    assert_eq!(info.eos_token_ids, vec![2, 0]);
    assert_eq!(info.context_length, Some(256));

    let requant = LoadOptions {
        requantize_q4_1_to_q8_0: true,
        ..opts()
    };
    let path = dir.path().join("t.gguf");
    let e2 = Engine::load_gguf(&path, None, &requant).unwrap();
    assert_eq!(e2.info().weight_dtype, "Q8_0 (requantised from Q4_1)");
}

#[test]
fn tokenizer_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::load_gguf(
        &write_tiny(dir.path(), "t.gguf", &Spec::default()),
        None,
        &opts(),
    )
    .unwrap();
    let t = e.tokenizer();
    assert_eq!(t.source(), "gguf-metadata");
    // "ab" = a b; " c" merges to "Ġc"; digits stay single; specials are one id each.
    let ids = t.encode("ab c<|im_end|>12").unwrap();
    let names: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
    assert_eq!(names, ["a", "b", "Ġc", "<|im_end|>", "1", "2"]);
    assert_eq!(t.decode(&ids).unwrap(), "ab c12");
    // No chat template in the file: plain ChatML.
    assert_eq!(
        t.apply_chat_template("hi"),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn ragged_and_identical_batches_match_single_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::load_gguf(
        &write_tiny(dir.path(), "t.gguf", &Spec::default()),
        None,
        &opts(),
    )
    .unwrap();
    let prompts: Vec<Vec<u32>> = vec![
        vec![5, 9, 13, 40, 41, 7, 8, 30, 31, 12],
        vec![20],
        vec![33, 34, 35, 36],
    ];
    let batch = e.generate(&prompts, &fixed(12), &mut NoopObserver).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = e
            .generate(std::slice::from_ref(p), &fixed(12), &mut NoopObserver)
            .unwrap();
        assert_eq!(
            batch.sequences[i].output_token_ids, alone.sequences[0].output_token_ids,
            "row {i}"
        );
        assert_eq!(batch.sequences[i].output_token_ids.len(), 12);
        assert_eq!(batch.sequences[i].stop_reason, StopReason::MaxTokens);
    }
    let same = e
        .generate(
            &[prompts[0].clone(), prompts[0].clone()],
            &fixed(12),
            &mut NoopObserver,
        )
        .unwrap();
    assert_eq!(
        same.sequences[0].output_token_ids,
        batch.sequences[0].output_token_ids
    );
    assert_eq!(
        same.sequences[1].output_token_ids,
        batch.sequences[0].output_token_ids
    );
}

#[test]
fn sampling_is_seeded_and_varies_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::load_gguf(
        &write_tiny(dir.path(), "t.gguf", &Spec::default()),
        None,
        &opts(),
    )
    .unwrap();
    let sampled = |seed| GenerationParams {
        do_sample: true,
        temperature: 1.5,
        top_k: 40,
        top_p: 0.98,
        min_p: 0.01,
        repetition_penalty: 1.1,
        seed,
        ..fixed(24)
    };
    let p = vec![vec![4u32, 5, 6]];
    let a = e.generate(&p, &sampled(1), &mut NoopObserver).unwrap();
    let b = e.generate(&p, &sampled(1), &mut NoopObserver).unwrap();
    let c = e.generate(&p, &sampled(2), &mut NoopObserver).unwrap();
    assert_eq!(
        a.sequences[0].output_token_ids,
        b.sequences[0].output_token_ids
    );
    assert_ne!(
        a.sequences[0].output_token_ids,
        c.sequences[0].output_token_ids
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        architecture: "gpt2",
        ..Spec::default()
    };
    let path = write_tiny(dir.path(), "gpt2.gguf", &spec);
    let err = load_err(&path);
    assert!(
        matches!(
            err,
            EngineError::Model(ModelError::UnsupportedArchitecture { .. })
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("`gpt2`") && msg.contains("gpt2.gguf"), "{msg}");
}

#[test]
fn missing_tensor_and_key_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        skip_tensor: Some("blk.1.ffn_up.weight"),
        ..Spec::default()
    };
    let msg = load_err(&write_tiny(dir.path(), "no_up.gguf", &spec)).to_string();
    assert!(
        msg.contains("blk.1.ffn_up.weight") && msg.contains("no_up.gguf"),
        "{msg}"
    );

    let spec = Spec {
        skip_key: Some("llama.block_count"),
        ..Spec::default()
    };
    let msg = load_err(&write_tiny(dir.path(), "no_key.gguf", &spec)).to_string();
    assert!(
        msg.contains("llama.block_count") && msg.contains("no_key.gguf"),
        "{msg}"
    );
}

#[test]
fn truncated_and_garbage_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_tiny(dir.path(), "t.gguf", &Spec::default());
    let bytes = std::fs::read(&good).unwrap();

    // Cut inside the tensor data: the first tensor that does not fit is named.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let msg = load_err(&cut).to_string();
    assert!(
        msg.contains("cut.gguf") && msg.contains("truncated"),
        "{msg}"
    );

    // Cut inside the metadata.
    let short = dir.path().join("short.gguf");
    std::fs::write(&short, &bytes[..300]).unwrap();
    let msg = load_err(&short).to_string();
    assert!(
        msg.contains("short.gguf") && msg.contains("not a readable GGUF"),
        "{msg}"
    );

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a gguf file at all, just text").unwrap();
    let msg = load_err(&junk).to_string();
    assert!(msg.contains("junk.gguf"), "{msg}");

    let missing = dir.path().join("absent.gguf");
    let err = load_err(&missing);
    assert!(
        matches!(err, EngineError::Model(ModelError::Io { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("absent.gguf"));
}
