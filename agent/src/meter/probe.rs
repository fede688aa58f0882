//! Hardware probes for `lem gpu-check`: how often each GPU's energy counter and power
//! reading actually change, and a metered window to compare the counter's energy with
//! the sampler's trace integral. Used by `scripts/gpu-check.sh` on a real GPU machine.

use super::nvml::{init_nvml, NvmlUnavailable};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often one GPU's readings changed while polled at `poll_hz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdatePeriod {
    pub gpu_index: u32,
    pub polls: u64,
    /// Achieved polling rate.
    pub poll_hz: f64,
    /// Intervals between successive changes of the energy counter, ms.
    pub counter_changes: u64,
    pub counter_period_median_ms: Option<f64>,
    pub counter_period_min_ms: Option<f64>,
    pub counter_period_max_ms: Option<f64>,
    /// The same for the (driver-averaged) power reading.
    pub power_changes: u64,
    pub power_period_median_ms: Option<f64>,
    /// Why a reading could not be polled.
    pub counter_unavailable: Option<String>,
    pub power_unavailable: Option<String>,
}

/// Interval statistics of change times (ms): (median, min, max).
fn interval_stats(change_times: &[Instant]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut intervals: Vec<f64> = change_times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e3)
        .collect();
    if intervals.is_empty() {
        return (None, None, None);
    }
    intervals.sort_by(f64::total_cmp);
    let median = lem_common::stats::percentile(&intervals, 50.0);
    (
        median,
        intervals.first().copied(),
        intervals.last().copied(),
    )
}

/// Polls every GPU's energy counter and power reading about every 1 ms for `duration`
/// and reports how often each changed. The first change is only a phase reference, so
/// at least three changes are needed for an interval.
pub fn measure_update_periods(
    lib: Option<&Path>,
    duration: Duration,
) -> Result<Vec<UpdatePeriod>, NvmlUnavailable> {
    let nvml = init_nvml(lib)?;
    let count = nvml.device_count().map_err(|e| NvmlUnavailable {
        library: lib.map_or_else(|| "default".into(), |p| p.display().to_string()),
        reason: format!("nvmlDeviceGetCount_v2 failed: {e}"),
    })?;
    let mut out = Vec::new();
    for index in 0..count {
        let device = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                out.push(UpdatePeriod {
                    gpu_index: index,
                    polls: 0,
                    poll_hz: 0.0,
                    counter_changes: 0,
                    counter_period_median_ms: None,
                    counter_period_min_ms: None,
                    counter_period_max_ms: None,
                    power_changes: 0,
                    power_period_median_ms: None,
                    counter_unavailable: Some(format!("nvmlDeviceGetHandleByIndex_v2: {e}")),
                    power_unavailable: Some(format!("nvmlDeviceGetHandleByIndex_v2: {e}")),
                });
                continue;
            }
        };
        let (mut counter_err, mut power_err) = (None, None);
        let (mut last_counter, mut last_power) = (None::<u64>, None::<u32>);
        let (mut counter_changes, mut power_changes) = (Vec::new(), Vec::new());
        let begin = Instant::now();
        let mut polls = 0u64;
        while begin.elapsed() < duration {
            polls += 1;
            let now = Instant::now();
            if counter_err.is_none() {
                match device.total_energy_consumption() {
                    Ok(v) => {
                        if last_counter.is_some_and(|l| l != v) {
                            counter_changes.push(now);
                        }
                        last_counter = Some(v);
                    }
                    Err(e) => {
                        counter_err = Some(format!("nvmlDeviceGetTotalEnergyConsumption: {e}"))
                    }
                }
            }
            if power_err.is_none() {
                match device.power_usage() {
                    Ok(v) => {
                        if last_power.is_some_and(|l| l != v) {
                            power_changes.push(now);
                        }
                        last_power = Some(v);
                    }
                    Err(e) => power_err = Some(format!("nvmlDeviceGetPowerUsage: {e}")),
                }
            }
            if counter_err.is_some() && power_err.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let secs = begin.elapsed().as_secs_f64();
        let (c_med, c_min, c_max) = interval_stats(&counter_changes);
        let (p_med, _, _) = interval_stats(&power_changes);
        out.push(UpdatePeriod {
            gpu_index: index,
            polls,
            poll_hz: if secs > 0.0 { polls as f64 / secs } else { 0.0 },
            counter_changes: counter_changes.len() as u64,
            counter_period_median_ms: c_med,
            counter_period_min_ms: c_min,
            counter_period_max_ms: c_max,
            power_changes: power_changes.len() as u64,
            power_period_median_ms: p_med,
            counter_unavailable: counter_err,
            power_unavailable: power_err,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_statistics() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let (med, min, max) = interval_stats(&[at(0), at(100), at(200), at(350)]);
        assert_eq!(med, Some(100.0));
        assert_eq!(min, Some(100.0));
        assert_eq!(max, Some(150.0));
        assert_eq!(interval_stats(&[at(0)]), (None, None, None));
    }

    #[test]
    fn missing_library_is_an_error_not_a_zero() {
        let e = measure_update_periods(
            Some(Path::new("/nonexistent/libnvidia-ml.so.1")),
            Duration::from_millis(5),
        )
        .unwrap_err();
        assert!(e.reason.contains("cannot load"), "{e}");
    }
}
