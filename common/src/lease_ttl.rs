//! How an agent counts a lease's TTL on its own clock. The coordinator counts a lease
//! from when it renewed it (when it handled the Hello or heartbeat listing the run) and,
//! once it stops hearing from the agent, fences the run's devices until then + the TTL
//! on its own clock; so the agent must stop the run no later than that. The real agent
//! (`lem-agent`'s lease clock) and the scheduler simulation's agents both count with
//! these functions. No IO and no clock: the caller passes its instants.

use std::ops::Add;
use std::time::Duration;

/// What the agent takes off every TTL: the monotonic clocks of two machines drift apart
/// by far less than 5% over a TTL; the rest covers the trip of a new lease (counted from
/// its arrival, there being no earlier message of the agent's it answers).
pub fn drift_margin(ttl: Duration) -> Duration {
    ttl / 20
}

/// The part of `ttl` the agent counts: the TTL less [`drift_margin`].
pub fn counted_ttl(ttl: Duration) -> Duration {
    ttl - drift_margin(ttl)
}

/// When a lease with `ttl` ends on the agent's clock, counted from `counted_from`: for a
/// renewal, when the agent *sent* the Hello or heartbeat the renewal answers (never when
/// the renewal arrived: the coordinator renewed when it handled the message, between the
/// two); for a new lease, when it arrived.
pub fn lease_end<T: Add<Duration, Output = T>>(counted_from: T, ttl: Duration) -> T {
    counted_from + counted_ttl(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_lease_ends_the_ttl_less_five_percent_after_it_is_counted_from() {
        let sent = Instant::now();
        // 30 s less 5 % (1.5 s), and 1 s less 50 ms: worked out by hand, not by the code.
        assert_eq!(
            lease_end(sent, Duration::from_secs(30)),
            sent + Duration::from_millis(28_500)
        );
        assert_eq!(
            lease_end(Duration::from_millis(7), Duration::from_secs(1)),
            Duration::from_millis(957)
        );
        assert_eq!(lease_end(sent, Duration::ZERO), sent);
    }

    #[test]
    fn counting_from_the_send_never_ends_after_the_coordinators_count() {
        // The coordinator renews at `sent + uplink` and counts the full TTL from there.
        let sent = Instant::now();
        let ttl = Duration::from_secs(15);
        for uplink_ms in [0, 1, 20, 3_000, 60_000] {
            let renewed = sent + Duration::from_millis(uplink_ms);
            assert!(lease_end(sent, ttl) + Duration::from_millis(750) <= renewed + ttl);
        }
    }
}
