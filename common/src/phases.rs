//! Splitting a device's window energy into prefill and decode.
//!
//! The runner reads every meter's cumulative energy at each phase boundary (batch start,
//! end of prefill, end of batch), which gives one counter difference per segment. When
//! every prefill and decode segment spans at least [`MIN_COUNTER_UPDATES`] updates of
//! the device's counter, those differences are the split (`counter-at-boundaries`).
//! Otherwise a counter that moves every ~100 ms cannot tell a 30 ms prefill from the
//! decode around it, and the split comes from the power trace: the trace's energy in
//! each segment, scaled so the phases add up to the counter's total
//! (`trace-integral`). When the trace cannot resolve a phase either — none of its segments
//! holds two samples, or the trace is the 1 s averaged power and every segment is shorter
//! than 1 s — the numbers are the window's power apportioned by time, and say so
//! (`time-apportioned`). Without a usable trace there is no split (`None`).
//!
//! `counter_period_ms` is the device's measured counter period where lem measured it
//! (the idle baseline does), else the nominal one.

use crate::domain::{PhaseEnergy, PhaseSplitMethod, PowerTrace};

/// Counter updates a segment must span for its counter difference to be used: the
/// step error at each end is then at most 2 of ≥ 10 steps of energy.
pub const MIN_COUNTER_UPDATES: f64 = 10.0;

/// The span of NVML's averaged power on Hopper and newer (1 s); a trace of it cannot
/// resolve shorter phases.
const AVERAGE_WINDOW_NS: u64 = 1_000_000_000;

/// What a stretch of the window was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Decode,
    /// Between batches: scheduling, waiting for arrivals, meter polls.
    Other,
}

/// One stretch of one device's window, with the counter's difference over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub phase: Phase,
    /// From the start of the window.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Counter difference over the segment; `None` if the device could not be read.
    pub energy_mj: Option<f64>,
}

/// Splits a device's energy over `segments` into phases; see the module docs.
/// `counter_period_ms` is the update period of the device's counter (`None` = unknown).
pub fn split(
    segments: &[Segment],
    counter_period_ms: Option<f64>,
    trace: Option<&PowerTrace>,
) -> Option<PhaseEnergy> {
    if segments.is_empty() {
        return None;
    }
    let min_ns = counter_period_ms.map(|p| p * 1e6 * MIN_COUNTER_UPDATES);
    let long_enough = segments.iter().all(|s| {
        s.phase == Phase::Other
            || min_ns.is_some_and(|min| s.end_ns.saturating_sub(s.start_ns) as f64 >= min)
    });
    let counter_total: Option<f64> = segments.iter().map(|s| s.energy_mj).sum();
    if long_enough && counter_total.is_some() {
        let sum = |phase| {
            segments
                .iter()
                .filter(|s| s.phase == phase)
                .filter_map(|s| s.energy_mj)
                .sum::<f64>()
        };
        return Some(PhaseEnergy {
            method: PhaseSplitMethod::CounterAtBoundaries,
            prefill_mj: sum(Phase::Prefill),
            decode_mj: sum(Phase::Decode),
            other_mj: sum(Phase::Other),
        });
    }
    let trace = trace?;
    let points = power_points(trace);
    if points.len() < 2 {
        return None;
    }
    let averaged = !trace.samples.iter().all(|s| s.power_instant_w.is_some());
    // A segment the trace resolves: two samples inside it, and on averaged power at
    // least the 1 s the average spans.
    let resolves = |s: &Segment| {
        let inside = points
            .iter()
            .filter(|p| p.0 >= s.start_ns && p.0 <= s.end_ns)
            .count();
        inside >= 2 && (!averaged || s.end_ns.saturating_sub(s.start_ns) >= AVERAGE_WINDOW_NS)
    };
    let phase_resolved = |phase| {
        let mut of_phase = segments.iter().filter(|s| s.phase == phase).peekable();
        of_phase.peek().is_none() || of_phase.any(resolves)
    };
    let method = if phase_resolved(Phase::Prefill) && phase_resolved(Phase::Decode) {
        PhaseSplitMethod::TraceIntegral
    } else {
        PhaseSplitMethod::TimeApportioned
    };
    let trace_sum = |phase| {
        segments
            .iter()
            .filter(|s| s.phase == phase)
            .map(|s| integrate_mj(&points, s.start_ns, s.end_ns))
            .sum::<f64>()
    };
    let (p, d, o) = (
        trace_sum(Phase::Prefill),
        trace_sum(Phase::Decode),
        trace_sum(Phase::Other),
    );
    let trace_total = p + d + o;
    // Scale to the counter's total where there is one, so phases add up to the reading.
    let scale = match counter_total {
        Some(total) if trace_total > 0.0 => total / trace_total,
        _ => 1.0,
    };
    Some(PhaseEnergy {
        method,
        prefill_mj: p * scale,
        decode_mj: d * scale,
        other_mj: o * scale,
    })
}

/// `(t_ns, watts)` of a trace: instantaneous power where every sample has it, else the
/// driver's averaged power; samples without a value are skipped.
pub fn power_points(trace: &PowerTrace) -> Vec<(u64, f64)> {
    let all_instant =
        !trace.samples.is_empty() && trace.samples.iter().all(|s| s.power_instant_w.is_some());
    trace
        .samples
        .iter()
        .filter_map(|s| {
            let w = if all_instant {
                s.power_instant_w
            } else {
                s.power_avg_w
            };
            Some((s.t_ns, w?))
        })
        .collect()
}

/// Energy (mJ) of the piecewise-linear power curve through `points` between `a_ns` and
/// `b_ns`; outside the samples the nearest sample's power is held.
pub fn integrate_mj(points: &[(u64, f64)], a_ns: u64, b_ns: u64) -> f64 {
    if points.is_empty() || b_ns <= a_ns {
        return 0.0;
    }
    let power_at = |t: f64| -> f64 {
        let first = points[0];
        let last = points[points.len() - 1];
        if t <= first.0 as f64 {
            return first.1;
        }
        if t >= last.0 as f64 {
            return last.1;
        }
        let i = points.partition_point(|p| (p.0 as f64) <= t);
        let (t0, w0) = points[i - 1];
        let (t1, w1) = points[i];
        let f = (t - t0 as f64) / (t1 - t0) as f64;
        w0 + f * (w1 - w0)
    };
    // Breakpoints: the ends plus every sample strictly inside.
    let mut ts: Vec<f64> = vec![a_ns as f64];
    ts.extend(
        points
            .iter()
            .map(|p| p.0 as f64)
            .filter(|&t| t > a_ns as f64 && t < b_ns as f64),
    );
    ts.push(b_ns as f64);
    // W × ns = 1e-6 mJ.
    ts.windows(2)
        .map(|w| (power_at(w[0]) + power_at(w[1])) / 2.0 * (w[1] - w[0]) / 1e6)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PowerSample;

    fn seg(phase: Phase, start_ms: u64, end_ms: u64, mj: Option<f64>) -> Segment {
        Segment {
            phase,
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            energy_mj: mj,
        }
    }

    fn trace(points: &[(u64, f64)]) -> PowerTrace {
        PowerTrace {
            period_ms: 100.0,
            samples: points
                .iter()
                .map(|&(t_ms, w)| PowerSample::power_usage_only(t_ms * 1_000_000, w))
                .collect(),
            unavailable: Default::default(),
        }
    }

    #[test]
    fn long_segments_use_the_counter() {
        let s = [
            seg(Phase::Prefill, 0, 2_000, Some(600_000.0)),
            seg(Phase::Decode, 2_000, 12_000, Some(2_000_000.0)),
            seg(Phase::Other, 12_000, 12_010, Some(0.0)),
            seg(Phase::Prefill, 12_010, 14_010, Some(500_000.0)),
            seg(Phase::Decode, 14_010, 24_010, Some(1_900_000.0)),
        ];
        let p = split(&s, Some(100.0), None).unwrap();
        assert_eq!(p.method, PhaseSplitMethod::CounterAtBoundaries);
        assert_eq!(p.prefill_mj, 1_100_000.0);
        assert_eq!(p.decode_mj, 3_900_000.0);
        assert_eq!(p.other_mj, 0.0);
    }

    #[test]
    fn short_segments_use_the_trace_scaled_to_the_counter() {
        // Prefill 50 ms at 300 W, decode 450 ms at 100 W: too short for a 100 ms counter.
        // Samples 2 ms apart around the step, as a 1 kHz-ish sampler would see it.
        let mut t = trace(&[(0, 300.0), (49, 300.0), (51, 100.0), (500, 100.0)]);
        for s in &mut t.samples {
            s.power_instant_w = s.power_avg_w;
        }
        let s = [
            seg(Phase::Prefill, 0, 50, Some(0.0)),
            seg(Phase::Decode, 50, 500, Some(60_000.0)),
        ];
        let p = split(&s, Some(100.0), Some(&t)).unwrap();
        assert_eq!(p.method, PhaseSplitMethod::TraceIntegral);
        // Trace: 14.95 J prefill + 45.05 J decode = 60 J, the counter's total.
        assert!((p.prefill_mj - 14_950.0).abs() < 1.0, "{p:?}");
        assert!((p.decode_mj - 45_050.0).abs() < 1.0, "{p:?}");
        assert!((p.prefill_mj + p.decode_mj + p.other_mj - 60_000.0).abs() < 1e-6);
    }

    #[test]
    fn a_trace_that_cannot_resolve_the_phases_is_labelled_time_apportioned() {
        // The same phases, but the 1 s averaged power only: it cannot see a 50 ms prefill.
        let t = trace(&[(0, 300.0), (49, 300.0), (51, 100.0), (500, 100.0)]);
        let s = [
            seg(Phase::Prefill, 0, 50, Some(0.0)),
            seg(Phase::Decode, 50, 500, Some(60_000.0)),
        ];
        let p = split(&s, Some(100.0), Some(&t)).unwrap();
        assert_eq!(p.method, PhaseSplitMethod::TimeApportioned);
        // Instant power sampled every 100 ms: no sample inside the 50 ms prefill but its
        // start.
        let mut sparse = trace(&[(0, 300.0), (100, 100.0), (200, 100.0), (500, 100.0)]);
        for x in &mut sparse.samples {
            x.power_instant_w = x.power_avg_w;
        }
        let p = split(&s, Some(100.0), Some(&sparse)).unwrap();
        assert_eq!(p.method, PhaseSplitMethod::TimeApportioned);
        assert!((p.prefill_mj + p.decode_mj + p.other_mj - 60_000.0).abs() < 1e-6);
    }

    #[test]
    fn no_trace_and_short_segments_is_no_split() {
        let s = [seg(Phase::Prefill, 0, 5, Some(1.0))];
        assert_eq!(split(&s, Some(100.0), None), None);
        assert_eq!(split(&[], Some(1.0), None), None);
        // Unknown counter period: never trusted for a split.
        assert_eq!(
            split(&[seg(Phase::Prefill, 0, 60_000, Some(5.0))], None, None),
            None
        );
        // A missing counter difference falls to the trace too.
        let long = [seg(Phase::Prefill, 0, 60_000, None)];
        assert_eq!(split(&long, Some(1.0), None), None);
        let t = trace(&[(0, 10.0), (60_000, 10.0)]);
        let p = split(&long, Some(1.0), Some(&t)).unwrap();
        assert_eq!(p.method, PhaseSplitMethod::TraceIntegral);
        assert!((p.prefill_mj - 600_000.0).abs() < 1e-6);
    }

    #[test]
    fn integral_of_a_ramp_and_held_ends() {
        let pts = [(0, 0.0), (1_000_000_000, 100.0)];
        // Ramp 0 → 100 W over 1 s = 50 J.
        assert!((integrate_mj(&pts, 0, 1_000_000_000) - 50_000.0).abs() < 1e-6);
        // Half of it: 0 → 50 W over 0.5 s = 12.5 J.
        assert!((integrate_mj(&pts, 0, 500_000_000) - 12_500.0).abs() < 1e-6);
        // After the last sample, 100 W is held: 1 s more = 100 J.
        assert!((integrate_mj(&pts, 1_000_000_000, 2_000_000_000) - 100_000.0).abs() < 1e-6);
        assert_eq!(integrate_mj(&pts, 5, 5), 0.0);
        assert_eq!(integrate_mj(&[], 0, 5), 0.0);
    }

    #[test]
    fn instant_power_is_preferred_when_every_sample_has_it() {
        let mut t = trace(&[(0, 10.0), (100, 10.0)]);
        for s in &mut t.samples {
            s.power_instant_w = Some(20.0);
        }
        assert_eq!(power_points(&t), vec![(0, 20.0), (100_000_000, 20.0)]);
        t.samples[0].power_instant_w = None;
        assert_eq!(power_points(&t), vec![(0, 10.0), (100_000_000, 10.0)]);
    }
}
