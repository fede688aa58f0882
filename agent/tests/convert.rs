//! `lem_agent::convert` on the real SmolLM2-135M-Instruct Q4_1 GGUF: to safetensors at
//! f32 and f16 (names, shapes, dtypes, values against the GGUF's own dequantisation,
//! tokenizer.json), back to GGUF at q8_0 and f16 (metadata, tokenizer keys, Q/K rows in
//! GGUF order, greedy answers), through `Engine::load_safetensors`, and the overwrite
//! rules. Skips (passes with a message) without the model, except under `CI`.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use lem_agent::convert::{self, ConvertError, TargetDtype, TargetFormat};
use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};
use lem_agent::model::names::hf_to_gguf_name;
use lem_agent::model::rope_permute::to_rotate_half;
use lem_agent::model::{GgufFile, LlamaParams};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

#[path = "../../tests/support.rs"]
mod support;
use support::model_path;

/// The conversions every test looks at, made once (they take seconds on 2 cores).
struct Converted {
    source: PathBuf,
    st_f32: PathBuf,
    st_f16: PathBuf,
    gguf_q8_0: PathBuf,
    gguf_f16: PathBuf,
}

fn converted() -> Option<&'static Converted> {
    static C: OnceLock<Option<Converted>> = OnceLock::new();
    C.get_or_init(|| {
        let source = model_path()?;
        let tmp = fixture_dir();
        let run = |input: &Path, to, dtype, out: PathBuf| {
            let t0 = std::time::Instant::now();
            let r = convert::convert(input, to, dtype, &out, false)
                .unwrap_or_else(|e| panic!("converting {} to {out:?}: {e}", input.display()));
            eprintln!(
                "{} -> {} {}: {} bytes in {:.1} s",
                input.display(),
                to.name(),
                dtype.name(),
                r.weights_bytes,
                t0.elapsed().as_secs_f64()
            );
            out
        };
        let st_f32 = run(
            &source,
            TargetFormat::Safetensors,
            TargetDtype::F32,
            tmp.join("st-f32"),
        );
        let st_f16 = run(
            &source,
            TargetFormat::Safetensors,
            TargetDtype::F16,
            tmp.join("st-f16"),
        );
        let gguf_q8_0 = run(
            &st_f32,
            TargetFormat::Gguf,
            TargetDtype::Q8_0,
            tmp.join("gguf/m-q8_0.gguf"),
        );
        let gguf_f16 = run(
            &st_f16,
            TargetFormat::Gguf,
            TargetDtype::F16,
            tmp.join("gguf/m-f16.gguf"),
        );
        Some(Converted {
            source,
            st_f32,
            st_f16,
            gguf_q8_0,
            gguf_f16,
        })
    })
    .as_ref()
}

/// A fresh directory for this process's conversions (1.2 GB). A `TempDir` in a static
/// is never dropped, so it would leak on every run: instead each run first removes the
/// directories of earlier runs whose process is gone.
fn fixture_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let prefix = "convert-fixture-";
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One engine at a time: tests share 2 cores and candle's pools.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn load_opts() -> LoadOptions {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    LoadOptions {
        cpu_threads: Some(2),
        ..LoadOptions::default()
    }
}

fn open_gguf(path: &Path) -> (Content, BufReader<File>) {
    let mut r = BufReader::new(File::open(path).unwrap());
    let c = Content::read(&mut r).unwrap();
    (c, r)
}

/// Dequantised GGUF tensor, in Hugging Face row order for Q and K.
fn gguf_as_hf(c: &Content, r: &mut BufReader<File>, gguf_name: &str, p: &LlamaParams) -> Tensor {
    let t = c
        .tensor(r, gguf_name, &Device::Cpu)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap();
    if gguf_name.ends_with("attn_q.weight") {
        to_rotate_half(&t, p.num_heads).unwrap()
    } else if gguf_name.ends_with("attn_k.weight") {
        to_rotate_half(&t, p.num_kv_heads).unwrap()
    } else {
        t
    }
}

/// One tensor of a safetensors file as its header describes it.
struct Entry {
    file: PathBuf,
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

struct Header {
    tensors: std::collections::BTreeMap<String, Entry>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// A safetensors header, read here by the format's definition (u64 length, JSON), not by
/// the code under test.
fn read_header(file: &Path) -> Result<Header, String> {
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + len]).map_err(|e| e.to_string())?;
    let mut h = Header {
        tensors: Default::default(),
        metadata: Default::default(),
    };
    for (name, t) in v {
        if name == "__metadata__" {
            h.metadata = t.as_object().cloned().unwrap_or_default();
            continue;
        }
        let off = |i: usize| 8 + len as u64 + t["data_offsets"][i].as_u64().unwrap();
        let entry = Entry {
            file: file.to_path_buf(),
            dtype: t["dtype"].as_str().unwrap().to_string(),
            shape: t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            start: off(0),
            end: off(1),
        };
        assert!(entry.end as usize <= bytes.len(), "{name} past the end");
        h.tensors.insert(name, entry);
    }
    Ok(h)
}

fn read_st(e: &Entry, dtype: DType) -> Tensor {
    let mut f = File::open(&e.file).unwrap();
    f.seek(SeekFrom::Start(e.start)).unwrap();
    let mut b = vec![0u8; (e.end - e.start) as usize];
    f.read_exact(&mut b).unwrap();
    Tensor::from_raw_buffer(&b, dtype, &e.shape, &Device::Cpu).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn safetensors_f32_is_the_gguf_dequantised_exactly_in_hf_layout() {
    let Some(c) = converted() else { return };
    let (content, mut reader) = open_gguf(&c.source);
    let params = LlamaParams::from_gguf(&GgufFile::open(&c.source).unwrap()).unwrap();
    let header = read_header(&c.st_f32.join("model.safetensors")).unwrap();
    let (entries, meta) = (header.tensors, header.metadata);
    assert_eq!(meta["format"], "pt", "transformers requires format=pt");
    // 30 layers x 9 + embedding + final norm; tied, so no lm_head.
    assert_eq!(entries.len(), 272);
    assert!(!entries.contains_key("lm_head.weight"));
    let expected = params.expected_tensors();
    assert_eq!(expected.len(), 272);
    for (name, shape) in &expected {
        let e = &entries[name];
        assert_eq!(&e.shape, shape, "{name}");
        assert_eq!(e.dtype, "F32", "{name}");
        let gguf_name = hf_to_gguf_name(name).unwrap();
        let want = gguf_as_hf(&content, &mut reader, &gguf_name, &params);
        let got = read_st(e, DType::F32);
        assert!(
            f32s(&want) == f32s(&got),
            "{name} differs from the dequantised {gguf_name}"
        );
    }
    // Spot check of the permutation against the raw GGUF rows: HF row 1 of head 0 is
    // GGUF row 2 (interleaved pairs 0,1 | 2,3 ... hold rotate-half rows 0,32 | 1,33 ...).
    let raw = content
        .tensor(&mut reader, "blk.0.attn_q.weight", &Device::Cpu)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap();
    let hf = read_st(
        &entries["model.layers.0.self_attn.q_proj.weight"],
        DType::F32,
    );
    let row = |t: &Tensor, i: usize| f32s(&t.get(i).unwrap());
    assert_eq!(row(&hf, 1), row(&raw, 2));
    assert_eq!(row(&hf, 32), row(&raw, 1));

    let cfg = json(&c.st_f32.join("config.json"));
    for (key, want) in [
        ("hidden_size", 576),
        ("intermediate_size", 1536),
        ("num_hidden_layers", 30),
        ("num_attention_heads", 9),
        ("num_key_value_heads", 3),
        ("vocab_size", 49152),
        ("max_position_embeddings", 8192),
        ("bos_token_id", 1),
        ("eos_token_id", 2),
    ] {
        assert_eq!(cfg[key], want, "config.json {key}");
    }
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["rms_norm_eps"], 1e-5);
    assert_eq!(cfg["rope_theta"], 100000.0);
    assert_eq!(cfg["tie_word_embeddings"], true);
    assert_eq!(cfg["torch_dtype"], "float32");
    let prov = json(&c.st_f32.join(convert::PROVENANCE_FILE));
    assert_eq!(prov["source"]["format"], "gguf");
    assert_eq!(prov["source"]["dtypes"]["Q4_1"], 210);
    assert_eq!(
        prov["source"]["size_bytes"],
        std::fs::metadata(&c.source).unwrap().len()
    );
    assert_eq!(prov["target"]["dtype"], "f32");
    assert!(c.st_f32.join("generation_config.json").is_file());
}

#[test]
fn safetensors_f16_is_the_f32_rounded() {
    let Some(c) = converted() else { return };
    let f32s_ = read_header(&c.st_f32.join("model.safetensors"))
        .unwrap()
        .tensors;
    let f16s = read_header(&c.st_f16.join("model.safetensors"))
        .unwrap()
        .tensors;
    assert_eq!(f16s.len(), 272);
    for (name, e) in &f16s {
        assert_eq!(e.dtype, "F16", "{name}");
        assert_eq!(e.shape, f32s_[name].shape, "{name}");
        assert_eq!(
            e.end - e.start,
            (e.shape.iter().product::<usize>() * 2) as u64
        );
    }
    // Values: round-to-nearest of the f32 file, on a few tensors of every kind.
    for name in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.29.mlp.down_proj.weight",
        "model.norm.weight",
    ] {
        let want = read_st(&f32s_[name], DType::F32)
            .to_dtype(DType::F16)
            .unwrap();
        let got = read_st(&f16s[name], DType::F16);
        assert!(f32s(&want) == f32s(&got), "{name}");
    }
    assert_eq!(
        json(&c.st_f16.join("config.json"))["torch_dtype"],
        "float16"
    );
}

#[test]
fn tokenizer_json_tokenises_like_the_gguf_metadata() {
    let Some(c) = converted() else { return };
    let _g = serial();
    let tok_json = c.st_f32.join("tokenizer.json");
    let from_gguf = Engine::load_gguf(&c.source, None, &load_opts()).unwrap();
    let from_json = Engine::load_gguf(&c.source, Some(&tok_json), &load_opts()).unwrap();
    assert_eq!(from_json.info().tokenizer_source, "tokenizer.json");
    let plain = tokenizers::Tokenizer::from_file(&tok_json).unwrap();
    let a = from_gguf.tokenizer();
    let b = from_json.tokenizer();
    let chat = a.apply_chat_template("Name the capital of France.");
    for text in [
        "Hello, world! The quick brown fox.",
        "In 2024 there were 1234567 tokens",
        " leading space and   whitespace\n\n\truns",
        "café ☕ naïve 日本語",
        "<|endoftext|><|im_start|>user\nhi<|im_end|>",
        "<repo_name>lem<file_sep>src/main.rs",
        chat.as_str(),
    ] {
        let want = a.encode(text).unwrap();
        assert_eq!(b.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(
            plain.encode(text, true).unwrap().get_ids(),
            want,
            "{text:?}"
        );
        assert_eq!(b.decode(&want).unwrap(), a.decode(&want).unwrap());
    }
    assert_eq!(b.encode("<|im_end|>").unwrap(), vec![2]);
    let tc = json(&c.st_f32.join("tokenizer_config.json"));
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["add_bos_token"], false);
    assert!(tc["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
}

fn string_array(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                Value::I32(i) => i.to_string(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn gguf_round_trip_keeps_metadata_tokenizer_and_gguf_row_order() {
    let Some(c) = converted() else { return };
    let (orig, mut orig_r) = open_gguf(&c.source);
    for (path, ty) in [
        (&c.gguf_q8_0, GgmlDType::Q8_0),
        (&c.gguf_f16, GgmlDType::F16),
    ] {
        let (g, _) = open_gguf(path);
        assert_eq!(g.tensor_infos.len(), 272, "{path:?}");
        for (name, info) in &g.tensor_infos {
            let o = &orig.tensor_infos[name];
            assert_eq!(info.shape.dims(), o.shape.dims(), "{name}");
            let want = if info.shape.dims().len() == 1 {
                GgmlDType::F32
            } else {
                ty
            };
            assert_eq!(info.ggml_dtype, want, "{name} in {path:?}");
        }
        assert!(!g.tensor_infos.contains_key("output.weight"), "tied");
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
        ] {
            assert!(
                string_array(&g.metadata[key]) == string_array(&orig.metadata[key]),
                "{key} differs in {path:?}"
            );
        }
        for key in [
            "general.architecture",
            "llama.block_count",
            "llama.context_length",
            "llama.embedding_length",
            "llama.feed_forward_length",
            "llama.attention.head_count",
            "llama.attention.head_count_kv",
            "llama.rope.freq_base",
            "llama.attention.layer_norm_rms_epsilon",
            "llama.rope.dimension_count",
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.chat_template",
        ] {
            assert_eq!(
                format!("{:?}", g.metadata[key]),
                format!("{:?}", orig.metadata[key]),
                "{key} in {path:?}"
            );
        }
    }
    // f16 GGUF rows are the original's dequantised rows, rounded: the permutation was
    // undone on the way to safetensors and redone on the way back.
    let (g, mut r) = open_gguf(&c.gguf_f16);
    for name in [
        "blk.0.attn_q.weight",
        "blk.7.attn_k.weight",
        "blk.3.ffn_up.weight",
    ] {
        let want = orig
            .tensor(&mut orig_r, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let got = g
            .tensor(&mut r, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        assert!(f32s(&want) == f32s(&got), "{name}");
    }
}

fn greedy_answer(e: &mut Engine) -> (Vec<u32>, String) {
    let t = e.tokenizer();
    let prompt = t
        .encode(&t.apply_chat_template("Name the capital of France."))
        .unwrap();
    let params = GenerationParams {
        max_new_tokens: 24,
        ..GenerationParams::default()
    };
    let mut out = e.generate(&[prompt], &params, &mut NoopObserver).unwrap();
    let s = out.sequences.remove(0);
    (s.output_token_ids, s.text)
}

#[test]
fn converted_ggufs_load_and_answer_like_the_original() {
    let Some(c) = converted() else { return };
    let _g = serial();
    let (orig_ids, orig_text) =
        greedy_answer(&mut Engine::load_gguf(&c.source, None, &load_opts()).unwrap());
    eprintln!("original: {orig_text:?}");
    for path in [&c.gguf_q8_0, &c.gguf_f16] {
        let mut e = Engine::load_gguf(path, None, &load_opts()).unwrap();
        assert_eq!(e.info().tokenizer_source, "gguf-metadata");
        assert_eq!(e.info().eos_token_ids, vec![2, 0]);
        assert_eq!(e.info().num_parameters, 134_515_008);
        let (ids, text) = greedy_answer(&mut e);
        let same = ids
            .iter()
            .zip(&orig_ids)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "{}: {text:?} ({same} leading tokens as the original)",
            path.display()
        );
        assert!(text.contains("Paris"), "{}: {text:?}", path.display());
        // The engine re-quantises the original's Q4_1 to Q8_0 at load, which is what this
        // conversion stored: the same weights, so the same tokens.
        if path == &c.gguf_q8_0 {
            assert_eq!(ids, orig_ids, "{text:?} vs {orig_text:?}");
        }
    }
}

#[test]
fn converted_f32_safetensors_loads_and_answers_paris() {
    let Some(c) = converted() else { return };
    let _g = serial();
    let mut e = Engine::load_safetensors(
        &c.st_f32,
        Some(&c.st_f32.join("tokenizer.json")),
        &load_opts(),
    )
    .unwrap();
    assert_eq!(e.info().num_parameters, 134_515_008);
    let (_, text) = greedy_answer(&mut e);
    eprintln!("safetensors f32: {text:?}");
    assert!(text.contains("Paris"), "{text:?}");
}

#[test]
fn existing_outputs_are_refused_without_force() {
    let Some(c) = converted() else { return };
    // A GGUF file: refused, then replaced with --force.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m-q4_0.gguf");
    let gguf = |force| {
        convert::convert(
            &c.st_f32,
            TargetFormat::Gguf,
            TargetDtype::Q4_0,
            &out,
            force,
        )
    };
    gguf(false).unwrap();
    let before = std::fs::metadata(&out).unwrap().modified().unwrap();
    let e = gguf(false).unwrap_err();
    assert!(matches!(e, ConvertError::Exists { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("m-q4_0.gguf already exists; pass --force"),
        "{e}"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().modified().unwrap(), before);
    gguf(true).unwrap();
    let (g, _) = open_gguf(&out);
    assert_eq!(
        g.tensor_infos["blk.0.ffn_up.weight"].ggml_dtype,
        GgmlDType::Q4_0
    );
    // A directory lem did not write is not replaced, even with --force.
    let foreign = tmp.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let e = convert::convert(
        &c.source,
        TargetFormat::Safetensors,
        TargetDtype::F16,
        &foreign,
        true,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("not a directory written by `lem model convert`"),
        "{e}"
    );
    assert!(foreign.join("notes.txt").is_file());
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn errors_name_the_file_and_the_tensor() {
    let Some(c) = converted() else { return };
    // A config promising 31 layers over a 30-layer checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(
        c.st_f32.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let mut cfg = json(&c.st_f32.join("config.json"));
    cfg["num_hidden_layers"] = 31.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let e = convert::convert(
        &dir,
        TargetFormat::Gguf,
        TargetDtype::Q8_0,
        &tmp.path().join("x.gguf"),
        false,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(
        msg.contains("`model.layers.30.input_layernorm.weight`: missing"),
        "{msg}"
    );
    // safetensors cannot hold q8_0; GGUF not bf16.
    let e = convert::convert(
        &c.source,
        TargetFormat::Safetensors,
        TargetDtype::Q8_0,
        &tmp.path().join("y"),
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("use one of f32|f16|bf16"), "{e}");
}
