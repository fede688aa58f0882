//! GPU energy from NVML (through nvml-wrapper): the total-energy counter of each physical
//! GPU, differenced over the window, and GPU discovery for `lem gpus`.
//!
//! `nvmlDeviceGetTotalEnergyConsumption` returns the energy (mJ) used since the driver
//! was loaded (Volta and later). It advances in steps (about every 100 ms on current data
//! centre GPUs), so one window's error is below one step of energy at the highest power
//! in the window, whatever its length: ±1% needs windows ≥ 10 s at a steady load.
//!
//! Every failure is a reading with `energy_mj: None` and the NVML error as its reason:
//! the call that failed and NVML's own error (e.g. `NotSupported`, `GpuLost`). A counter
//! that goes backwards (driver reload, GPU reset) gives "counter reset".
//!
//! The library is `LEM_NVML_LIB` when set, else nvml-wrapper's default
//! (`libnvidia-ml.so.1` through the dynamic loader); functions take an explicit path too.
//! Tests load a fake library built from `tests/fake-nvml`.
//!
//! Not yet here (issue 3): MIG instance enumeration, the power/temperature sampler, the
//! trace-integral fallback for GPUs without the counter.
//!
//! Each reading carries the driver version; a driver version starting with
//! [`FAKE_DRIVER_PREFIX`] marks the fake library and every reading is `simulated`.

use super::{elapsed_ns, EnergyMeter, MeterError};
use lem_common::domain::{DeviceKind, EnergyReading, EnergySource};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Environment variable naming the NVML library to load.
pub const NVML_LIB_ENV: &str = "LEM_NVML_LIB";

/// Nominal update period of the NVML energy counter, recorded on each reading. NVML does
/// not report it; `scripts/gpu-check.sh` is to measure it on real hardware.
pub const NVML_COUNTER_PERIOD_MS: f64 = 100.0;

/// Driver-version prefix of the fake library (tests/fake-nvml): readings from it are
/// labelled simulated.
pub const FAKE_DRIVER_PREFIX: &str = "fake-nvml";

/// NVML could not be loaded or initialised.
#[derive(Debug, thiserror::Error)]
#[error("NVML unavailable ({library}): {reason}")]
pub struct NvmlUnavailable {
    /// The library that was tried.
    pub library: String,
    /// NVML's error, for the user.
    pub reason: String,
}

/// The library to load: `lib`, else `LEM_NVML_LIB` (when non-empty), else `None` for
/// nvml-wrapper's default lookup.
pub fn resolve_lib_path(lib: Option<&Path>) -> Option<PathBuf> {
    lib.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(NVML_LIB_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Loads and initialises NVML from `lib` (see [`resolve_lib_path`]).
pub fn init_nvml(lib: Option<&Path>) -> Result<Nvml, NvmlUnavailable> {
    let path = resolve_lib_path(lib);
    let mut builder = Nvml::builder();
    if let Some(p) = &path {
        builder.lib_path(p.as_os_str());
    }
    builder.init().map_err(|e| NvmlUnavailable {
        library: path.map_or_else(
            || "libnvidia-ml.so.1".to_owned(),
            |p| p.display().to_string(),
        ),
        reason: nvml_reason("nvmlInit_v2", &e),
    })
}

/// A user-facing reason for a failed NVML call.
fn nvml_reason(call: &str, e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => {
            format!("cannot load the NVML library (no NVIDIA driver?): {inner}")
        }
        _ => format!("NVML {call} failed: {e:?} ({e})"),
    }
}

/// MIG mode of a GPU (`true` = enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigModeInfo {
    pub current: bool,
    /// Mode after the next GPU reset.
    pub pending: bool,
}

/// One physical GPU as NVML describes it. A field NVML could not give is `None`, with
/// the reason in `unavailable` under the field's name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: Option<String>,
    pub name: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub power_limit_w: Option<f64>,
    pub driver_version: Option<String>,
    pub mig_mode: Option<MigModeInfo>,
    pub unavailable: BTreeMap<String, String>,
}

/// Lists the GPUs NVML sees (MIG instances are not enumerated yet).
pub fn discover_gpus(lib: Option<&Path>) -> Result<Vec<GpuInfo>, NvmlUnavailable> {
    let nvml = init_nvml(lib)?;
    let library = resolve_lib_path(lib).map_or_else(
        || "libnvidia-ml.so.1".to_owned(),
        |p| p.display().to_string(),
    );
    let count = nvml.device_count().map_err(|e| NvmlUnavailable {
        library,
        reason: nvml_reason("nvmlDeviceGetCount_v2", &e),
    })?;
    let driver = nvml.sys_driver_version();
    let mut gpus = Vec::new();
    for index in 0..count {
        let mut info = GpuInfo {
            index,
            uuid: None,
            name: None,
            memory_total_bytes: None,
            power_limit_w: None,
            driver_version: None,
            mig_mode: None,
            unavailable: BTreeMap::new(),
        };
        let mut note = |field: &str, call: &str, e: &NvmlError| {
            info.unavailable
                .insert(field.to_owned(), nvml_reason(call, e));
        };
        match &driver {
            Ok(v) => info.driver_version = Some(v.clone()),
            Err(e) => note("driver_version", "nvmlSystemGetDriverVersion", e),
        }
        let device = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                for field in [
                    "uuid",
                    "name",
                    "memory_total_bytes",
                    "power_limit_w",
                    "mig_mode",
                ] {
                    note(field, "nvmlDeviceGetHandleByIndex_v2", &e);
                }
                gpus.push(info);
                continue;
            }
        };
        match device.uuid() {
            Ok(v) => info.uuid = Some(v),
            Err(e) => note("uuid", "nvmlDeviceGetUUID", &e),
        }
        match device.name() {
            Ok(v) => info.name = Some(v),
            Err(e) => note("name", "nvmlDeviceGetName", &e),
        }
        match device.memory_info() {
            Ok(v) => info.memory_total_bytes = Some(v.total),
            Err(e) => note("memory_total_bytes", "nvmlDeviceGetMemoryInfo_v2", &e),
        }
        match device.power_management_limit() {
            Ok(mw) => info.power_limit_w = Some(f64::from(mw) / 1000.0),
            Err(e) => note("power_limit_w", "nvmlDeviceGetPowerManagementLimit", &e),
        }
        match device.mig_mode() {
            Ok(m) => {
                info.mig_mode = Some(MigModeInfo {
                    current: m.current != 0,
                    pending: m.pending != 0,
                })
            }
            Err(e) => note("mig_mode", "nvmlDeviceGetMigMode", &e),
        }
        gpus.push(info);
    }
    Ok(gpus)
}

#[derive(Debug)]
enum CounterState {
    Idle,
    Running { last_mj: u64, total_mj: u64 },
    Failed(String),
}

#[derive(Debug)]
struct MeteredGpu {
    index: u32,
    /// Device id of the readings: the UUID, or `gpu-<index>` when NVML gave none.
    device_id: String,
    name: String,
    state: CounterState,
}

/// Meters every physical GPU NVML sees with its total-energy counter.
pub struct NvmlMeter {
    nvml: Nvml,
    driver_version: Option<String>,
    gpus: Vec<MeteredGpu>,
    started: Option<Instant>,
}

impl std::fmt::Debug for NvmlMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlMeter")
            .field("driver_version", &self.driver_version)
            .field("gpus", &self.gpus)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl NvmlMeter {
    /// Loads NVML from `lib` (see [`resolve_lib_path`]) and finds the GPUs to meter.
    pub fn open(lib: Option<&Path>) -> Result<NvmlMeter, NvmlUnavailable> {
        let nvml = init_nvml(lib)?;
        let count = nvml.device_count().map_err(|e| NvmlUnavailable {
            library: resolve_lib_path(lib)
                .map_or_else(|| "libnvidia-ml.so.1".into(), |p| p.display().to_string()),
            reason: nvml_reason("nvmlDeviceGetCount_v2", &e),
        })?;
        let gpus = (0..count)
            .map(|index| {
                let device = nvml.device_by_index(index);
                let uuid = device.as_ref().ok().and_then(|d| d.uuid().ok());
                let name = device.as_ref().ok().and_then(|d| d.name().ok());
                let device_id = uuid.unwrap_or_else(|| format!("gpu-{index}"));
                MeteredGpu {
                    index,
                    name: name.unwrap_or_else(|| device_id.clone()),
                    device_id,
                    state: CounterState::Idle,
                }
            })
            .collect();
        let driver_version = nvml.sys_driver_version().ok();
        Ok(NvmlMeter {
            nvml,
            driver_version,
            gpus,
            started: None,
        })
    }

    /// True when the loaded library is the fake NVML (a simulated GPU node).
    pub fn is_simulated(&self) -> bool {
        self.driver_version
            .as_deref()
            .is_some_and(|v| v.starts_with(FAKE_DRIVER_PREFIX))
    }

    /// The driver version NVML reported, if any.
    pub fn driver_version(&self) -> Option<&str> {
        self.driver_version.as_deref()
    }

    /// Device ids metered (GPU UUIDs), in NVML index order.
    pub fn device_ids(&self) -> Vec<&str> {
        self.gpus.iter().map(|g| g.device_id.as_str()).collect()
    }

    /// Reads GPU `index`'s counter (mJ), or the reason it cannot be read.
    fn read_counter(nvml: &Nvml, index: u32) -> Result<u64, String> {
        let device = nvml
            .device_by_index(index)
            .map_err(|e| nvml_reason("nvmlDeviceGetHandleByIndex_v2", &e))?;
        device
            .total_energy_consumption()
            .map_err(|e| nvml_reason("nvmlDeviceGetTotalEnergyConsumption", &e))
    }

    /// Reads every running counter and adds its delta since the last read.
    fn advance(&mut self) {
        for gpu in &mut self.gpus {
            let CounterState::Running { last_mj, total_mj } = gpu.state else {
                continue;
            };
            gpu.state = match Self::read_counter(&self.nvml, gpu.index) {
                Err(reason) => CounterState::Failed(reason),
                Ok(now_mj) if now_mj < last_mj => CounterState::Failed(format!(
                    "counter reset: NVML total energy went from {last_mj} mJ to {now_mj} mJ \
                     during the window (driver reload or GPU reset)"
                )),
                Ok(now_mj) => CounterState::Running {
                    last_mj: now_mj,
                    total_mj: total_mj + (now_mj - last_mj),
                },
            };
        }
    }
}

impl EnergyMeter for NvmlMeter {
    fn name(&self) -> &str {
        "nvml"
    }

    fn start(&mut self) -> Result<(), MeterError> {
        if self.started.is_some() {
            return Err(MeterError::AlreadyStarted(self.name().into()));
        }
        for gpu in &mut self.gpus {
            gpu.state = match Self::read_counter(&self.nvml, gpu.index) {
                Ok(last_mj) => CounterState::Running {
                    last_mj,
                    total_mj: 0,
                },
                Err(reason) => CounterState::Failed(reason),
            };
        }
        self.started = Some(Instant::now());
        Ok(())
    }

    fn poll(&mut self) {
        if self.started.is_some() {
            self.advance();
        }
    }

    /// The counter moves in steps (~100 ms), so a plain short window would be off by up
    /// to a step at each end: time the energy between the first and the last counter
    /// change instead, polled every 2 ms (timing error ≈ 4 ms over the span).
    fn idle_power_w(&mut self, duration: Duration) -> Vec<(String, f64)> {
        if self.gpus.is_empty() {
            return Vec::new();
        }
        let margin = Duration::from_secs_f64(2.0 * NVML_COUNTER_PERIOD_MS / 1000.0);
        let n = self.gpus.len();
        let mut initial: Vec<Option<(Instant, u64)>> = vec![None; n];
        let mut first_change = initial.clone();
        let mut last_change = initial.clone();
        let mut prev: Vec<Option<(Instant, u64)>> = vec![None; n];
        let mut broken = vec![false; n];
        let begin = Instant::now();
        loop {
            for (i, gpu) in self.gpus.iter().enumerate() {
                if broken[i] {
                    continue;
                }
                let now = Instant::now();
                match Self::read_counter(&self.nvml, gpu.index) {
                    Err(_) => broken[i] = true,
                    Ok(mj) => {
                        match prev[i] {
                            None => initial[i] = Some((now, mj)),
                            Some((_, p)) if mj < p => broken[i] = true,
                            Some((_, p)) if mj > p => {
                                if first_change[i].is_none() {
                                    first_change[i] = Some((now, mj));
                                } else {
                                    last_change[i] = Some((now, mj));
                                }
                            }
                            Some(_) => {}
                        }
                        prev[i] = Some((now, mj));
                    }
                }
            }
            if begin.elapsed() >= duration + margin {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let power_w = |(t0, e0): (Instant, u64), (t1, e1): (Instant, u64)| {
            let secs = t1.saturating_duration_since(t0).as_secs_f64();
            (secs > 0.0).then(|| e1.saturating_sub(e0) as f64 / 1000.0 / secs)
        };
        self.gpus
            .iter()
            .enumerate()
            .filter(|(i, _)| !broken[*i])
            .filter_map(|(i, gpu)| {
                // Fewer than two changes: (near) zero power; use the whole span.
                let w = match (first_change[i], last_change[i]) {
                    (Some(a), Some(b)) => power_w(a, b),
                    _ => power_w(initial[i]?, prev[i]?),
                }?;
                Some((gpu.device_id.clone(), w))
            })
            .collect()
    }

    fn stop(&mut self) -> Vec<EnergyReading> {
        if self.started.is_some() {
            self.advance();
        }
        let window_ns = elapsed_ns(self.started.take());
        let simulated = self.is_simulated();
        let driver_version = self.driver_version.clone();
        self.gpus
            .iter_mut()
            .map(|gpu| {
                let state = std::mem::replace(&mut gpu.state, CounterState::Idle);
                let reason = match state {
                    CounterState::Running { total_mj, .. } => {
                        return EnergyReading {
                            device_kind: DeviceKind::Gpu,
                            device_id: gpu.device_id.clone(),
                            device_name: gpu.name.clone(),
                            source: EnergySource::NvmlCounter,
                            energy_mj: Some(total_mj as f64),
                            unavailable_reason: None,
                            window_ns,
                            sample_period_ms: Some(NVML_COUNTER_PERIOD_MS),
                            estimated: false,
                            baseline_power_w: None,
                            net_energy_mj: None,
                            simulated,
                            driver_version: driver_version.clone(),
                        }
                    }
                    CounterState::Failed(reason) => reason,
                    CounterState::Idle => "meter stopped without being started".to_owned(),
                };
                EnergyReading {
                    device_name: gpu.name.clone(),
                    simulated,
                    driver_version: driver_version.clone(),
                    ..EnergyReading::unavailable(
                        DeviceKind::Gpu,
                        gpu.device_id.clone(),
                        reason,
                        window_ns,
                    )
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_unavailable_with_a_reason() {
        let e = discover_gpus(Some(Path::new("/nonexistent/libnvidia-ml.so.1"))).unwrap_err();
        assert!(e.reason.contains("cannot load the NVML library"), "{e}");
        assert_eq!(e.library, "/nonexistent/libnvidia-ml.so.1");
        let e = NvmlMeter::open(Some(Path::new("/nonexistent/x.so"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.so"), "{e}");
    }

    #[test]
    fn explicit_path_wins_over_env() {
        let p = resolve_lib_path(Some(Path::new("/a.so")));
        assert_eq!(p.as_deref(), Some(Path::new("/a.so")));
    }
}
