//! RAPL's periodic reads during a window: how often, and the thread that does them.
//!
//! `energy_uj` wraps at `max_energy_range_uj`, and two reads can only tell one wrap
//! apart from none. At full power a package's range lasts minutes (262 kJ at 400 W is
//! 11 min), but a long decode between phase boundaries, or a small range, can hide a
//! second wrap. So while a RAPL window is open a thread reads every counter every
//! [`poll_period`]: a tenth of the fastest zone's wrap interval at a power bound, and at
//! most [`MAX_POLL_PERIOD`].
//!
//! The power bound is twice the zone's largest advertised limit
//! (`constraint_N_power_limit_uw` / `constraint_N_max_power_uw`; the second limit, PL2,
//! lets bursts exceed the first, and twice the largest limit covers them), else
//! [`FALLBACK_POWER_BOUND_W`], above any shipping CPU package.

use super::rapl::SysfsRead;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// The bound used when a zone advertises no power limit (W).
pub const FALLBACK_POWER_BOUND_W: f64 = 1000.0;

/// Reads are at most this far apart, however large the range.
pub const MAX_POLL_PERIOD: Duration = Duration::from_secs(1);

/// Reads are at least this far apart (RAPL itself updates about every millisecond).
pub const MIN_POLL_PERIOD: Duration = Duration::from_millis(1);

/// Reads per wrap interval.
const READS_PER_WRAP: f64 = 10.0;

/// How many `constraint_N_*` files are looked at.
const MAX_CONSTRAINTS: usize = 4;

/// An upper bound of the power (W) the zone in `zone_dir` can draw: twice its largest
/// advertised limit, else [`FALLBACK_POWER_BOUND_W`].
pub fn power_bound_w(zone_dir: &Path, fs: &dyn SysfsRead) -> f64 {
    let largest_uw = (0..MAX_CONSTRAINTS)
        .flat_map(|n| {
            ["power_limit_uw", "max_power_uw"].map(|f| zone_dir.join(format!("constraint_{n}_{f}")))
        })
        .filter_map(|p| fs.read(&p).ok()?.trim().parse::<u64>().ok())
        .filter(|&uw| uw > 0)
        .max();
    largest_uw.map_or(FALLBACK_POWER_BOUND_W, |uw| 2.0 * uw as f64 / 1e6)
}

/// Seconds for a zone drawing `power_bound_w` to run through `range_uj`.
pub fn wrap_interval_s(range_uj: u64, power_bound_w: f64) -> f64 {
    range_uj as f64 / 1e6 / power_bound_w
}

/// The read period for zones given as (`max_energy_range_uj`, power bound in W):
/// a tenth of the shortest wrap interval, within [`MIN_POLL_PERIOD`, `MAX_POLL_PERIOD`].
/// `None` when no zone has a range (a wrap could not be corrected however often it is
/// read).
pub fn poll_period(zones: &[(Option<u64>, f64)]) -> Option<Duration> {
    let shortest_s = zones
        .iter()
        .filter_map(|&(range, bound)| Some(wrap_interval_s(range?, bound)))
        .reduce(f64::min)?;
    let period =
        Duration::try_from_secs_f64(shortest_s / READS_PER_WRAP).unwrap_or(MAX_POLL_PERIOD);
    Some(period.clamp(MIN_POLL_PERIOD, MAX_POLL_PERIOD))
}

/// A thread that calls a function every period until dropped.
pub struct Poller {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts calling `read` every `period`. `None` when the thread cannot be spawned
    /// (the window then has only the reads at its edges and phase boundaries).
    pub fn spawn(period: Duration, mut read: impl FnMut() + Send + 'static) -> Option<Poller> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lem-rapl-poll".into())
            // A message or a dropped sender ends it; each quiet period is one read.
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    read();
                }
            })
            .ok()?;
        Some(Poller {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::rapl::StdFs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn period_is_a_tenth_of_the_fastest_wrap_within_bounds() {
        // 262.143 J range at 500 W wraps in 0.524 s → read every 52.4 ms.
        let p = poll_period(&[(Some(262_143_328), 500.0)]).unwrap();
        assert!((p.as_secs_f64() - 262.143_328 / 500.0 / 10.0).abs() < 1e-6);
        // The shortest zone decides; a zone without a range does not.
        let p = poll_period(&[
            (Some(262_143_328), 500.0),
            (Some(1_000_000), 100.0),
            (None, 1.0),
        ])
        .unwrap();
        assert!((p.as_secs_f64() - 0.001).abs() < 1e-9, "{p:?}");
        // Typical full range (262 kJ at 1 kW = 262 s): capped at a second.
        assert_eq!(
            poll_period(&[(Some(262_143_328_850), 1000.0)]),
            Some(MAX_POLL_PERIOD)
        );
        // A tiny range cannot be read faster than RAPL updates.
        assert_eq!(poll_period(&[(Some(10), 1000.0)]), Some(MIN_POLL_PERIOD));
        assert_eq!(poll_period(&[(None, 100.0)]), None);
        assert_eq!(poll_period(&[]), None);
    }

    #[test]
    fn power_bound_is_twice_the_largest_advertised_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(power_bound_w(d, &StdFs), FALLBACK_POWER_BOUND_W);
        std::fs::write(d.join("constraint_0_power_limit_uw"), "125000000\n").unwrap();
        std::fs::write(d.join("constraint_1_power_limit_uw"), "253000000\n").unwrap();
        std::fs::write(d.join("constraint_0_max_power_uw"), "0\n").unwrap();
        assert!((power_bound_w(d, &StdFs) - 2.0 * 253.0).abs() < 1e-9);
    }

    #[test]
    fn poller_reads_until_dropped() {
        let reads = Arc::new(AtomicUsize::new(0));
        let r = reads.clone();
        let poller = Poller::spawn(Duration::from_millis(1), move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        // Bounded wait: a loaded machine may delay the thread, never forever.
        let deadline = Instant::now() + Duration::from_secs(30);
        while reads.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(reads.load(Ordering::SeqCst) >= 3);
        drop(poller);
        let after = reads.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reads.load(Ordering::SeqCst), after, "no read after drop");
    }
}
