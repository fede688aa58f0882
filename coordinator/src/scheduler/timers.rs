//! The scheduler's deadlines, ordered, so `poll_timeout` is the first one and firing is a
//! walk from the front.

use super::types::{AgentId, AttemptId, TimeMs};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// A lease expires unless renewed (or, after a restart, reclaimed).
    Lease(AttemptId),
    /// An agent is lost unless heard from.
    Agent(AgentId),
    /// A fenced attempt's lease would have expired: its agent has stopped it by now, so
    /// its devices are free.
    Fence(AttemptId),
}

#[derive(Debug, Default, Clone)]
pub struct Timers {
    queue: BTreeSet<(TimeMs, Timer)>,
}

impl Timers {
    /// Moves `timer` from `old` (if it was set) to `new`.
    pub fn reset(&mut self, timer: Timer, old: Option<TimeMs>, new: TimeMs) {
        if let Some(old) = old {
            self.queue.remove(&(old, timer.clone()));
        }
        self.queue.insert((new, timer));
    }

    pub fn cancel(&mut self, timer: Timer, at: TimeMs) {
        self.queue.remove(&(at, timer));
    }

    pub fn first(&self) -> Option<TimeMs> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// Removes and returns the first timer due at or before `now`.
    pub fn pop_due(&mut self, now: TimeMs) -> Option<Timer> {
        if self.queue.first().is_some_and(|(t, _)| *t <= now) {
            self.queue.pop_first().map(|(_, timer)| timer)
        } else {
            None
        }
    }
}
