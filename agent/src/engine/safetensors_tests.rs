//! Safetensors loading on tiny random-weight models written by the tests themselves:
//! Llama (tied, Llama 3 rope scaling), Mistral (untied, explicit head_dim, sliding window)
//! and Qwen2 (Q/K/V biases). Logits are checked against a naive forward pass written here
//! in Hugging Face semantics (rotate-half rotary), and against the same weights run
//! through the GGUF path in llama.cpp's permuted layout.

use super::model::WeightStorage;
use super::NoopObserver;
use super::{Engine, EngineError, FloatPrecision, GenerationParams, LoadOptions, LoadQuantization};
use crate::model::ModelError;
use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use lem_common::rng::SplitMix64;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 96;
const LAYERS: usize = 2;
const EPS: f64 = 1e-5;
const THETA: f64 = 10_000.0;

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

#[derive(Clone)]
struct Tiny {
    arch: &'static str,
    tie: bool,
    qkv_bias: bool,
    /// Written to config.json as `head_dim` when set.
    head_dim: Option<usize>,
    rope_scaling: Option<serde_json::Value>,
    sliding_window: Option<usize>,
    /// dtype of the safetensors file.
    store: DType,
}

impl Tiny {
    fn llama() -> Self {
        Self {
            arch: "LlamaForCausalLM",
            tie: true,
            qkv_bias: false,
            head_dim: None,
            // Small original context so all three llama3 frequency bands occur.
            rope_scaling: Some(json!({
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64
            })),
            sliding_window: None,
            store: DType::F32,
        }
    }
    fn mistral() -> Self {
        Self {
            arch: "MistralForCausalLM",
            tie: false,
            qkv_bias: false,
            head_dim: Some(32),
            rope_scaling: None,
            sliding_window: Some(4096),
            store: DType::F32,
        }
    }
    fn qwen2() -> Self {
        Self {
            arch: "Qwen2ForCausalLM",
            tie: false,
            qkv_bias: true,
            head_dim: None,
            rope_scaling: None,
            sliding_window: None,
            store: DType::F32,
        }
    }
    fn hd(&self) -> usize {
        self.head_dim.unwrap_or(HIDDEN / HEADS)
    }
}

/// Named weights in HF layout: (shape, values).
type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn weights(t: &Tiny, seed: u64) -> Weights {
    let mut rng = SplitMix64::new(seed);
    let mut w = Weights::new();
    let hd = t.hd();
    let v = vocab().len();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let vals = (0..n)
            .map(|_| offset + (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect();
        w.insert(name, (shape, vals));
    };
    put(
        "model.embed_tokens.weight".into(),
        vec![v, HIDDEN],
        1.0,
        0.0,
    );
    put("model.norm.weight".into(), vec![HIDDEN], 0.1, 1.0);
    if !t.tie {
        put("lm_head.weight".into(), vec![v, HIDDEN], 0.3, 0.0);
    }
    for i in 0..LAYERS {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        put(n("input_layernorm.weight"), vec![HIDDEN], 0.1, 1.0);
        put(n("post_attention_layernorm.weight"), vec![HIDDEN], 0.1, 1.0);
        put(
            n("self_attn.q_proj.weight"),
            vec![HEADS * hd, HIDDEN],
            0.3,
            0.0,
        );
        put(
            n("self_attn.k_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
            0.3,
            0.0,
        );
        put(
            n("self_attn.v_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
            0.3,
            0.0,
        );
        put(
            n("self_attn.o_proj.weight"),
            vec![HIDDEN, HEADS * hd],
            0.3,
            0.0,
        );
        if t.qkv_bias {
            put(n("self_attn.q_proj.bias"), vec![HEADS * hd], 0.5, 0.0);
            put(n("self_attn.k_proj.bias"), vec![KV_HEADS * hd], 0.5, 0.0);
            put(n("self_attn.v_proj.bias"), vec![KV_HEADS * hd], 0.5, 0.0);
        }
        put(n("mlp.gate_proj.weight"), vec![FFN, HIDDEN], 0.3, 0.0);
        put(n("mlp.up_proj.weight"), vec![FFN, HIDDEN], 0.3, 0.0);
        put(n("mlp.down_proj.weight"), vec![HIDDEN, FFN], 0.3, 0.0);
    }
    w
}

fn config_json(t: &Tiny) -> serde_json::Value {
    let mut c = json!({
        "architectures": [t.arch],
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": vocab().len(),
        "rms_norm_eps": EPS,
        "rope_theta": THETA,
        "max_position_embeddings": 256,
        "tie_word_embeddings": t.tie,
        "hidden_act": "silu",
        "eos_token_id": 2,
        "torch_dtype": "float32",
    });
    if let Some(hd) = t.head_dim {
        c["head_dim"] = json!(hd);
    }
    if let Some(rs) = &t.rope_scaling {
        c["rope_scaling"] = rs.clone();
    }
    if let Some(sw) = t.sliding_window {
        c["sliding_window"] = json!(sw);
    }
    c
}

fn to_tensors(w: &Weights, dtype: DType) -> HashMap<String, Tensor> {
    w.iter()
        .map(|(name, (shape, vals))| {
            let t = Tensor::from_vec(vals.clone(), shape.as_slice(), &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .unwrap();
            (name.clone(), t)
        })
        .collect()
}

fn write_tokenizer(path: &Path) {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::{Merges, Vocab, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};
    let vocab: Vocab = vocab()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let merges: Merges = ('a'..='z').map(|c| ("Ġ".into(), c.to_string())).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<AddedToken> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect();
    tok.add_special_tokens(special).unwrap();
    tok.save(path, false).unwrap();
}

/// Writes config.json, tokenizer.json and model.safetensors into `dir`.
fn write_model(dir: &Path, t: &Tiny, w: &Weights) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config_json(t)).unwrap(),
    )
    .unwrap();
    write_tokenizer(&dir.join("tokenizer.json"));
    candle_core::safetensors::save(&to_tensors(w, t.store), dir.join("model.safetensors")).unwrap();
}

fn opts(precision: FloatPrecision, quantization: Option<LoadQuantization>) -> LoadOptions {
    LoadOptions {
        cpu_threads: Some(2),
        max_seq_len: 128,
        precision,
        quantization,
        ..LoadOptions::default()
    }
}

fn load(dir: &Path, precision: FloatPrecision, q: Option<LoadQuantization>) -> Engine {
    Engine::load_safetensors(dir, None, &opts(precision, q)).expect("load safetensors")
}

// ---------------------------------------------------------------- reference forward pass

fn get<'a>(w: &'a Weights, name: &str) -> &'a [f32] {
    &w.get(name).unwrap_or_else(|| panic!("{name}")).1
}

/// y = W x (+ b), W is (out, in) row-major.
fn linear(w: &[f32], b: Option<&[f32]>, x: &[f64]) -> Vec<f64> {
    let cols = x.len();
    let rows = w.len() / cols;
    (0..rows)
        .map(|r| {
            let dot: f64 = (0..cols).map(|c| w[r * cols + c] as f64 * x[c]).sum();
            dot + b.map_or(0.0, |b| b[r] as f64)
        })
        .collect()
}

fn rms_norm(x: &[f64], g: &[f32]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + EPS).sqrt();
    x.iter().zip(g).map(|(v, g)| v * r * *g as f64).collect()
}

/// HF rotary frequencies, with the Llama 3 band scaling written out from its definition.
fn inv_freqs(t: &Tiny) -> Vec<f64> {
    let hd = t.hd();
    (0..hd / 2)
        .map(|i| {
            let f = 1.0 / THETA.powf(2.0 * i as f64 / hd as f64);
            let Some(rs) = &t.rope_scaling else { return f };
            let factor = rs["factor"].as_f64().unwrap();
            let (lo, hi) = (
                rs["low_freq_factor"].as_f64().unwrap(),
                rs["high_freq_factor"].as_f64().unwrap(),
            );
            let old = rs["original_max_position_embeddings"].as_f64().unwrap();
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < old / hi {
                f
            } else if wavelen > old / lo {
                f / factor
            } else {
                let s = (old / wavelen - lo) / (hi - lo);
                (1.0 - s) * f / factor + s * f
            }
        })
        .collect()
}

/// Rotates one head vector at `pos`: rotate-half pairs (i, i + hd/2) as HF does, or
/// adjacent pairs when `interleaved` (the wrong layout for HF weights).
fn rotate(x: &mut [f64], pos: usize, freqs: &[f64], interleaved: bool) {
    let half = x.len() / 2;
    for (i, f) in freqs.iter().enumerate() {
        let (a, b) = if interleaved {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + half)
        };
        let (c, s) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/// Last-position logits of `tokens` by the textbook Llama forward pass, in f64.
fn reference_logits(t: &Tiny, w: &Weights, tokens: &[u32], interleaved: bool) -> Vec<f32> {
    let hd = t.hd();
    let freqs = inv_freqs(t);
    let embed = get(w, "model.embed_tokens.weight");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&id| {
            let r = id as usize * HIDDEN;
            embed[r..r + HIDDEN].iter().map(|&v| v as f64).collect()
        })
        .collect();
    let bias = |name: String| w.get(&name).map(|(_, v)| v.as_slice());
    for i in 0..LAYERS {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let h = rms_norm(x, get(w, &n("input_layernorm.weight")));
            let mut q = linear(
                get(w, &n("self_attn.q_proj.weight")),
                bias(n("self_attn.q_proj.bias")),
                &h,
            );
            let mut k = linear(
                get(w, &n("self_attn.k_proj.weight")),
                bias(n("self_attn.k_proj.bias")),
                &h,
            );
            let v = linear(
                get(w, &n("self_attn.v_proj.weight")),
                bias(n("self_attn.v_proj.bias")),
                &h,
            );
            for head in q.chunks_mut(hd).chain(k.chunks_mut(hd)) {
                rotate(head, pos, &freqs, interleaved);
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        for (pos, x) in xs.iter_mut().enumerate() {
            let mut attn = vec![0f64; HEADS * hd];
            for head in 0..HEADS {
                let kv = head / (HEADS / KV_HEADS);
                let q = &qs[pos][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=pos)
                    .map(|j| {
                        let k = &ks[j][kv * hd..(kv + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for d in 0..hd {
                        attn[head * hd + d] += p / z * vs[j][kv * hd + d];
                    }
                }
            }
            let o = linear(get(w, &n("self_attn.o_proj.weight")), None, &attn);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = rms_norm(x, get(w, &n("post_attention_layernorm.weight")));
            let g = linear(get(w, &n("mlp.gate_proj.weight")), None, &h);
            let u = linear(get(w, &n("mlp.up_proj.weight")), None, &h);
            let act: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = linear(get(w, &n("mlp.down_proj.weight")), None, &act);
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
    }
    let last = rms_norm(xs.last().unwrap(), get(w, "model.norm.weight"));
    let head = if t.tie {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    linear(get(w, head), None, &last)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const PROMPT: [u32; 9] = [5, 17, 33, 3, 40, 8, 61, 12, 29];

/// Fixed-length greedy runs (EOS suppressed): random weights would otherwise stop anywhere.
fn fixed(n: u32) -> GenerationParams {
    GenerationParams {
        max_new_tokens: n,
        min_new_tokens: n,
        ..GenerationParams::default()
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn each_architecture_matches_the_reference_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    for (name, t) in [
        ("llama", Tiny::llama()),
        ("mistral", Tiny::mistral()),
        ("qwen2", Tiny::qwen2()),
    ] {
        let w = weights(&t, 7);
        let path = dir.path().join(name);
        write_model(&path, &t, &w);
        let mut e = load(&path, FloatPrecision::F32, None);
        let info = e.info().clone();
        assert_eq!(info.format, "safetensors");
        assert_eq!(info.shape.architecture, name);
        assert_eq!(info.shape.head_dim as usize, t.hd());
        assert_eq!(info.weight_dtype, "F32");
        assert_eq!(info.compute_dtype, "f32");
        assert_eq!(info.context_length, Some(256));
        let params: usize = w.values().map(|(s, _)| s.iter().product::<usize>()).sum();
        assert_eq!(info.num_parameters, params as u64, "{name}");
        assert_eq!(info.eos_token_ids, vec![2, 0], "{name}");

        let got = &e.next_token_logits(&[PROMPT.to_vec()]).unwrap()[0];
        let want = reference_logits(&t, &w, &PROMPT, false);
        let d = max_diff(got, &want);
        assert!(d < 1e-4, "{name}: max |engine - reference| = {d}");
        // The check can tell the rotary layouts apart: HF weights run with adjacent-pair
        // rotation are far off.
        let wrong = reference_logits(&t, &w, &PROMPT, true);
        assert!(
            max_diff(got, &wrong) > 1e-2,
            "{name}: layouts indistinguishable"
        );

        let out = e
            .generate(&[PROMPT.to_vec()], &fixed(5), &mut NoopObserver)
            .unwrap();
        assert_eq!(out.sequences[0].output_token_ids.len(), 5, "{name}");
    }
}

#[test]
fn llama3_rope_scaling_is_applied() {
    // Without the scaling the reference disagrees with the engine: the factors matter.
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::llama();
    let w = weights(&t, 8);
    write_model(dir.path(), &t, &w);
    let mut e = load(dir.path(), FloatPrecision::F32, None);
    let got = &e.next_token_logits(&[PROMPT.to_vec()]).unwrap()[0];
    let unscaled = Tiny {
        rope_scaling: None,
        ..t.clone()
    };
    let d_scaled = max_diff(got, &reference_logits(&t, &w, &PROMPT, false));
    let d_unscaled = max_diff(got, &reference_logits(&unscaled, &w, &PROMPT, false));
    assert!(d_scaled < 1e-4, "{d_scaled}");
    assert!(d_unscaled > 1e-3, "{d_unscaled}");
}

/// llama.cpp's converter: within each head, HF row `j * hd/2 + i` goes to `2i + j`.
fn permute_for_gguf(vals: &[f32], heads: usize, hd: usize) -> Vec<f32> {
    let cols = vals.len() / (heads * hd);
    let mut out = vec![0f32; vals.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let src = h * hd + j * hd / 2 + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&vals[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Writes the model's weights as a llama GGUF: Q/K rows permuted as llama.cpp does,
/// decoder-layer matrices stored as `linear`, everything else F32.
fn write_gguf_twin(path: &Path, t: &Tiny, w: &Weights, linear: GgmlDType) {
    let hd = t.hd();
    let to_q = |name: &str, vals: Vec<f32>, dtype: GgmlDType| {
        let shape = w[name].0.clone();
        let t = Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    };
    let f32_q = |name: &str, vals: Vec<f32>| to_q(name, vals, GgmlDType::F32);
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            f32_q(
                "model.embed_tokens.weight",
                w["model.embed_tokens.weight"].1.clone(),
            ),
        ),
        (
            "output_norm.weight".into(),
            f32_q("model.norm.weight", w["model.norm.weight"].1.clone()),
        ),
        (
            "output.weight".into(),
            f32_q("lm_head.weight", w["lm_head.weight"].1.clone()),
        ),
    ];
    for i in 0..LAYERS {
        let hf = |s: &str| format!("model.layers.{i}.{s}");
        for (gg, hf_name, rope_heads, dtype) in [
            ("attn_norm", "input_layernorm", None, GgmlDType::F32),
            ("ffn_norm", "post_attention_layernorm", None, GgmlDType::F32),
            ("attn_q", "self_attn.q_proj", Some(HEADS), linear),
            ("attn_k", "self_attn.k_proj", Some(KV_HEADS), linear),
            ("attn_v", "self_attn.v_proj", None, linear),
            ("attn_output", "self_attn.o_proj", None, linear),
            ("ffn_gate", "mlp.gate_proj", None, linear),
            ("ffn_up", "mlp.up_proj", None, linear),
            ("ffn_down", "mlp.down_proj", None, linear),
        ] {
            let name = hf(&format!("{hf_name}.weight"));
            let vals = w[&name].1.clone();
            let vals = match rope_heads {
                Some(heads) => permute_for_gguf(&vals, heads, hd),
                None => vals,
            };
            tensors.push((format!("blk.{i}.{gg}.weight"), to_q(&name, vals, dtype)));
        }
    }
    let metadata: Vec<(&str, GValue)> = vec![
        ("general.architecture", GValue::String("llama".into())),
        ("llama.embedding_length", GValue::U32(HIDDEN as u32)),
        ("llama.block_count", GValue::U32(LAYERS as u32)),
        ("llama.feed_forward_length", GValue::U32(FFN as u32)),
        ("llama.attention.head_count", GValue::U32(HEADS as u32)),
        (
            "llama.attention.head_count_kv",
            GValue::U32(KV_HEADS as u32),
        ),
        ("llama.attention.key_length", GValue::U32(hd as u32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GValue::F32(EPS as f32),
        ),
        ("llama.rope.freq_base", GValue::F32(THETA as f32)),
        ("llama.rope.dimension_count", GValue::U32(hd as u32)),
        ("tokenizer.ggml.eos_token_id", GValue::U32(2)),
    ];
    let metadata: Vec<(&str, &GValue)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut std::fs::File::create(path).unwrap(), &metadata, &refs).unwrap();
}

#[test]
fn gguf_layout_path_agrees_with_safetensors_path() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::mistral();
    let w = weights(&t, 9);
    write_model(dir.path(), &t, &w);
    let tok = dir.path().join("tokenizer.json");
    let prompts = vec![PROMPT.to_vec(), PROMPT[..4].to_vec()];
    // The GGUF path multiplies F32 weights with gemm, the safetensors path with vec_dot:
    // rounding differs. Quantised layers are the same blocks through the same kernels,
    // so only the F32 LM head's rounding remains.
    for (linear, q, tolerance) in [
        (GgmlDType::F32, None, 1e-4),
        (GgmlDType::Q8_0, Some(LoadQuantization::Q8_0), 1e-5),
        (GgmlDType::Q4_0, Some(LoadQuantization::Q4_0), 1e-5),
    ] {
        let gguf = dir.path().join(format!("tiny-{linear:?}.gguf"));
        write_gguf_twin(&gguf, &t, &w, linear);
        let mut from_gguf = Engine::load_gguf(&gguf, Some(&tok), &opts(FloatPrecision::F32, None))
            .expect("load gguf");
        let mut from_st = load(dir.path(), FloatPrecision::F32, q);
        let a = from_gguf.next_token_logits(&prompts).unwrap();
        let b = from_st.next_token_logits(&prompts).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let d = max_diff(x, y);
            assert!(d <= tolerance, "{linear:?}: gguf vs safetensors: {d}");
        }
    }
}

fn kernels(e: &Engine) -> Vec<(&'static str, WeightStorage)> {
    e.weight_storage()
}

#[test]
fn precision_sets_the_weight_storage_and_matmul_types() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny {
        store: DType::BF16,
        ..Tiny::qwen2()
    };
    let w = weights(&t, 10);
    write_model(dir.path(), &t, &w);
    let mut logits = Vec::new();
    for (p, ggml, weight_dtype, compute) in [
        (
            FloatPrecision::F32,
            GgmlDType::F32,
            "F32 (converted on load from BF16)",
            "f32",
        ),
        (
            FloatPrecision::F16,
            GgmlDType::F16,
            "F16 (converted on load from BF16)",
            "f16 matmuls (f32 accumulation), f32 norms/softmax/attention/KV cache",
        ),
        (
            FloatPrecision::BF16,
            GgmlDType::BF16,
            "BF16",
            "bf16 matmuls (f32 accumulation), f32 norms/softmax/attention/KV cache",
        ),
    ] {
        let mut e = load(dir.path(), p, None);
        let storage = kernels(&e);
        assert!(storage.len() >= 6, "{storage:?}");
        for (name, s) in &storage {
            assert_eq!(*s, WeightStorage::Kernel(ggml), "{p:?} {name}");
        }
        assert_eq!(e.info().weight_dtype, weight_dtype);
        assert_eq!(e.info().compute_dtype, compute);
        logits.push(e.next_token_logits(&[PROMPT.to_vec()]).unwrap().remove(0));
    }
    // The file is BF16, so f32 and bf16 weights are equal; the difference is the
    // activations rounded to bf16 (and to f16) before each matmul.
    let d16 = max_diff(&logits[0], &logits[1]);
    let dbf16 = max_diff(&logits[0], &logits[2]);
    assert!(d16 > 0.0 && d16 < 0.1, "f32 vs f16 logits: {d16}");
    assert!(dbf16 > 0.0 && dbf16 < 0.5, "f32 vs bf16 logits: {dbf16}");
    assert!(
        dbf16 > d16,
        "bf16 ({dbf16}) should round more than f16 ({d16})"
    );
}

#[test]
fn quantisation_on_load_changes_the_linear_weights_only() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny {
        store: DType::BF16,
        ..Tiny::llama()
    };
    let w = weights(&t, 11);
    write_model(dir.path(), &t, &w);
    // Same precision without quantisation: the difference is the quantisation alone.
    let reference = load(dir.path(), FloatPrecision::BF16, None)
        .next_token_logits(&[PROMPT.to_vec()])
        .unwrap()
        .remove(0);
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut moved = Vec::new();
    for (q, ggml, tolerance) in [
        (LoadQuantization::Q8_0, GgmlDType::Q8_0, 0.1f32),
        (LoadQuantization::Q4_0, GgmlDType::Q4_0, 0.5),
    ] {
        let mut e = load(dir.path(), FloatPrecision::BF16, Some(q));
        for (name, s) in kernels(&e) {
            let want = if matches!(name, "embed" | "lm_head") {
                GgmlDType::BF16
            } else {
                ggml
            };
            assert_eq!(s, WeightStorage::Kernel(want), "{q:?} {name}");
        }
        let name = format!("{ggml:?}");
        assert_eq!(
            e.info().weight_dtype,
            format!("{name} (quantised on load from BF16); embeddings and LM head BF16")
        );
        assert!(e
            .info()
            .compute_dtype
            .starts_with(&format!("{name} linear matmuls")));
        let got = e.next_token_logits(&[PROMPT.to_vec()]).unwrap().remove(0);
        let d = max_diff(&got, &reference);
        assert!(
            d > 0.0 && d < tolerance * scale,
            "{q:?}: logits moved by {d}"
        );
        moved.push(d);
        let out = e
            .generate(&[PROMPT.to_vec()], &fixed(4), &mut NoopObserver)
            .unwrap();
        assert_eq!(out.sequences[0].output_token_ids.len(), 4);
    }
    assert!(
        moved[1] > moved[0],
        "4-bit should move logits more than 8-bit: {moved:?}"
    );
}

#[test]
fn ragged_batch_equals_each_prompt_alone() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::qwen2();
    write_model(dir.path(), &t, &weights(&t, 12));
    let prompts = vec![PROMPT[..3].to_vec(), PROMPT.to_vec(), PROMPT[2..7].to_vec()];
    for (p, q) in [
        (FloatPrecision::F32, None),
        (FloatPrecision::BF16, None),
        (FloatPrecision::F32, Some(LoadQuantization::Q8_0)),
    ] {
        let mut e = load(dir.path(), p, q);
        let batch = e.generate(&prompts, &fixed(6), &mut NoopObserver).unwrap();
        let batch_logits = e.next_token_logits(&prompts).unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let alone = e
                .generate(std::slice::from_ref(prompt), &fixed(6), &mut NoopObserver)
                .unwrap();
            assert_eq!(
                batch.sequences[i].output_token_ids, alone.sequences[0].output_token_ids,
                "{p:?} {q:?} row {i}"
            );
            let alone_logits = e.next_token_logits(std::slice::from_ref(prompt)).unwrap();
            assert_eq!(
                batch_logits[i], alone_logits[0],
                "{p:?} {q:?} row {i} logits"
            );
        }
    }
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::mistral();
    let w = weights(&t, 13);
    let single = dir.path().join("single");
    write_model(&single, &t, &w);
    let sharded = dir.path().join("sharded");
    write_model(&sharded, &t, &w);
    std::fs::remove_file(sharded.join("model.safetensors")).unwrap();
    let all = to_tensors(&w, t.store);
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (name, tensor) in all {
        let file = if name.contains("layers.1.") || name == "lm_head.weight" {
            b.insert(name.clone(), tensor);
            "model-00002-of-00002.safetensors"
        } else {
            a.insert(name.clone(), tensor);
            "model-00001-of-00002.safetensors"
        };
        map.insert(name, json!(file));
    }
    candle_core::safetensors::save(&a, sharded.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, sharded.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let x = load(&single, FloatPrecision::F32, None)
        .next_token_logits(&[PROMPT.to_vec()])
        .unwrap();
    let mut e = load(&sharded, FloatPrecision::F32, None);
    assert_eq!(e.next_token_logits(&[PROMPT.to_vec()]).unwrap(), x);

    // A shard the index names but the directory lacks is named.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let err = Engine::load_safetensors(&sharded, None, &opts(FloatPrecision::F32, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

fn load_err(dir: &Path) -> EngineError {
    Engine::load_safetensors(dir, None, &opts(FloatPrecision::F32, None))
        .expect_err("load should fail")
}

#[test]
fn broken_models_give_errors_naming_the_place() {
    let root = tempfile::tempdir().unwrap();
    let t = Tiny::llama();
    let w = weights(&t, 14);

    // Unknown architecture.
    let d = root.path().join("arch");
    write_model(&d, &t, &w);
    let mut c = config_json(&t);
    c["architectures"] = json!(["GPT2LMHeadModel"]);
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let err = load_err(&d);
    assert!(
        matches!(
            err,
            EngineError::Model(ModelError::UnsupportedHfArchitecture { .. })
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("GPT2LMHeadModel") && msg.contains("config.json"),
        "{msg}"
    );

    // Missing config field.
    let mut c = config_json(&t);
    c.as_object_mut().unwrap().remove("rms_norm_eps");
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let msg = load_err(&d).to_string();
    assert!(
        msg.contains("rms_norm_eps") && msg.contains("config.json"),
        "{msg}"
    );

    // Unsupported rope scaling.
    let mut c = config_json(&t);
    c["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let msg = load_err(&d).to_string();
    assert!(
        msg.contains("rope_scaling.rope_type") && msg.contains("yarn"),
        "{msg}"
    );

    // Missing tensor.
    let d = root.path().join("missing");
    let mut w2 = w.clone();
    w2.remove("model.layers.1.mlp.up_proj.weight");
    write_model(&d, &t, &w2);
    let err = load_err(&d);
    assert!(
        matches!(err, EngineError::Model(ModelError::MissingTensor { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("model.layers.1.mlp.up_proj.weight") && msg.contains("model.safetensors"),
        "{msg}"
    );

    // Shape mismatch.
    let d = root.path().join("shape");
    let mut w3 = w.clone();
    w3.insert(
        "model.layers.0.self_attn.k_proj.weight".into(),
        (vec![HIDDEN, HIDDEN], vec![0.0; HIDDEN * HIDDEN]),
    );
    write_model(&d, &t, &w3);
    let msg = load_err(&d).to_string();
    assert!(
        msg.contains("model.layers.0.self_attn.k_proj.weight") && msg.contains("shape [64, 64]"),
        "{msg}"
    );

    // Truncated file.
    let d = root.path().join("truncated");
    write_model(&d, &t, &w);
    let file = d.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&d);
    assert!(
        matches!(err, EngineError::Model(ModelError::Safetensors { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.safetensors"));

    // Quantising a matrix whose rows do not split into blocks is refused, naming it.
    let d = root.path().join("blocks");
    let odd = Tiny {
        // o_proj then has 4 * 20 = 80 columns, not a multiple of 32.
        head_dim: Some(20),
        ..Tiny::mistral()
    };
    write_model(&d, &odd, &weights(&odd, 15));
    let err = Engine::load_safetensors(
        &d,
        None,
        &opts(FloatPrecision::F32, Some(LoadQuantization::Q4_0)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("o_proj.weight") && err.contains("block size 32"),
        "{err}"
    );
}

#[test]
fn sequences_beyond_the_sliding_window_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny {
        sliding_window: Some(12),
        ..Tiny::mistral()
    };
    write_model(dir.path(), &t, &weights(&t, 16));
    let mut e = load(dir.path(), FloatPrecision::F32, None);
    // 9 prompt + 4 new - 1 (last token never fed back) = 12 positions: fits.
    e.generate(&[PROMPT.to_vec()], &fixed(4), &mut NoopObserver)
        .unwrap();
    let err = e
        .generate(&[PROMPT.to_vec()], &fixed(5), &mut NoopObserver)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sliding_window 12"), "{err}");
}

#[test]
fn tokenizer_and_eos_come_from_the_model_directory() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::qwen2();
    write_model(dir.path(), &t, &weights(&t, 17));
    std::fs::write(
        dir.path().join("generation_config.json"),
        json!({"eos_token_id": [2, 1]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"})
            .to_string(),
    )
    .unwrap();
    let e = load(dir.path(), FloatPrecision::F32, None);
    assert_eq!(e.info().tokenizer_source, "tokenizer.json");
    assert_eq!(e.info().eos_token_ids, vec![2, 1, 0]);
    assert_eq!(e.tokenizer().encode(" ab").unwrap(), vec![30, 5]);

    // Without tokenizer.json the error names the file it looked for.
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let msg = load_err(dir.path()).to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn rows_that_stop_early_leave_the_batch_without_changing_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tiny::llama();
    write_model(dir.path(), &t, &weights(&t, 21));
    let prompts = vec![
        PROMPT[..4].to_vec(),
        PROMPT.to_vec(),
        PROMPT[1..6].to_vec(),
        PROMPT[3..].to_vec(),
    ];
    // Make the second token of prompt 0's greedy output an end-of-sequence token, so
    // row 0 stops after two tokens while the others go on (a quarter of the batch: the
    // engine drops it from the KV cache).
    let mut e = load(dir.path(), FloatPrecision::F32, None);
    let first = e
        .generate(&prompts[..1], &fixed(8), &mut NoopObserver)
        .unwrap();
    let stop_token = first.sequences[0].output_token_ids[1];
    assert_ne!(first.sequences[0].output_token_ids[0], stop_token);
    std::fs::write(
        dir.path().join("generation_config.json"),
        json!({ "eos_token_id": stop_token }).to_string(),
    )
    .unwrap();
    let mut e = load(dir.path(), FloatPrecision::F32, None);
    let params = GenerationParams {
        max_new_tokens: 8,
        ..GenerationParams::default()
    };
    let batch = e.generate(&prompts, &params, &mut NoopObserver).unwrap();
    let lens: Vec<usize> = batch
        .sequences
        .iter()
        .map(|s| s.output_token_ids.len())
        .collect();
    assert_eq!(lens[0], 2, "row 0 stops at the chosen token: {lens:?}");
    assert!(lens.iter().any(|&n| n > 2), "some rows go on: {lens:?}");
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = e
            .generate(std::slice::from_ref(prompt), &params, &mut NoopObserver)
            .unwrap();
        assert_eq!(
            batch.sequences[i].output_token_ids, alone.sequences[0].output_token_ids,
            "row {i}"
        );
        assert_eq!(
            batch.sequences[i].stop_reason,
            alone.sequences[0].stop_reason
        );
    }
    // The engine keeps working with a full batch after a shrunken one.
    let again = e.generate(&prompts, &params, &mut NoopObserver).unwrap();
    assert_eq!(again.sequences.len(), 4);
    assert_eq!(
        again.sequences[1].output_token_ids,
        batch.sequences[1].output_token_ids
    );
}
