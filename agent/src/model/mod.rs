//! The model-format layer: everything lem knows about how models are stored, shared by
//! the engine (`engine/`, which loads them) and the converter (`convert/`, which rewrites
//! them). One file per format or concern:
//!
//! - `gguf.rs` — GGUF reader (typed metadata, tensor table with bounds checks) and writer;
//!   `gguf_params.rs` — hyper-parameters ↔ `llama.*` / `qwen2.*` / `gemma3.*` metadata.
//! - `safetensors.rs` — a model directory's weight files (memory-mapped) and the writer.
//! - `config_json.rs` — Hugging Face `config.json` and its sibling JSON files.
//! - `params.rs` — `LlamaParams`, one struct for every family (Gemma 3's additions in
//!   `Gemma3Params`), the shape results and FLOPs use, the tensors a model has.
//! - `names.rs` — tensor names, GGUF ↔ Hugging Face.
//! - `rope_permute.rs` — the Q/K row order of rotary attention, both directions.
//! - `tokenizer/` — tokenizer conversion between tokenizer.json and GGUF metadata.
//!
//! Errors are `ModelError`, naming the file and key, field or tensor; the engine and the
//! converter map them into their own error types.

pub mod config_json;
pub mod error;
pub mod gguf;
pub mod gguf_params;
pub mod names;
pub mod params;
pub mod rope_permute;
pub mod safetensors;
pub mod tokenizer;

pub use error::{without_backtrace, ModelError};
pub use gguf::{ggml_name, unsigned as gguf_unsigned, GgufFile};
pub use params::{Gemma3Params, LlamaParams};
