//! Tokenizer conversion between the formats: tokenizer.json → GGUF metadata
//! (`to_gguf.rs`) and GGUF metadata → tokenizer.json and tokenizer_config.json
//! (`to_hf.rs`). Tokenizing itself is the engine's (`engine/tokenizer.rs`).

pub mod to_gguf;
pub mod to_hf;
