//! Checks on a window's readings that become warnings on the result: windows too short
//! for their counter's period, and a counter that disagrees with the power trace beside
//! it.
//!
//! **Agreement.** For a counter reading with a trace, `counter_trace_ratio` is the
//! counter's mean power over its window divided by the trace integral's mean power over
//! the trace's span (mean powers, because the counter's window is placed on its own
//! updates and can differ from the trace's span by up to a period at each end). The
//! bound is [`AGREEMENT_SLACK`] plus the trace integral's own documented error
//! ([`trace_uncertainty_mj`]) and the counter's uncertainty, each relative to its
//! energy; beyond it the result warns.

use super::sampler::{trace_energy, trace_uncertainty_mj};
use lem_common::domain::{EnergyReading, EnergySource, PowerTrace};

/// Disagreement allowed beyond the two sources' own errors (sensor calibration: NVML
/// documents power as accurate to about ±5% of the reading).
pub const AGREEMENT_SLACK: f64 = 0.05;

/// Counter mean power ÷ trace mean power; `None` without a usable trace or energy.
pub fn counter_trace_ratio(
    counter_mj: f64,
    counter_window_ns: u64,
    trace: &PowerTrace,
) -> Option<f64> {
    let (trace_mj, _) = trace_energy(trace)?;
    let first = trace.samples.first()?.t_ns;
    let last = trace.samples.last()?.t_ns;
    let span_ns = last.checked_sub(first)?;
    if span_ns == 0 || counter_window_ns == 0 || trace_mj <= 0.0 {
        return None;
    }
    let counter_w = counter_mj / counter_window_ns as f64;
    let trace_w = trace_mj / span_ns as f64;
    Some(counter_w / trace_w)
}

/// The relative disagreement a reading's ratio may show (see the module docs).
pub fn agreement_bound(r: &EnergyReading) -> Option<f64> {
    let trace = r.trace.as_ref()?;
    let (trace_mj, basis) = trace_energy(trace)?;
    let energy_mj = r.energy_mj?;
    if trace_mj <= 0.0 || energy_mj <= 0.0 {
        return None;
    }
    let counter_rel = r.uncertainty_mj.unwrap_or(0.0) / energy_mj;
    Some(AGREEMENT_SLACK + trace_uncertainty_mj(trace, basis) / trace_mj + counter_rel)
}

/// Warnings for `readings`: counter windows shorter than `min_window_periods` counter
/// periods, and counter/trace disagreement beyond [`agreement_bound`].
pub fn warnings(readings: &[EnergyReading], min_window_periods: f64) -> Vec<String> {
    let mut out = Vec::new();
    for r in readings {
        let Some(energy_mj) = r.energy_mj else {
            continue;
        };
        if let (EnergySource::NvmlCounter, Some(period_ms)) = (r.source, r.sample_period_ms) {
            let window_ms = r.window_ns as f64 / 1e6;
            if window_ms < min_window_periods * period_ms {
                let share = r
                    .uncertainty_mj
                    .filter(|_| energy_mj > 0.0)
                    .map(|u| format!(" (± {:.1}% of its energy)", 100.0 * u / energy_mj))
                    .unwrap_or_default();
                out.push(format!(
                    "device {}: its {:.3} s window is shorter than {min_window_periods} × its counter period ({period_ms:.1} ms){share}; lengthen the run for a tighter figure",
                    r.device_id,
                    window_ms / 1000.0
                ));
            }
        }
        if let (Some(ratio), Some(bound)) = (r.counter_trace_ratio, agreement_bound(r)) {
            if (ratio - 1.0).abs() > bound {
                out.push(format!(
                    "device {}: energy counter and power-trace integral disagree: ratio {ratio:.3}, beyond ±{bound:.3}",
                    r.device_id
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_common::domain::{DeviceKind, PowerSample};
    use std::collections::BTreeMap;

    fn trace(watts: &[f64], period_ms: u64) -> PowerTrace {
        PowerTrace {
            period_ms: period_ms as f64,
            samples: watts
                .iter()
                .enumerate()
                .map(|(k, &w)| PowerSample {
                    t_ns: k as u64 * period_ms * 1_000_000,
                    power_avg_w: Some(w),
                    power_instant_w: Some(w),
                    energy_counter_mj: None,
                    temperature_c: None,
                    sm_clock_mhz: None,
                    throttle_reasons: None,
                })
                .collect(),
            unavailable: BTreeMap::new(),
        }
    }

    fn counter(mj: f64, window_ns: u64, t: PowerTrace) -> EnergyReading {
        let mut r = EnergyReading {
            source: EnergySource::NvmlCounter,
            energy_mj: Some(mj),
            unavailable_reason: None,
            sample_period_ms: Some(100.0),
            uncertainty_mj: Some(1.0),
            ..EnergyReading::unavailable(DeviceKind::Gpu, "GPU-x", "", window_ns)
        };
        r.counter_trace_ratio = counter_trace_ratio(mj, window_ns, &t);
        r.trace = Some(t);
        r
    }

    #[test]
    fn agreeing_sources_are_quiet_and_disagreeing_ones_warn() {
        // 200 W steady for 10 s: the trace integral is 2 000 J.
        let t = trace(&[200.0; 101], 100);
        let ok = counter(2_000_000.0, 10_000_000_000, t.clone());
        assert!((ok.counter_trace_ratio.unwrap() - 1.0).abs() < 1e-12);
        assert!(warnings(&[ok], 10.0).is_empty());
        // The counter says 2 300 J: 15% over a steady trace, beyond 5% + 1 mJ.
        let off = counter(2_300_000.0, 10_000_000_000, t);
        assert!((off.counter_trace_ratio.unwrap() - 1.15).abs() < 1e-12);
        let w = warnings(&[off], 10.0);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("ratio 1.150"), "{w:?}");
    }

    #[test]
    fn short_windows_warn_with_their_uncertainty() {
        // 0.5 s at a 100 ms counter: below 10 periods.
        let r = counter(100_000.0, 500_000_000, trace(&[200.0; 6], 100));
        let w = warnings(std::slice::from_ref(&r), 10.0);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("0.500 s window is shorter than 10 × its counter period (100.0 ms)"),
            "{w:?}"
        );
        assert!(w[0].contains("± 0.0%"), "{w:?}");
        // A multiple of 5 lets it pass.
        assert!(warnings(&[r], 5.0).is_empty());
    }
}
