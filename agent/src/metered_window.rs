//! The metered window's steps that do not depend on what runs inference: open the job's
//! meters, take (or reuse) the idle baselines, start the meters, and after the window
//! stop them and turn their readings into the result's energy. lem's own engine and an
//! external server (`engine: openai`) are metered by exactly these steps.

use crate::meter::phases::PhaseRecorder;
use crate::meter::rapl::CpuMeters;
use crate::meter::{self, BaselineCache, EnergyMeter};
use crate::runner::{apply_baselines, DevicePlacement, RunContext, RunProgress, SIMULATED_WARNING};
use lem_common::config::ExperimentConfig;
use lem_common::domain::EnergyReading;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The job's meters: the CPU packages (RAPL) and, when `meter_gpus`, the config's GPUs.
pub(crate) fn open_meters(
    cfg: &ExperimentConfig,
    ctx: &RunContext,
    meter_gpus: bool,
    warnings: &mut Vec<String>,
) -> CpuMeters {
    let mut meters = meter::rapl::open_cpu_meters(&ctx.powercap_root);
    if let Some(m) = open_gpu_meter(cfg, ctx, meter_gpus, warnings) {
        meters.meters.push(Box::new(m));
    }
    meters
}

/// The NVML meter for the job's GPUs (its placement), when they are to be metered:
/// inference runs on a GPU (the system's NVML, or the library named) or the context
/// names an NVML library (a simulated node). CPU inference on a GPU box is not charged
/// the idle GPUs' energy. Why GPUs go unmetered is pushed to `warnings`.
fn open_gpu_meter(
    cfg: &ExperimentConfig,
    ctx: &RunContext,
    on_gpu: bool,
    warnings: &mut Vec<String>,
) -> Option<meter::nvml::NvmlMeter> {
    if ctx.nvml_lib.is_none() && !on_gpu {
        return None;
    }
    // A lease placed on CPU packages only holds no GPU: none is metered.
    if matches!(&ctx.placement, DevicePlacement::Devices { targets, .. } if targets.is_empty()) {
        return None;
    }
    let opened = ctx
        .placement
        .gpu_targets(&cfg.gpu_list)
        .and_then(|targets| {
            meter::nvml::NvmlMeter::open_targets_resolved(ctx.nvml_lib.as_deref(), &targets)
                .map_err(|e| e.to_string())
        });
    let mut m = match opened {
        Ok(m) => m,
        Err(why) => {
            warnings.push(format!("GPU energy not measured: {why}"));
            return None;
        }
    };
    if let Some(why) = m.simulation_reason() {
        warnings.push(format!("{SIMULATED_WARNING} ({why})"));
    }
    m.set_sample_period(Duration::from_secs_f64(cfg.sample_period_ms / 1000.0));
    Some(m)
}

/// Idle baselines (measured, or cached while fresh) for `idle_baseline_s > 0`, handed to
/// the meters (idle power for net energy, measured counter periods).
pub(crate) fn prepare_baselines(
    cache: &mut BaselineCache,
    meters: &mut [Box<dyn EnergyMeter>],
    cfg: &ExperimentConfig,
    progress: &mut dyn RunProgress,
) -> BTreeMap<String, meter::IdleBaseline> {
    let baselines = if cfg.idle_baseline_s > 0.0 {
        progress.phase("idle baseline");
        cache.ensure(
            meters,
            Duration::from_secs_f64(cfg.idle_baseline_s),
            Instant::now(),
        )
    } else {
        BTreeMap::new()
    };
    for m in meters.iter_mut() {
        for (id, b) in &baselines {
            if let Some(power_w) = b.info.power_w {
                m.set_idle_power_w(id, power_w);
            }
            if let Some((ms, how)) = &b.counter_period {
                m.set_counter_period_ms(id, *ms, how);
            }
        }
    }
    baselines
}

/// Starts every meter. GPU meters (pushed last) start first: they wait for a counter
/// update, which the RAPL window, started right before inference, should not include.
pub(crate) fn start_meters(meters: &mut [Box<dyn EnergyMeter>], warnings: &mut Vec<String>) {
    for m in meters.iter_mut().rev() {
        if let Err(e) = m.start() {
            warnings.push(format!("energy meter {}: {e}", m.name()));
        }
    }
}

/// Stops the meters after a window of `wall_ns` and gives the result's readings: each
/// physical device once (invariant 4), the phase split where `phases` recorded one, the
/// baselines applied, and the warnings the readings call for.
pub(crate) fn close_meters(
    meters: &mut CpuMeters,
    wall_ns: u64,
    phases: Option<&PhaseRecorder>,
    baselines: &BTreeMap<String, meter::IdleBaseline>,
    cfg: &ExperimentConfig,
    warnings: &mut Vec<String>,
) -> Vec<EnergyReading> {
    let mut per_meter = Vec::new();
    for m in meters.meters.iter_mut() {
        per_meter.push(m.stop());
    }
    per_meter.push(meters.unavailable_with_window(wall_ns));
    let (mut energy, duplicates) = meter::ledger::merge_readings(per_meter);
    for d in duplicates {
        warnings.push(format!(
            "device {} was reported twice in one window; counted once",
            d.device_id
        ));
    }
    if let Some(recorder) = phases {
        recorder.apply(&mut energy);
    }
    apply_baselines(&mut energy, baselines);
    warnings.extend(meter::checks::warnings(
        &energy,
        cfg.min_window_counter_periods,
    ));
    energy
}
