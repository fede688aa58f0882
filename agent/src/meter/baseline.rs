//! The idle baseline of stepping counters (NVML): settle, then time the energy between
//! counter updates.
//!
//! 1. **Settle.** Right after warmup a GPU's power is still falling. The counters are
//!    polled until, on each, the power over the last block (≥ 5 counter periods, ≥ 0.5 s)
//!    is within [`SETTLE_TOLERANCE`] (or [`SETTLE_TOLERANCE_W`]) of the block before it,
//!    for at most [`SETTLE_MAX`]; the time it took and whether it settled are recorded.
//! 2. **Measure.** Then for `duration` (plus two periods, so the span between updates is
//!    at least `duration`): the power is the energy between the first and the last counter
//!    update over the time between them, so the counter's steps do not bias it. The
//!    update times are known to half a poll interval.
//! 3. On the way it measures the counter's **update period** (span between the first and
//!    the last update over the number of updates between them) and the baseline's
//!    **spread** (sample standard deviation of the power over up to ten sub-spans).
//!
//! Polling runs at a tenth of the counter period, or 1/500 of the baseline for short
//! ones (2–20 ms), no faster: a faster poller would itself load the CPU whose RAPL
//! baseline is measured at the same time. A counter that updates on (nearly) every poll
//! gives only an upper bound on its period (the poll interval), labelled so.
//!
//! A counter that never moves (or moves once) gives no baseline and says so: an
//! unknown idle power is not 0 W.

use super::clock::MeterClock;
use std::time::Duration;

/// Longest wait for power to become steady before the baseline is measured anyway.
pub const SETTLE_MAX: Duration = Duration::from_secs(30);
/// Relative difference between two consecutive blocks' power that counts as steady.
pub const SETTLE_TOLERANCE: f64 = 0.03;
/// Absolute difference (W) that counts as steady at low power.
pub const SETTLE_TOLERANCE_W: f64 = 1.0;

/// One counter's baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterBaseline {
    pub power_w: Result<f64, String>,
    /// Span between the first and the last update used.
    pub measured_ns: u64,
    pub settle_ns: u64,
    pub settled: bool,
    pub spread_w: Option<f64>,
    /// Measured update period (ms), with at least three updates.
    pub period_ms: Option<f64>,
    pub poll: Duration,
}

/// Poll interval for counters of these periods (ms) over a baseline of `duration`: a
/// tenth of the shortest period, and at most 1/500 of the duration (so timing the two
/// end updates costs ≤ 0.2%), within 2–20 ms.
pub fn poll_interval(periods_ms: &[f64], duration: Duration) -> Duration {
    let shortest = periods_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let by_period = if shortest.is_finite() {
        shortest / 10.0
    } else {
        10.0
    };
    let by_duration = duration.as_secs_f64() * 1000.0 / 500.0;
    let ms = by_period.min(by_duration).clamp(2.0, 20.0);
    Duration::from_secs_f64(ms / 1000.0)
}

/// Mean power (W) between two updates `(t_ns, mJ)`.
fn power_between(a: (i64, u64), b: (i64, u64)) -> Option<f64> {
    let dt = b.0 - a.0;
    (dt > 0).then(|| b.1.saturating_sub(a.1) as f64 * 1e6 / dt as f64)
}

/// True when the last two blocks of `block_ns` in `log` have the same power.
fn steady(log: &[(i64, u64)], block_ns: i64) -> bool {
    let Some(&last) = log.last() else {
        return false;
    };
    let before = |t: i64| log.iter().rev().find(|u| u.0 <= t).copied();
    let Some(mid) = before(last.0 - block_ns) else {
        return false;
    };
    let Some(first) = before(mid.0 - block_ns) else {
        return false;
    };
    match (power_between(first, mid), power_between(mid, last)) {
        (Some(p1), Some(p2)) => {
            (p2 - p1).abs() <= (SETTLE_TOLERANCE * p2.abs()).max(SETTLE_TOLERANCE_W)
        }
        _ => false,
    }
}

/// Sample standard deviation of the power over up to ten consecutive groups of updates.
fn spread_w(updates: &[(i64, u64)]) -> Option<f64> {
    let steps = updates.len().checked_sub(1)?;
    let groups = (steps / 2).min(10);
    if groups < 2 {
        return None;
    }
    let powers: Vec<f64> = (0..groups)
        .filter_map(|g| {
            let a = updates[g * steps / groups];
            let b = updates[(g + 1) * steps / groups];
            power_between(a, b)
        })
        .collect();
    let n = powers.len() as f64;
    let mean = powers.iter().sum::<f64>() / n;
    let var = powers.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some(var.sqrt())
}

/// Settles and measures the baselines of `periods_ms.len()` counters; `read(i)` reads
/// counter `i` (mJ) or says why it cannot.
pub fn measure(
    clock: &dyn MeterClock,
    periods_ms: &[f64],
    duration: Duration,
    mut read: impl FnMut(usize) -> Result<u64, String>,
) -> Vec<CounterBaseline> {
    let n = periods_ms.len();
    let poll = poll_interval(periods_ms, duration);
    let mut log: Vec<Vec<(i64, u64)>> = vec![Vec::new(); n];
    let mut prev: Vec<Option<(i64, u64)>> = vec![None; n];
    let mut broken: Vec<Option<String>> = vec![None; n];
    // `prev[i]`: when the last read of counter i began, and its value.
    let mut poll_all = |log: &mut Vec<Vec<(i64, u64)>>, broken: &mut Vec<Option<String>>| {
        for i in 0..n {
            if broken[i].is_some() {
                continue;
            }
            let began = clock.now_ns() as i64;
            let value = read(i);
            let ended = clock.now_ns() as i64;
            match value {
                Err(reason) => broken[i] = Some(reason),
                Ok(v) => {
                    match prev[i] {
                        Some((_, p)) if v < p => {
                            broken[i] = Some(format!(
                                "counter reset during the idle baseline ({p} mJ → {v} mJ)"
                            ));
                            continue;
                        }
                        // An update happened after the previous read began and before
                        // this one ended: place it mid-bracket.
                        Some((t, p)) if v > p => log[i].push((t + (ended - t) / 2, v)),
                        _ => {}
                    }
                    prev[i] = Some((began, v));
                }
            }
        }
        clock.now_ns() as i64
    };
    let begin = poll_all(&mut log, &mut broken);
    let block_ns: Vec<i64> = periods_ms
        .iter()
        .map(|p| ((p * 5.0).max(500.0) * 1e6) as i64)
        .collect();
    let settle_max_ns = SETTLE_MAX.as_nanos() as i64;
    let mut settled_at: Vec<Option<i64>> = vec![None; n];
    let mut now = begin;
    loop {
        for i in 0..n {
            if settled_at[i].is_none() && broken[i].is_none() && steady(&log[i], block_ns[i]) {
                settled_at[i] = Some(now);
            }
        }
        let done = (0..n).all(|i| settled_at[i].is_some() || broken[i].is_some());
        if done || now - begin >= settle_max_ns {
            break;
        }
        clock.sleep(poll);
        now = poll_all(&mut log, &mut broken);
    }
    let measure_from = now;
    let marks: Vec<usize> = log.iter().map(Vec::len).collect();
    let longest_period = periods_ms.iter().copied().fold(0.0, f64::max);
    let span_ns = duration.as_nanos() as i64 + (2.0 * longest_period * 1e6) as i64;
    while now - measure_from < span_ns {
        clock.sleep(poll);
        now = poll_all(&mut log, &mut broken);
    }
    (0..n)
        .map(|i| {
            let updates = &log[i][marks[i]..];
            let settled = settled_at[i].is_some();
            let settle_ns = (settled_at[i].unwrap_or(measure_from) - begin).max(0) as u64;
            let mut out = CounterBaseline {
                power_w: Err(String::new()),
                measured_ns: 0,
                settle_ns,
                settled,
                spread_w: None,
                period_ms: None,
                poll,
            };
            if let Some(reason) = &broken[i] {
                out.power_w = Err(reason.clone());
                return out;
            }
            let (Some(&first), Some(&last)) = (updates.first(), updates.last()) else {
                out.power_w = Err(format!(
                    "the energy counter did not move during the {:.1} s idle baseline: idle power unknown (not 0 W)",
                    duration.as_secs_f64()
                ));
                return out;
            };
            match power_between(first, last) {
                Some(w) => {
                    out.power_w = Ok(w);
                    out.measured_ns = (last.0 - first.0) as u64;
                    if updates.len() >= 3 {
                        out.period_ms = Some(
                            (last.0 - first.0) as f64 / (updates.len() - 1) as f64 / 1e6,
                        );
                    }
                    out.spread_w = spread_w(updates);
                }
                None => {
                    out.power_w = Err(format!(
                        "the energy counter moved only once during the {:.1} s idle baseline: idle power unknown (not 0 W)",
                        duration.as_secs_f64()
                    ));
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::clock::VirtualClock;

    /// A counter updating every `period_ms` from `phase_ms`, integrating `power(t_s)`
    /// (W) by the rectangle rule at 1 ms (the test's own model of a stepping counter).
    fn counter(power: impl Fn(f64) -> f64, period_ms: u64, phase_ms: u64, t_ns: u64) -> u64 {
        let t_ms = t_ns / 1_000_000;
        if t_ms < phase_ms {
            return 0;
        }
        let q = phase_ms + (t_ms - phase_ms) / period_ms * period_ms;
        (0..q).map(|ms| power(ms as f64 / 1000.0)).sum::<f64>() as u64
    }

    #[test]
    fn settles_after_a_decay_then_measures_the_idle_power_and_period() {
        let clock = VirtualClock::default();
        // 300 W falling to 60 W over the first 3 s (after warmup), then 60 W.
        let power = |t: f64| if t < 3.0 { 300.0 - 80.0 * t } else { 60.0 };
        let out = measure(&clock, &[100.0], Duration::from_secs(2), |_| {
            Ok(counter(power, 100, 37, clock.now_ns()))
        });
        let b = &out[0];
        let w = *b.power_w.as_ref().unwrap();
        // The steady part only: 60 W, within the 1 ms rectangle rule and poll timing.
        assert!((w - 60.0).abs() < 0.5, "{w}");
        assert!(b.settled);
        // Not before the decay ended (3 s) and well inside the bound.
        assert!(
            b.settle_ns >= 3_000_000_000 && b.settle_ns < 6_000_000_000,
            "{}",
            b.settle_ns
        );
        assert!(
            (b.period_ms.unwrap() - 100.0).abs() < 1.0,
            "{:?}",
            b.period_ms
        );
        assert!(b.spread_w.unwrap() < 1.0);
        assert!(b.measured_ns >= 2_000_000_000);
        // A tenth of 100 ms; 1/500 of 2 s would be 4 ms, the period's 10 ms is slower.
        assert_eq!(b.poll, Duration::from_millis(4));
    }

    #[test]
    fn a_counter_that_never_moves_has_no_baseline() {
        let clock = VirtualClock::default();
        let out = measure(&clock, &[100.0], Duration::from_secs(1), |_| Ok(5));
        let why = out[0].power_w.as_ref().unwrap_err();
        assert!(
            why.contains("did not move") && why.contains("not 0 W"),
            "{why}"
        );
        assert!(!out[0].settled);
        // The settle step is bounded.
        assert_eq!(out[0].settle_ns, SETTLE_MAX.as_nanos() as u64);
    }

    #[test]
    fn poll_interval_is_a_tenth_of_the_period_within_limits() {
        let ten_s = Duration::from_secs(10);
        assert_eq!(poll_interval(&[100.0], ten_s), Duration::from_millis(10));
        assert_eq!(poll_interval(&[5.0], ten_s), Duration::from_millis(2));
        assert_eq!(
            poll_interval(&[1000.0, 400.0], ten_s),
            Duration::from_millis(20)
        );
        // A short baseline polls faster: 1 s / 500 = 2 ms.
        assert_eq!(
            poll_interval(&[100.0], Duration::from_secs(1)),
            Duration::from_millis(2)
        );
    }
}
