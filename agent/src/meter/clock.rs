//! The time a meter reads and waits on: the machine's monotonic clock, or a test's
//! virtual clock (e.g. the fake NVML's), so edge alignment and baselines that poll a
//! counter until it moves can be tested without real sleeping.

use std::time::{Duration, Instant};

/// A monotonic clock a meter can read and sleep on.
pub trait MeterClock: Send + Sync {
    /// Nanoseconds since an arbitrary origin; never decreases.
    fn now_ns(&self) -> u64;
    /// Waits `d` on this clock.
    fn sleep(&self, d: Duration);
}

/// The machine's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MeterClock for RealClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock that moves only when slept on: unit tests of code that polls until a counter
/// moves, without real time passing.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct VirtualClock(std::sync::atomic::AtomicU64);

#[cfg(test)]
impl MeterClock for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn sleep(&self, d: Duration) {
        self.0
            .fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_clock_moves_forward_across_a_sleep() {
        let c = RealClock::new();
        let a = c.now_ns();
        c.sleep(Duration::from_millis(2));
        assert!(c.now_ns() >= a + 2_000_000);
    }
}
