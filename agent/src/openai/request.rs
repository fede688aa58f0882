//! One streamed completion: the request body lem sends, and the response read as it
//! streams, each text chunk timestamped on arrival. Every way it can fail becomes a
//! `RequestFailure` with its kind and reason, never a panic or a run-ending error.

use super::chunk::{excerpt, parse_event, StreamEvent, Usage};
use super::endpoint::Endpoint;
use super::http::{self, SendError};
use super::sse::SseParser;
use http_body_util::BodyExt;
use lem_common::config::ExperimentConfig;
use lem_common::server::FailureKind;
use std::time::{Duration, Instant};

/// Longest wait for a TCP connection (a request's own timeout may be shorter).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error answer's body is kept in the reason.
const ERROR_BODY_BYTES: usize = 4096;

/// The JSON body of one streamed `/completions` request for `prompt`, with the config's
/// output bounds and decoding settings. Greedy decoding is sent as temperature 0;
/// `top_k`, `min_p`, `repetition_penalty` and `min_tokens` (extensions vLLM, llama.cpp
/// and SGLang accept) only when they are in effect.
pub fn completion_body(cfg: &ExperimentConfig, model: &str, prompt: &str, seed: u64) -> Vec<u8> {
    let d = &cfg.decoder_config;
    let mut body = serde_json::json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": cfg.max_output_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
        "seed": seed,
    });
    let obj = body.as_object_mut().expect("built as an object");
    if d.is_greedy() {
        obj.insert("temperature".into(), 0.0.into());
    } else {
        obj.insert("temperature".into(), d.temperature.into());
        obj.insert("top_p".into(), d.top_p.into());
        if d.top_k > 0 {
            obj.insert("top_k".into(), d.top_k.into());
        }
        if d.min_p > 0.0 {
            obj.insert("min_p".into(), d.min_p.into());
        }
    }
    if d.repetition_penalty != 1.0 {
        obj.insert("repetition_penalty".into(), d.repetition_penalty.into());
    }
    if cfg.min_output_tokens > 0 {
        obj.insert("min_tokens".into(), cfg.min_output_tokens.into());
    }
    serde_json::to_vec(&body).expect("plain JSON always serialises")
}

/// A completion streamed to its end (`data: [DONE]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamedCompletion {
    /// From sending the request to the arrival of each chunk that carried text.
    pub text_chunk_ns: Vec<u64>,
    /// From sending to `[DONE]`.
    pub done_ns: u64,
    pub text: String,
    /// The server's token counts, when it sent them.
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
}

/// A request that produced no completion.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFailure {
    pub kind: FailureKind,
    pub reason: String,
    pub http_status: Option<u16>,
    /// From sending to the failure.
    pub elapsed_ns: u64,
    pub chunks_received: u32,
}

/// What has arrived so far (kept when the request fails part-way).
#[derive(Default)]
struct Progress {
    text_chunk_ns: Vec<u64>,
    text: String,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

/// Sends `body` to `<endpoint>/completions` and reads the stream, all within `timeout`.
pub async fn stream_completion(
    endpoint: &Endpoint,
    api_key: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<StreamedCompletion, RequestFailure> {
    let sent = Instant::now();
    let mut progress = Progress::default();
    let outcome = tokio::time::timeout(
        timeout,
        exchange(endpoint, api_key, body, timeout, sent, &mut progress),
    )
    .await;
    let elapsed_ns = sent.elapsed().as_nanos() as u64;
    let chunks_received = progress.text_chunk_ns.len() as u32;
    let fail = |kind, reason, http_status| RequestFailure {
        kind,
        reason,
        http_status,
        elapsed_ns,
        chunks_received,
    };
    match outcome {
        Err(_) => Err(fail(
            FailureKind::Timeout,
            format!(
                "no complete answer within openai.request_timeout_s = {} s",
                timeout.as_secs_f64()
            ),
            None,
        )),
        Ok(Err((kind, reason, status))) => Err(fail(kind, reason, status)),
        Ok(Ok(done_ns)) => Ok(StreamedCompletion {
            text_chunk_ns: progress.text_chunk_ns,
            done_ns,
            text: progress.text,
            usage: progress.usage,
            finish_reason: progress.finish_reason,
        }),
    }
}

type Failure = (FailureKind, String, Option<u16>);

/// The request and its stream; `Ok` holds the time of `[DONE]` from `sent`.
async fn exchange(
    endpoint: &Endpoint,
    api_key: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
    sent: Instant,
    progress: &mut Progress,
) -> Result<u64, Failure> {
    let connect_timeout = CONNECT_TIMEOUT.min(timeout);
    let resp = http::send(
        endpoint,
        "completions",
        Some(body),
        api_key,
        connect_timeout,
    )
    .await
    .map_err(|e| -> Failure {
        match e {
            SendError::Connect(m) => (FailureKind::Connect, m, None),
            SendError::Exchange(m) => (FailureKind::StreamCut, format!("no response: {m}"), None),
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        let body = http::read_body(resp, ERROR_BODY_BYTES, Duration::from_secs(5))
            .await
            .map(|b| excerpt(&String::from_utf8_lossy(&b)))
            .unwrap_or_else(|e| format!("(body unreadable: {e})"));
        return Err((
            FailureKind::HttpStatus,
            format!("HTTP {status}: {body}"),
            Some(status.as_u16()),
        ));
    }
    let mut body = resp.into_body();
    let mut parser = SseParser::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| -> Failure {
            (
                FailureKind::StreamCut,
                format!(
                    "stream broke off after {} text chunk(s): {e}",
                    progress.text_chunk_ns.len()
                ),
                None,
            )
        })?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let at_ns = sent.elapsed().as_nanos() as u64;
        for event in parser.feed(data) {
            let event = parse_event(&event)
                .map_err(|m| -> Failure { (FailureKind::InvalidResponse, m, None) })?;
            match event {
                StreamEvent::Done => return Ok(at_ns),
                StreamEvent::Chunk {
                    text,
                    finish_reason,
                    usage,
                } => {
                    if !text.is_empty() {
                        progress.text_chunk_ns.push(at_ns);
                        progress.text.push_str(&text);
                    }
                    if finish_reason.is_some() {
                        progress.finish_reason = finish_reason;
                    }
                    if usage.is_some() {
                        progress.usage = usage;
                    }
                }
            }
        }
    }
    Err((
        FailureKind::StreamCut,
        format!(
            "stream ended before `data: [DONE]` after {} text chunk(s){}",
            progress.text_chunk_ns.len(),
            if parser.has_partial_event() {
                ", in the middle of an event"
            } else {
                ""
            }
        ),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_streams_with_usage_and_carries_the_decoding_settings() {
        let mut cfg = ExperimentConfig::default_for("t", "m");
        cfg.max_output_tokens = 17;
        let body: serde_json::Value =
            serde_json::from_slice(&completion_body(&cfg, "srv-model", "Hello", 5)).unwrap();
        assert_eq!(body["model"], "srv-model");
        assert_eq!(body["prompt"], "Hello");
        assert_eq!(body["max_tokens"], 17);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        // Greedy by default: temperature 0, no sampling knobs.
        assert_eq!(body["temperature"], 0.0);
        assert!(body.get("top_k").is_none() && body.get("min_tokens").is_none());

        cfg.decoder_config.do_sample = true;
        cfg.decoder_config.temperature = 0.7;
        cfg.decoder_config.top_k = 10;
        cfg.min_output_tokens = 3;
        let body: serde_json::Value =
            serde_json::from_slice(&completion_body(&cfg, "m", "p", 1)).unwrap();
        assert_eq!(body["temperature"], 0.7);
        assert_eq!(body["top_k"], 10);
        assert_eq!(body["min_tokens"], 3);
        assert!(body.get("min_p").is_none());
    }
}
