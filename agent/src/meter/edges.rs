//! Window edges on a stepping counter (NVML's total energy moves every ~100 ms).
//!
//! A counter value read at time `t` holds the energy up to the counter's last update,
//! somewhere in the period before `t`. Reading at an arbitrary moment therefore misplaces
//! each edge by up to a period. Instead the meter polls until the counter moves and
//! places the edge on that update: the energy between two observed updates is exact to
//! the counter's resolution, and only the update's time is uncertain, by half the poll
//! bracket. An edge whose counter does not move within the bound (no load, a frozen
//! clock) is placed half a period before the read, ± half a period.

use super::clock::MeterClock;
use std::time::Duration;

/// Poll interval while waiting for a counter update at an edge.
pub const EDGE_POLL: Duration = Duration::from_millis(1);

/// Where one edge of a window lies on a counter's update grid, in the meter's time (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The time the counter value at this edge belongs to (best estimate).
    pub t_ns: i64,
    /// Half the interval the true time lies in.
    pub half_width_ns: u64,
    /// `true`: an update was observed between two polls; `false`: placed by the period.
    pub aligned: bool,
}

impl Edge {
    /// A value read at `read_ns` without seeing an update: it belongs to the last update,
    /// somewhere in the `period_ns` before the read.
    pub fn unaligned(read_ns: i64, period_ns: u64) -> Edge {
        Edge {
            t_ns: read_ns - (period_ns / 2) as i64,
            half_width_ns: period_ns / 2,
            aligned: false,
        }
    }

    /// An update that happened after the poll at `before_ns` and by the poll at `after_ns`.
    pub fn observed(before_ns: i64, after_ns: i64) -> Edge {
        let half = (after_ns - before_ns).max(0) as u64 / 2;
        Edge {
            t_ns: before_ns + half as i64,
            half_width_ns: half,
            aligned: true,
        }
    }
}

/// What waiting for one counter's update gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeOutcome {
    /// The counter moved to `value` at `edge`.
    Moved { edge: Edge, value: u64 },
    /// It did not move within the bound.
    Still,
    /// A read failed, or the counter went backwards: why.
    Failed(String),
}

/// Polls counters every `poll` until each has moved, for at most `bound`.
#[derive(Debug, Clone, Copy)]
pub struct EdgeWait {
    pub poll: Duration,
    pub bound: Duration,
}

impl EdgeWait {
    /// Waits for each counter with `Some(last value)` in `last` to move; `read(i)` reads
    /// counter `i`; `since_ns` is a time before the `last` values were read. Counters
    /// with `None` are not watched (their outcome is `Still`). An update seen by a read
    /// happened after the previous read began and before this one ended: that bracket.
    pub fn run(
        &self,
        clock: &dyn MeterClock,
        since_ns: i64,
        last: &[Option<u64>],
        mut read: impl FnMut(usize) -> Result<u64, String>,
    ) -> Vec<EdgeOutcome> {
        let mut out = vec![EdgeOutcome::Still; last.len()];
        let mut pending: Vec<usize> = (0..last.len()).filter(|&i| last[i].is_some()).collect();
        // When the last read of each counter that saw no update began.
        let mut before_ns = vec![since_ns; last.len()];
        let bound_ns = i64::try_from(self.bound.as_nanos()).unwrap_or(i64::MAX);
        while !pending.is_empty() {
            clock.sleep(self.poll);
            pending.retain(|&i| {
                let prev = last[i].unwrap_or(0);
                let began = clock.now_ns() as i64;
                let value = read(i);
                let ended = clock.now_ns() as i64;
                match value {
                    Ok(v) if v > prev => {
                        out[i] = EdgeOutcome::Moved {
                            edge: Edge::observed(before_ns[i], ended),
                            value: v,
                        };
                        false
                    }
                    Ok(v) if v < prev => {
                        out[i] = EdgeOutcome::Failed(format!(
                            "counter reset: NVML total energy went from {prev} mJ to {v} mJ \
                             at the window's edge (driver reload or GPU reset)"
                        ));
                        false
                    }
                    Ok(_) => {
                        before_ns[i] = began;
                        true
                    }
                    Err(reason) => {
                        out[i] = EdgeOutcome::Failed(reason);
                        false
                    }
                }
            });
            if clock.now_ns() as i64 - since_ns >= bound_ns {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::clock::VirtualClock;

    #[test]
    fn an_update_between_polls_is_placed_mid_bracket() {
        let clock = VirtualClock::default();
        // Counter 0 updates at 37.4 ms, counter 1 never, counter 2 is not watched.
        let read = |i: usize| -> Result<u64, String> {
            let t = clock.now_ns();
            Ok(match i {
                0 if t >= 37_400_000 => 11,
                _ => 10,
            })
        };
        let wait = EdgeWait {
            poll: Duration::from_millis(1),
            bound: Duration::from_millis(200),
        };
        let out = wait.run(&clock, 0, &[Some(10), Some(10), None], read);
        // Seen at the 38 ms poll, after the 37 ms one: 37.5 ± 0.5 ms, which holds 37.4.
        assert_eq!(
            out[0],
            EdgeOutcome::Moved {
                edge: Edge {
                    t_ns: 37_500_000,
                    half_width_ns: 500_000,
                    aligned: true
                },
                value: 11
            }
        );
        assert_eq!(out[1], EdgeOutcome::Still);
        assert_eq!(out[2], EdgeOutcome::Still);
        // The wait ended at the bound, not later.
        assert_eq!(clock.now_ns(), 200_000_000);
    }

    #[test]
    fn a_counter_going_backwards_or_failing_is_a_reason() {
        let clock = VirtualClock::default();
        let wait = EdgeWait {
            poll: Duration::from_millis(1),
            bound: Duration::from_millis(10),
        };
        let out = wait.run(&clock, 0, &[Some(10), Some(10)], |i| {
            if i == 0 {
                Ok(3)
            } else {
                Err("GpuLost".into())
            }
        });
        assert!(matches!(&out[0], EdgeOutcome::Failed(r) if r.contains("counter reset")));
        assert_eq!(out[1], EdgeOutcome::Failed("GpuLost".into()));
        // Nothing left to wait for: one poll only.
        assert_eq!(clock.now_ns(), 1_000_000);
    }

    #[test]
    fn an_unaligned_edge_is_half_a_period_before_the_read() {
        let e = Edge::unaligned(1_000_000_000, 100_000_000);
        assert_eq!(e.t_ns, 950_000_000);
        assert_eq!(e.half_width_ns, 50_000_000);
        assert!(!e.aligned);
    }
}
