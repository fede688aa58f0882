//! Sends the window's requests: each when it is due (at once, or at its arrival offset
//! under `latency_simulation`), with at most `max_concurrency` in flight, all on one
//! async runtime thread. A request that finds every slot taken waits in lem's queue; its
//! wait counts in its latency, as it would for a client of a busy server.

use super::endpoint::Endpoint;
use super::request::{stream_completion, RequestFailure, StreamedCompletion};
use lem_common::server::FailureKind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The longest the loop sleeps before looking at the stop flag and the clock again.
const MAX_NAP: Duration = Duration::from_millis(50);

/// One request to send.
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    /// Prompt index.
    pub index: u32,
    /// The `/completions` JSON body.
    pub body: Vec<u8>,
    /// Due this long after the window start; `None` = at once.
    pub arrival_ns: Option<u64>,
}

/// One request as it went.
#[derive(Debug, Clone)]
pub struct SentRequest {
    pub index: u32,
    pub arrival_ns: Option<u64>,
    /// When it was sent, from the window start (≥ its arrival).
    pub start_offset_ns: u64,
    pub outcome: Result<StreamedCompletion, RequestFailure>,
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    pub api_key: Option<String>,
    pub request_timeout: Duration,
    pub max_concurrency: usize,
}

/// Sends `requests` in order (each no earlier than its arrival) and returns every one's
/// outcome in completion order; `on_done` sees each as it finishes. `None` when `stop`
/// was set (requests in flight are dropped).
pub async fn drive(
    requests: Vec<PlannedRequest>,
    target: &Target,
    window_start: Instant,
    stop: &AtomicBool,
    mut on_done: impl FnMut(&SentRequest),
) -> Option<Vec<SentRequest>> {
    let slots = Arc::new(Semaphore::new(target.max_concurrency.max(1)));
    let target = Arc::new(target.clone());
    let elapsed_ns = move || window_start.elapsed().as_nanos() as u64;
    let mut queue = requests.into_iter().peekable();
    let mut in_flight = JoinSet::new();
    // Task id → (index, arrival, sent at), for a task that ends without its result.
    let mut launched = HashMap::new();
    let mut done = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            in_flight.abort_all();
            return None;
        }
        while let Some(next) = queue.peek() {
            if next.arrival_ns.is_some_and(|a| a > elapsed_ns()) {
                break;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                break;
            };
            let r = queue.next().expect("peeked");
            let start_offset_ns = elapsed_ns();
            let target = target.clone();
            let handle = in_flight.spawn(async move {
                let outcome = stream_completion(
                    &target.endpoint,
                    target.api_key.as_deref(),
                    r.body,
                    target.request_timeout,
                )
                .await;
                drop(slot);
                SentRequest {
                    index: r.index,
                    arrival_ns: r.arrival_ns,
                    start_offset_ns,
                    outcome,
                }
            });
            launched.insert(handle.id(), (r.index, r.arrival_ns, start_offset_ns));
        }
        if queue.peek().is_none() && in_flight.is_empty() {
            return Some(done);
        }
        let nap = queue
            .peek()
            .and_then(|r| r.arrival_ns)
            .map_or(MAX_NAP, |a| {
                Duration::from_nanos(a.saturating_sub(elapsed_ns())).min(MAX_NAP)
            });
        tokio::select! {
            Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                let sent = match joined {
                    Ok((_, sent)) => sent,
                    Err(e) => {
                        let (index, arrival_ns, start_offset_ns) =
                            launched.get(&e.id()).copied().unwrap_or_default();
                        SentRequest {
                            index,
                            arrival_ns,
                            start_offset_ns,
                            outcome: Err(RequestFailure {
                                kind: FailureKind::InvalidResponse,
                                reason: format!("the request's task ended without a result: {e}"),
                                http_status: None,
                                elapsed_ns: elapsed_ns().saturating_sub(start_offset_ns),
                                chunks_received: 0,
                            }),
                        }
                    }
                };
                on_done(&sent);
                done.push(sent);
            }
            _ = tokio::time::sleep(nap) => {}
        }
    }
}
