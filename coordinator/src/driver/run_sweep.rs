//! The blocking loop that drives sweeps to their end with in-process agents: events
//! from the agents' channel go to the driver; when none arrives before the scheduler's
//! next deadline, the driver ticks.

use super::local_agent::AgentEvent;
use super::{AgentLink, Driver, DriverError, Executed, StoreAccess};
use crate::scheduler::{SweepId, TimeMs};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The driver's clock: milliseconds since `start`, monotonic.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: Instant,
    offset_ms: u64,
}

impl MonotonicClock {
    /// A clock that reads `offset_ms` now.
    pub fn starting_at(offset_ms: u64) -> Self {
        Self {
            start: Instant::now(),
            offset_ms,
        }
    }

    pub fn now(&self) -> TimeMs {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        TimeMs(self.offset_ms.saturating_add(elapsed))
    }
}

/// Feeds agent events to `driver` until none of `sweeps` has a pending or leased job.
/// `seen` is called after every handled event, with what it did; it may feed the driver
/// more (a cancel on Ctrl+C). Fails when every agent is gone (the channel closed) before
/// the sweeps finished.
pub fn drive_sweep<L: AgentLink, S: StoreAccess>(
    driver: &mut Driver<L, S>,
    events: &Receiver<AgentEvent>,
    sweeps: &[SweepId],
    clock: &MonotonicClock,
    mut seen: impl FnMut(&mut Driver<L, S>, &Executed) -> Result<(), DriverError>,
) -> Result<(), DriverError> {
    loop {
        let open = sweeps.iter().find(|s| {
            driver
                .scheduler()
                .sweep_progress(**s)
                .is_some_and(|p| !p.is_finished())
        });
        let Some(&sweep) = open else {
            return Ok(());
        };
        let now = clock.now();
        let wait = driver
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis(t.0.saturating_sub(now.0))
            });
        let done = match events.recv_timeout(wait) {
            Ok((event, body)) => driver.handle(event, body, clock.now())?,
            Err(RecvTimeoutError::Timeout) => driver.tick(clock.now())?,
            Err(RecvTimeoutError::Disconnected) => return Err(DriverError::AgentsGone { sweep }),
        };
        seen(driver, &done)?;
    }
}
