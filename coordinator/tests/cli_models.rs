//! `lem models` and `lem model convert` through the binary, with lem's model dir and the
//! Hugging Face cache in a temp dir (never the user's). The conversion test needs the
//! SmolLM2 GGUF: it skips with a message when absent, except under `CI`.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

#[path = "../../tests/support.rs"]
mod support;

fn lem(root: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .env("LEM_MODEL_DIR", root.join("lem"))
        .env("HF_HUB_CACHE", root.join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("LEM_TEST_MODEL")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ lem {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn models_on_empty_caches_say_how_to_get_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lem(tmp.path(), &["models"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("No models in lem's model dir"), "{text}");
    assert!(text.contains("scripts/fetch-model.sh"), "{text}");
    assert!(text.contains("lem model convert"), "{text}");
    let out = lem(tmp.path(), &["models", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["models"], Value::Array(vec![]));
    assert_eq!(
        v["lem_model_dir"],
        tmp.path().join("lem").display().to_string()
    );
}

#[test]
fn unsupported_dtype_for_the_format_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lem(
        tmp.path(),
        &[
            "model", "convert", "org/m", "--to", "gguf", "--dtype", "bf16",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--to gguf cannot hold bf16 weights; use --dtype f32|f16|q8_0|q4_0"),
        "{}",
        stderr(&out)
    );
    let out = lem(
        tmp.path(),
        &[
            "model", "convert", "org/m", "--to", "onnx", "--dtype", "f16",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown format `onnx`"),
        "{}",
        stderr(&out)
    );
}

fn find<'a>(models: &'a [Value], name: &str) -> &'a Value {
    models
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("`{name}` not listed: {models:#?}"))
}

#[test]
fn converted_models_are_listed_by_a_name_that_resolves_and_not_overwritten() {
    let Some(model) = support::model_path() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let src_dir = root.join("lem/HuggingFaceTB--SmolLM2-135M-Instruct");
    std::fs::create_dir_all(&src_dir).unwrap();
    std::os::unix::fs::symlink(&model, src_dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let id = "HuggingFaceTB/SmolLM2-135M-Instruct";

    let q8 = ["model", "convert", id, "--to", "gguf", "--dtype", "q8_0"];
    let out = lem(root, &q8);
    assert!(out.status.success());
    let text = stdout(&out);
    let gguf =
        root.join("lem/HuggingFaceTB--SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-q8_0.gguf");
    assert!(gguf.is_file());
    assert!(
        text.contains(&format!("wrote {}", gguf.display())),
        "{text}"
    );
    assert!(
        text.contains("model_name: HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q8_0"),
        "{text}"
    );

    // A second precision in the same -GGUF folder: names must now be pinned.
    let q4 = ["model", "convert", id, "--to", "gguf", "--dtype", "q4_0"];
    assert!(lem(root, &q4).status.success());
    let out = lem(
        root,
        &[
            "model",
            "convert",
            id,
            "--to",
            "safetensors",
            "--dtype",
            "bf16",
        ],
    );
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("model_name: HuggingFaceTB/SmolLM2-135M-Instruct-bf16"),
        "{}",
        stdout(&out)
    );

    let out = lem(root, &["models", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 4, "{models:#?}");
    let orig = find(models, id);
    assert_eq!(orig["format"], "gguf");
    assert_eq!(orig["dtype_counts"]["Q4_1"], 210);
    assert_eq!(orig["dtypes"][0], "Q4_1");
    assert_eq!(orig["converted_from"], Value::Null);
    let q = find(models, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q8_0");
    assert_eq!(q["format"], "gguf");
    assert_eq!(q["dtype_counts"]["Q8_0"], 211);
    assert_eq!(q["dtype_counts"]["F32"], 61);
    assert_eq!(q["size_bytes"], std::fs::metadata(&gguf).unwrap().len());
    assert!(q["converted_from"].as_str().unwrap().ends_with(".gguf"));
    let q4 = find(models, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q4_0");
    assert_eq!(q4["dtype_counts"]["Q4_0"], 211);
    let b = find(models, "HuggingFaceTB/SmolLM2-135M-Instruct-bf16");
    assert_eq!(b["format"], "safetensors");
    assert_eq!(b["dtypes"], serde_json::json!(["BF16"]));
    assert_eq!(b["torch_dtype"], "bfloat16");

    let out = lem(root, &["models"]);
    let text = stdout(&out);
    for name in [
        id,
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q8_0",
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q4_0",
        "HuggingFaceTB/SmolLM2-135M-Instruct-bf16",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    // Again: refused, the file untouched; with --force, replaced.
    let before = std::fs::metadata(&gguf).unwrap().modified().unwrap();
    let out = lem(root, &q8);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already exists; pass --force to replace it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::metadata(&gguf).unwrap().modified().unwrap(),
        before
    );
    let mut forced = q8.to_vec();
    forced.push("--force");
    assert!(lem(root, &forced).status.success());
}
