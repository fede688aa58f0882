//! A GGUF's metadata tokenizer as Hugging Face files: tokenizer.json (the engine's
//! metadata-built byte-level BPE, serialised) and tokenizer_config.json.

use crate::engine::LemTokenizer;
use crate::model::error::ModelError;
use crate::model::gguf::GgufFile;
use crate::model::params::LlamaParams;
use serde_json::{json, Value as Json};

fn invalid(path: &std::path::Path, reason: impl Into<String>) -> ModelError {
    ModelError::invalid(path, reason)
}

/// tokenizer.json text (and tokenizer_config.json) for a GGUF's metadata tokenizer.
pub(crate) fn tokenizer_files(g: &GgufFile, p: &LlamaParams) -> Result<(String, Json), ModelError> {
    let path = g.path();
    let tok = LemTokenizer::load(g, None).map_err(|e| invalid(path, e.to_string()))?;
    let (inner, bos_to_add) = tok.pipeline_and_bos().ok_or_else(|| {
        invalid(
            path,
            "a SentencePiece-style GGUF vocabulary cannot be written as tokenizer.json yet"
                .to_string(),
        )
    })?;
    let mut inner = inner.clone();
    if let Some(bos) = bos_to_add {
        // The GGUF wrapper prepends BOS itself; in tokenizer.json the post-processor does.
        let bos_tok = inner
            .id_to_token(bos)
            .ok_or_else(|| g.bad_key("tokenizer.ggml.bos_token_id", "not in the vocabulary"))?;
        let template = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single(format!("{bos_tok} $A"))
            .and_then(|b| b.try_pair(format!("{bos_tok} $A {bos_tok} $B")))
            .map_err(|e| invalid(path, format!("BOS template: {e}")))?
            .special_tokens(vec![(bos_tok.clone(), bos)])
            .build()
            .map_err(|e| invalid(path, format!("BOS template: {e}")))?;
        inner.with_post_processor(Some(template));
    }
    let token = |id: Option<u32>| id.and_then(|i| inner.id_to_token(i));
    let json_text = inner
        .to_string(true)
        .map_err(|e| invalid(path, format!("serialising the tokenizer: {e}")))?;
    let unk_key = "tokenizer.ggml.unknown_token_id";
    let unk = g
        .opt_u64(unk_key)?
        .map(|n| u32::try_from(n).map_err(|_| g.bad_key(unk_key, format!("{n} is not a token id"))))
        .transpose()?;
    let mut cfg = json!({
        "add_bos_token": bos_to_add.is_some(),
        "add_eos_token": false,
        "bos_token": token(p.bos_token_id),
        "eos_token": token(p.eos_token_id),
        "pad_token": token(p.pad_token_id),
        "unk_token": token(unk),
        "clean_up_tokenization_spaces": false,
        "model_max_length": p.context_length.unwrap_or(2048),
        "tokenizer_class": "GPT2Tokenizer",
    });
    if let Some(t) = g.opt_str("tokenizer.chat_template")? {
        cfg["chat_template"] = Json::String(t.to_string());
    }
    Ok((json_text, cfg))
}
