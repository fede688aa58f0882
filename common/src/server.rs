//! What a result records about an external inference server (`engine: openai`): the
//! server's identity as its API reports it plus what the user stated, and the requests
//! that failed, each with its reason. Failed requests are not in `RawResult::requests`,
//! so latency and throughput figures cover the successful ones only (as `vllm bench
//! serve` reports them); the failures are counted here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The server a job drove and how the requests went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The configured base URL (`openai.endpoint`).
    pub endpoint: String,
    /// The model id sent in every request (`openai.model`).
    pub model: String,
    /// As stated in the config (`openai.engine_name` / `engine_version`); lem cannot
    /// verify them.
    pub engine_name: Option<String>,
    pub engine_version: Option<String>,
    /// The body of `GET <endpoint>/models` at preflight, as JSON; `None` when the
    /// server did not answer with JSON (`models_unavailable_reason` says why).
    pub models_response: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_unavailable_reason: Option<String>,
    /// Response headers of that answer that identify the server (`server`,
    /// `x-powered-by`, ...), lower-case names.
    pub response_headers: BTreeMap<String, String>,
    /// Most requests that were in flight at once (the configured bound).
    pub max_concurrency: u32,
    /// Requests sent in the measured window (successful + failed).
    pub requests_sent: u32,
    pub failed_requests: Vec<FailedRequest>,
    /// Indices of requests whose output tokens lem counted with the model's tokenizer
    /// because the server's stream carried no `usage`; all others are the server's count.
    pub output_tokens_counted_by_lem: Vec<u32>,
    /// Likewise for input tokens.
    pub input_tokens_counted_by_lem: Vec<u32>,
}

/// Why a request produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The TCP connection could not be made (refused, unreachable).
    Connect,
    /// The server answered with a status other than 2xx.
    HttpStatus,
    /// The response stream broke off or ended before `data: [DONE]`.
    StreamCut,
    /// The request ran past `openai.request_timeout_s`.
    Timeout,
    /// The server's answer could not be understood (not SSE, not the completions JSON).
    InvalidResponse,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::HttpStatus => "http_status",
            FailureKind::StreamCut => "stream_cut",
            FailureKind::Timeout => "timeout",
            FailureKind::InvalidResponse => "invalid_response",
        }
    }
}

/// One request that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedRequest {
    /// Prompt index, as `RequestRecord::index`.
    pub index: u32,
    pub kind: FailureKind,
    /// The reason in words (status line and body excerpt, the IO error, ...).
    pub reason: String,
    /// For `HttpStatus`.
    pub http_status: Option<u16>,
    /// When it arrived (`latency_simulation`), was sent, and failed, from the window start.
    pub arrival_offset_ns: Option<u64>,
    pub start_offset_ns: u64,
    pub failed_offset_ns: u64,
    /// Streamed chunks with text received before the failure.
    pub chunks_received: u32,
}

impl ServerRecord {
    /// Failures by kind, for summaries: `[("http_status", 2), ("stream_cut", 1)]`.
    pub fn failures_by_kind(&self) -> Vec<(&'static str, u32)> {
        let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
        for f in &self.failed_requests {
            *counts.entry(f.kind.as_str()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(index: u32, kind: FailureKind) -> FailedRequest {
        FailedRequest {
            index,
            kind,
            reason: "r".into(),
            http_status: None,
            arrival_offset_ns: None,
            start_offset_ns: 0,
            failed_offset_ns: 1,
            chunks_received: 0,
        }
    }

    #[test]
    fn failures_are_counted_by_kind_and_serialise_in_snake_case() {
        let r = ServerRecord {
            endpoint: "http://h/v1".into(),
            model: "m".into(),
            engine_name: None,
            engine_version: None,
            models_response: None,
            models_unavailable_reason: Some("not JSON".into()),
            response_headers: BTreeMap::new(),
            max_concurrency: 2,
            requests_sent: 4,
            failed_requests: vec![
                failed(3, FailureKind::StreamCut),
                failed(0, FailureKind::HttpStatus),
                failed(1, FailureKind::HttpStatus),
            ],
            output_tokens_counted_by_lem: vec![],
            input_tokens_counted_by_lem: vec![],
        };
        assert_eq!(
            r.failures_by_kind(),
            [("http_status", 2), ("stream_cut", 1)]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["failed_requests"][0]["kind"], "stream_cut");
        let back: ServerRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}
