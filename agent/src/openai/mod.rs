//! `engine: openai`: lem drives an external OpenAI-compatible server (vLLM, TGI,
//! SGLang, llama.cpp) with the prompts, concurrency and arrival schedule of the config,
//! and meters this node's devices around it exactly as for its own engine.
//!
//! - `endpoint.rs` — the base URL, split for requests;
//! - `http.rs` — one HTTP/1.1 exchange on its own connection (hyper, tokio);
//! - `sse.rs` — the server-sent events parser; `chunk.rs` — one completions chunk;
//! - `request.rs` — one streamed completion, timed per chunk, failures as values;
//! - `drive.rs` — sending the window's requests, ≤ `max_concurrency` in flight;
//! - `identity.rs` — `GET /models` and identifying headers (also the preflight);
//! - `records.rs` — streamed completions → the result's request records;
//! - `job.rs` — one job, from preflight to `RawResult`.

pub mod chunk;
pub mod drive;
pub mod endpoint;
pub mod http;
pub mod identity;
pub mod job;
pub mod records;
pub mod request;
pub mod sse;

/// Why a job could not use the server at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    #[error("openai.endpoint: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("openai.endpoint {endpoint}: the server is not reachable ({message}); start it, or correct openai.endpoint")]
    Unreachable { endpoint: String, message: String },
    #[error("openai.api_key_env: the environment variable `{var}` is not set")]
    MissingApiKey { var: String },
    #[error("engine: openai needs the `openai` section (endpoint, model)")]
    MissingSection,
    #[error("engine: openai: cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}
