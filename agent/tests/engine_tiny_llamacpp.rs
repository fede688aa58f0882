//! lem's engine against llama.cpp on tiny random-weight models that lem's converter writes.
//!
//! Three seeded models, written here as Hugging Face checkpoints (safetensors, byte-level
//! BPE tokenizer.json, config.json): a Llama-shaped one (untied LM head, GQA 4:2, rotary
//! theta 1e4), a SmolLM2-shaped one (tied embeddings, GQA 3:1, theta 1e5, digit
//! pre-tokenizer) and a Qwen2-shaped one (`Qwen2ForCausalLM`: Q/K/V biases, untied
//! LM head as Qwen2.5-7B, GQA 4:2, theta 1e6, Qwen2's split-regex pre-tokenizer; its GGUF is
//! `qwen2`, with rotate-half Q/K rows as llama.cpp's converter leaves them).
//! `lem_agent::convert` turns each into GGUF at f32, q8_0 and q4_0.
//! `scripts/reference/tiny_llamacpp.py` ran those same GGUFs through llama.cpp and wrote
//! `tests/fixtures/tiny_llamacpp.json`: last-token logits (the full vocabulary) and greedy
//! continuations for fixed token-id inputs.
//!
//! The GGUFs are not committed: each run regenerates them and checks a content SHA-256
//! (every byte of the file except the `lem.convert.*` provenance keys, which record the
//! run's time and paths) against the fixture, so the file compared is the file llama.cpp
//! ran. `LEM_TINY_GGUF_OUT=<dir>` writes them there with `manifest.json` instead of checking
//! (the script's first step).

use candle_core::quantized::gguf_file;
use lem_agent::convert::{self, TargetDtype, TargetFormat, PROVENANCE_KEY_PREFIX};
use lem_agent::engine::{Engine, GenerationParams, LoadOptions, NoopObserver};
use lem_agent::model::tokenizer::QWEN2_PRE_REGEX;
use lem_common::rng::SplitMix64;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use tiny_hf::TinyHf;

mod tiny_hf;

/// The Hugging Face class a tiny model is written as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TinyArch {
    Llama,
    /// Biases on Q, K and V; Qwen2's pre-tokenizer.
    Qwen2,
}

/// One tiny model's shape and seed.
struct TinySpec {
    name: &'static str,
    arch: TinyArch,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    layers: usize,
    tied: bool,
    rope_theta: f64,
    /// SmolLM2's pre-tokenizer splits digits one by one (GGUF `pre = smollm`).
    digit_pre_tokenizer: bool,
    seed: u64,
}

const SPECS: [TinySpec; 3] = [
    TinySpec {
        name: "llama-gqa",
        arch: TinyArch::Llama,
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 128,
        layers: 2,
        tied: false,
        rope_theta: 10_000.0,
        digit_pre_tokenizer: false,
        seed: 0x11A4A,
    },
    TinySpec {
        name: "smollm2-tied",
        arch: TinyArch::Llama,
        hidden: 96,
        heads: 3,
        kv_heads: 1,
        ffn: 128,
        layers: 3,
        tied: true,
        rope_theta: 100_000.0,
        digit_pre_tokenizer: true,
        seed: 0x5A011,
    },
    TinySpec {
        name: "qwen2-bias",
        arch: TinyArch::Qwen2,
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 96,
        layers: 2,
        tied: false,
        rope_theta: 1_000_000.0,
        digit_pre_tokenizer: false,
        seed: 0x0E2B1,
    },
];

const DTYPES: [TargetDtype; 3] = [TargetDtype::F32, TargetDtype::Q8_0, TargetDtype::Q4_0];

/// Largest |lem − llama.cpp| allowed over the whole last-token logit vector, per weight
/// type (docs/models.md, "Against llama.cpp: tiny random-weight models", says why).
fn logit_tolerance(dtype: &str) -> f64 {
    match dtype {
        "f32" => 1e-4,
        "q8_0" | "q4_0" => 0.1,
        other => panic!("no tolerance stated for {other}"),
    }
}

// ----- the seeded source checkpoints -----

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [(&str, &str); 6] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
];

impl TinySpec {
    /// The checkpoint's shape (BOS 1 and EOS 2: SmolLM2's specials, see `vocab`).
    fn hf(&self) -> TinyHf {
        TinyHf {
            model_type: match self.arch {
                TinyArch::Llama => "llama",
                TinyArch::Qwen2 => "qwen2",
            },
            hidden: self.hidden,
            heads: self.heads,
            kv_heads: self.kv_heads,
            ffn: self.ffn,
            layers: self.layers,
            vocab: vocab().len(),
            tied: self.tied,
            rope_theta: self.rope_theta,
            bos_token_id: 1,
            eos_token_id: 2,
        }
    }
}

/// Specials at 0..3 (as SmolLM2), byte-level characters, then one token per merge.
fn vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.extend(["Ġ", "Ċ"].map(String::from));
    v.extend(
        ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .map(String::from),
    );
    v.extend([".", ",", "!", "?"].map(String::from));
    v.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    v
}

fn tokenizer_json(spec: &TinySpec) -> Json {
    let vocab: serde_json::Map<String, Json> = vocab()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, json!(i)))
        .collect();
    let added: Vec<Json> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre = if spec.arch == TinyArch::Qwen2 {
        // Qwen2's tokenizer.json: its regex split, then bytes mapped without a regex.
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PRE_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})
    } else if spec.digit_pre_tokenizer {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})
    } else {
        byte_level.clone()
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": null, "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab,
            "merges": MERGES.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        }
    })
}

/// Seeded weights: norms near 1, the embedding and biases in ±1 (biases as large as the
/// projections' outputs, so a misplaced one shows), matrices in ±2/sqrt(fan-in) so
/// activations neither vanish nor blow up over a few layers.
fn weights(name: &str, shape: &[usize], rng: &mut SplitMix64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let scale = if name.ends_with("norm.weight") {
        0.2
    } else if name == "model.embed_tokens.weight" || name.ends_with(".bias") {
        1.0
    } else {
        2.0 / (shape[1] as f64).sqrt()
    };
    let mut draw = || ((rng.next_f64() * 2.0 - 1.0) * scale) as f32;
    if name.ends_with("norm.weight") {
        (0..n).map(|_| 1.0 + draw()).collect()
    } else {
        (0..n).map(|_| draw()).collect()
    }
}

fn write_source(dir: &Path, spec: &TinySpec) {
    // One generator for the whole file, in tensor order.
    let mut rng = SplitMix64::new(spec.seed);
    spec.hf()
        .write_dir(dir, &tokenizer_json(spec), |_, name, shape| {
            weights(name, shape, &mut rng)
        });
}

// ----- the GGUFs and their content hash -----

struct Built {
    model: &'static str,
    dtype: &'static str,
    path: PathBuf,
    content_sha256: String,
}

fn gguf_file_name(model: &str, dtype: &str) -> String {
    format!("tiny-{model}-{dtype}.gguf")
}

/// SHA-256 over what llama.cpp reads: every metadata key but the run-dependent
/// `lem.convert.*` provenance (sorted, key and value), every tensor info (sorted) and the
/// whole tensor-data region, byte for byte.
fn content_sha256(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut h = Sha256::new();
    let mut keys: Vec<&String> = content
        .metadata
        .keys()
        .filter(|k| !k.starts_with(PROVENANCE_KEY_PREFIX))
        .collect();
    keys.sort();
    for k in keys {
        h.update(format!("{k}={:?}\n", content.metadata[k]).as_bytes());
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for n in names {
        let t = &content.tensor_infos[n];
        h.update(format!("{n}:{:?}:{:?}:{}\n", t.ggml_dtype, t.shape.dims(), t.offset).as_bytes());
    }
    f.seek(SeekFrom::Start(content.tensor_data_offset)).unwrap();
    let mut data = Vec::new();
    f.read_to_end(&mut data).unwrap();
    h.update(&data);
    format!("{:x}", h.finalize())
}

/// Writes every model at every dtype into `dir` with lem's converter.
fn build_all(dir: &Path) -> Vec<Built> {
    let mut built = Vec::new();
    for spec in &SPECS {
        let src = dir.join(format!("src-{}", spec.name));
        write_source(&src, spec);
        for dtype in DTYPES {
            let path = dir.join(gguf_file_name(spec.name, dtype.name()));
            convert::convert(&src, TargetFormat::Gguf, dtype, &path, true).unwrap();
            built.push(Built {
                model: spec.name,
                dtype: dtype.name(),
                content_sha256: content_sha256(&path),
                path,
            });
        }
    }
    built
}

/// Built once per test process, in a directory that lives as long as it.
fn built() -> &'static [Built] {
    static BUILT: OnceLock<(tempfile::TempDir, Vec<Built>)> = OnceLock::new();
    let (_, b) = BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let b = build_all(dir.path());
        (dir, b)
    });
    b
}

// ----- the fixture -----

fn fixture() -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llamacpp.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/reference/tiny_llamacpp.py writes it)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

fn load(path: &Path) -> Engine {
    lem_agent::threads::init(Some(2));
    let opts = LoadOptions {
        cpu_threads: Some(2),
        requantize_q4_1_to_q8_0: false,
        ..LoadOptions::default()
    };
    Engine::load_gguf(path, None, &opts).unwrap()
}

/// The fixture's entry for each built GGUF, checking that it is the same file.
fn pairs() -> Vec<(&'static Built, Json)> {
    let fx = fixture();
    let models = fx["models"].as_array().unwrap();
    assert_eq!(models.len(), SPECS.len() * DTYPES.len(), "fixture models");
    built()
        .iter()
        .map(|b| {
            let m = models
                .iter()
                .find(|m| m["model"] == b.model && m["dtype"] == b.dtype)
                .unwrap_or_else(|| panic!("fixture has no {} {}", b.model, b.dtype))
                .clone();
            assert_eq!(
                m["content_sha256"].as_str().unwrap(),
                b.content_sha256,
                "{} {}: lem's converter no longer writes the GGUF llama.cpp ran; rerun \
                 scripts/reference/tiny_llamacpp.py if the change is intended",
                b.model,
                b.dtype
            );
            (b, m)
        })
        .collect()
}

/// `manifest.json` beside the GGUFs: what the reference script runs.
fn write_manifest(dir: &Path, built: &[Built]) {
    let manifest: Vec<Json> = built
        .iter()
        .map(|b| {
            json!({"model": b.model, "dtype": b.dtype,
                   "file": b.path.file_name().unwrap().to_str().unwrap(),
                   "content_sha256": b.content_sha256})
        })
        .collect();
    let text = serde_json::to_string_pretty(&manifest).unwrap();
    std::fs::write(dir.join("manifest.json"), text).unwrap();
}

#[test]
fn regenerated_ggufs_are_the_ones_llamacpp_ran() {
    if let Some(out) = std::env::var_os("LEM_TINY_GGUF_OUT") {
        // The reference script's first step: write the files it will run.
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).unwrap();
        let built = build_all(&out);
        write_manifest(&out, &built);
        eprintln!("wrote {} GGUFs to {}", built.len(), out.display());
        return;
    }
    // `pairs` checks each built file's content hash against the fixture's.
    assert_eq!(pairs().len(), SPECS.len() * DTYPES.len());
}

#[test]
fn content_hash_ignores_provenance_and_sees_weights() {
    // Two conversions of one source differ in their provenance keys (time) yet hash
    // the same; a different seed hashes differently.
    let dir = tempfile::tempdir().unwrap();
    let spec = &SPECS[0];
    write_source(&dir.path().join("a"), spec);
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    for p in [&a, &b] {
        convert::convert(
            &dir.path().join("a"),
            TargetFormat::Gguf,
            TargetDtype::Q8_0,
            p,
            true,
        )
        .unwrap();
    }
    assert_eq!(content_sha256(&a), content_sha256(&b));
    let other = TinySpec {
        seed: spec.seed + 1,
        ..SPECS[0]
    };
    write_source(&dir.path().join("c"), &other);
    let c = dir.path().join("c.gguf");
    convert::convert(
        &dir.path().join("c"),
        TargetFormat::Gguf,
        TargetDtype::Q8_0,
        &c,
        true,
    )
    .unwrap();
    assert_ne!(content_sha256(&a), content_sha256(&c));
}

#[test]
fn last_token_logits_match_llamacpp() {
    if std::env::var_os("LEM_TINY_GGUF_OUT").is_some() {
        return;
    }
    for (b, m) in pairs() {
        let mut e = load(&b.path);
        let tol = logit_tolerance(b.dtype);
        for (i, case) in m["cases"].as_array().unwrap().iter().enumerate() {
            let input = ids(&case["input"]);
            let want: Vec<f64> = case["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let got = e.next_token_logits(&[input]).unwrap().remove(0);
            assert_eq!(
                got.len(),
                want.len(),
                "{} {} case {i}: vocabulary",
                b.model,
                b.dtype
            );
            let (worst_id, worst) = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .enumerate()
                .fold(
                    (0, 0.0),
                    |acc, (id, d)| if d > acc.1 { (id, d) } else { acc },
                );
            let differing = got
                .iter()
                .zip(&want)
                .filter(|(g, w)| **g as f64 != **w)
                .count();
            eprintln!(
                "{} {} case {i}: max |lem - llama.cpp| = {worst:.2e} (token {worst_id}); \
                 {differing} of {} logits not bit-equal",
                b.model,
                b.dtype,
                want.len()
            );
            assert!(
                worst <= tol,
                "{} {} case {i}: token {worst_id} differs by {worst} > {tol}",
                b.model,
                b.dtype
            );
        }
    }
}

#[test]
fn greedy_continuations_equal_llamacpp() {
    if std::env::var_os("LEM_TINY_GGUF_OUT").is_some() {
        return;
    }
    for (b, m) in pairs() {
        let mut e = load(&b.path);
        let eos = e.info().eos_token_ids.clone();
        for (i, case) in m["cases"].as_array().unwrap().iter().enumerate() {
            let want_all = ids(&case["greedy"]);
            // lem stops at EOS; llama.cpp's list runs on past it.
            let want: Vec<u32> = match want_all.iter().position(|t| eos.contains(t)) {
                Some(p) => want_all[..=p].to_vec(),
                None => want_all,
            };
            let params = GenerationParams {
                max_new_tokens: want.len() as u32,
                ..GenerationParams::default()
            };
            let out = e
                .generate(&[ids(&case["input"])], &params, &mut NoopObserver)
                .unwrap();
            assert_eq!(
                out.sequences[0].output_token_ids, want,
                "{} {} case {i}: greedy tokens",
                b.model, b.dtype
            );
        }
    }
}

/// Max |got − want| over a logit vector and the token where it is.
fn worst_diff(got: &[f32], want: &Json) -> (usize, f64) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "vocabulary");
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w.as_f64().unwrap()).abs())
        .enumerate()
        .fold(
            (0, 0.0),
            |acc, (id, d)| if d > acc.1 { (id, d) } else { acc },
        )
}

#[test]
fn safetensors_checkpoints_match_llamacpp_at_f32() {
    // The Q/K permutation end to end: the seeded Hugging Face checkpoint (rotate-half
    // layout, loaded by lem's safetensors path) and the GGUF converted back to safetensors
    // by lem both give llama.cpp's logits for the GGUF.
    if std::env::var_os("LEM_TINY_GGUF_OUT").is_some() {
        return;
    }
    let opts = LoadOptions {
        cpu_threads: Some(2),
        ..LoadOptions::default()
    };
    lem_agent::threads::init(Some(2));
    let tol = logit_tolerance("f32");
    let mut checked = 0;
    for (b, m) in pairs().into_iter().filter(|(b, _)| b.dtype == "f32") {
        let dir = b.path.parent().unwrap();
        let source = dir.join(format!("src-{}", b.model));
        let round_trip = dir.join(format!("st-{}", b.model));
        convert::convert(
            &b.path,
            TargetFormat::Safetensors,
            TargetDtype::F32,
            &round_trip,
            true,
        )
        .unwrap();
        for ckpt in [source, round_trip] {
            let mut e = Engine::load_safetensors(&ckpt, None, &opts).unwrap();
            for (i, case) in m["cases"].as_array().unwrap().iter().enumerate() {
                let got = e
                    .next_token_logits(&[ids(&case["input"])])
                    .unwrap()
                    .remove(0);
                let (id, worst) = worst_diff(&got, &case["last_logits"]);
                assert!(
                    worst <= tol,
                    "{} case {i}: token {id} differs by {worst} > {tol}",
                    ckpt.display()
                );
                checked += 1;
            }
        }
    }
    let cases_per_model = fixture()["models"][0]["cases"].as_array().unwrap().len();
    assert_eq!(
        checked,
        SPECS.len() * 2 * cases_per_model,
        "checkpoints x cases checked"
    );
}

/// A python that imports `modules`: `$env_var`, else `~/<default_venv>/bin/python`; or
/// why there is none. Under `CI` (which installs it, running `setup`) none is a failure.
fn python_with(env_var: &str, default_venv: &str, modules: &str, setup: &str) -> Option<PathBuf> {
    let python = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(default_venv)
                .join("bin/python")
        });
    let why = match Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => return Some(python),
        Ok(_) => format!("{} cannot import {modules}", python.display()),
        Err(e) => format!("{}: {e}", python.display()),
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI: {why}; run {setup}");
    }
    eprintln!("skipped: {why} ({setup} installs it)");
    None
}

/// Runs `scripts/reference/<name>` with `args`; panics unless it succeeds.
fn run_reference_script(python: &Path, name: &str, args: &[&std::ffi::OsStr]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/reference")
        .join(name);
    let status = Command::new(python)
        .arg(&script)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
}

#[test]
fn reference_script_reproduces_the_fixture() {
    // Reruns scripts/reference/tiny_llamacpp.py on freshly converted GGUFs; needs
    // llama.cpp, so it skips without it (and fails under CI, which installs it).
    if std::env::var_os("LEM_TINY_GGUF_OUT").is_some() {
        return;
    }
    // Without llama.cpp the fixture comparisons above still ran.
    let Some(python) = python_with(
        "LEM_LLAMA_PYTHON",
        ".cache/lem-llama-venv",
        "llama_cpp, numpy",
        "scripts/setup-llama-server.sh",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let built = build_all(dir.path());
    write_manifest(dir.path(), &built);
    let out = dir.path().join("rerun.json");
    run_reference_script(
        &python,
        "tiny_llamacpp.py",
        &["--ggufs".as_ref(), dir.path().as_os_str(), out.as_os_str()],
    );
    let rerun: Json = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let committed = fixture();
    let (a, b) = (
        rerun["models"].as_array().unwrap(),
        committed["models"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (r, c) in a.iter().zip(b) {
        let what = format!("{} {}", c["model"], c["dtype"]);
        for key in ["model", "dtype", "content_sha256", "n_vocab"] {
            assert_eq!(r[key], c[key], "{what}: {key}");
        }
        for (rc, cc) in r["cases"]
            .as_array()
            .unwrap()
            .iter()
            .zip(c["cases"].as_array().unwrap())
        {
            assert_eq!(rc["input"], cc["input"], "{what}");
            assert_eq!(rc["greedy"], cc["greedy"], "{what}: greedy");
            // Another CPU may take other ggml kernels: f32 rounding, nothing more.
            let got: Vec<f32> = rc["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let (id, worst) = worst_diff(&got, &cc["last_logits"]);
            assert!(
                worst <= 1e-5,
                "{what}: token {id} moved by {worst} since the fixture"
            );
        }
    }
}

/// A copy of a GGUF with `general.architecture` and its shape keys renamed to `to`;
/// tensors unchanged.
fn relabel_architecture(src: &Path, dst: &Path, to: &str) {
    let mut f = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let from = match &content.metadata["general.architecture"] {
        gguf_file::Value::String(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    let metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| {
            let k = match k.strip_prefix(&format!("{from}.")) {
                Some(rest) => format!("{to}.{rest}"),
                None => k.clone(),
            };
            let v = if k == "general.architecture" {
                gguf_file::Value::String(to.into())
            } else {
                v.clone()
            };
            (k, v)
        })
        .collect();
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| {
            let t = content
                .tensor(&mut f, n, &candle_core::Device::Cpu)
                .unwrap();
            (n.clone(), t)
        })
        .collect();
    let md: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &md, &ts).unwrap();
}

#[test]
fn qwen2_ggufs_run_as_qwen2_and_the_comparison_would_see_llama_semantics() {
    // The converter wrote `qwen2` with Q/K/V biases, and lem runs it as Qwen2. The same
    // tensors labelled `llama` (interleaved rotary, biases ignored) miss llama.cpp's
    // logits by far more than the tolerance: the comparison above can fail.
    if std::env::var_os("LEM_TINY_GGUF_OUT").is_some() {
        return;
    }
    let (b, m) = pairs()
        .into_iter()
        .find(|(b, _)| b.model == "qwen2-bias" && b.dtype == "f32")
        .expect("the qwen2 f32 GGUF");
    let mut f = std::fs::File::open(&b.path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    assert!(matches!(
        &content.metadata["general.architecture"],
        gguf_file::Value::String(s) if s == "qwen2"
    ));
    assert!(content.metadata.contains_key("qwen2.rope.freq_base"));
    for t in [
        "blk.0.attn_q.bias",
        "blk.1.attn_k.bias",
        "blk.1.attn_v.bias",
    ] {
        assert!(content.tensor_infos.contains_key(t), "{t}");
    }
    let e = load(&b.path);
    assert_eq!(e.info().shape.architecture, "qwen2");

    // GGUF -> safetensors -> GGUF gives back `qwen2`, its pre-tokenizer name (from the
    // Split regex the safetensors tokenizer.json carries) and every tensor bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let (st, back) = (dir.path().join("st"), dir.path().join("back.gguf"));
    convert::convert(
        &b.path,
        TargetFormat::Safetensors,
        TargetDtype::F32,
        &st,
        true,
    )
    .unwrap();
    convert::convert(&st, TargetFormat::Gguf, TargetDtype::F32, &back, true).unwrap();
    let mut g = std::fs::File::open(&back).unwrap();
    let round = gguf_file::Content::read(&mut g).unwrap();
    for key in [
        "general.architecture",
        "tokenizer.ggml.pre",
        "qwen2.rope.freq_base",
    ] {
        assert_eq!(
            format!("{:?}", round.metadata[key]),
            format!("{:?}", content.metadata[key]),
            "{key}"
        );
    }
    assert_eq!(round.tensor_infos.len(), content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let a = content
            .tensor(&mut f, name, &candle_core::Device::Cpu)
            .unwrap();
        let b = round
            .tensor(&mut g, name, &candle_core::Device::Cpu)
            .unwrap();
        assert_eq!(a.data().unwrap(), b.data().unwrap(), "{name}");
    }

    let as_llama = dir.path().join("as-llama.gguf");
    relabel_architecture(&b.path, &as_llama, "llama");
    let mut wrong = load(&as_llama);
    let case = &m["cases"][2];
    let got = wrong
        .next_token_logits(&[ids(&case["input"])])
        .unwrap()
        .remove(0);
    let (_, worst) = worst_diff(&got, &case["last_logits"]);
    eprintln!("qwen2 weights run as llama: max |lem - llama.cpp| = {worst:.3}");
    assert!(
        worst > 100.0 * logit_tolerance("f32"),
        "llama semantics came within {worst} of llama.cpp's qwen2 logits"
    );
}

#[test]
fn a_qwen2_gguf_written_by_llamacpps_gguf_py_loads_and_matches_llamacpp() {
    // The tiny Qwen2 checkpoint written as llama.cpp's converter writes Qwen2 (its gguf-py
    // library, scripts/reference/qwen2_gguf_py.py): other keys and key order, no
    // `vocab_size` or `rope.dimension_count`, llama.cpp's `general.*` fields. lem loads
    // it, gives llama.cpp's logits for lem's own conversion of the same weights (llama.cpp
    // computes the same bits on both files: checked when the script was written), and
    // tokenizes as the checkpoint's tokenizer.json does.
    if std::env::var_os("LEM_TINY_GGUF_OUT").is_some() {
        return;
    }
    let Some(python) = python_with(
        "LEM_GGUF_PYTHON",
        ".cache/lem-ref-venv",
        "gguf, numpy",
        "scripts/setup-gguf-py.sh",
    ) else {
        return;
    };
    let (b, m) = pairs()
        .into_iter()
        .find(|(b, _)| b.model == "qwen2-bias" && b.dtype == "f32")
        .expect("the qwen2 f32 GGUF");
    let source = b.path.parent().unwrap().join("src-qwen2-bias");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gguf-py-qwen2.gguf");
    run_reference_script(
        &python,
        "qwen2_gguf_py.py",
        &[source.as_os_str(), out.as_os_str()],
    );
    // Not lem's bytes: llama.cpp's writer leaves out keys lem's writes.
    let content = gguf_file::Content::read(&mut std::fs::File::open(&out).unwrap()).unwrap();
    assert!(!content.metadata.contains_key("qwen2.vocab_size"));
    assert!(!content
        .metadata
        .keys()
        .any(|k| k.starts_with(PROVENANCE_KEY_PREFIX)));

    let mut e = load(&out);
    assert_eq!(e.info().shape.architecture, "qwen2");
    for (i, case) in m["cases"].as_array().unwrap().iter().enumerate() {
        let got = e
            .next_token_logits(&[ids(&case["input"])])
            .unwrap()
            .remove(0);
        let (id, worst) = worst_diff(&got, &case["last_logits"]);
        assert!(
            worst <= logit_tolerance("f32"),
            "case {i}: token {id} differs by {worst}"
        );
    }
    let hf = tokenizers::Tokenizer::from_file(source.join("tokenizer.json")).unwrap();
    for text in [
        "the 2026 cats",
        "he's in, isn't he?",
        "x\n\n  then\tHER 7.5!",
        "<|im_start|>ther<|im_end|>",
    ] {
        let want = hf.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(e.tokenizer().encode(text).unwrap(), want, "{text:?}");
    }
}
