//! Streamed completions → the result's per-request records, with the candle path's
//! definitions (docs/latency.md): TTFT and e2e count from the request's arrival when it
//! has one (lem's queue wait included), else from when it was sent; e2e ends at the last
//! chunk with text; `itl_ns` holds the gaps between consecutive text chunks. A server
//! that streams several tokens per chunk (vLLM can) gives fewer gaps than tokens.
//! Token counts are the server's `usage`; where it sent none, lem counts with the
//! model's tokenizer and lists the request as counted by lem.

use super::drive::SentRequest;
use lem_common::domain::{RequestRecord, StopReason};
use lem_common::server::FailedRequest;

/// Every request of a window, sorted into records and failures.
#[derive(Debug, Default, PartialEq)]
pub struct WindowRequests {
    /// Successful requests, by prompt index.
    pub records: Vec<RequestRecord>,
    /// Failed requests, by prompt index.
    pub failed: Vec<FailedRequest>,
    pub output_tokens_counted_by_lem: Vec<u32>,
    pub input_tokens_counted_by_lem: Vec<u32>,
}

/// How lem counts what the server did not.
pub struct Counting<'a> {
    /// The prompt's input tokens as lem's tokenizer counts them (BOS included where the
    /// model adds one), by prompt index.
    pub lem_input_tokens: &'a dyn Fn(u32) -> u32,
    /// Tokens of generated text (no BOS).
    pub lem_output_tokens: &'a dyn Fn(&str) -> u32,
    pub max_output_tokens: u32,
    pub save_outputs: bool,
}

pub fn window_requests(sent: Vec<SentRequest>, counting: &Counting<'_>) -> WindowRequests {
    let mut out = WindowRequests::default();
    for s in sent {
        let done = match s.outcome {
            Ok(done) => done,
            Err(f) => {
                out.failed.push(FailedRequest {
                    index: s.index,
                    kind: f.kind,
                    reason: f.reason,
                    http_status: f.http_status,
                    arrival_offset_ns: s.arrival_ns,
                    start_offset_ns: s.start_offset_ns,
                    failed_offset_ns: s.start_offset_ns + f.elapsed_ns,
                    chunks_received: f.chunks_received,
                });
                continue;
            }
        };
        let queued_ns = s
            .arrival_ns
            .map_or(0, |a| s.start_offset_ns.saturating_sub(a));
        let first_ns = done.text_chunk_ns.first().copied().unwrap_or(done.done_ns);
        let last_ns = done.text_chunk_ns.last().copied().unwrap_or(done.done_ns);
        let usage = done.usage;
        let input_tokens = match usage.and_then(|u| u.prompt_tokens) {
            Some(n) => n,
            None => {
                out.input_tokens_counted_by_lem.push(s.index);
                (counting.lem_input_tokens)(s.index)
            }
        };
        let output_tokens = match usage.and_then(|u| u.completion_tokens) {
            Some(n) => n,
            None => {
                out.output_tokens_counted_by_lem.push(s.index);
                (counting.lem_output_tokens)(&done.text)
            }
        };
        let stop_reason = match done.finish_reason.as_deref() {
            Some("length") => StopReason::MaxTokens,
            Some(_) => StopReason::Eos,
            None if output_tokens >= counting.max_output_tokens => StopReason::MaxTokens,
            None => StopReason::Eos,
        };
        out.records.push(RequestRecord {
            index: s.index,
            input_tokens,
            output_tokens,
            ttft_ns: queued_ns + first_ns,
            itl_ns: done.text_chunk_ns.windows(2).map(|w| w[1] - w[0]).collect(),
            e2e_ns: queued_ns + last_ns,
            stop_reason,
            output_text: counting.save_outputs.then_some(done.text),
            arrival_offset_ns: s.arrival_ns,
            start_offset_ns: Some(s.start_offset_ns),
            finish_offset_ns: Some(s.start_offset_ns + last_ns),
        });
    }
    out.records.sort_by_key(|r| r.index);
    out.failed.sort_by_key(|f| f.index);
    out.output_tokens_counted_by_lem.sort_unstable();
    out.input_tokens_counted_by_lem.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::chunk::Usage;
    use crate::openai::request::{RequestFailure, StreamedCompletion};
    use lem_common::server::FailureKind;

    fn done(chunks_ns: &[u64], usage: Option<Usage>, finish: Option<&str>) -> StreamedCompletion {
        StreamedCompletion {
            text_chunk_ns: chunks_ns.to_vec(),
            done_ns: chunks_ns.last().copied().unwrap_or(0) + 5,
            text: "a b c".into(),
            usage,
            finish_reason: finish.map(str::to_string),
        }
    }

    #[test]
    fn latencies_count_from_arrival_and_counts_prefer_the_servers_usage() {
        let usage = Usage {
            prompt_tokens: Some(11),
            completion_tokens: Some(3),
        };
        let sent = vec![
            // Arrived at 100, sent at 130 (queued 30); chunks at 40, 55, 75 after sending.
            SentRequest {
                index: 1,
                arrival_ns: Some(100),
                start_offset_ns: 130,
                outcome: Ok(done(&[40, 55, 75], Some(usage), Some("length"))),
            },
            // No usage: lem counts; no arrival: from sending.
            SentRequest {
                index: 0,
                arrival_ns: None,
                start_offset_ns: 10,
                outcome: Ok(done(&[20, 30], None, Some("stop"))),
            },
            SentRequest {
                index: 2,
                arrival_ns: Some(200),
                start_offset_ns: 200,
                outcome: Err(RequestFailure {
                    kind: FailureKind::HttpStatus,
                    reason: "HTTP 500".into(),
                    http_status: Some(500),
                    elapsed_ns: 7,
                    chunks_received: 0,
                }),
            },
        ];
        let lem_in = |i: u32| 100 + i;
        let lem_out = |t: &str| t.split(' ').count() as u32;
        let w = window_requests(
            sent,
            &Counting {
                lem_input_tokens: &lem_in,
                lem_output_tokens: &lem_out,
                max_output_tokens: 3,
                save_outputs: true,
            },
        );
        let got: Vec<_> = w
            .records
            .iter()
            .map(|r| {
                (
                    r.index,
                    r.input_tokens,
                    r.output_tokens,
                    r.ttft_ns,
                    r.e2e_ns,
                )
            })
            .collect();
        assert_eq!(got, [(0, 100, 3, 20, 30), (1, 11, 3, 30 + 40, 30 + 75)]);
        assert_eq!(w.records[1].itl_ns, [15, 20]);
        assert_eq!(w.records[0].itl_ns, [10]);
        assert_eq!(
            (w.records[1].start_offset_ns, w.records[1].finish_offset_ns),
            (Some(130), Some(130 + 75))
        );
        assert_eq!(w.records[1].stop_reason, StopReason::MaxTokens);
        assert_eq!(w.records[0].stop_reason, StopReason::Eos);
        assert_eq!(w.records[0].output_text.as_deref(), Some("a b c"));
        assert_eq!(w.output_tokens_counted_by_lem, [0]);
        assert_eq!(w.input_tokens_counted_by_lem, [0]);
        assert_eq!(w.failed.len(), 1);
        let f = &w.failed[0];
        assert_eq!(
            (f.index, f.kind, f.http_status, f.failed_offset_ns),
            (2, FailureKind::HttpStatus, Some(500), 207)
        );
    }
}
