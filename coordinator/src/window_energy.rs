//! A job's energy over two windows, in the units other tools publish: the whole measured
//! window (lem's default, like AI Energy Score) and a steady-state window with ramp-up and
//! drain left out (like ML.ENERGY). Pure functions of one raw result.
//!
//! **Steady-state rule.** A request is in flight from its batch's start to its last token
//! (`RequestRecord::{start,finish}_offset_ns`). The steady-state window runs from the first
//! moment the number of requests in flight reaches its maximum to the last moment it leaves
//! that maximum: batches smaller than the largest before it (ramp-up) and the rows still
//! finishing after it (drain) are left out. The end is the decode step in which that
//! request finished: rows of one step are stamped one after another, so tokens stamped
//! within half that request's last inter-token gap after its finish belong to the same step
//! and the window ends at the last of them. A job that ran as a single batch has no steady
//! part (its prefill is the ramp-up, its rows finishing the drain), so its steady-state
//! figures are null with that reason.
//!
//! **Device energy in the window** comes from the reading's power trace: its integral over
//! the window, scaled by the reading's gross energy / the trace's integral over the whole
//! window, so the counter stays the reference (method `trace-scaled-to-counter`). A device
//! without a trace (RAPL) has no steady-state figure.

use crate::aggregate::{sum_devices, DevicePart, EnergyTotals};
use lem_common::domain::{DeviceKind, EnergyReading, EnergySource, RawResult, RequestRecord};
use lem_common::phases::{integrate_mj, power_points};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Joules per watt-hour.
const J_PER_WH: f64 = 3600.0;

/// The steady-state window of a job, from the measured window's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteadyWindow {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Requests in flight throughout the window's edges (the job's maximum).
    pub max_in_flight: usize,
}

/// Energy of one device scope (every measured device, or the GPUs) over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeEnergy {
    pub energy_j: Option<f64>,
    pub j_per_output_token: Option<f64>,
    /// Energy per request: the window's energy over its request count (whole window), or
    /// the steady-state J per output token × the job's mean output tokens per request.
    pub j_per_request: Option<f64>,
    /// `j_per_request` × 1000 / 3600: AI Energy Score's unit.
    pub wh_per_1000_queries: Option<f64>,
    /// Why `energy_j` is null, when it is.
    pub unavailable_reason: Option<String>,
}

/// One device's energy over the steady-state window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceWindowEnergy {
    pub device_kind: DeviceKind,
    pub device_id: String,
    pub energy_j: Option<f64>,
    /// `trace-scaled-to-counter` (trace integral × gross / trace's whole-window integral)
    /// or `trace-integral` (no gross to scale to, or a trace that integrates to 0).
    pub method: Option<String>,
    pub unavailable_reason: Option<String>,
    pub simulated: bool,
}

/// A job's energy over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEnergy {
    /// From the measured window's start; `None` when the window could not be determined.
    pub start_offset_ns: Option<u64>,
    pub end_offset_ns: Option<u64>,
    /// Output tokens produced inside the window.
    pub output_tokens: Option<u64>,
    /// Requests the energy is spread over: every request (whole window), or the window's
    /// output tokens / the job's mean output tokens per request (steady state).
    pub request_equivalents: Option<f64>,
    /// Every measured device: null unless every device was read (see `EnergyTotals`).
    pub all_devices: ScopeEnergy,
    /// The job's GPUs (and MIG slices); absent when the job has no GPU reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<ScopeEnergy>,
    /// Per device (steady state only; the whole window's are in `EnergyTotals::devices`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceWindowEnergy>,
    /// Why the window itself could not be determined.
    pub unavailable_reason: Option<String>,
}

/// Figures of `energy_j` spread over `output_tokens` and `requests`.
fn scope(energy: Result<f64, String>, output_tokens: u64, requests: f64) -> ScopeEnergy {
    match energy {
        Ok(j) => {
            let j_per_request = (requests > 0.0).then(|| j / requests);
            ScopeEnergy {
                energy_j: Some(j),
                j_per_output_token: (output_tokens > 0).then(|| j / output_tokens as f64),
                j_per_request,
                wh_per_1000_queries: j_per_request.map(|j| j * 1000.0 / J_PER_WH),
                unavailable_reason: None,
            }
        }
        Err(why) => ScopeEnergy::unavailable(why),
    }
}

impl ScopeEnergy {
    fn unavailable(why: impl Into<String>) -> Self {
        Self {
            energy_j: None,
            j_per_output_token: None,
            j_per_request: None,
            wh_per_1000_queries: None,
            unavailable_reason: Some(why.into()),
        }
    }
}

fn is_gpu(kind: DeviceKind) -> bool {
    matches!(kind, DeviceKind::Gpu | DeviceKind::MigSlice)
}

/// The whole measured window: the totals of `energy` over every request.
pub fn whole_window(raw: &RawResult, energy: &EnergyTotals) -> WindowEnergy {
    let output_tokens = raw.output_tokens();
    let requests = raw.requests.len() as f64;
    let total = energy
        .total_j
        .ok_or_else(|| energy.total_unavailable_reason.clone().unwrap_or_default());
    let has_gpu = distinct_readings(raw).any(|r| is_gpu(r.device_kind));
    let gpu = has_gpu.then(|| {
        let gpu_j = energy
            .gpu_j
            .ok_or_else(|| energy.gpu_unavailable_reason.clone().unwrap_or_default());
        scope(gpu_j, output_tokens, requests)
    });
    WindowEnergy {
        start_offset_ns: Some(0),
        end_offset_ns: Some(raw.wall_ns),
        output_tokens: Some(output_tokens),
        request_equivalents: Some(requests),
        all_devices: scope(total, output_tokens, requests),
        gpu,
        devices: Vec::new(),
        unavailable_reason: None,
    }
}

/// The steady-state window and the energy in it; null figures with the reason when the
/// window cannot be determined or a device has no trace.
pub fn steady_state(raw: &RawResult) -> WindowEnergy {
    let has_gpu = distinct_readings(raw).any(|r| is_gpu(r.device_kind));
    let unavailable = |why: String| WindowEnergy {
        start_offset_ns: None,
        end_offset_ns: None,
        output_tokens: None,
        request_equivalents: None,
        all_devices: ScopeEnergy::unavailable(why.clone()),
        gpu: has_gpu.then(|| ScopeEnergy::unavailable(why.clone())),
        devices: Vec::new(),
        unavailable_reason: Some(why),
    };
    let window = match steady_window(&raw.requests) {
        Ok(w) => w,
        Err(why) => return unavailable(why),
    };
    let output_tokens = tokens_in(&raw.requests, window.start_ns, window.end_ns);
    if output_tokens == 0 {
        return unavailable("no output token was produced inside the steady-state window".into());
    }
    // Request-equivalents at the job's mean output length (as ML.ENERGY estimates energy
    // per request from its steady-state energy per token).
    let mean_output_tokens = raw.output_tokens() as f64 / raw.requests.len() as f64;
    let requests = output_tokens as f64 / mean_output_tokens;
    let devices: Vec<DeviceWindowEnergy> = distinct_readings(raw)
        .map(|r| device_energy(r, window.start_ns, window.end_ns))
        .collect();
    let parts = |gpu_only: bool| -> Vec<DevicePart> {
        devices
            .iter()
            .filter(|d| !gpu_only || is_gpu(d.device_kind))
            .map(|d| DevicePart {
                device_id: d.device_id.clone(),
                energy_j: d.energy_j,
                simulated: d.simulated,
                unavailable_reason: d.unavailable_reason.clone(),
            })
            .collect()
    };
    WindowEnergy {
        start_offset_ns: Some(window.start_ns),
        end_offset_ns: Some(window.end_ns),
        output_tokens: Some(output_tokens),
        request_equivalents: Some(requests),
        all_devices: scope(sum_devices(&parts(false)), output_tokens, requests),
        gpu: has_gpu.then(|| scope(sum_devices(&parts(true)), output_tokens, requests)),
        devices,
        unavailable_reason: None,
    }
}

/// Each physical device's first reading (a device reported twice counts once).
fn distinct_readings(raw: &RawResult) -> impl Iterator<Item = &EnergyReading> {
    let mut seen = BTreeSet::new();
    raw.energy
        .iter()
        .filter(move |r| seen.insert((r.device_kind, r.device_id.clone())))
}

/// The steady-state window of a job's requests (see the module docs).
pub fn steady_window(requests: &[RequestRecord]) -> Result<SteadyWindow, String> {
    if requests.is_empty() {
        return Err("no requests".into());
    }
    let spans: Option<Vec<(u64, u64)>> = requests
        .iter()
        .map(|r| Some((r.start_offset_ns?, r.finish_offset_ns?)))
        .collect();
    let Some(spans) = spans else {
        return Err(
            "the result has no per-request start and finish times (stored by an older lem)".into(),
        );
    };
    let starts: BTreeSet<u64> = spans.iter().map(|s| s.0).collect();
    if starts.len() == 1 {
        return Err("the job ran as one batch: its prefill is the ramp-up and its rows finishing the drain, with no steady part between them".into());
    }
    // (time, change in flight); at equal times a finish sorts before a start, so a batch
    // ending as the next begins is not counted as both in flight.
    let mut events: Vec<(u64, i64)> = spans
        .iter()
        .flat_map(|&(start, finish)| [(start, 1), (finish, -1)])
        .collect();
    events.sort_unstable();
    let mut in_flight = 0i64;
    let mut max = 0i64;
    for &(_, change) in &events {
        in_flight += change;
        max = max.max(in_flight);
    }
    let (mut start_ns, mut end_ns) = (None, None);
    in_flight = 0;
    for &(t, change) in &events {
        let before = in_flight;
        in_flight += change;
        if in_flight == max && start_ns.is_none() {
            start_ns = Some(t);
        }
        if before == max && in_flight < max {
            end_ns = Some(t);
        }
    }
    let (Some(start_ns), Some(drop_ns)) = (start_ns, end_ns) else {
        return Err("the steady-state window has zero length".into());
    };
    let end_ns = end_of_step(requests, drop_ns);
    if end_ns <= start_ns {
        return Err("the steady-state window has zero length".into());
    }
    Ok(SteadyWindow {
        start_ns,
        end_ns,
        max_in_flight: max as usize,
    })
}

/// The last token stamp of the decode step in which a request finished at `finish_ns`:
/// stamps within half that request's last inter-token gap after it.
fn end_of_step(requests: &[RequestRecord], finish_ns: u64) -> u64 {
    let half_gap = requests
        .iter()
        .filter(|r| r.finish_offset_ns == Some(finish_ns))
        .filter_map(|r| r.itl_ns.last())
        .max()
        .map_or(0, |gap| gap / 2);
    requests
        .iter()
        .flat_map(token_times)
        .filter(|&t| t > finish_ns && t <= finish_ns + half_gap)
        .fold(finish_ns, u64::max)
}

/// When each output token of `r` was produced: the last at its finish, the earlier ones
/// placed back by its inter-token gaps. Empty without a finish time or tokens.
fn token_times(r: &RequestRecord) -> Vec<u64> {
    let (Some(finish), true) = (r.finish_offset_ns, r.output_tokens > 0) else {
        return Vec::new();
    };
    let mut times = vec![finish];
    let mut t = finish;
    for &gap in r.itl_ns.iter().rev() {
        t = t.saturating_sub(gap);
        times.push(t);
    }
    times
}

/// Output tokens produced in (start, end] (see `token_times`).
pub fn tokens_in(requests: &[RequestRecord], start_ns: u64, end_ns: u64) -> u64 {
    requests
        .iter()
        .flat_map(token_times)
        .filter(|&t| t > start_ns && t <= end_ns)
        .count() as u64
}

/// One device's energy over `[start_ns, end_ns]` from its trace (see the module docs).
fn device_energy(r: &EnergyReading, start_ns: u64, end_ns: u64) -> DeviceWindowEnergy {
    let mut out = DeviceWindowEnergy {
        device_kind: r.device_kind,
        device_id: r.device_id.clone(),
        energy_j: None,
        method: None,
        unavailable_reason: None,
        simulated: r.simulated,
    };
    let Some(gross_mj) = r.energy_mj else {
        out.unavailable_reason = Some(
            r.unavailable_reason
                .clone()
                .unwrap_or_else(|| "unavailable".into()),
        );
        return out;
    };
    let points = r.trace.as_ref().map(power_points).unwrap_or_default();
    if points.len() < 2 {
        out.unavailable_reason = Some(
            "no power trace: its energy is known only over the whole window and phases".into(),
        );
        return out;
    }
    let window_mj = integrate_mj(&points, start_ns, end_ns);
    let whole_mj = integrate_mj(&points, 0, r.window_ns);
    // A trace-fallback reading's gross is itself the trace's integral: nothing to scale to.
    let (mj, method) = match (whole_mj > 0.0, r.source) {
        (true, EnergySource::NvmlPower) | (false, _) => (window_mj, "trace-integral"),
        (true, _) => (window_mj * gross_mj / whole_mj, "trace-scaled-to-counter"),
    };
    out.energy_j = Some(mj / 1000.0);
    out.method = Some(method.into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::{raw, reading};
    use lem_common::domain::{PowerSample, PowerTrace, StopReason};

    const MS: u64 = 1_000_000;

    /// A request in flight from `start_ms` to `finish_ms` with a token every 100 ms after
    /// its start (the last at its finish).
    fn request(index: u32, start_ms: u64, finish_ms: u64) -> RequestRecord {
        let tokens = (finish_ms - start_ms) / 100;
        RequestRecord {
            index,
            input_tokens: 4,
            output_tokens: tokens as u32,
            ttft_ns: 100 * MS,
            itl_ns: vec![100 * MS; tokens as usize - 1],
            e2e_ns: (finish_ms - start_ms) * MS,
            stop_reason: StopReason::MaxTokens,
            output_text: None,
            arrival_offset_ns: None,
            start_offset_ns: Some(start_ms * MS),
            finish_offset_ns: Some(finish_ms * MS),
        }
    }

    /// Batches of 2, 2 and 1 requests back to back; rows of a batch finish apart.
    const OFFLINE_MS: [(u64, u64); 5] = [
        (0, 1000),
        (0, 1200),
        (1200, 2200),
        (1200, 2400),
        (2400, 3000),
    ];

    fn requests(spans: &[(u64, u64)]) -> Vec<RequestRecord> {
        spans
            .iter()
            .enumerate()
            .map(|(i, &(s, f))| request(i as u32, s, f))
            .collect()
    }

    #[test]
    fn the_steady_window_runs_from_full_occupancy_to_the_last_drop_from_it() {
        // Offline: full from the first batch's start; the last full batch's first row
        // finishing (2200 ms) starts the drain.
        let w = steady_window(&requests(&OFFLINE_MS)).unwrap();
        assert_eq!((w.start_ns, w.end_ns, w.max_in_flight), (0, 2200 * MS, 2));
        // Rows of the last full batch's final step stamped 1 ms apart (gap 100 ms): the
        // window ends at the later stamp, so both tokens of that step are inside it.
        // Request 3's tokens: 1300..=2100 ms every 100 ms, then 2201 (the step in which
        // request 2 finishes at 2200), 2300 and 2400.
        let mut stamped = requests(&OFFLINE_MS);
        stamped[3].itl_ns = [vec![100 * MS; 8], vec![101 * MS, 99 * MS, 100 * MS]].concat();
        let w = steady_window(&stamped).unwrap();
        assert_eq!((w.start_ns, w.end_ns), (0, 2201 * MS));
        assert_eq!(tokens_in(&stamped[3..4], 0, w.end_ns), 10);
        // Served on arrival: one request alone first (ramp-up), then full batches of 2.
        let served = [
            (0, 500),
            (500, 1500),
            (500, 1600),
            (1600, 2600),
            (1600, 2700),
            (2700, 3000),
        ];
        let w = steady_window(&requests(&served)).unwrap();
        assert_eq!((w.start_ns, w.end_ns), (500 * MS, 2600 * MS));
    }

    #[test]
    fn no_steady_window_for_one_batch_or_results_without_offsets() {
        let one = requests(&[(0, 1000), (0, 1500)]);
        let why = steady_window(&one).unwrap_err();
        assert!(why.contains("one batch"), "{why}");
        let mut old = requests(&OFFLINE_MS);
        old[3].finish_offset_ns = None;
        assert!(steady_window(&old).unwrap_err().contains("older lem"));
        assert!(steady_window(&[]).is_err());
    }

    #[test]
    fn tokens_are_placed_back_from_the_finish_by_their_gaps() {
        // Tokens at 800, 900 and 1000 ms.
        let r = [request(0, 700, 1000)];
        assert_eq!(tokens_in(&r, 850 * MS, 1000 * MS), 2);
        assert_eq!(tokens_in(&r, 0, 800 * MS), 1);
        assert_eq!(tokens_in(&r, 800 * MS, 900 * MS), 1);
        assert_eq!(tokens_in(&r, 1000 * MS, 2000 * MS), 0);
    }

    /// A trace sampled every 100 ms over 0–3000 ms at `power_w(t_ms)`.
    fn trace(power_w: impl Fn(u64) -> f64) -> PowerTrace {
        PowerTrace {
            period_ms: 100.0,
            samples: (0..=30)
                .map(|i| PowerSample::power_usage_only(i * 100 * MS, power_w(i * 100)))
                .collect(),
            unavailable: Default::default(),
        }
    }

    #[test]
    fn steady_state_energy_comes_from_the_trace_scaled_to_the_counter() {
        // GPU 0: a steady 200 W whose counter reads 5% above the trace (630 J vs 600 J).
        let mut gpu0 = reading(DeviceKind::Gpu, "gpu-0", Some(630_000.0));
        gpu0.source = EnergySource::NvmlCounter;
        gpu0.window_ns = 3000 * MS;
        gpu0.trace = Some(trace(|_| 200.0));
        // GPU 1: 100 W up to 1000 ms, 300 W from 1100 ms, linear in between; its counter
        // agrees with the trace: 100 + 20 + 300 × 1.9 = 690 J.
        let mut gpu1 = reading(DeviceKind::Gpu, "gpu-1", Some(690_000.0));
        gpu1.source = EnergySource::NvmlCounter;
        gpu1.window_ns = 3000 * MS;
        gpu1.trace = Some(trace(|t| if t <= 1000 { 100.0 } else { 300.0 }));
        let cpu = reading(DeviceKind::CpuPackage, "package-0", Some(90_000.0));
        let mut r = raw(0, 3000 * MS, vec![gpu0, gpu1, cpu]);
        r.requests = requests(&OFFLINE_MS);

        let w = steady_state(&r);
        assert_eq!(
            (w.start_offset_ns, w.end_offset_ns),
            (Some(0), Some(2200 * MS))
        );
        // Tokens every 100 ms after each start, counted in (0, 2200 ms].
        let in_window: u64 = OFFLINE_MS
            .iter()
            .map(|&(s, f)| (1..=(f - s) / 100).filter(|k| s + k * 100 <= 2200).count() as u64)
            .sum();
        assert_eq!(w.output_tokens, Some(in_window));
        // 200 W × 2.2 s × 630/600, and 100 W × 1 s + 200 W × 0.1 s + 300 W × 1.1 s.
        let expected = [200.0 * 2.2 * 630.0 / 600.0, 100.0 + 20.0 + 330.0];
        for (d, want) in w.devices.iter().zip(expected) {
            assert!((d.energy_j.unwrap() - want).abs() < 1e-6, "{d:?} vs {want}");
            assert_eq!(d.method.as_deref(), Some("trace-scaled-to-counter"));
        }
        let gpu = w.gpu.as_ref().unwrap();
        let gpu_j: f64 = expected.iter().sum();
        assert!((gpu.energy_j.unwrap() - gpu_j).abs() < 1e-6);
        assert!((gpu.j_per_output_token.unwrap() - gpu_j / in_window as f64).abs() < 1e-9);
        // Per request at the job's mean output length (50 tokens over 5 requests).
        let total_tokens: u64 = OFFLINE_MS.iter().map(|&(s, f)| (f - s) / 100).sum();
        let mean_tokens = total_tokens as f64 / 5.0;
        let per_request = gpu_j / in_window as f64 * mean_tokens;
        assert!((gpu.j_per_request.unwrap() - per_request).abs() < 1e-6);
        assert!((gpu.wh_per_1000_queries.unwrap() - per_request * 1000.0 / 3600.0).abs() < 1e-6);
        // The CPU package has no trace: no steady figure for it, so none for all devices.
        assert_eq!(w.devices[2].energy_j, None);
        assert!(w.all_devices.energy_j.is_none());
        let why = w.all_devices.unavailable_reason.as_deref().unwrap();
        assert!(
            why.contains("package-0") && why.contains("no power trace"),
            "{why}"
        );
    }

    #[test]
    fn a_single_batch_job_has_null_steady_figures_with_the_reason() {
        let mut gpu = reading(DeviceKind::Gpu, "gpu-0", Some(600_000.0));
        gpu.trace = Some(trace(|_| 200.0));
        let mut r = raw(0, 3000 * MS, vec![gpu]);
        r.requests = requests(&[(0, 1000), (0, 3000)]);
        let w = steady_state(&r);
        assert_eq!(w.start_offset_ns, None);
        assert!(w
            .unavailable_reason
            .as_deref()
            .unwrap()
            .contains("one batch"));
        let gpu = w.gpu.unwrap();
        assert_eq!(gpu.j_per_output_token, None);
        assert!(gpu.unavailable_reason.unwrap().contains("one batch"));
        // The whole window still has its figures.
        let m = crate::aggregate::job_metrics(&r);
        let whole = m.whole_window.unwrap().gpu.unwrap();
        assert_eq!(whole.energy_j, Some(600.0));
        assert_eq!(whole.j_per_request, Some(300.0));
    }
}
