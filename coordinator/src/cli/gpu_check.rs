//! `lem gpu-check`: the hardware probes behind `scripts/gpu-check.sh`.
//!
//! * `periods`: how often each GPU's energy counter and power reading really change.
//! * `window`: meters a window with the counter and the sampler, and compares the
//!   counter's energy with the trace integral (what the fallback would have reported).

use super::error::outln;
use super::{CliError, Outcome};
use clap::{Args, Subcommand};
use lem_agent::meter::nvml::NvmlMeter;
use lem_agent::meter::probe::measure_update_periods;
use lem_agent::meter::EnergyMeter;
use lem_common::phases::{integrate_mj, power_points};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum GpuCheckCommand {
    /// Poll each GPU's energy counter and power at ~1 kHz and report their update periods.
    Periods(GpuCheckArgs),
    /// Meter a window (counter + sampler trace) and compare the two energies.
    Window(GpuCheckArgs),
}

#[derive(Debug, Args, Clone)]
pub struct GpuCheckArgs {
    /// Length of the poll or window.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Sampler period for `window`, ms.
    #[arg(long, default_value_t = 100.0)]
    pub sample_period_ms: f64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// NVML library to load instead of the system's libnvidia-ml.so.1.
    #[arg(long, env = "LEM_NVML_LIB", value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
}

pub fn run(cmd: GpuCheckCommand) -> Result<Outcome, CliError> {
    match cmd {
        GpuCheckCommand::Periods(a) => periods(&a),
        GpuCheckCommand::Window(a) => window(&a),
    }
}

fn duration(a: &GpuCheckArgs) -> Result<Duration, CliError> {
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err(CliError::usage(format!(
            "--seconds must be in (0, 3600], got {}",
            a.seconds
        )));
    }
    Ok(Duration::from_secs_f64(a.seconds))
}

fn periods(a: &GpuCheckArgs) -> Result<Outcome, CliError> {
    let d = duration(a)?;
    match measure_update_periods(a.nvml_lib.as_deref(), d) {
        Ok(p) => {
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&p).expect("plain data"));
            } else {
                for g in &p {
                    outln!(
                        "GPU {}: {:.0} polls/s; energy counter changed {} times, median every {}; power every {}",
                        g.gpu_index,
                        g.poll_hz,
                        g.counter_changes,
                        ms(g.counter_period_median_ms, g.counter_unavailable.as_deref()),
                        ms(g.power_period_median_ms, g.power_unavailable.as_deref()),
                    );
                }
            }
            Ok(Outcome::Success)
        }
        Err(e) => Err(CliError::failure(e.to_string())),
    }
}

fn ms(v: Option<f64>, why: Option<&str>) -> String {
    match (v, why) {
        (Some(v), _) => format!("{v:.1} ms"),
        (None, Some(why)) => format!("unavailable ({why})"),
        (None, None) => "unknown (fewer than 3 changes)".into(),
    }
}

/// One GPU's window: counter energy vs trace integral.
#[derive(Debug, Serialize)]
struct WindowCheck {
    device_id: String,
    device_name: String,
    window_s: f64,
    source: String,
    energy_j: Option<f64>,
    unavailable_reason: Option<String>,
    mean_power_w: Option<f64>,
    trace_samples: usize,
    trace_energy_j: Option<f64>,
    /// (trace − counter) / counter.
    trace_vs_counter: Option<f64>,
    trace_unavailable: std::collections::BTreeMap<String, String>,
    simulated: bool,
    driver_version: Option<String>,
}

fn window(a: &GpuCheckArgs) -> Result<Outcome, CliError> {
    let d = duration(a)?;
    let lib: Option<&Path> = a.nvml_lib.as_deref();
    let mut meter = match NvmlMeter::open(lib) {
        Ok(m) => m,
        Err(e) => return Err(CliError::failure(e.to_string())),
    };
    if !(a.sample_period_ms >= 1.0 && a.sample_period_ms <= 60_000.0) {
        return Err(CliError::usage(format!(
            "--sample-period-ms must be in [1, 60000], got {}",
            a.sample_period_ms
        )));
    }
    meter.set_sample_period(Duration::from_secs_f64(a.sample_period_ms / 1000.0));
    meter
        .start()
        .map_err(|e| CliError::failure(e.to_string()))?;
    std::thread::sleep(d);
    let checks: Vec<WindowCheck> = meter
        .stop()
        .into_iter()
        .map(|r| {
            let window_s = r.window_ns as f64 / 1e9;
            let points = r.trace.as_ref().map(power_points).unwrap_or_default();
            let trace_energy_j =
                (points.len() >= 2).then(|| integrate_mj(&points, 0, r.window_ns) / 1000.0);
            let energy_j = r.energy_mj.map(|mj| mj / 1000.0);
            WindowCheck {
                device_id: r.device_id,
                device_name: r.device_name,
                window_s,
                source: serde_json::to_value(r.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                mean_power_w: energy_j.filter(|_| window_s > 0.0).map(|j| j / window_s),
                trace_vs_counter: match (trace_energy_j, energy_j) {
                    (Some(t), Some(c)) if c > 0.0 => Some((t - c) / c),
                    _ => None,
                },
                energy_j,
                unavailable_reason: r.unavailable_reason,
                trace_samples: r.trace.as_ref().map_or(0, |t| t.samples.len()),
                trace_energy_j,
                trace_unavailable: r.trace.map(|t| t.unavailable).unwrap_or_default(),
                simulated: r.simulated,
                driver_version: r.driver_version,
            }
        })
        .collect();
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("plain data")
        );
    } else {
        for c in &checks {
            outln!(
                "{} ({}): {:.1} s, counter {} J ({} W mean), trace integral {} J over {} samples, trace vs counter {}{}",
                c.device_name,
                c.device_id,
                c.window_s,
                c.energy_j.map_or("n/a".into(), |j| format!("{j:.1}")),
                c.mean_power_w.map_or("n/a".into(), |w| format!("{w:.1}")),
                c.trace_energy_j.map_or("n/a".into(), |j| format!("{j:.1}")),
                c.trace_samples,
                c.trace_vs_counter.map_or("n/a".into(), |r| format!("{:+.2}%", r * 100.0)),
                if c.simulated { " [simulated]" } else { "" },
            );
            if let Some(why) = &c.unavailable_reason {
                outln!("  energy unavailable: {why}");
            }
        }
    }
    Ok(Outcome::Success)
}
