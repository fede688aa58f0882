//! A Hugging Face byte-level BPE tokenizer.json as GGUF `tokenizer.ggml.*` keys, the way
//! llama.cpp's converter writes them.

use crate::model::error::ModelError;
use crate::model::params::LlamaParams;
use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;
use std::path::Path;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// llama.cpp's name for a tokenizer.json pre-tokenizer: Qwen2's split regex is `qwen2`;
/// SmolLM/StarCoder split digits one by one before the byte-level regex (`smollm`);
/// otherwise GPT-2's regex, which llama.cpp names `gpt-2` (it refuses a file saying `gpt2`).
fn pre_tokenizer_name(pre: &Json) -> &'static str {
    let steps: Vec<&Json> = match pre["pretokenizers"].as_array() {
        Some(list) => list.iter().collect(),
        None => vec![pre],
    };
    if steps
        .iter()
        .any(|s| s["type"] == "Split" && s["pattern"]["Regex"] == super::QWEN2_PRE_REGEX)
    {
        "qwen2"
    } else if steps
        .iter()
        .any(|s| s["type"] == "Digits" && s["individual_digits"] == true)
    {
        "smollm"
    } else {
        "gpt-2"
    }
}

/// The `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) from a byte-level BPE
/// tokenizer.json, as llama.cpp's converter writes them.
pub fn gguf_metadata(
    tokenizer: &Json,
    tokenizer_config: Option<&Json>,
    chat_template_file: Option<&str>,
    p: &LlamaParams,
    path: &Path,
) -> Result<Vec<(String, Value)>, ModelError> {
    let model = &tokenizer["model"];
    if model["type"] != "BPE" {
        return Err(ModelError::config(
            path,
            "model.type",
            format!(
                "{} tokenizers are not supported; lem writes byte-level BPE (gpt2) tokenizers",
                model["type"]
            ),
        ));
    }
    let text = tokenizer.to_string();
    if !text.contains("\"ByteLevel\"") {
        return Err(ModelError::config(
            path,
            "pre_tokenizer",
            "no ByteLevel pre-tokenizer/decoder; lem writes byte-level BPE (gpt2) tokenizers",
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| ModelError::config(path, "model.vocab", "missing or not an object"))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut put = |tok: &str, id: u64, ty: i32| {
        let id = id as usize;
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, TOKEN_UNUSED);
        }
        tokens[id] = Some(tok.to_string());
        types[id] = ty;
    };
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            ModelError::config(path, "model.vocab", format!("`{tok}` has no integer id"))
        })?;
        put(tok, id, TOKEN_NORMAL);
    }
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(ModelError::config(
                path,
                "added_tokens",
                format!("malformed entry {added}"),
            ));
        };
        let ty = if added["special"] == true {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
        put(content, id, ty);
    }
    // llama.cpp pads the vocabulary to the embedding's row count with placeholder tokens.
    if tokens.len() < p.vocab_size {
        tokens.resize(p.vocab_size, None);
        types.resize(p.vocab_size, TOKEN_UNUSED);
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| Value::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let mut merges = Vec::new();
    for (i, m) in model["merges"].as_array().into_iter().flatten().enumerate() {
        // Older files spell a merge "a b", newer ones ["a", "b"].
        let s = match m {
            Json::String(s) => s.clone(),
            Json::Array(pair) if pair.len() == 2 => {
                format!(
                    "{} {}",
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default()
                )
            }
            other => {
                return Err(ModelError::config(
                    path,
                    "model.merges",
                    format!("merge {i} is {other}, not a pair"),
                ))
            }
        };
        merges.push(Value::String(s));
    }
    if merges.is_empty() {
        return Err(ModelError::config(path, "model.merges", "no merges"));
    }
    let pre = pre_tokenizer_name(&tokenizer["pre_tokenizer"]);
    let add_bos = match tokenizer_config.and_then(|c| c.get("add_bos_token")) {
        Some(Json::Bool(b)) => *b,
        _ => {
            // A TemplateProcessing that starts with the BOS token adds it.
            let first = &tokenizer["post_processor"]["single"][0]["SpecialToken"]["id"];
            let bos = p
                .bos_token_id
                .and_then(|id| vocab.iter().find(|(_, v)| v.as_u64() == Some(id as u64)));
            matches!((first.as_str(), bos), (Some(f), Some((b, _))) if f == b)
        }
    };
    let mut m = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)),
    ];
    let ids = [
        ("tokenizer.ggml.bos_token_id", p.bos_token_id),
        ("tokenizer.ggml.eos_token_id", p.eos_token_id),
        ("tokenizer.ggml.padding_token_id", p.pad_token_id),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            m.push((key.to_string(), Value::U32(id)));
        }
    }
    let unk = model["unk_token"]
        .as_str()
        .and_then(|u| vocab.get(u))
        .and_then(Json::as_u64);
    if let Some(id) = unk {
        m.push((
            "tokenizer.ggml.unknown_token_id".into(),
            Value::U32(id as u32),
        ));
    }
    let template = match tokenizer_config.and_then(|c| c.get("chat_template")) {
        Some(Json::String(s)) => Some(s.clone()),
        // A list of named templates: the default one.
        Some(Json::Array(list)) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => chat_template_file.map(str::to_string),
    };
    if let Some(t) = template {
        m.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokenizer_metadata_from_a_bpe_tokenizer_json() {
        let tok = json!({
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "special": true},
                {"id": 4, "content": "<extra>", "special": false}
            ],
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false}]},
            "model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3},
                      "merges": [["a", "b"]]}
        });
        let mut p = crate::model::params::tiny_llama_params();
        p.vocab_size = 6;
        let cfg = json!({"chat_template": "{{ x }}"});
        let m = gguf_metadata(&tok, Some(&cfg), None, &p, Path::new("t.json")).unwrap();
        let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let strings = |v: Option<Value>| match v {
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => s,
                    Value::I32(i) => i.to_string(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            strings(get("tokenizer.ggml.tokens")),
            ["<|endoftext|>", "a", "b", "ab", "<extra>", "[PAD5]"]
        );
        assert_eq!(
            strings(get("tokenizer.ggml.token_type")),
            ["3", "1", "1", "1", "4", "5"]
        );
        assert_eq!(strings(get("tokenizer.ggml.merges")), ["a b"]);
        assert!(matches!(get("tokenizer.ggml.pre"), Some(Value::String(s)) if s == "smollm"));
        // Without the digit split: llama.cpp's name for GPT-2's regex ("gpt2" fails to load).
        let mut plain = tok.clone();
        plain["pre_tokenizer"] = json!({"type": "ByteLevel", "add_prefix_space": false,
                                        "trim_offsets": true, "use_regex": true});
        let m2 = gguf_metadata(&plain, Some(&cfg), None, &p, Path::new("t.json")).unwrap();
        let pre2 = m2.iter().find(|(n, _)| n == "tokenizer.ggml.pre");
        assert!(
            matches!(pre2, Some((_, Value::String(s))) if s == "gpt-2"),
            "{pre2:?}"
        );
        assert!(matches!(
            get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(false))
        ));
        assert!(matches!(get("tokenizer.chat_template"), Some(Value::String(s)) if s == "{{ x }}"));
        let mut wp = tok.clone();
        wp["model"]["type"] = json!("WordPiece");
        let e = gguf_metadata(&wp, None, None, &p, Path::new("t.json")).unwrap_err();
        assert!(e.to_string().contains("t.json: `model.type`"), "{e}");
    }

    #[test]
    fn qwen2s_split_regex_is_named_qwen2() {
        let qwen2 = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": crate::model::tokenizer::QWEN2_PRE_REGEX},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
             "use_regex": false}]});
        assert_eq!(pre_tokenizer_name(&qwen2), "qwen2");
        // Another split regex (Llama 3's groups digits by three) is not Qwen2's.
        let mut other = qwen2.clone();
        other["pretokenizers"][0]["pattern"]["Regex"] = json!("\\p{N}{1,3}");
        assert_eq!(pre_tokenizer_name(&other), "gpt-2");
        let digits = json!({"type": "Digits", "individual_digits": true});
        assert_eq!(pre_tokenizer_name(&digits), "smollm");
    }
}
