//! The tokenizer: from `tokenizer.json` when one is given, else built from the GGUF
//! metadata keys. candle's own `TokenizerFromGguf` adds a prefix space after special
//! tokens, so the GGUF path builds the `tokenizers` pipeline itself:
//! BPE from `tokenizer.ggml.tokens` + `merges`; pre-tokenizer = (single digits, for the
//! `smollm` pre-tokenizer; Qwen2's split regex for `qwen2`) then byte-level without prefix
//! space; byte-level decoder;
//! control tokens registered as special so `<|im_start|>` encodes as one id.
//! SentencePiece-style vocabularies (`tokenizer.ggml.model = llama`, Gemma) run through
//! lem's own llama.cpp-compatible merger (`spm.rs`).

use super::error::EngineError;
use super::spm::{SpmTokenizer, TYPE_CONTROL, TYPE_USER_DEFINED};
use crate::model::config_json::HfConfig;
use crate::model::GgufFile;
use crate::model::ModelError;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, Tokenizer};

/// How a single user message becomes a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role\n...<|im_end|>\n`, with the template's default system message
    /// when it inserts one for conversations that lack it.
    ChatMl {
        default_system: Option<String>,
        /// True when recognised in the GGUF `tokenizer.chat_template`; false = fallback.
        from_template: bool,
    },
    /// Gemma's turns: `<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n`,
    /// chosen when the template or, lacking one, the vocabulary has Gemma's turn markers.
    Gemma { from_template: bool },
}

/// The token pipeline behind a `LemTokenizer`.
enum Pipeline {
    /// Hugging Face `tokenizers` (tokenizer.json, or BPE built from GGUF metadata).
    Hf(Box<Tokenizer>),
    /// SentencePiece-style GGUF vocabulary.
    Spm(SpmTokenizer),
}

impl Pipeline {
    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Pipeline::Hf(t) => t.token_to_id(token),
            Pipeline::Spm(t) => t.token_to_id(token),
        }
    }
}

/// A tokenizer before its EOS ids and chat format are settled.
struct Parts {
    inner: Pipeline,
    source: &'static str,
    origin: String,
    bos_to_add: Option<u32>,
    use_post_processor: bool,
}

pub struct LemTokenizer {
    inner: Pipeline,
    /// `tokenizer.json` or `gguf-metadata`.
    source: &'static str,
    /// For error messages: the file the tokenizer came from.
    origin: String,
    /// BOS id to prepend ourselves (GGUF path only; tokenizer.json uses its post-processor).
    bos_to_add: Option<u32>,
    use_post_processor: bool,
    eos_ids: Vec<u32>,
    chat: ChatFormat,
}

impl std::fmt::Debug for LemTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LemTokenizer")
            .field("source", &self.source)
            .field("origin", &self.origin)
            .field("eos_ids", &self.eos_ids)
            .field("chat", &self.chat)
            .finish()
    }
}

impl LemTokenizer {
    /// Tokenizer for the model in `g`: from `tokenizer_json` when given, else from `g`'s
    /// metadata. EOS ids and the chat format always come from the GGUF.
    pub(crate) fn load(g: &GgufFile, tokenizer_json: Option<&Path>) -> Result<Self, EngineError> {
        let (inner, source, origin, bos_to_add, use_post_processor) = match tokenizer_json {
            Some(p) => {
                let origin = p.display().to_string();
                let t = Tokenizer::from_file(p).map_err(|e| EngineError::Tokenizer {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
                (
                    Pipeline::Hf(Box::new(t)),
                    "tokenizer.json",
                    origin,
                    None,
                    true,
                )
            }
            None => {
                let (t, bos) = build_from_gguf(g)?;
                (
                    t,
                    "gguf-metadata",
                    g.path().display().to_string(),
                    bos,
                    false,
                )
            }
        };
        let template = g.opt_str("tokenizer.chat_template")?;
        let chat = chat_format(template, |t| inner.token_to_id(t).is_some());
        let declared: Vec<u32> = g
            .opt_u64("tokenizer.ggml.eos_token_id")?
            .map(|id| id as u32)
            .into_iter()
            .collect();
        let parts = Parts {
            inner,
            source,
            origin,
            bos_to_add,
            use_post_processor,
        };
        Self::finish(parts, declared, chat).ok_or_else(|| {
            EngineError::from(ModelError::MissingKey {
                path: g.path().to_path_buf(),
                key: "tokenizer.ggml.eos_token_id".into(),
            })
        })
    }

    /// Tokenizer of the model directory `dir` that `hf` was read from: `tokenizer_json`
    /// when given, else `dir/tokenizer.json`, with the EOS ids, EOS token and chat
    /// template its config files declare.
    pub(crate) fn for_hf_dir(
        dir: &Path,
        tokenizer_json: Option<&Path>,
        hf: &HfConfig,
    ) -> Result<Self, EngineError> {
        let default_tokenizer = dir.join("tokenizer.json");
        Self::from_hf(
            tokenizer_json.unwrap_or(&default_tokenizer),
            hf.eos_token_ids.clone(),
            hf.eos_token.as_deref(),
            hf.chat_template.as_deref(),
            &hf.config_path,
        )
    }

    /// Tokenizer of a Hugging Face model directory: `tokenizer_json` (its post-processor
    /// decides BOS), EOS ids declared by the model's config files, the chat template from
    /// `tokenizer_config.json`. `config_path` is named when no EOS id can be found.
    pub(crate) fn from_hf(
        tokenizer_json: &Path,
        declared_eos: Vec<u32>,
        eos_token: Option<&str>,
        chat_template: Option<&str>,
        config_path: &Path,
    ) -> Result<Self, EngineError> {
        let origin = tokenizer_json.display().to_string();
        let inner = Tokenizer::from_file(tokenizer_json).map_err(|e| EngineError::Tokenizer {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let mut declared = declared_eos;
        if let Some(id) = eos_token.and_then(|t| inner.token_to_id(t)) {
            if !declared.contains(&id) {
                declared.push(id);
            }
        }
        let chat = chat_format(chat_template, |t| inner.token_to_id(t).is_some());
        let parts = Parts {
            inner: Pipeline::Hf(Box::new(inner)),
            source: "tokenizer.json",
            origin,
            bos_to_add: None,
            use_post_processor: true,
        };
        Self::finish(parts, declared, chat).ok_or_else(|| {
            EngineError::from(ModelError::Config {
                path: config_path.to_path_buf(),
                field: "eos_token_id".into(),
                reason: "missing, and the tokenizer has no <|endoftext|> token".into(),
            })
        })
    }

    /// Adds the end-of-turn tokens instruct models use to the declared EOS ids; None when
    /// there is no EOS id at all.
    fn finish(p: Parts, declared: Vec<u32>, chat: ChatFormat) -> Option<Self> {
        let mut eos_ids = declared;
        // Instruct models end turns with these even when the file's EOS is another token.
        let mut extra = vec!["<|endoftext|>"];
        match chat {
            ChatFormat::ChatMl {
                from_template: true,
                ..
            } => extra.push("<|im_end|>"),
            // Gemma ends each turn with <end_of_turn>; llama.cpp also stops at `</s>`.
            ChatFormat::Gemma { .. } => extra.extend(["<end_of_turn>", "</s>"]),
            ChatFormat::ChatMl { .. } => {}
        }
        for tok in extra {
            if let Some(id) = p.inner.token_to_id(tok) {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        if eos_ids.is_empty() {
            return None;
        }
        Some(Self {
            inner: p.inner,
            source: p.source,
            origin: p.origin,
            bos_to_add: p.bos_to_add,
            use_post_processor: p.use_post_processor,
            eos_ids,
            chat,
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let mut ids = Vec::new();
        ids.extend(self.bos_to_add);
        match &self.inner {
            Pipeline::Hf(t) => {
                let enc = t
                    .encode(text, self.use_post_processor)
                    .map_err(|e| self.err(format!("encoding {} bytes: {e}", text.len())))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Pipeline::Spm(t) => ids.extend(t.encode(text)),
        }
        Ok(ids)
    }

    /// Text of `ids`, special tokens (EOS, `<|im_end|>`) left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        match &self.inner {
            Pipeline::Hf(t) => t
                .decode(ids, true)
                .map_err(|e| self.err(format!("decoding {} ids: {e}", ids.len()))),
            Pipeline::Spm(t) => t.decode(ids).map_err(|id| {
                self.err(format!("decoding: token id {id} is not in the vocabulary"))
            }),
        }
    }

    /// Number of tokens `text` encodes to (BOS included where the model adds one); 0 if
    /// the text cannot be encoded at all, which byte-level BPE never refuses.
    pub fn count(&self, text: &str) -> usize {
        self.encode(text).map(|ids| ids.len()).unwrap_or(0)
    }

    /// Number of tokens generated text encodes to on its own: no BOS, no post-processor
    /// (what a server's `usage.completion_tokens` counts). 0 only if the text cannot be
    /// encoded at all, which neither byte-level BPE nor the SentencePiece path refuses.
    pub fn count_continuation(&self, text: &str) -> usize {
        match &self.inner {
            Pipeline::Hf(t) => t.encode(text, false).map_or(0, |e| e.get_ids().len()),
            Pipeline::Spm(t) => t.encode(text).len(),
        }
    }

    /// The prompt for one user turn, ending with the assistant header so generation
    /// starts the answer.
    pub fn apply_chat_template(&self, user_message: &str) -> String {
        match &self.chat {
            ChatFormat::ChatMl { default_system, .. } => {
                let mut s = String::new();
                if let Some(sys) = default_system {
                    s.push_str("<|im_start|>system\n");
                    s.push_str(sys);
                    s.push_str("<|im_end|>\n");
                }
                s.push_str("<|im_start|>user\n");
                s.push_str(user_message);
                s.push_str("<|im_end|>\n<|im_start|>assistant\n");
                s
            }
            ChatFormat::Gemma { .. } => {
                format!("<start_of_turn>user\n{user_message}<end_of_turn>\n<start_of_turn>model\n")
            }
        }
    }

    pub fn chat_format(&self) -> &ChatFormat {
        &self.chat
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// `tokenizer.json` or `gguf-metadata`.
    pub fn source(&self) -> &'static str {
        self.source
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Pipeline::Hf(t) => t.id_to_token(id),
            Pipeline::Spm(t) => t.id_to_token(id),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Pipeline::Hf(t) => t.get_vocab_size(true),
            Pipeline::Spm(t) => t.vocab_size(),
        }
    }

    /// The wrapped `tokenizers` pipeline and the BOS id this wrapper prepends itself
    /// (GGUF metadata path only; a tokenizer.json carries BOS in its post-processor), for
    /// the model layer's conversion to tokenizer.json.
    /// None for a SentencePiece-style vocabulary, which has no `tokenizers` pipeline.
    pub(crate) fn pipeline_and_bos(&self) -> Option<(&Tokenizer, Option<u32>)> {
        match &self.inner {
            Pipeline::Hf(t) => Some((t, self.bos_to_add)),
            Pipeline::Spm(_) => None,
        }
    }

    fn err(&self, message: String) -> EngineError {
        EngineError::Tokenizer {
            origin: self.origin.clone(),
            message,
        }
    }
}

/// Builds the tokenizer from `tokenizer.ggml.*`; returns it and the BOS id to prepend when
/// `tokenizer.ggml.add_bos_token` is true.
fn build_from_gguf(g: &GgufFile) -> Result<(Pipeline, Option<u32>), EngineError> {
    let model = g.str("tokenizer.ggml.model")?;
    // llama.cpp's defaults when the file does not say: SentencePiece vocabularies add BOS.
    let (pipeline, bos_by_default) = match model {
        "gpt2" => (Pipeline::Hf(Box::new(build_bpe(g)?)), false),
        "llama" => (Pipeline::Spm(build_spm(g)?), true),
        other => {
            return Err(EngineError::UnsupportedTokenizer {
                path: g.path().to_path_buf(),
                model: other.to_string(),
            })
        }
    };
    let add_bos = g
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(bos_by_default);
    let bos = if add_bos {
        let id = g.u64("tokenizer.ggml.bos_token_id")?;
        Some(id as u32)
    } else {
        None
    };
    Ok((pipeline, bos))
}

/// A SentencePiece-style vocabulary from `tokenizer.ggml.tokens`, `scores`, `token_type`.
fn build_spm(g: &GgufFile) -> Result<SpmTokenizer, EngineError> {
    let bad_key = |key: &str, reason: String| {
        EngineError::from(ModelError::BadKey {
            path: g.path().to_path_buf(),
            key: key.to_string(),
            reason,
        })
    };
    if g.opt_bool("tokenizer.ggml.add_space_prefix")? == Some(true) {
        return Err(bad_key(
            "tokenizer.ggml.add_space_prefix",
            "a prefix space is not supported for SentencePiece vocabularies yet".into(),
        ));
    }
    let tokens: Vec<String> = g
        .str_array("tokenizer.ggml.tokens")?
        .into_iter()
        .map(str::to_string)
        .collect();
    let scores = g.f32_array("tokenizer.ggml.scores")?;
    let types = g
        .opt_i64_array("tokenizer.ggml.token_type")?
        .ok_or_else(|| {
            EngineError::from(ModelError::MissingKey {
                path: g.path().to_path_buf(),
                key: "tokenizer.ggml.token_type".into(),
            })
        })?;
    SpmTokenizer::new(tokens, scores, types)
        .map_err(|e| bad_key("tokenizer.ggml.tokens", e.to_string()))
}

/// A byte-level BPE (`gpt2`) tokenizer from `tokenizer.ggml.tokens` and `merges`.
fn build_bpe(g: &GgufFile) -> Result<Tokenizer, EngineError> {
    let path = g.path().to_path_buf();
    let tokens = g.str_array("tokenizer.ggml.tokens")?;
    let merges_raw = g.str_array("tokenizer.ggml.merges")?;
    let bad_key = |key: &str, reason: String| {
        EngineError::from(ModelError::BadKey {
            path: path.clone(),
            key: key.to_string(),
            reason,
        })
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let mut merges: Merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        // Byte-level tokens never contain a real space (it is `Ġ`), so the first space
        // separates the pair.
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            bad_key(
                "tokenizer.ggml.merges",
                format!("merge {i} `{m}` is not two tokens"),
            )
        })?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| bad_key("tokenizer.ggml.merges", e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);

    let pre = g.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let pre_tok = pre_tokenizer(pre).map_err(|e| bad_key("tokenizer.ggml.pre", e))?;
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    if let Some(types) = g.opt_i64_array("tokenizer.ggml.token_type")? {
        if types.len() != tokens.len() {
            return Err(bad_key(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let special: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| **t == TYPE_CONTROL)
            .map(|(_, s)| AddedToken::from(s.to_string(), true).normalized(false))
            .collect();
        let user: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| **t == TYPE_USER_DEFINED)
            .map(|(_, s)| AddedToken::from(s.to_string(), false).normalized(false))
            .collect();
        tok.add_special_tokens(special)
            .map_err(|e| bad_key("tokenizer.ggml.token_type", e.to_string()))?;
        tok.add_tokens(user)
            .map_err(|e| bad_key("tokenizer.ggml.token_type", e.to_string()))?;
    }
    Ok(tok)
}

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` name stands for, followed by the
/// byte-level mapping (no prefix space).
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, String> {
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match pre {
        // SmolLM/StarCoder split numbers into single digits before the byte-level regex.
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        // Qwen2 splits with its own regex; the byte-level step then only maps bytes.
        "qwen2" => {
            let split = Split::new(
                SplitPattern::Regex(crate::model::tokenizer::QWEN2_PRE_REGEX.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| e.to_string())?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, false, false).into(),
            ])
            .into()
        }
        _ => byte_level.into(),
    })
}

/// Recognises a ChatML or Gemma template and the default system message it inserts, if
/// any. Without a template, a vocabulary with Gemma's turn markers (`has_token`) gets
/// Gemma's format, anything else plain ChatML.
fn chat_format(template: Option<&str>, has_token: impl Fn(&str) -> bool) -> ChatFormat {
    let gemma_markers = ["<start_of_turn>", "<end_of_turn>"];
    let Some(t) = template else {
        if gemma_markers.iter().all(|m| has_token(m)) {
            return ChatFormat::Gemma {
                from_template: false,
            };
        }
        return ChatFormat::ChatMl {
            default_system: None,
            from_template: false,
        };
    };
    if gemma_markers.iter().all(|m| t.contains(m)) {
        return ChatFormat::Gemma {
            from_template: true,
        };
    }
    if !(t.contains("<|im_start|>") && t.contains("<|im_end|>")) {
        return ChatFormat::ChatMl {
            default_system: None,
            from_template: false,
        };
    }
    ChatFormat::ChatMl {
        default_system: default_system_message(t),
        from_template: true,
    }
}

/// The literal `<|im_start|>system\n...<|im_end|>` a template emits when the conversation
/// has no system turn (SmolLM2: "You are a helpful AI assistant named SmolLM, ...").
fn default_system_message(t: &str) -> Option<String> {
    let start = t.find("<|im_start|>system")? + "<|im_start|>system".len();
    let rest = &t[start..];
    let rest = rest
        .strip_prefix("\\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let end = rest.find("<|im_end|>")?;
    let body = &rest[..end];
    // A template that splices in message content is not a literal default.
    if body.contains("{{") || body.contains('\'') || body.contains('+') || body.contains("{%") {
        return None;
    }
    Some(body.replace("\\n", "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre_tokens(pre: &str, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let mut s = PreTokenizedString::from(text);
        pre_tokenizer(pre).unwrap().pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Char)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    #[test]
    fn qwen2_splits_single_digits_and_case_blind_contractions() {
        // Qwen2's regex, by hand: letters with one leading non-letter, each digit alone,
        // `'S` as a contraction whatever its case, newline runs alone; then bytes mapped
        // (space Ġ, newline Ċ).
        assert_eq!(
            pre_tokens("qwen2", "Hello 2026 WORLD'S\n\n(x"),
            ["Hello", "Ġ", "2", "0", "2", "6", "ĠWORLD", "'S", "ĊĊ", "(x"]
        );
        // GPT-2's regex keeps ` 2026` whole and splits `'S`, the newlines and `(x`.
        assert_eq!(
            pre_tokens("gpt-2", "Hello 2026 WORLD'S\n\n(x"),
            ["Hello", "Ġ2026", "ĠWORLD", "'", "S", "Ċ", "Ċ", "(", "x"]
        );
    }

    #[test]
    fn finds_smollm2_default_system_message() {
        let t = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        assert_eq!(
            chat_format(Some(t), |_| false),
            ChatFormat::ChatMl {
                default_system: Some(
                    "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()
                ),
                from_template: true
            }
        );
    }

    #[test]
    fn plain_chatml_template_has_no_default_system() {
        let t = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        assert_eq!(
            chat_format(Some(t), |_| false),
            ChatFormat::ChatMl {
                default_system: None,
                from_template: true
            }
        );
        assert_eq!(
            chat_format(None, |_| false),
            ChatFormat::ChatMl {
                default_system: None,
                from_template: false
            }
        );
    }
}
