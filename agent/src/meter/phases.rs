//! Phase boundaries of a measured window and the prefill/decode split of each reading.
//!
//! The runner calls [`PhaseRecorder::mark`] when a batch starts (prefill), when its
//! prefill ends (decode) and when it ends (other); each mark reads every meter's
//! cumulative energy ([`EnergyMeter::checkpoint`]). After the meters stop,
//! [`PhaseRecorder::apply`] turns the marks into segments per device and sets each
//! reading's `phases` with `lem_common::phases::split`: counter differences where every
//! segment is long enough for the device's counter period, else the power trace.

use super::EnergyMeter;
use lem_common::domain::EnergyReading;
use lem_common::phases::{split, Phase, Segment};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug)]
struct Mark {
    t_ns: u64,
    /// The phase that starts at this mark.
    phase: Phase,
    /// Cumulative energy since the window start, by device id.
    cumulative_mj: BTreeMap<String, Option<f64>>,
}

/// Records phase boundaries with the meters' cumulative energies.
#[derive(Debug)]
pub struct PhaseRecorder {
    window_start: Instant,
    marks: Vec<Mark>,
}

impl PhaseRecorder {
    /// A recorder for a window that started at `window_start` (the meters' start).
    pub fn new(window_start: Instant) -> Self {
        Self {
            window_start,
            marks: Vec::new(),
        }
    }

    /// `phase` starts now: reads every meter's cumulative energy.
    pub fn mark(&mut self, phase: Phase, meters: &mut [Box<dyn EnergyMeter>]) {
        let mut cumulative_mj = BTreeMap::new();
        for m in meters.iter_mut() {
            cumulative_mj.extend(m.checkpoint());
        }
        let t_ns = self.window_start.elapsed().as_nanos() as u64;
        self.marks.push(Mark {
            t_ns,
            phase,
            cumulative_mj,
        });
    }

    /// The segments of `device_id`'s window, ending at the reading's window and total.
    /// Before the first mark the window is `Other` (it starts with the meters).
    fn segments(&self, reading: &EnergyReading) -> Vec<Segment> {
        let id = &reading.device_id;
        if !self.marks.iter().any(|m| m.cumulative_mj.contains_key(id)) {
            return Vec::new();
        }
        let mut points: Vec<(u64, Phase, Option<f64>)> = vec![(0, Phase::Other, Some(0.0))];
        for m in &self.marks {
            let mj = m.cumulative_mj.get(id).copied().flatten();
            points.push((m.t_ns, m.phase, mj));
        }
        // A window placed on counter updates ends at its offset + length.
        let end_ns =
            (reading.window_ns as i64 + reading.window_start_offset_ns.unwrap_or(0)).max(0) as u64;
        let end = (end_ns, Phase::Other, reading.energy_mj);
        points
            .iter()
            .zip(points.iter().skip(1).chain(std::iter::once(&end)))
            .filter(|(a, b)| b.0 > a.0)
            .map(|(a, b)| Segment {
                phase: a.1,
                start_ns: a.0,
                end_ns: b.0,
                energy_mj: match (a.2, b.2) {
                    (Some(x), Some(y)) => Some(y - x),
                    _ => None,
                },
            })
            .collect()
    }

    /// Sets `phases` on each available reading whose device was checkpointed.
    pub fn apply(&self, readings: &mut [EnergyReading]) {
        for r in readings.iter_mut() {
            if r.energy_mj.is_none() {
                continue;
            }
            let segments = self.segments(r);
            r.phases = split(&segments, r.sample_period_ms, r.trace.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::MeterError;
    use lem_common::domain::{DeviceKind, EnergySource, PhaseSplitMethod};

    /// A meter whose cumulative energy is set by the test.
    struct Scripted {
        cumulative_mj: f64,
    }

    impl EnergyMeter for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn start(&mut self) -> Result<(), MeterError> {
            Ok(())
        }
        fn stop(&mut self) -> Vec<EnergyReading> {
            Vec::new()
        }
        fn checkpoint(&mut self) -> Vec<(String, Option<f64>)> {
            vec![("dev".into(), Some(self.cumulative_mj))]
        }
    }

    fn reading(total_mj: f64, window_ns: u64, period_ms: f64) -> EnergyReading {
        EnergyReading {
            source: EnergySource::Rapl,
            energy_mj: Some(total_mj),
            unavailable_reason: None,
            sample_period_ms: Some(period_ms),
            ..EnergyReading::unavailable(DeviceKind::CpuPackage, "dev", "", window_ns)
        }
    }

    #[test]
    fn marks_become_counter_segments() {
        let mut rec = PhaseRecorder::new(Instant::now());
        let mut meters: Vec<Box<dyn EnergyMeter>> = vec![Box::new(Scripted { cumulative_mj: 0.0 })];
        // Hand-placed marks: prefill 0–10 ms (5 J), decode 10–40 ms (20 J).
        rec.mark(Phase::Prefill, &mut meters);
        rec.marks[0].t_ns = 0;
        rec.marks.push(Mark {
            t_ns: 10_000_000,
            phase: Phase::Decode,
            cumulative_mj: [("dev".to_string(), Some(5_000.0))].into(),
        });
        rec.marks.push(Mark {
            t_ns: 40_000_000,
            phase: Phase::Other,
            cumulative_mj: [("dev".to_string(), Some(25_000.0))].into(),
        });
        // RAPL-like 1 ms counter: 10 ms segments are long enough.
        let mut readings = vec![reading(25_500.0, 41_000_000, 1.0)];
        rec.apply(&mut readings);
        let p = readings[0].phases.as_ref().unwrap();
        assert_eq!(p.method, PhaseSplitMethod::CounterAtBoundaries);
        assert_eq!(p.prefill_mj, 5_000.0);
        assert_eq!(p.decode_mj, 20_000.0);
        assert_eq!(p.other_mj, 500.0);
        // A 100 ms counter cannot split 10 ms phases and there is no trace: no split.
        let mut readings = vec![reading(25_500.0, 41_000_000, 100.0)];
        rec.apply(&mut readings);
        assert_eq!(readings[0].phases, None);
    }

    #[test]
    fn devices_never_checkpointed_get_no_split() {
        let rec = PhaseRecorder::new(Instant::now());
        let mut readings = vec![reading(1.0, 1_000, 1.0)];
        rec.apply(&mut readings);
        assert_eq!(readings[0].phases, None);
    }
}
