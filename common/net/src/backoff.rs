//! Reconnection delays: exponential, capped, with jitter so agents that lost the
//! coordinator together do not all come back in the same instant.

use crate::error::NetError;
use lem_common::rng::SplitMix64;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// Delays start near `initial` and double up to `max`; `seed` fixes the jitter.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// Seeded from the system's random source: each process jitters differently.
    pub fn unseeded(initial: Duration, max: Duration) -> Self {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 8];
        // On failure the clock's nanoseconds still spread processes apart.
        if ring::rand::SystemRandom::new().fill(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            seed = u64::from(nanos).to_le_bytes();
        }
        Self::new(initial, max, u64::from_le_bytes(seed))
    }

    /// The ceiling for the next delay: `initial · 2^failures`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next try: uniform in [ceiling/2, ceiling] ("equal jitter").
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        let half = ceiling / 2;
        let spread_ns = (ceiling - half).as_nanos() as u64;
        let jitter = Duration::from_nanos(self.rng.below(spread_ns.saturating_add(1)));
        self.failures = self.failures.saturating_add(1);
        half + jitter
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// After a connection ended: one that lived at least as long as the longest delay
    /// was a success; a shorter one (accepted, then dropped at once) counts as a
    /// failure, so a peer that ends every session quickly meets growing delays, not a
    /// reconnect (and Hello) every `initial`.
    pub fn connection_ended(&mut self, lived: Duration) {
        if lived >= self.max {
            self.reset();
        }
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not retryable, or has
/// been tried `max_attempts` times, sleeping the backoff's delay between tries.
pub async fn retry<T, F, Fut>(
    backoff: &mut Backoff,
    max_attempts: u32,
    mut attempt: F,
) -> Result<T, NetError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    let mut tried = 0;
    loop {
        tried += 1;
        match attempt(tried).await {
            Ok(value) => {
                backoff.reset();
                return Ok(value);
            }
            Err(error) if !error.is_retryable() || tried >= max_attempts => return Err(error),
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::info!(%error, attempt = tried, delay_ms = delay.as_millis() as u64, "retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_equal_jitter_bounds() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut backoff = Backoff::new(initial, max, 42);
        for failures in 0..12u32 {
            // Computed here independently: 100 ms · 2^failures, capped at 5 s.
            let ceiling_ms = (100u64 << failures).min(5_000);
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "failure {failures}: {delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), initial);
    }

    #[test]
    fn only_a_connection_that_outlived_the_cap_resets_the_delays() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut backoff = Backoff::new(initial, max, 9);
        // Connections dropped right after they were made: the delays keep growing.
        for dropped in 0..6u32 {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis((100u64 << dropped).min(2_000));
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{dropped}: {delay:?}"
            );
            backoff.connection_ended(Duration::from_millis(50));
        }
        assert_eq!(backoff.ceiling(), max);
        backoff.connection_ended(max - Duration::from_millis(1));
        assert_eq!(backoff.ceiling(), max);
        // One that lived as long as the cap was healthy: back to the start.
        backoff.connection_ended(max);
        assert_eq!(backoff.ceiling(), initial);
    }

    #[test]
    fn jitter_differs_between_seeds_and_repeats_for_one() {
        let delays = |seed| {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
        assert_ne!(delays(7), delays(8));
    }

    #[tokio::test]
    async fn retry_stops_on_success_refusal_or_the_attempt_limit() {
        let tiny = || Backoff::new(Duration::from_millis(1), Duration::from_millis(2), 1);
        let lost = || NetError::Connect {
            target: "t".into(),
            detail: "unreachable".into(),
        };

        let mut calls = 0;
        let result: Result<(), _> = retry(&mut tiny(), 4, |_| {
            calls += 1;
            std::future::ready(Err(lost()))
        })
        .await;
        assert!(matches!(result, Err(NetError::Connect { .. })));
        assert_eq!(calls, 4);

        let mut calls = 0;
        let result: Result<(), _> = retry(&mut tiny(), 4, |_| {
            calls += 1;
            std::future::ready(Err(NetError::Refused {
                peer: "p".into(),
                reason: "no".into(),
            }))
        })
        .await;
        assert!(matches!(result, Err(NetError::Refused { .. })));
        assert_eq!(calls, 1, "a refusal is not retried");

        let result = retry(&mut tiny(), 4, |n| {
            std::future::ready(if n < 3 { Err(lost()) } else { Ok(n) })
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }
}
