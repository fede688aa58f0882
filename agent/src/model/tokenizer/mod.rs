//! Tokenizer conversion between the formats: tokenizer.json → GGUF metadata
//! (`to_gguf.rs`) and GGUF metadata → tokenizer.json and tokenizer_config.json
//! (`to_hf.rs`). Tokenizing itself is the engine's (`engine/tokenizer.rs`).

pub mod to_gguf;
pub mod to_hf;

/// The pre-tokenizer regex of Qwen2's tokenizer.json (a `Split`, `Isolated`, before a
/// byte-level step without its own regex): GPT-4-like, but numbers split into single
/// digits. GGUF names it `tokenizer.ggml.pre = qwen2`.
pub const QWEN2_PRE_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
