//! `lem model convert` output is byte-for-byte what the converter wrote before the model
//! layer was split out of `agent/src/convert.rs`. A tiny Llama (safetensors, byte-level
//! BPE tokenizer, all written here by hand) is converted along four paths; every output
//! file is compared with the fixture in `tests/fixtures/convert-bytes/`, which the old
//! converter produced (their SHA-256 sums are in `SHA256SUMS` there and checked first).
//!
//! Only the provenance values that depend on the run (creation time, the source's
//! absolute path and modification time, the lem version) differ between runs; the test
//! checks each against the scenario and then compares everything else, byte for byte:
//! GGUF files key by key (raw encoded values, in file order), tensor infos and data;
//! safetensors directories file by file.
//!
//! `LEM_REGEN_CONVERT_FIXTURE=1` rewrites the fixtures (only ever from a converter whose
//! output is known good).

use lem_agent::convert::{self, TargetDtype, TargetFormat};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tiny_hf::TinyHf;

mod tiny_hf;

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 96;
const LAYERS: usize = 1;
const VOCAB: usize = 64;
/// The sources' modification time, so the provenance records a known value.
const SOURCE_MTIME_S: u64 = 1_700_000_000;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert-bytes")
}

fn regenerate() -> bool {
    std::env::var_os("LEM_REGEN_CONVERT_FIXTURE").is_some_and(|v| v == "1")
}

// ----- the tiny source model -----

/// Deterministic weights in [-0.5, 0.5): a 64-bit LCG, top bits.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// The tiny Llama: one layer, grouped-query attention, an untied head.
fn source() -> TinyHf {
    TinyHf {
        model_type: "llama",
        hidden: HIDDEN,
        heads: HEADS,
        kv_heads: KV_HEADS,
        ffn: FFN,
        layers: LAYERS,
        vocab: VOCAB,
        tied: false,
        rope_theta: 10000.0,
        bos_token_id: 30 + 4,
        eos_token_id: 30 + 6,
    }
}

/// A byte-level BPE tokenizer.json: single characters, a few merges, three specials.
fn tokenizer_json() -> Json {
    let mut vocab = serde_json::Map::new();
    let mut id = 0u64;
    let mut add = |t: &str| {
        vocab.insert(t.to_string(), json!(id));
        id += 1;
    };
    for c in ('a'..='z').chain(['Ġ', '.', ',', '!']) {
        add(&c.to_string());
    }
    let merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n")];
    for (a, b) in merges {
        add(&format!("{a}{b}"));
    }
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let added: Vec<Json> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": id + i as u64, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        }
    })
}

fn write_source(dir: &Path) {
    // Each tensor's values seeded by its index in the file.
    source().write_dir(dir, &tokenizer_json(), |i, _, shape| {
        values(shape.iter().product(), i as u64 + 1)
    });
    set_mtime(&dir.join("model.safetensors"));
}

fn set_mtime(path: &Path) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(SOURCE_MTIME_S);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

// ----- provenance values that depend on the run -----

/// What the run-dependent provenance values must be.
struct Expected {
    source: String,
    started: chrono::DateTime<chrono::Utc>,
}

fn expected_modified() -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(SOURCE_MTIME_S);
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()
}

fn check_created(created: &str, e: &Expected) {
    let t = chrono::DateTime::parse_from_rfc3339(created)
        .unwrap_or_else(|err| panic!("created `{created}` is not RFC 3339: {err}"));
    let now = chrono::Utc::now();
    assert!(
        t >= e.started && t <= now,
        "created {t} is outside the run ({} .. {now})",
        e.started
    );
}

// ----- GGUF, parsed just enough to compare key by key -----

struct GgufParts {
    version: u32,
    tensor_count: u64,
    /// (key, value type and raw encoded value), in file order.
    kvs: Vec<(String, Vec<u8>)>,
    tensor_infos: Vec<u8>,
    /// Everything after the tensor infos, alignment padding stripped from the front.
    data: Vec<u8>,
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> &'a [u8] {
    let s = &b[*at..*at + n];
    *at += n;
    s
}

fn u32_at(b: &[u8], at: &mut usize) -> u32 {
    u32::from_le_bytes(take(b, at, 4).try_into().unwrap())
}

fn u64_at(b: &[u8], at: &mut usize) -> u64 {
    u64::from_le_bytes(take(b, at, 8).try_into().unwrap())
}

fn string_at(b: &[u8], at: &mut usize) -> String {
    let n = u64_at(b, at) as usize;
    String::from_utf8(take(b, at, n).to_vec()).unwrap()
}

/// Skips one value of GGUF type `ty` (the spec's numbering).
fn skip_value(b: &[u8], at: &mut usize, ty: u32) {
    match ty {
        0 | 1 | 7 => *at += 1,
        2 | 3 => *at += 2,
        4..=6 => *at += 4,
        10..=12 => *at += 8,
        8 => {
            let n = u64_at(b, at) as usize;
            *at += n;
        }
        9 => {
            let elem = u32_at(b, at);
            let n = u64_at(b, at);
            for _ in 0..n {
                skip_value(b, at, elem);
            }
        }
        other => panic!("unknown GGUF value type {other}"),
    }
}

fn parse_gguf(bytes: &[u8]) -> GgufParts {
    assert_eq!(&bytes[..4], b"GGUF");
    let mut at = 4;
    let version = u32_at(bytes, &mut at);
    let tensor_count = u64_at(bytes, &mut at);
    let kv_count = u64_at(bytes, &mut at);
    let mut kvs = Vec::new();
    for _ in 0..kv_count {
        let key = string_at(bytes, &mut at);
        let start = at;
        let ty = u32_at(bytes, &mut at);
        skip_value(bytes, &mut at, ty);
        kvs.push((key, bytes[start..at].to_vec()));
    }
    let infos_start = at;
    for _ in 0..tensor_count {
        let _name = string_at(bytes, &mut at);
        let dims = u32_at(bytes, &mut at);
        at += 8 * dims as usize + 4 + 8;
    }
    let tensor_infos = bytes[infos_start..at].to_vec();
    let pad = (32 - at % 32) % 32;
    assert!(
        bytes[at..at + pad].iter().all(|&b| b == 0),
        "alignment padding is not zeros"
    );
    GgufParts {
        version,
        tensor_count,
        kvs,
        tensor_infos,
        data: bytes[at + pad..].to_vec(),
    }
}

/// The string of an encoded string value (type 8).
fn kv_string(raw: &[u8]) -> String {
    let mut at = 0;
    assert_eq!(u32_at(raw, &mut at), 8, "not a string value");
    string_at(raw, &mut at)
}

/// Compares two GGUF files; with `e`, the run-dependent provenance values are checked
/// against it, without, they are passed over.
fn compare_gguf(name: &str, got: &[u8], want: &[u8], e: Option<&Expected>) {
    let (g, w) = (parse_gguf(got), parse_gguf(want));
    assert_eq!(g.version, w.version, "{name}: GGUF version");
    assert_eq!(g.tensor_count, w.tensor_count, "{name}: tensor count");
    let keys = |p: &GgufParts| p.kvs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&g), keys(&w), "{name}: metadata keys or their order");
    for ((key, gv), (_, wv)) in g.kvs.iter().zip(&w.kvs) {
        let run_dependent = matches!(
            key.as_str(),
            "lem.convert.created"
                | "lem.convert.source"
                | "lem.convert.source_modified"
                | "lem.convert.lem_version"
        );
        let Some(e) = e.filter(|_| run_dependent) else {
            if !run_dependent {
                assert!(
                    gv == wv,
                    "{name}: value of `{key}` differs from the fixture"
                );
            }
            continue;
        };
        match key.as_str() {
            "lem.convert.created" => check_created(&kv_string(gv), e),
            "lem.convert.source" => assert_eq!(kv_string(gv), e.source, "{name}: {key}"),
            "lem.convert.source_modified" => {
                assert_eq!(kv_string(gv), expected_modified(), "{name}: {key}")
            }
            _ => assert_eq!(kv_string(gv), env!("CARGO_PKG_VERSION"), "{name}: {key}"),
        }
    }
    assert!(
        g.tensor_infos == w.tensor_infos,
        "{name}: tensor infos differ"
    );
    assert_eq!(g.data.len(), w.data.len(), "{name}: tensor data length");
    assert!(g.data == w.data, "{name}: tensor data differs");
}

// ----- safetensors directories -----

/// lem-convert.json with its run-dependent values checked and blanked.
fn normalised_provenance(text: &str, e: Option<&Expected>) -> String {
    let mut v: Json = serde_json::from_str(text).unwrap();
    if let Some(e) = e {
        check_created(v["created"].as_str().unwrap(), e);
        assert_eq!(v["source"]["path"], e.source.as_str());
        assert_eq!(v["source"]["modified"], expected_modified().as_str());
        assert_eq!(v["lem_version"], env!("CARGO_PKG_VERSION"));
    }
    v["created"] = json!("<created>");
    v["source"]["path"] = json!("<source>");
    v["lem_version"] = json!("<version>");
    serde_json::to_string_pretty(&v).unwrap()
}

fn compare_dir(name: &str, got: &Path, want: &Path, e: &Expected) {
    let list = |d: &Path| {
        let mut f: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    };
    assert_eq!(list(got), list(want), "{name}: files");
    for f in list(want) {
        let (g, w) = (
            std::fs::read(got.join(&f)).unwrap(),
            std::fs::read(want.join(&f)).unwrap(),
        );
        if f == convert::PROVENANCE_FILE {
            assert_eq!(
                normalised_provenance(std::str::from_utf8(&g).unwrap(), Some(e)),
                normalised_provenance(std::str::from_utf8(&w).unwrap(), None),
                "{name}/{f}"
            );
        } else {
            assert!(g == w, "{name}/{f} differs from the fixture");
        }
    }
}

// ----- fixture bookkeeping -----

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every fixture file (relative path), sorted.
fn fixture_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "SHA256SUMS") {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn sums_text(root: &Path) -> String {
    fixture_files(root)
        .iter()
        .map(|f| {
            format!(
                "{}  {f}\n",
                sha256_hex(&std::fs::read(root.join(f)).unwrap())
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// (fixture name, input, format, dtype, output) for the four conversions; inputs are the
/// source directory or an earlier output.
fn run_conversions(work: &Path) -> Vec<(&'static str, PathBuf, Expected)> {
    let src = work.join("tiny-llama");
    write_source(&src);
    let a = work.join("out/tiny-f32.gguf");
    let plan: [(&str, &Path, TargetFormat, TargetDtype, PathBuf); 4] = [
        (
            "st-to-f32.gguf",
            &src,
            TargetFormat::Gguf,
            TargetDtype::F32,
            a.clone(),
        ),
        (
            "st-to-q8_0.gguf",
            &src,
            TargetFormat::Gguf,
            TargetDtype::Q8_0,
            work.join("out/tiny-q8_0.gguf"),
        ),
        (
            "gguf-to-bf16",
            &a,
            TargetFormat::Safetensors,
            TargetDtype::Bf16,
            work.join("out/tiny-bf16"),
        ),
        (
            "gguf-to-q4_0.gguf",
            &a,
            TargetFormat::Gguf,
            TargetDtype::Q4_0,
            work.join("out/tiny-q4_0.gguf"),
        ),
    ];
    let mut done = Vec::new();
    for (name, input, format, dtype, out) in plan {
        let started = chrono::Utc::now();
        convert::convert(input, format, dtype, &out, false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if out.is_file() {
            // Later conversions read this file: give it the known modification time.
            set_mtime(&out);
        }
        let source = std::fs::canonicalize(input).unwrap().display().to_string();
        done.push((name, out, Expected { source, started }));
    }
    done
}

#[test]
fn converted_files_are_byte_identical_to_the_fixtures() {
    let work = tempfile::tempdir().unwrap();
    let root = fixture_root();
    let outputs = run_conversions(work.path());
    if regenerate() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for (name, out, _) in &outputs {
            if out.is_dir() {
                copy_dir(out, &root.join(name));
            } else {
                std::fs::copy(out, root.join(name)).unwrap();
            }
        }
        std::fs::write(root.join("SHA256SUMS"), sums_text(&root)).unwrap();
        eprintln!("rewrote {}", root.display());
    }
    // The fixtures are what was committed: their sums match the committed list.
    let sums = std::fs::read_to_string(root.join("SHA256SUMS"))
        .unwrap_or_else(|e| panic!("{}/SHA256SUMS: {e}", root.display()));
    assert_eq!(
        sums_text(&root),
        sums,
        "fixture files changed since SHA256SUMS"
    );
    assert_eq!(sums.lines().count(), 3 + 6, "one line per fixture file");
    for (name, out, expected) in &outputs {
        let want = root.join(name);
        if out.is_dir() {
            compare_dir(name, out, &want, expected);
        } else {
            let (g, w) = (std::fs::read(out).unwrap(), std::fs::read(&want).unwrap());
            compare_gguf(name, &g, &w, Some(expected));
        }
    }
}

/// The comparison can fail: a changed byte in a tensor, or a changed metadata value,
/// is caught (guards against a comparison that accepts anything). The fixture against
/// itself passes, so the failures come from the flipped bytes.
#[test]
fn the_comparison_catches_a_changed_byte() {
    let root = fixture_root();
    let want = std::fs::read(root.join("st-to-q8_0.gguf")).unwrap();
    compare_gguf("itself", &want, &want, None);
    let mut data_flip = want.clone();
    let last = data_flip.len() - 1;
    data_flip[last] ^= 1;
    let caught = std::panic::catch_unwind(|| compare_gguf("flip", &data_flip, &want, None));
    assert!(caught.is_err(), "a flipped data byte went unnoticed");
    // general.name's value ("tiny-llama") with one letter changed, same length.
    let mut key_flip = want.clone();
    let at = key_flip
        .windows(10)
        .position(|w| w == b"tiny-llama")
        .expect("general.name is in the file");
    key_flip[at] = b'T';
    let caught = std::panic::catch_unwind(|| compare_gguf("name", &key_flip, &want, None));
    assert!(caught.is_err(), "a changed metadata value went unnoticed");
}
