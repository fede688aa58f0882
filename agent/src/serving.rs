//! Serving requests as they arrive (`latency_simulation`).
//!
//! Each request has an arrival offset from the window start (`lem_common::arrivals`).
//! Whenever the engine is free it takes up to `batch_size` requests that have already
//! arrived, in arrival order, as one batch; when none has arrived it sleeps until the
//! next arrival. This is **batch-at-a-time** serving, not continuous batching: the
//! engine's `generate` runs a whole batch to completion, so a request arriving while a
//! batch runs waits for that batch to finish even if a row has already stopped. Its wait
//! counts in its TTFT and end-to-end latency, which are measured from its arrival.

use crate::engine::{BatchOutput, EngineError, GenerationObserver};
use std::ops::Range;
use std::time::{Duration, Instant};

/// The longest sleep between checks of the stop flag while waiting for an arrival, so
/// Ctrl+C is answered promptly even when the next request is seconds away.
const MAX_NAP: Duration = Duration::from_millis(50);

/// The next batch to run: requests (indices into the arrival-ordered list) and when it
/// starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextBatch {
    pub requests: Range<usize>,
    /// Offset from the window start: when the engine is free, or the first of these
    /// requests arrives if that is later.
    pub start_ns: u64,
}

/// Which requests form the next batch, given the arrival offsets (non-decreasing),
/// the first request not yet served, and when the engine is free. Up to `batch_size`
/// requests that have arrived by the batch's start, in arrival order; `None` when all
/// have been served.
pub fn next_batch(
    arrivals_ns: &[u64],
    next: usize,
    free_at_ns: u64,
    batch_size: usize,
) -> Option<NextBatch> {
    let first_ns = *arrivals_ns.get(next)?;
    let start_ns = free_at_ns.max(first_ns);
    let taken = arrivals_ns[next..]
        .iter()
        .take(batch_size.max(1))
        .take_while(|&&a| a <= start_ns)
        .count();
    Some(NextBatch {
        requests: next..next + taken,
        start_ns,
    })
}

/// One batch as it was served.
#[derive(Debug)]
pub struct Served {
    /// Indices of the prompts (= their arrival order).
    pub requests: Range<usize>,
    /// When `generate` was called, from the window start. Every request of the batch had
    /// arrived by then, so `start_offset_ns - arrival` is its time in the queue.
    pub start_offset_ns: u64,
    pub output: BatchOutput,
}

/// Runs every prompt as it arrives: `prompts[i]` arrives at `arrivals_ns[i]` after
/// `window_start`. `generate` runs one batch on the engine; `on_batch` receives each
/// served batch (to record it) with the observer back. Stops with
/// `EngineError::Interrupted` when the observer asks to, also while idle.
pub fn run<O, G, B>(
    prompts: &[Vec<u32>],
    arrivals_ns: &[u64],
    batch_size: usize,
    window_start: Instant,
    observer: &mut O,
    mut generate: G,
    mut on_batch: B,
) -> Result<(), EngineError>
where
    O: GenerationObserver,
    G: FnMut(&[Vec<u32>], &mut O) -> Result<BatchOutput, EngineError>,
    B: FnMut(&mut O, Served),
{
    assert_eq!(
        prompts.len(),
        arrivals_ns.len(),
        "one arrival offset per prompt"
    );
    debug_assert!(arrivals_ns.windows(2).all(|w| w[0] <= w[1]));
    let elapsed_ns = || window_start.elapsed().as_nanos() as u64;
    let mut next = 0;
    loop {
        let now_ns = elapsed_ns();
        let Some(plan) = next_batch(arrivals_ns, next, now_ns, batch_size) else {
            return Ok(());
        };
        if plan.start_ns > now_ns {
            // Nothing has arrived yet: idle until the next arrival, in short naps.
            if observer.should_stop() {
                return Err(EngineError::Interrupted);
            }
            std::thread::sleep(Duration::from_nanos(plan.start_ns - now_ns).min(MAX_NAP));
            continue;
        }
        let start_offset_ns = elapsed_ns();
        let output = generate(&prompts[plan.requests.clone()], observer)?;
        next = plan.requests.end;
        on_batch(
            observer,
            Served {
                requests: plan.requests,
                start_offset_ns,
                output,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::GeneratedSequence;
    use lem_common::domain::StopReason;
    use std::cell::Cell;

    const MS: u64 = 1_000_000;

    #[test]
    fn an_idle_engine_waits_for_the_first_arrival_and_takes_only_arrived_requests() {
        let a = [100, 100, 250];
        assert_eq!(
            next_batch(&a, 0, 0, 4),
            Some(NextBatch {
                requests: 0..2,
                start_ns: 100
            })
        );
        assert_eq!(
            next_batch(&a, 2, 120, 4),
            Some(NextBatch {
                requests: 2..3,
                start_ns: 250
            })
        );
        assert_eq!(next_batch(&a, 3, 999, 4), None);
    }

    #[test]
    fn a_busy_engine_takes_the_queue_in_arrival_order_up_to_the_batch_size() {
        let a = [0, 10, 20, 30, 40, 500];
        // Free at 35: 1, 2, 3 have arrived (4 has not); batch size 2 takes 1 and 2.
        assert_eq!(
            next_batch(&a, 1, 35, 2),
            Some(NextBatch {
                requests: 1..3,
                start_ns: 35
            })
        );
        assert_eq!(
            next_batch(&a, 1, 35, 8),
            Some(NextBatch {
                requests: 1..4,
                start_ns: 35
            })
        );
        // An arrival exactly at the free instant is in; batch size 0 acts as 1.
        assert_eq!(next_batch(&a, 1, 40, 8).unwrap().requests, 1..5);
        assert_eq!(next_batch(&a, 1, 40, 0).unwrap().requests, 1..2);
    }

    #[test]
    fn all_at_once_gives_full_batches() {
        let a = [0; 5];
        let mut next = 0;
        let mut sizes = Vec::new();
        while let Some(b) = next_batch(&a, next, 0, 2) {
            sizes.push(b.requests.len());
            next = b.requests.end;
        }
        assert_eq!(sizes, [2, 2, 1]);
    }

    struct StopAfter {
        batches_before_stop: Cell<usize>,
    }
    impl GenerationObserver for StopAfter {
        fn should_stop(&self) -> bool {
            self.batches_before_stop.get() == 0
        }
    }

    /// A stand-in engine: takes `busy` and returns one token per row.
    fn fake_generate(
        busy: Duration,
    ) -> impl FnMut(&[Vec<u32>], &mut StopAfter) -> Result<BatchOutput, EngineError> {
        move |inputs, obs| {
            std::thread::sleep(busy);
            let left = obs.batches_before_stop.get();
            obs.batches_before_stop.set(left.saturating_sub(1));
            let ns = busy.as_nanos() as u64;
            Ok(BatchOutput {
                sequences: inputs
                    .iter()
                    .map(|p| GeneratedSequence {
                        input_tokens: p.len() as u32,
                        output_token_ids: vec![1],
                        text: String::new(),
                        ttft_ns: ns,
                        itl_ns: vec![],
                        e2e_ns: ns,
                        stop_reason: StopReason::MaxTokens,
                    })
                    .collect(),
                prefill_ns: ns,
                decode_ns: 0,
                wall_ns: ns,
            })
        }
    }

    #[test]
    fn requests_queue_while_the_engine_is_busy_and_wait_when_it_is_idle() {
        // Batch 0 (request 0) runs 0–100 ms; 1 and 2 arrive meanwhile and run together
        // 100–200 ms; the engine then idles until 3 arrives at 300 ms.
        let arrivals = [0, 20 * MS, 40 * MS, 300 * MS];
        let prompts = vec![vec![1u32]; 4];
        let mut obs = StopAfter {
            batches_before_stop: Cell::new(usize::MAX),
        };
        let mut served = Vec::new();
        let t0 = Instant::now();
        run(
            &prompts,
            &arrivals,
            4,
            t0,
            &mut obs,
            fake_generate(Duration::from_millis(100)),
            |_, s| served.push((s.requests, s.start_offset_ns)),
        )
        .unwrap();
        let batches: Vec<_> = served.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(batches, [0..1, 1..3, 3..4]);
        let starts_ms: Vec<u64> = served.iter().map(|&(_, s)| s / MS).collect();
        assert!(starts_ms[0] < 50, "{starts_ms:?}");
        assert!((100..250).contains(&starts_ms[1]), "{starts_ms:?}");
        // Never before the arrival; a late wake-up is only the sleep's overshoot.
        assert!((300..380).contains(&starts_ms[2]), "{starts_ms:?}");
    }

    #[test]
    fn stop_is_honoured_while_idle() {
        let arrivals = [0, 30_000 * MS];
        let prompts = vec![vec![1u32]; 2];
        let mut obs = StopAfter {
            batches_before_stop: Cell::new(1),
        };
        let t0 = Instant::now();
        let mut n = 0;
        let r = run(
            &prompts,
            &arrivals,
            1,
            t0,
            &mut obs,
            fake_generate(Duration::from_millis(1)),
            |_, _| n += 1,
        );
        assert!(matches!(r, Err(EngineError::Interrupted)), "{r:?}");
        assert_eq!(n, 1, "the first batch was served");
        assert!(t0.elapsed() < Duration::from_secs(2), "did not sleep 30 s");
    }
}
