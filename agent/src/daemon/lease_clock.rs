//! When a running lease ends, as this agent counts it. The coordinator fences a lost
//! agent's devices until its last renewal + the TTL, on its own clock, and places other
//! work there after that; so the agent must stop a run no later than that.
//!
//! A renewal was made when the coordinator handled the Hello or heartbeat it answers,
//! which is after the agent sent that message. So the agent counts the TTL from when it
//! *sent* the message (never from when the renewal arrived, which may be much later),
//! minus a drift margin for the two clocks running at slightly different rates: the rule
//! is `lem_common::lease_ttl::lease_end`, which the scheduler simulation's agents follow
//! too. The coordinator answers the messages of one session in order, on one ordered
//! stream, with at most one `Renew` each; so the n-th `Renew` naming a run answers the
//! n-th or a later message that listed it, and pairing them in order never counts from a
//! time later than the true one. A message that drew no `Renew` only makes later counts
//! earlier (the run may stop early, never late). A new session starts the pairing
//! afresh: the old connection's messages will never be answered.

use lem_common::lease_ttl::lease_end;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LeaseClock {
    expires_at: Instant,
    /// Send times of the Hellos and heartbeats that listed this run and have not been
    /// paired with a `Renew` yet, oldest first.
    unanswered: VecDeque<Instant>,
}

impl LeaseClock {
    /// A lease that arrived at `received_at` with `ttl`.
    pub fn granted(received_at: Instant, ttl: Duration) -> Self {
        Self {
            expires_at: lease_end(received_at, ttl),
            unanswered: VecDeque::new(),
        }
    }

    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// A Hello or heartbeat listing this run is about to be sent at `sent_at`.
    pub fn listed(&mut self, sent_at: Instant) {
        self.unanswered.push_back(sent_at);
    }

    /// A `Renew` naming this run arrived: the lease now ends `ttl` (less the margin)
    /// after the message it answers was sent. Never moves the end earlier; a `Renew`
    /// with no listed message to pair (none should come) changes nothing.
    pub fn renewed(&mut self, ttl: Duration) {
        let Some(sent_at) = self.unanswered.pop_front() else {
            tracing::warn!("a renewal answers no heartbeat this session sent; ignored");
            return;
        };
        self.expires_at = self.expires_at.max(lease_end(sent_at, ttl));
    }

    /// A new session: messages of the old one will never be answered.
    pub fn forget_unanswered(&mut self) {
        self.unanswered.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// 5% of the TTL, computed here from the rule rather than read from the code.
    fn margin() -> Duration {
        TTL * 5 / 100
    }

    #[test]
    fn a_renewal_counts_from_the_heartbeat_it_answers_not_from_its_arrival() {
        let t0 = Instant::now();
        let mut lease = LeaseClock::granted(t0, TTL);
        assert_eq!(lease.expires_at(), t0 + TTL - margin());
        let sent = t0 + ms(10_000);
        lease.listed(sent);
        // The renewal arrives 7 s after the heartbeat (a slow link, a busy coordinator).
        lease.renewed(TTL);
        assert_eq!(lease.expires_at(), sent + TTL - margin());
    }

    #[test]
    fn renewals_pair_with_listed_messages_in_order() {
        let t0 = Instant::now();
        let mut lease = LeaseClock::granted(t0, TTL);
        let (first, second) = (t0 + ms(10_000), t0 + ms(20_000));
        lease.listed(first);
        lease.listed(second);
        lease.renewed(TTL);
        assert_eq!(lease.expires_at(), first + TTL - margin());
        lease.renewed(TTL);
        assert_eq!(lease.expires_at(), second + TTL - margin());
        // A third renewal has nothing to answer: nothing changes.
        lease.renewed(TTL);
        assert_eq!(lease.expires_at(), second + TTL - margin());
    }

    #[test]
    fn a_new_session_forgets_messages_the_old_one_never_answered() {
        let t0 = Instant::now();
        let mut lease = LeaseClock::granted(t0, TTL);
        lease.listed(t0 + ms(1_000)); // sent, then the connection broke
        lease.forget_unanswered();
        let hello = t0 + ms(5_000);
        lease.listed(hello);
        lease.renewed(TTL);
        assert_eq!(lease.expires_at(), hello + TTL - margin());
    }

    #[test]
    fn the_agent_stops_before_the_coordinators_fence_whatever_the_delays() {
        // The coordinator renews when it handles the heartbeat (send + uplink delay) and
        // fences until then + TTL; the renewal reaches the agent after a downlink delay.
        let t0 = Instant::now();
        for (uplink, downlink) in [(0, 0), (1, 25_000), (2_000, 3), (9_000, 9_000)] {
            let mut lease = LeaseClock::granted(t0, TTL);
            let sent = t0 + ms(4_000);
            lease.listed(sent);
            let coordinator_renewed_at = sent + ms(uplink);
            let _arrives_at = coordinator_renewed_at + ms(downlink);
            lease.renewed(TTL);
            let fence_ends = coordinator_renewed_at + TTL;
            assert!(
                lease.expires_at() + margin() <= fence_ends,
                "uplink {uplink} ms, downlink {downlink} ms: stops {:?} before the fence",
                fence_ends - lease.expires_at()
            );
        }
    }

    #[test]
    fn an_older_pairing_never_moves_the_end_earlier() {
        let t0 = Instant::now();
        let mut lease = LeaseClock::granted(t0 + ms(3_000), TTL);
        lease.listed(t0); // listed before the grant was counted from
        lease.renewed(TTL);
        assert_eq!(lease.expires_at(), t0 + ms(3_000) + TTL - margin());
    }
}
