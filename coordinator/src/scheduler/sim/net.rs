//! The simulated network: messages in flight with delivery times. Under faults a message
//! may be dropped, duplicated or delayed past later ones (reordered); a partitioned agent
//! neither sends nor receives.

use super::super::{Event, Reply, TimeMs, ToAgent};
use lem_common::rng::SplitMix64;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
/// A message in flight, by destination.
pub enum Msg {
    /// `sent_by_agent_at`: when an agent sent it (`None` from the client or operator).
    Coordinator {
        event: Event,
        sent_by_agent_at: Option<TimeMs>,
    },
    /// `answers_sent_at`: for a renewal, when the agent sent the Hello or heartbeat it
    /// answers (what the real agent learns by pairing renewals with its messages in
    /// order, on a stream that neither reorders nor duplicates; this network does both,
    /// so the envelope carries the answer exactly).
    Agent {
        agent: usize,
        msg: ToAgent,
        answers_sent_at: Option<TimeMs>,
    },
    Client(Reply),
}

/// Fault rates in per-mille while faults are on.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    pub drop_permille: u64,
    pub duplicate_permille: u64,
    pub reorder_permille: u64,
}

#[derive(Debug, Default)]
pub struct Net {
    in_flight: BTreeMap<(TimeMs, u64), Msg>,
    seq: u64,
}

impl Net {
    pub fn send(&mut self, now: TimeMs, msg: Msg, faults: Option<NetFaults>, rng: &mut SplitMix64) {
        let copies = match faults {
            Some(f) if rng.below(1000) < f.drop_permille => 0,
            Some(f) if rng.below(1000) < f.duplicate_permille => 2,
            _ => 1,
        };
        for _ in 0..copies {
            let mut delay_ms = 1 + rng.below(20);
            if let Some(f) = faults {
                if rng.below(1000) < f.reorder_permille {
                    delay_ms += rng.below(3_000);
                }
            }
            self.seq += 1;
            self.in_flight
                .insert((now.plus_ms(delay_ms), self.seq), msg.clone());
        }
    }

    pub fn next_time(&self) -> Option<TimeMs> {
        self.in_flight.keys().next().map(|(t, _)| *t)
    }

    pub fn pop_due(&mut self, now: TimeMs) -> Option<Msg> {
        let key = *self.in_flight.keys().next()?;
        if key.0 <= now {
            self.in_flight.remove(&key)
        } else {
            None
        }
    }

    /// The coordinator crashed: its QUIC connections died with the process, so nothing
    /// in flight either way arrives (an agent reads only its new connection, and the
    /// client's replies went with the old process). Returns how many messages the old
    /// process had in flight to agents.
    pub fn drop_at_coordinator_crash(&mut self) -> usize {
        let to_agents = self
            .in_flight
            .values()
            .filter(|m| matches!(m, Msg::Agent { .. }))
            .count();
        self.in_flight.clear();
        to_agents
    }

    /// Agent `agent` stopped: what was in flight to it was on its closed connection.
    pub fn drop_to_agent(&mut self, agent: usize) {
        self.in_flight
            .retain(|_, m| !matches!(m, Msg::Agent { agent: a, .. } if *a == agent));
    }
}
