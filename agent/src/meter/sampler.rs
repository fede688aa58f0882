//! The NVML sampler: a background thread that reads each metered GPU's sensors every
//! `period` (default 100 ms) into a [`PowerTrace`] over the window.
//!
//! Per sample and GPU: power (`nvmlDeviceGetPowerUsage`: NVML documents it as the
//! instantaneous power on GA100 and older and as a 1 s average on newer parts, Hopper
//! on), instantaneous power (field `NVML_FI_DEV_POWER_INSTANT` where supported), the total-energy counter, GPU temperature, SM clock and the clock-event
//! (throttle) reason bits. A sensor that fails is recorded once in the trace's
//! `unavailable` with the NVML call and error, then no longer read, so a missing sensor
//! costs nothing after the first sample. For MIG slices it also takes a GPM sample per GPU
//! instance at the start and at the end, and gives each slice's mean SM activity over the
//! window.
//!
//! The trace is kept beside the counter, never instead of it: it gives the energy only
//! for GPUs without the counter ([`trace_energy_mj`]).
//!
//! Cost: the samples are pushed into vectors; besides that, each sample makes one small
//! allocation per GPU (nvml-wrapper's field-values call) and six NVML calls per GPU.
//!
//! Two clocks: [`SamplerClock::Real`] samples on the thread's own timer (what lem uses);
//! [`SamplerClock::Stepped`] samples only when told ([`Sampler::sample_at`]), with the
//! caller's timestamps, so tests against the fake NVML's virtual clock are deterministic.

use super::nvml::nvml_reason;
use lem_common::domain::{PowerSample, PowerTrace};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::{gpm_metrics_get, GpmSample};
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default sampling period.
pub const DEFAULT_SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// NVML field id of the instantaneous power (mW).
const FI_DEV_POWER_INSTANT: u32 = 186;

/// Samples reserved up front per GPU (a minute at 100 ms), so short windows never grow.
const RESERVED_SAMPLES: usize = 600;

/// How the sampler's time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerClock {
    /// Sample every period on a timer; timestamps from the monotonic clock.
    Real,
    /// Sample only on [`Sampler::sample_at`], at the caller's timestamps.
    Stepped,
}

/// One physical GPU to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledGpu {
    /// NVML index.
    pub index: u32,
    /// GPU-instance ids of MIG slices whose GPM SM activity is wanted.
    pub gpm_instances: Vec<u32>,
}

/// What the sampler recorded, one entry per [`SampledGpu`] in order.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOutput {
    pub traces: Vec<PowerTrace>,
    /// Per GPU, per entry of `gpm_instances`: mean SM activity (0..=1) over the window,
    /// or why it is unavailable.
    pub gpm_activity: Vec<Vec<Result<f64, String>>>,
}

enum Command {
    /// Stepped clock: take a sample at this time, then acknowledge.
    SampleAt(u64, SyncSender<()>),
    /// Take the last sample (at this time, else now) and finish.
    Stop(Option<u64>),
}

/// A running sampler. Dropping it without [`Sampler::stop`] stops the thread too.
pub struct Sampler {
    tx: Option<SyncSender<Command>>,
    thread: Option<JoinHandle<SamplerOutput>>,
    gpus: usize,
    period: Duration,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("gpus", &self.gpus)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// Starts sampling `gpus` every `period` from `window_start` (t = 0). Returns once the
    /// first sample (t = 0 on a stepped clock) and the GPM start samples are taken.
    pub fn start(
        nvml: Arc<Nvml>,
        gpus: Vec<SampledGpu>,
        period: Duration,
        clock: SamplerClock,
        window_start: Instant,
    ) -> Sampler {
        let period = period.max(Duration::from_millis(1));
        let n = gpus.len();
        let (tx, rx) = mpsc::sync_channel::<Command>(1);
        let (ready_tx, ready_rx) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("lem-nvml-sampler".into())
            .spawn(move || run(&nvml, &gpus, period, clock, window_start, &rx, ready_tx))
            .ok();
        if thread.is_some() {
            // The thread always signals, even when every read fails.
            let _ = ready_rx.recv();
        }
        Sampler {
            tx: Some(tx),
            thread,
            gpus: n,
            period,
        }
    }

    /// The sampling period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Stepped clock: takes one sample at `t_ns` since the window start and waits for it.
    /// Ignored on a real clock.
    pub fn sample_at(&self, t_ns: u64) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if let Some(tx) = &self.tx {
            if tx.send(Command::SampleAt(t_ns, ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
    }

    /// Takes the last sample (at `t_ns` when given, else now), joins the thread and
    /// returns the traces. A thread that could not start or panicked gives empty traces
    /// saying so.
    pub fn stop(mut self, t_ns: Option<u64>) -> SamplerOutput {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Command::Stop(t_ns));
        }
        let joined = self.thread.take().map(|h| h.join());
        match joined {
            Some(Ok(out)) => out,
            Some(Err(_)) => self.failed("the sampler thread panicked"),
            None => self.failed("the sampler thread could not be started"),
        }
    }

    fn failed(&self, why: &str) -> SamplerOutput {
        let trace = PowerTrace {
            period_ms: self.period.as_secs_f64() * 1000.0,
            samples: Vec::new(),
            unavailable: BTreeMap::from([("trace".to_owned(), why.to_owned())]),
        };
        SamplerOutput {
            traces: vec![trace; self.gpus],
            gpm_activity: vec![Vec::new(); self.gpus],
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Command::Stop(None));
        }
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// Which sensors of one GPU are still read.
#[derive(Debug, Clone, Copy)]
struct Live {
    avg: bool,
    instant: bool,
    counter: bool,
    temperature: bool,
    clock: bool,
    throttle: bool,
}

/// Sensor names, as in [`PowerSample`] and the trace's `unavailable`.
const POWER_AVG: &str = "power_avg_w";
const POWER_INSTANT: &str = "power_instant_w";
const COUNTER: &str = "energy_counter_mj";
const TEMPERATURE: &str = "temperature_c";
const SM_CLOCK: &str = "sm_clock_mhz";
const THROTTLE: &str = "throttle_reasons";

struct Probe<'n> {
    device: Result<Device<'n>, String>,
    live: Live,
    trace: PowerTrace,
}

impl<'n> Probe<'n> {
    fn new(nvml: &'n Nvml, index: u32, period: Duration) -> Probe<'n> {
        let mut trace = PowerTrace {
            period_ms: period.as_secs_f64() * 1000.0,
            samples: Vec::with_capacity(RESERVED_SAMPLES),
            unavailable: BTreeMap::new(),
        };
        let device = nvml
            .device_by_index(index)
            .map_err(|e| nvml_reason("nvmlDeviceGetHandleByIndex_v2", &e));
        if let Err(reason) = &device {
            trace.unavailable.insert("trace".to_owned(), reason.clone());
        }
        Probe {
            device,
            live: Live {
                avg: true,
                instant: true,
                counter: true,
                temperature: true,
                clock: true,
                throttle: true,
            },
            trace,
        }
    }

    /// Reads every live sensor once.
    fn sample(&mut self, t_ns: u64) {
        let Ok(device) = &self.device else {
            return;
        };
        let live = &mut self.live;
        let unavailable = &mut self.trace.unavailable;
        // A failed read disables the sensor and records why, once.
        fn read<T>(
            on: &mut bool,
            unavailable: &mut BTreeMap<String, String>,
            sensor: &str,
            call: &str,
            f: impl FnOnce() -> Result<T, NvmlError>,
        ) -> Option<T> {
            if !*on {
                return None;
            }
            match f() {
                Ok(v) => Some(v),
                Err(e) => {
                    *on = false;
                    unavailable.insert(sensor.to_owned(), nvml_reason(call, &e));
                    None
                }
            }
        }
        let power_avg_w = read(
            &mut live.avg,
            unavailable,
            POWER_AVG,
            "nvmlDeviceGetPowerUsage",
            || device.power_usage(),
        )
        .map(|mw| f64::from(mw) / 1000.0);
        let power_instant_w = read(
            &mut live.instant,
            unavailable,
            POWER_INSTANT,
            "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)",
            || instant_power_mw(device),
        )
        .map(|mw| mw / 1000.0);
        let energy_counter_mj = read(
            &mut live.counter,
            unavailable,
            COUNTER,
            "nvmlDeviceGetTotalEnergyConsumption",
            || device.total_energy_consumption(),
        );
        let temperature_c = read(
            &mut live.temperature,
            unavailable,
            TEMPERATURE,
            "nvmlDeviceGetTemperature",
            || device.temperature(TemperatureSensor::Gpu),
        );
        let sm_clock_mhz = read(
            &mut live.clock,
            unavailable,
            SM_CLOCK,
            "nvmlDeviceGetClockInfo(SM)",
            || device.clock_info(Clock::SM),
        );
        let throttle_reasons = read(
            &mut live.throttle,
            unavailable,
            THROTTLE,
            "nvmlDeviceGetCurrentClocksThrottleReasons",
            || device.current_throttle_reasons().map(|r| r.bits()),
        );
        self.trace.samples.push(PowerSample {
            t_ns,
            power_avg_w,
            power_instant_w,
            energy_counter_mj,
            temperature_c,
            sm_clock_mhz,
            throttle_reasons,
        });
    }
}

/// The instantaneous power field in mW; a per-field error is the field's own.
fn instant_power_mw(device: &Device<'_>) -> Result<f64, NvmlError> {
    let values = device.field_values_for(&[FieldId(FI_DEV_POWER_INSTANT)])?;
    let sample = values.into_iter().next().ok_or(NvmlError::Unknown)??;
    match sample.value? {
        SampleValue::F64(v) => Ok(v),
        SampleValue::U32(v) => Ok(f64::from(v)),
        SampleValue::U64(v) => Ok(v as f64),
        SampleValue::I64(v) => Ok(v as f64),
    }
}

/// GPM start samples of one GPU's instances; each is a sample or the reason it failed.
type GpmStarts<'n> = Vec<Result<GpmSample<'n>, String>>;

fn gpm_start<'n>(device: &Result<Device<'n>, String>, instances: &[u32]) -> GpmStarts<'n> {
    instances
        .iter()
        .map(|&gi| match device {
            Ok(d) => d
                .gpm_mig_sample(gi)
                .map_err(|e| nvml_reason("nvmlGpmMigSampleGet", &e)),
            Err(reason) => Err(reason.clone()),
        })
        .collect()
}

/// Mean SM activity (0..=1) between each start sample and a new end sample.
fn gpm_finish<'n>(
    nvml: &'n Nvml,
    device: &Result<Device<'n>, String>,
    instances: &[u32],
    starts: GpmStarts<'n>,
) -> Vec<Result<f64, String>> {
    instances
        .iter()
        .zip(starts)
        .map(|(&gi, start)| {
            let start = start?;
            let end = match device {
                Ok(d) => d
                    .gpm_mig_sample(gi)
                    .map_err(|e| nvml_reason("nvmlGpmMigSampleGet", &e))?,
                Err(reason) => return Err(reason.clone()),
            };
            let metric = gpm_metrics_get(
                nvml,
                &start,
                &end,
                &[nvml_wrapper::enums::gpm::GpmMetricId::SmUtil],
            )
            .map_err(|e| nvml_reason("nvmlGpmMetricsGet", &e))?
            .into_iter()
            .next()
            .ok_or_else(|| "NVML nvmlGpmMetricsGet returned no metric".to_owned())?
            .map_err(|e| nvml_reason("nvmlGpmMetricsGet(SM_UTIL)", &e))?;
            // SM_UTIL is a percentage; clamp rounding noise into 0..=1.
            Ok((metric.value / 100.0).clamp(0.0, 1.0))
        })
        .collect()
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The sampler thread.
fn run(
    nvml: &Nvml,
    gpus: &[SampledGpu],
    period: Duration,
    clock: SamplerClock,
    window_start: Instant,
    rx: &Receiver<Command>,
    ready: SyncSender<()>,
) -> SamplerOutput {
    let mut probes: Vec<Probe<'_>> = gpus
        .iter()
        .map(|g| Probe::new(nvml, g.index, period))
        .collect();
    let starts: Vec<GpmStarts<'_>> = gpus
        .iter()
        .zip(&probes)
        .map(|(g, p)| gpm_start(&p.device, &g.gpm_instances))
        .collect();
    let first_t = match clock {
        SamplerClock::Real => elapsed_ns(window_start),
        SamplerClock::Stepped => 0,
    };
    probes.iter_mut().for_each(|p| p.sample(first_t));
    let _ = ready.send(());
    let mut next_due = window_start + period;
    loop {
        let command = match clock {
            SamplerClock::Stepped => rx.recv().ok(),
            SamplerClock::Real => {
                let wait = next_due.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Disconnected) => None,
                    Err(RecvTimeoutError::Timeout) => {
                        let t = elapsed_ns(window_start);
                        probes.iter_mut().for_each(|p| p.sample(t));
                        // A slow read skips the missed ticks instead of bursting.
                        let now = Instant::now();
                        while next_due <= now {
                            next_due += period;
                        }
                        continue;
                    }
                }
            }
        };
        match command {
            Some(Command::SampleAt(t, ack)) => {
                if clock == SamplerClock::Stepped {
                    probes.iter_mut().for_each(|p| p.sample(t));
                }
                let _ = ack.send(());
            }
            Some(Command::Stop(t)) => {
                let t = match (clock, t) {
                    (_, Some(t)) => Some(t),
                    (SamplerClock::Real, None) => Some(elapsed_ns(window_start)),
                    (SamplerClock::Stepped, None) => None,
                };
                if let Some(t) = t {
                    probes.iter_mut().for_each(|p| p.sample(t));
                }
                break;
            }
            None => break,
        }
    }
    let gpm_activity = gpus
        .iter()
        .zip(&probes)
        .zip(starts)
        .map(|((g, p), s)| gpm_finish(nvml, &p.device, &g.gpm_instances, s))
        .collect();
    SamplerOutput {
        traces: probes.into_iter().map(|p| p.trace).collect(),
        gpm_activity,
    }
}

/// Which power series a trace's energy was integrated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceBasis {
    /// `power_instant_w`, present in every sample.
    Instant,
    /// `power_avg_w` (NVML's power usage: a 1 s trailing average on Hopper and newer,
    /// instantaneous on GA100 and older).
    Average,
}

/// Energy (mJ) over the trace's span by the trapezoid rule: on the instantaneous power
/// when every sample has it, else on the average power when every sample has it, else
/// `None` (a gap would undercount). Needs two samples.
///
/// Bounds against the true ∫P dt over the same span, for piecewise-constant power:
/// * instant: each step of size ΔP adds at most ΔP × period / 2; a steady load is exact;
/// * average (Hopper and newer): the 1 s mean lags the power by about 0.5 s, so a window gains the energy of
///   the second before it and loses that of its last second: |error| ≤ 0.5 s ×
///   (P_max − P_min) over [start − 1 s, stop], plus ΔP × period / 2 per step; a steady
///   load (steady for 1 s before the window too) is exact.
pub fn trace_energy(trace: &PowerTrace) -> Option<(f64, TraceBasis)> {
    let s = &trace.samples;
    if s.len() < 2 {
        return None;
    }
    let integrate = |power: fn(&PowerSample) -> Option<f64>| -> Option<f64> {
        let mut mj = 0.0;
        for w in s.windows(2) {
            let (a, b) = (power(&w[0])?, power(&w[1])?);
            let dt_s = w[1].t_ns.saturating_sub(w[0].t_ns) as f64 / 1e9;
            mj += (a + b) / 2.0 * dt_s * 1000.0;
        }
        Some(mj)
    };
    integrate(|p| p.power_instant_w)
        .map(|e| (e, TraceBasis::Instant))
        .or_else(|| integrate(|p| p.power_avg_w).map(|e| (e, TraceBasis::Average)))
}

/// The documented bound (mJ) on [`trace_energy`]'s error for `basis`: each change of
/// power between two samples adds at most |ΔP| × Δt / 2; the average series adds
/// 0.5 s × (P_max − P_min) for the lag of a 1 s mean (Hopper and newer average; on
/// GA100 and older the "average" is the instantaneous value and the term is
/// conservative).
pub fn trace_uncertainty_mj(trace: &PowerTrace, basis: TraceBasis) -> f64 {
    let power = |p: &PowerSample| match basis {
        TraceBasis::Instant => p.power_instant_w,
        TraceBasis::Average => p.power_avg_w,
    };
    let points: Vec<(u64, f64)> = trace
        .samples
        .iter()
        .filter_map(|p| Some((p.t_ns, power(p)?)))
        .collect();
    let steps_mj: f64 = points
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).abs() * w[1].0.saturating_sub(w[0].0) as f64 / 1e6 / 2.0)
        .sum();
    let lag_mj = match basis {
        TraceBasis::Instant => 0.0,
        TraceBasis::Average => {
            let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
            let min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
            if points.is_empty() {
                0.0
            } else {
                0.5 * (max - min) * 1000.0
            }
        }
    };
    steps_mj + lag_mj
}

/// [`trace_energy`] without the basis.
pub fn trace_energy_mj(trace: &PowerTrace) -> Option<f64> {
    trace_energy(trace).map(|(mj, _)| mj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, avg: Option<f64>, instant: Option<f64>) -> PowerSample {
        PowerSample {
            t_ns: t_ms * 1_000_000,
            power_avg_w: avg,
            power_instant_w: instant,
            energy_counter_mj: None,
            temperature_c: None,
            sm_clock_mhz: None,
            throttle_reasons: None,
        }
    }

    fn trace(samples: Vec<PowerSample>) -> PowerTrace {
        PowerTrace {
            period_ms: 100.0,
            samples,
            unavailable: BTreeMap::new(),
        }
    }

    #[test]
    fn trapezoid_prefers_instant_power() {
        // 100 W then a ramp to 300 W: 1 s × 100 W + 1 s × 200 W (mean of 100 and 300).
        let t = trace(vec![
            sample(0, Some(50.0), Some(100.0)),
            sample(1000, Some(50.0), Some(100.0)),
            sample(2000, Some(50.0), Some(300.0)),
        ]);
        assert_eq!(trace_energy(&t), Some((300_000.0, TraceBasis::Instant)));
        // One sample without instant power: the average series is used instead.
        let t = trace(vec![
            sample(0, Some(50.0), Some(100.0)),
            sample(500, Some(70.0), None),
            sample(1000, Some(50.0), Some(100.0)),
        ]);
        assert_eq!(trace_energy(&t), Some((60_000.0, TraceBasis::Average)));
    }

    #[test]
    fn incomplete_or_short_traces_have_no_energy() {
        assert_eq!(trace_energy_mj(&trace(vec![])), None);
        assert_eq!(
            trace_energy_mj(&trace(vec![sample(0, Some(1.0), Some(1.0))])),
            None
        );
        let gap = trace(vec![
            sample(0, Some(1.0), None),
            sample(100, None, Some(1.0)),
        ]);
        assert_eq!(trace_energy_mj(&gap), None);
    }
}
