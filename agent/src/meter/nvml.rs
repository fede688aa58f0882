//! GPU energy from NVML (through nvml-wrapper): the total-energy counter of each physical
//! GPU, differenced over the window, a sampled power trace beside it (`sampler.rs`), MIG
//! attribution, and GPU discovery for `lem gpus`.
//!
//! `nvmlDeviceGetTotalEnergyConsumption` returns the energy (mJ) used since the driver
//! was loaded (Volta and later). It advances in steps (about every 100 ms on current data
//! centre GPUs), so the window's edges are placed on observed updates (`edges.rs`): each
//! GPU's reading covers its own window between two updates, exact to 1 mJ, with the
//! updates' timing (half the 1 ms poll bracket each) as its `uncertainty_mj`. An edge
//! that sees no update within two periods (or the stepped test clock) is placed half a
//! period before its read, ± half a period. The counter's period is measured by the idle
//! baseline (`baseline.rs`) and given back with [`NvmlMeter::set_counter_period_ms`];
//! until then it is [`NVML_COUNTER_PERIOD_MS`], labelled nominal.
//!
//! Every failure is a reading with `energy_mj: None` and the NVML error as its reason:
//! the call that failed and NVML's own error (e.g. `NotSupported`, `GpuLost`). A counter
//! that goes backwards (driver reload, GPU reset) gives "counter reset".
//!
//! The library is `LEM_NVML_LIB` when set, else nvml-wrapper's default
//! (`libnvidia-ml.so.1` through the dynamic loader); functions take an explicit path too.
//! Tests load a fake library built from `tests/fake-nvml`.
//!
//! **Targets.** [`NvmlMeter::open_targets`] meters the job's devices as
//! `CUDA_VISIBLE_DEVICES` names them (GPU index, GPU UUID, MIG UUID); the counter is read
//! on each physical GPU once per window whatever number of its slices are targets.
//!
//! **Sampler.** While a window is open a thread samples each metered GPU every period
//! (default 100 ms): power (1 s average and instant), counter, temperature, SM clock,
//! throttle reasons, and GPM SM activity per MIG slice. The trace is attached to the
//! reading; it never replaces the counter.
//!
//! **Fallback.** A GPU whose counter is NOT_SUPPORTED at the window's start (or a driver
//! without the call) gets its energy from the trace integral: `source: nvml-power`,
//! `sample_period_ms` = the sampler's period, and the trace's
//! `unavailable["energy_counter_mj"]` says why the counter was not used. The integral is
//! on instantaneous power where every sample has it, else on the 1 s average (see
//! [`trace_energy`] for the bounds).
//!
//! **MIG.** A GPU in MIG mode is read as a whole and its energy split by
//! [`lem_common::mig::attribute`]: a job holding every slice (or the whole GPU) gets one
//! GPU reading in exclusive mode; otherwise each of its slices gets a `mig_slice` reading
//! with its share. Allocated slices = the job's, plus those with compute processes
//! (`nvmlDeviceGetComputeRunningProcesses_v3` on the MIG handle). SM activity comes from
//! GPM where supported, else the split is by compute slices (labelled in
//! `mig.dynamic_basis`, with the GPM error in the trace's `unavailable`). The idle part
//! uses the parent's idle power: measured by this meter's `idle_baselines`, or given with
//! [`NvmlMeter::set_idle_power_w`].
//!
//! Each reading carries the driver version. Readings are `simulated` when the library
//! was named explicitly, exports [`FAKE_MARKER_SYMBOL`] or reports a driver version
//! starting with [`FAKE_DRIVER_PREFIX`] ([`simulation_reason`]). Where a GPU has both a
//! counter and a trace, `counter_trace_ratio` compares them (`checks.rs`).

use super::clock::{MeterClock, RealClock};
use super::edges::{Edge, EdgeOutcome, EdgeWait, EDGE_POLL};
use super::sampler::{
    trace_energy, trace_uncertainty_mj, SampledGpu, Sampler, SamplerClock, DEFAULT_SAMPLE_PERIOD,
};
use super::{EnergyMeter, IdleBaseline, MeterError};
use lem_common::domain::{BaselineInfo, DeviceKind, EnergyReading, EnergySource, PowerTrace};
use lem_common::mig::{attribute, mode_for, MigMode, SliceInput};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Environment variable naming the NVML library to load.
pub const NVML_LIB_ENV: &str = "LEM_NVML_LIB";

/// Nominal update period of the NVML energy counter, used until the device's own period
/// is measured (the idle baseline measures it; NVML does not report it).
pub const NVML_COUNTER_PERIOD_MS: f64 = 100.0;

/// Driver-version prefix of the fake library (tests/fake-nvml): readings from it are
/// labelled simulated.
pub const FAKE_DRIVER_PREFIX: &str = "fake-nvml";

/// Symbol the fake library exports (tests/fake-nvml): readings from a library that has
/// it are labelled simulated whatever its driver version says.
pub const FAKE_MARKER_SYMBOL: &str = "lem_fake_nvml_marker";

/// Why readings from NVML loaded from `lib` (see [`resolve_lib_path`]) are simulated, or
/// `None` for the system's library. Any library named explicitly (`--nvml-lib`,
/// `LEM_NVML_LIB`) counts as simulated, as does one exporting [`FAKE_MARKER_SYMBOL`] or
/// reporting a driver version starting with [`FAKE_DRIVER_PREFIX`]: the label never
/// depends on a call the library may fail.
pub fn simulation_reason(lib: Option<&Path>, driver_version: Option<&str>) -> Option<String> {
    simulation_reason_resolved(resolve_lib_path(lib).as_deref(), driver_version)
}

/// [`simulation_reason`] for a library already chosen (`named`: `None` = the system's);
/// reads no environment variable.
pub fn simulation_reason_resolved(
    named: Option<&Path>,
    driver_version: Option<&str>,
) -> Option<String> {
    let file = named.map_or_else(|| PathBuf::from("libnvidia-ml.so.1"), Path::to_path_buf);
    if exports_fake_marker(&file) {
        return Some(format!(
            "{} exports {FAKE_MARKER_SYMBOL} (the fake NVML)",
            file.display()
        ));
    }
    if let Some(p) = named {
        return Some(format!(
            "the NVML library is named explicitly ({}, by --nvml-lib or {NVML_LIB_ENV})",
            p.display()
        ));
    }
    driver_version
        .filter(|v| v.starts_with(FAKE_DRIVER_PREFIX))
        .map(|v| format!("driver version {v} is the fake NVML's"))
}

/// True when the library at `file` exports the fake's marker symbol.
fn exports_fake_marker(file: &Path) -> bool {
    // SAFETY: the library NVML loads (or loaded) from the same path: opening it again
    // only bumps the loader's reference count; its initialisers have run already.
    let Ok(lib) = (unsafe { libloading::Library::new(file) }) else {
        return false;
    };
    let name = format!("{FAKE_MARKER_SYMBOL}\0");
    // SAFETY: only the symbol's presence is checked; it is never called.
    unsafe { lib.get::<unsafe extern "C" fn() -> u32>(name.as_bytes()) }.is_ok()
}

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
    init_nvml_resolved(resolve_lib_path(lib).as_deref())
}

/// Loads and initialises NVML from `path` (`None`: the system's library); reads no
/// environment variable.
pub fn init_nvml_resolved(path: Option<&Path>) -> Result<Nvml, NvmlUnavailable> {
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
pub(crate) fn nvml_reason(call: &str, e: &NvmlError) -> String {
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

/// One MIG device (a GPU instance with its compute instance) of a physical GPU. A field
/// NVML could not give is `None`, with the reason in `unavailable` under its name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigInstanceInfo {
    pub parent_index: u32,
    pub parent_uuid: Option<String>,
    /// NVML's MIG device index on the parent.
    pub mig_index: u32,
    pub uuid: Option<String>,
    pub gpu_instance_id: Option<u32>,
    pub compute_instance_id: Option<u32>,
    /// `{slices}g.{memory}gb`, derived by lem (see [`profile_name`]).
    pub profile: Option<String>,
    /// Compute slices of the GPU instance (3 for `3g.20gb`).
    pub compute_slices: Option<u32>,
    pub sm_count: Option<u32>,
    pub memory_total_bytes: Option<u64>,
    pub unavailable: BTreeMap<String, String>,
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
    /// MIG devices when MIG is enabled (empty otherwise, or with the reason under
    /// `unavailable["mig_instances"]` when they could not be listed).
    pub mig_instances: Vec<MigInstanceInfo>,
    pub unavailable: BTreeMap<String, String>,
}

/// Memory sizes NVIDIA's MIG profile names use (GB).
const NOMINAL_GB: &[u64] = &[
    5, 6, 10, 12, 20, 24, 35, 40, 45, 47, 48, 70, 80, 90, 94, 96, 141,
];

/// A MIG profile name, `{slices}g.{memory}gb`. NVML reports a profile *id*, not its name,
/// so lem derives the name from the instance's slices and memory: the memory in GiB
/// rounded up, snapped to NVIDIA's nominal size within 6% (A100 40GB's 3g instance has
/// 19.5 GiB and is `3g.20gb`; the full H100's 79 GiB is `7g.80gb`).
pub fn profile_name(compute_slices: u32, memory_bytes: u64) -> String {
    let gib = memory_bytes as f64 / (1u64 << 30) as f64;
    let nominal = NOMINAL_GB
        .iter()
        .copied()
        .filter(|&n| (n as f64 - gib).abs() <= 0.06 * n as f64)
        .min_by(|a, b| (*a as f64 - gib).abs().total_cmp(&(*b as f64 - gib).abs()));
    let gb = nominal.unwrap_or_else(|| gib.ceil() as u64);
    format!("{compute_slices}g.{gb}gb")
}

/// The MIG devices of `parent` (a GPU in MIG mode). Indices NVML reports as NOT_FOUND
/// are empty places, skipped.
fn list_mig_instances(
    parent: &Device<'_>,
    parent_index: u32,
    parent_uuid: Option<&str>,
) -> Result<Vec<MigInstanceInfo>, String> {
    let max = parent
        .mig_device_count()
        .map_err(|e| nvml_reason("nvmlDeviceGetMaxMigDeviceCount", &e))?;
    let mut out = Vec::new();
    for mig_index in 0..max {
        let mut info = MigInstanceInfo {
            parent_index,
            parent_uuid: parent_uuid.map(str::to_owned),
            mig_index,
            uuid: None,
            gpu_instance_id: None,
            compute_instance_id: None,
            profile: None,
            compute_slices: None,
            sm_count: None,
            memory_total_bytes: None,
            unavailable: BTreeMap::new(),
        };
        let mig = match parent.mig_device_by_index(mig_index) {
            Ok(m) => m,
            Err(NvmlError::NotFound) => continue,
            Err(e) => {
                let reason = nvml_reason("nvmlDeviceGetMigDeviceHandleByIndex", &e);
                info.unavailable.insert("uuid".into(), reason);
                out.push(info);
                continue;
            }
        };
        let mut note = |field: &str, call: &str, e: &NvmlError| {
            info.unavailable
                .insert(field.to_owned(), nvml_reason(call, e));
        };
        match mig.uuid() {
            Ok(v) => info.uuid = Some(v),
            Err(e) => note("uuid", "nvmlDeviceGetUUID", &e),
        }
        match mig_ids(&mig) {
            Ok((gi, ci)) => {
                info.gpu_instance_id = Some(gi);
                info.compute_instance_id = Some(ci);
            }
            Err((call, e)) => {
                note("gpu_instance_id", call, &e);
                note("compute_instance_id", call, &e);
            }
        }
        let attributes = mig.attributes();
        match mig.memory_info() {
            Ok(m) => info.memory_total_bytes = Some(m.total),
            Err(e) => match &attributes {
                Ok(a) => info.memory_total_bytes = Some(a.memory_size_mb << 20),
                Err(_) => note("memory_total_bytes", "nvmlDeviceGetMemoryInfo_v2", &e),
            },
        }
        match &attributes {
            Ok(a) => {
                info.sm_count = Some(a.multiprocessor_count);
                info.compute_slices = Some(a.gpu_instance_slice_count);
                let bytes = info.memory_total_bytes.unwrap_or(a.memory_size_mb << 20);
                info.profile = Some(profile_name(a.gpu_instance_slice_count, bytes));
            }
            Err(e) => {
                for field in ["sm_count", "compute_slices", "profile"] {
                    note(field, "nvmlDeviceGetAttributes_v2", e);
                }
            }
        }
        out.push(info);
    }
    Ok(out)
}

/// GPU- and compute-instance ids of a MIG device, or the failed call and its error.
/// nvml-wrapper 0.13 has no safe wrapper for these two calls; they go through its loaded
/// library, with the handle it gave us.
fn mig_ids(mig: &Device<'_>) -> Result<(u32, u32), (&'static str, NvmlError)> {
    let lib = mig.nvml().lib();
    let gi = instance_id(
        "nvmlDeviceGetGpuInstanceId",
        &lib.nvmlDeviceGetGpuInstanceId,
        |f, out| {
            // SAFETY: an NVML function of the loaded library, a handle NVML gave us, and a
            // valid out-pointer.
            unsafe { f(mig.handle(), out) }
        },
    )?;
    let ci = instance_id(
        "nvmlDeviceGetComputeInstanceId",
        &lib.nvmlDeviceGetComputeInstanceId,
        // SAFETY: as above.
        |f, out| unsafe { f(mig.handle(), out) },
    )?;
    Ok((gi, ci))
}

fn instance_id<F, E: std::fmt::Display>(
    name: &'static str,
    sym: &Result<F, E>,
    call: impl FnOnce(&F, &mut std::ffi::c_uint) -> std::ffi::c_uint,
) -> Result<u32, (&'static str, NvmlError)> {
    let f = sym
        .as_ref()
        .map_err(|e| (name, NvmlError::FailedToLoadSymbol(e.to_string())))?;
    let mut id: std::ffi::c_uint = 0;
    let rc = call(f, &mut id);
    nvml_wrapper::error::nvml_try(rc).map_err(|e| (name, e))?;
    Ok(id)
}

/// Lists the GPUs NVML sees, with the MIG devices of those in MIG mode.
pub fn discover_gpus(lib: Option<&Path>) -> Result<Vec<GpuInfo>, NvmlUnavailable> {
    discover_gpus_resolved(resolve_lib_path(lib).as_deref())
}

/// [`discover_gpus`] for a library already chosen (`None`: the system's); reads no
/// environment variable.
pub fn discover_gpus_resolved(lib: Option<&Path>) -> Result<Vec<GpuInfo>, NvmlUnavailable> {
    let nvml = init_nvml_resolved(lib)?;
    let count = nvml.device_count().map_err(|e| NvmlUnavailable {
        library: library_name(lib),
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
            mig_instances: Vec::new(),
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
        if info.mig_mode.as_ref().is_some_and(|m| m.current) {
            match list_mig_instances(&device, index, info.uuid.as_deref()) {
                Ok(list) => info.mig_instances = list,
                Err(reason) => {
                    info.unavailable.insert("mig_instances".into(), reason);
                }
            }
        }
        gpus.push(info);
    }
    Ok(gpus)
}

/// The name of an already chosen library, for messages.
fn library_name(lib: Option<&Path>) -> String {
    lib.map_or_else(
        || "libnvidia-ml.so.1".to_owned(),
        |p| p.display().to_string(),
    )
}

/// Compute slices of a whole GPU in MIG mode when NVML does not say: 7 on every MIG-capable
/// GPU so far but A30 (A100, H100, H200, B200). An assumption, labelled on the reading.
const DEFAULT_MIG_SLICES: u32 = 7;

#[derive(Debug)]
enum CounterState {
    Idle,
    Running {
        last_mj: u64,
        total_mj: u64,
    },
    /// The GPU has no counter (NOT_SUPPORTED, or a driver without the call): the energy
    /// comes from the sampler's power trace.
    Unsupported(String),
    Failed(String),
}

/// A MIG slice of a metered GPU.
#[derive(Debug, Clone)]
struct MeteredSlice {
    mig_index: u32,
    uuid: String,
    gpu_instance_id: u32,
    profile: String,
    compute_slices: u32,
    sm_count: u32,
    owned_by_job: bool,
}

/// The MIG layout of a metered GPU in MIG mode, read at open.
#[derive(Debug)]
struct MigLayout {
    total_compute_slices: u32,
    /// Why `total_compute_slices` is assumed rather than NVML's, when it is.
    slices_assumed: Option<String>,
    slices: Vec<MeteredSlice>,
    /// Why the layout could not be read completely: the job's slices are then unavailable.
    broken: Option<String>,
    /// The job targets the whole GPU (not named slices).
    whole_gpu: bool,
}

#[derive(Debug)]
struct MeteredGpu {
    index: u32,
    /// Device id of the readings: the UUID, or `gpu-<index>` when NVML gave none.
    device_id: String,
    name: String,
    state: CounterState,
    mig: Option<MigLayout>,
    /// The counter's update period: measured (ms, how) or `None` = nominal.
    counter_period: Option<(f64, String)>,
    /// Where the current window starts on this GPU's counter.
    start_edge: Option<Edge>,
}

impl MeteredGpu {
    fn period_ms(&self) -> f64 {
        self.counter_period
            .as_ref()
            .map_or(NVML_COUNTER_PERIOD_MS, |(ms, _)| *ms)
    }
}

/// Meters the physical GPUs of a job with their total-energy counters, samples their
/// sensors over the window, and attributes a MIG parent's energy to the job's slices.
pub struct NvmlMeter {
    nvml: Arc<Nvml>,
    driver_version: Option<String>,
    /// Why readings are labelled simulated (`None`: real hardware).
    simulated: Option<String>,
    /// What edges, baselines and windows are timed on.
    time: Arc<dyn MeterClock>,
    /// Place window edges on observed counter updates (real sampler clock only).
    align_edges: bool,
    /// `time` when `start()` returned: the window's start for the job.
    window_start_ns: u64,
    gpus: Vec<MeteredGpu>,
    /// Targets that matched no GPU or MIG device: unavailable readings.
    missing_targets: Vec<String>,
    started: Option<Instant>,
    sample_period: Duration,
    clock: SamplerClock,
    sampler: Option<Sampler>,
    /// Stepped clock: the time of the last step (the window's length at stop).
    stepped_ns: u64,
    /// Idle power of physical GPUs by device id (measured here or given by the runner).
    idle_power: BTreeMap<String, f64>,
}

impl std::fmt::Debug for NvmlMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlMeter")
            .field("driver_version", &self.driver_version)
            .field("gpus", &self.gpus)
            .field("missing_targets", &self.missing_targets)
            .field("started", &self.started)
            .field("sample_period", &self.sample_period)
            .finish_non_exhaustive()
    }
}

/// True for a counter error that means "this GPU has no counter" (fall back to the
/// trace) rather than a failure of this window.
fn counter_missing(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_) | NvmlError::FunctionNotFound
    )
}

/// What a target names, as `CUDA_VISIBLE_DEVICES` writes it.
enum Target {
    Index(u32),
    Uuid(String),
}

fn parse_target(t: &str) -> Target {
    match t.trim().parse::<u32>() {
        Ok(i) => Target::Index(i),
        Err(_) => Target::Uuid(t.trim().to_owned()),
    }
}

/// `id` matches `target` exactly or as a unique prefix (CUDA accepts UUID prefixes).
fn id_matches(id: &str, target: &str) -> bool {
    id == target || (target.len() >= 8 && id.starts_with(target))
}

impl NvmlMeter {
    /// Loads NVML from `lib` (see [`resolve_lib_path`]) and meters every physical GPU.
    pub fn open(lib: Option<&Path>) -> Result<NvmlMeter, NvmlUnavailable> {
        Self::open_targets(lib, &[])
    }

    /// Loads NVML from `lib` and meters the job's `targets`: GPU indices, GPU UUIDs or
    /// MIG UUIDs as `CUDA_VISIBLE_DEVICES` names them (a unique UUID prefix works too);
    /// empty = every physical GPU. Each physical GPU is read once, however many of its
    /// slices are targets. A target that matches nothing gives an unavailable reading.
    pub fn open_targets(
        lib: Option<&Path>,
        targets: &[String],
    ) -> Result<NvmlMeter, NvmlUnavailable> {
        Self::open_targets_resolved(resolve_lib_path(lib).as_deref(), targets)
    }

    /// [`NvmlMeter::open_targets`] for a library already chosen (`None`: the system's);
    /// reads no environment variable (the runner's way in).
    pub fn open_targets_resolved(
        lib: Option<&Path>,
        targets: &[String],
    ) -> Result<NvmlMeter, NvmlUnavailable> {
        let nvml = init_nvml_resolved(lib)?;
        let count = nvml.device_count().map_err(|e| NvmlUnavailable {
            library: library_name(lib),
            reason: nvml_reason("nvmlDeviceGetCount_v2", &e),
        })?;
        let mut all: Vec<MeteredGpu> = (0..count)
            .map(|index| {
                let device = nvml.device_by_index(index);
                let uuid = device.as_ref().ok().and_then(|d| d.uuid().ok());
                let name = device.as_ref().ok().and_then(|d| d.name().ok());
                let in_mig = device
                    .as_ref()
                    .ok()
                    .and_then(|d| d.mig_mode().ok())
                    .is_some_and(|m| m.current != 0);
                let mig = match (&device, in_mig) {
                    (Ok(d), true) => Some(mig_layout(d, index, uuid.as_deref())),
                    _ => None,
                };
                let device_id = uuid.unwrap_or_else(|| format!("gpu-{index}"));
                MeteredGpu {
                    index,
                    name: name.unwrap_or_else(|| device_id.clone()),
                    device_id,
                    state: CounterState::Idle,
                    mig,
                    counter_period: None,
                    start_edge: None,
                }
            })
            .collect();
        let mut selected = vec![targets.is_empty(); all.len()];
        let mut missing_targets = Vec::new();
        for t in targets {
            let found = match parse_target(t) {
                Target::Index(i) => {
                    let hit = (i as usize) < all.len();
                    if hit {
                        selected[i as usize] = true;
                    }
                    hit
                }
                Target::Uuid(u) => {
                    let mut hit = false;
                    for (k, gpu) in all.iter_mut().enumerate() {
                        if id_matches(&gpu.device_id, &u) {
                            selected[k] = true;
                            hit = true;
                        }
                        for s in gpu.mig.iter_mut().flat_map(|m| m.slices.iter_mut()) {
                            if id_matches(&s.uuid, &u) {
                                s.owned_by_job = true;
                                selected[k] = true;
                                hit = true;
                            }
                        }
                    }
                    hit
                }
            };
            if !found {
                missing_targets.push(t.clone());
            }
        }
        // A whole GPU in MIG mode is the job's: it holds every slice.
        for (k, gpu) in all.iter_mut().enumerate() {
            let whole = targets.is_empty()
                || targets.iter().any(|t| match parse_target(t) {
                    Target::Index(i) => i == gpu.index,
                    Target::Uuid(u) => id_matches(&gpu.device_id, &u),
                });
            if selected[k] && whole {
                if let Some(m) = gpu.mig.as_mut() {
                    m.whole_gpu = true;
                    m.slices.iter_mut().for_each(|s| s.owned_by_job = true);
                }
            }
        }
        let gpus = all
            .into_iter()
            .zip(selected)
            .filter_map(|(g, keep)| keep.then_some(g))
            .collect();
        let driver_version = nvml.sys_driver_version().ok();
        let simulated = simulation_reason_resolved(lib, driver_version.as_deref());
        Ok(NvmlMeter {
            nvml: Arc::new(nvml),
            driver_version,
            simulated,
            time: Arc::new(RealClock::new()),
            align_edges: true,
            window_start_ns: 0,
            gpus,
            missing_targets,
            started: None,
            sample_period: DEFAULT_SAMPLE_PERIOD,
            clock: SamplerClock::Real,
            sampler: None,
            stepped_ns: 0,
            idle_power: BTreeMap::new(),
        })
    }

    /// Sets the sampler's period (default 100 ms) for the next windows.
    /// `Duration::ZERO` turns the sampler off: no trace, and no fallback energy for GPUs
    /// without the counter.
    pub fn set_sample_period(&mut self, period: Duration) {
        self.sample_period = period;
    }

    /// The sampler's period (`Duration::ZERO` = off).
    pub fn sample_period(&self) -> Duration {
        self.sample_period
    }

    /// For tests and simulated nodes on a virtual clock: sample only on
    /// [`NvmlMeter::step_to`], with its timestamps; the window's length is the last step.
    pub fn set_sampler_clock(&mut self, clock: SamplerClock) {
        self.clock = clock;
    }

    /// Stepped clock: takes a sample `t` after the window's start and makes `t` the
    /// window's length so far. Does nothing on a real clock or outside a window.
    pub fn step_to(&mut self, t: Duration) {
        if self.clock != SamplerClock::Stepped || self.started.is_none() {
            return;
        }
        let t_ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        self.stepped_ns = t_ns;
        if let Some(s) = &self.sampler {
            s.sample_at(t_ns);
        }
    }

    /// The idle power of physical GPU `device_id` (its UUID), for the MIG attribution's
    /// idle part. The meter keeps what its own [`EnergyMeter::idle_baselines`] measured;
    /// a baseline the runner took from its cache must be given here before `stop()`.
    pub fn set_idle_power_w(&mut self, device_id: &str, power_w: f64) {
        self.idle_power.insert(device_id.to_owned(), power_w);
    }

    /// True when readings are labelled simulated (see [`simulation_reason`]).
    pub fn is_simulated(&self) -> bool {
        self.simulated.is_some()
    }

    /// Why readings are labelled simulated, if they are.
    pub fn simulation_reason(&self) -> Option<&str> {
        self.simulated.as_deref()
    }

    /// Times edges, baselines and (on the real sampler clock) windows on `clock`, e.g. a
    /// test's virtual clock. The sampler thread keeps the machine's clock.
    pub fn set_time_source(&mut self, clock: Arc<dyn MeterClock>) {
        self.time = clock;
    }

    /// Whether window edges are placed on observed counter updates (default on; the
    /// stepped sampler clock never aligns, its edges are where the caller steps).
    pub fn set_edge_alignment(&mut self, on: bool) {
        self.align_edges = on;
    }

    /// Gives GPU `device_id` its measured counter update period (e.g. cached from an
    /// earlier baseline), with how it was measured.
    pub fn set_counter_period_ms(&mut self, device_id: &str, period_ms: f64, method: &str) {
        if let Some(g) = self.gpus.iter_mut().find(|g| g.device_id == device_id) {
            g.counter_period = Some((period_ms, method.to_owned()));
        }
    }

    fn aligning(&self) -> bool {
        self.align_edges && self.clock == SamplerClock::Real
    }

    /// The driver version NVML reported, if any.
    pub fn driver_version(&self) -> Option<&str> {
        self.driver_version.as_deref()
    }

    /// Device ids of the physical GPUs metered (UUIDs), in NVML index order.
    pub fn device_ids(&self) -> Vec<&str> {
        self.gpus.iter().map(|g| g.device_id.as_str()).collect()
    }

    /// Targets that matched no GPU or MIG device.
    pub fn missing_targets(&self) -> &[String] {
        &self.missing_targets
    }

    /// Reads GPU `index`'s counter (mJ).
    fn read_counter(nvml: &Nvml, index: u32) -> Result<u64, (&'static str, NvmlError)> {
        let device = nvml
            .device_by_index(index)
            .map_err(|e| ("nvmlDeviceGetHandleByIndex_v2", e))?;
        device
            .total_energy_consumption()
            .map_err(|e| ("nvmlDeviceGetTotalEnergyConsumption", e))
    }

    /// Reads every running counter and adds its delta since the last read.
    fn advance(&mut self) {
        for gpu in &mut self.gpus {
            let CounterState::Running { last_mj, total_mj } = gpu.state else {
                continue;
            };
            gpu.state = match Self::read_counter(&self.nvml, gpu.index) {
                Err((call, e)) => CounterState::Failed(nvml_reason(call, &e)),
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

/// The MIG layout of `device` for metering, from [`list_mig_instances`].
fn mig_layout(device: &Device<'_>, index: u32, uuid: Option<&str>) -> MigLayout {
    let assumed = |why: String| {
        Some(format!(
            "{why}; assumed {DEFAULT_MIG_SLICES} compute slices (every MIG-capable GPU so far but A30)"
        ))
    };
    let (total_compute_slices, slices_assumed) = match device.attributes() {
        Ok(a) if a.gpu_instance_slice_count > 0 => (a.gpu_instance_slice_count, None),
        Ok(_) => (
            DEFAULT_MIG_SLICES,
            assumed("NVML nvmlDeviceGetAttributes_v2 gave 0 compute slices for the GPU".into()),
        ),
        Err(e) => (
            DEFAULT_MIG_SLICES,
            assumed(nvml_reason("nvmlDeviceGetAttributes_v2", &e)),
        ),
    };
    let mut layout = MigLayout {
        total_compute_slices,
        slices_assumed,
        slices: Vec::new(),
        broken: None,
        whole_gpu: false,
    };
    let list = match list_mig_instances(device, index, uuid) {
        Ok(l) => l,
        Err(reason) => {
            layout.broken = Some(reason);
            return layout;
        }
    };
    for m in list {
        match (
            m.uuid,
            m.gpu_instance_id,
            m.compute_slices,
            m.sm_count,
            m.profile,
        ) {
            (Some(uuid), Some(gi), Some(cs), Some(sm), Some(profile)) => {
                layout.slices.push(MeteredSlice {
                    mig_index: m.mig_index,
                    uuid,
                    gpu_instance_id: gi,
                    profile,
                    compute_slices: cs,
                    sm_count: sm,
                    owned_by_job: false,
                })
            }
            _ => {
                let why: Vec<String> = m
                    .unavailable
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                layout.broken = Some(format!(
                    "MIG device {} of GPU {index} could not be described ({})",
                    m.mig_index,
                    why.join("; ")
                ));
            }
        }
    }
    layout
}

/// The energy of one physical GPU over the window, or why there is none.
struct GpuEnergy {
    energy_mj: Result<f64, String>,
    source: EnergySource,
    sample_period_ms: Option<f64>,
    /// Half-width (mJ) and how it was derived.
    uncertainty: Option<(f64, String)>,
}

/// The counter value of a GPU whose counter is running.
fn running_value(gpu: &MeteredGpu) -> Option<u64> {
    match gpu.state {
        CounterState::Running { last_mj, .. } => Some(last_mj),
        _ => None,
    }
}

/// The window starts on the observed update: the energy counts from its value.
fn apply_start_edge(gpu: &mut MeteredGpu, outcome: EdgeOutcome) {
    match outcome {
        EdgeOutcome::Moved { edge, value } => {
            gpu.state = CounterState::Running {
                last_mj: value,
                total_mj: 0,
            };
            gpu.start_edge = Some(edge);
        }
        EdgeOutcome::Still => {}
        EdgeOutcome::Failed(reason) => gpu.state = CounterState::Failed(reason),
    }
}

/// The window ends on the observed update: its step is added to the energy.
fn apply_end_edge(gpu: &mut MeteredGpu, outcome: EdgeOutcome, edge: &mut Option<Edge>) {
    match outcome {
        EdgeOutcome::Moved { edge: e, value } => {
            if let CounterState::Running { last_mj, total_mj } = gpu.state {
                gpu.state = CounterState::Running {
                    last_mj: value,
                    total_mj: total_mj + value.saturating_sub(last_mj),
                };
                *edge = Some(e);
            }
        }
        EdgeOutcome::Still => {}
        EdgeOutcome::Failed(reason) => gpu.state = CounterState::Failed(reason),
    }
}

/// The highest power in a trace (instantaneous where every sample has it, else the
/// averaged series), 0 for none.
fn max_trace_power_w(trace: &PowerTrace) -> f64 {
    lem_common::phases::power_points(trace)
        .iter()
        .map(|p| p.1)
        .fold(0.0, f64::max)
}

impl EnergyMeter for NvmlMeter {
    fn name(&self) -> &str {
        "nvml"
    }

    fn start(&mut self) -> Result<(), MeterError> {
        if self.started.is_some() {
            return Err(MeterError::AlreadyStarted(self.name().into()));
        }
        // Before the reads: an update they miss happened after this.
        let read_ns = self.time.now_ns() as i64;
        for gpu in &mut self.gpus {
            gpu.state = match Self::read_counter(&self.nvml, gpu.index) {
                Ok(last_mj) => CounterState::Running {
                    last_mj,
                    total_mj: 0,
                },
                Err((call, e)) if counter_missing(&e) => {
                    CounterState::Unsupported(nvml_reason(call, &e))
                }
                Err((call, e)) => CounterState::Failed(nvml_reason(call, &e)),
            };
        }
        let aligning = self.aligning();
        for gpu in &mut self.gpus {
            let period_ns = (gpu.period_ms() * 1e6) as u64;
            // The stepped clock's window starts at 0 on the caller's timeline.
            let at = if aligning { read_ns } else { 0 };
            gpu.start_edge = Some(Edge::unaligned(at, period_ns));
        }
        if aligning {
            // Start on each GPU's next counter update, so no part of a step is lost.
            let last: Vec<Option<u64>> = self.gpus.iter().map(running_value).collect();
            let outcomes = self.edge_wait().run(&*self.time, read_ns, &last, |i| {
                Self::read_counter(&self.nvml, self.gpus[i].index)
                    .map_err(|(call, e)| nvml_reason(call, &e))
            });
            for (gpu, outcome) in self.gpus.iter_mut().zip(outcomes) {
                apply_start_edge(gpu, outcome);
            }
        }
        self.window_start_ns = self.time.now_ns();
        let now = Instant::now();
        self.started = Some(now);
        self.stepped_ns = 0;
        if !self.sample_period.is_zero() && !self.gpus.is_empty() {
            let gpus = self
                .gpus
                .iter()
                .map(|g| SampledGpu {
                    index: g.index,
                    gpm_instances: g
                        .mig
                        .iter()
                        .flat_map(|m| m.slices.iter().map(|s| s.gpu_instance_id))
                        .collect(),
                })
                .collect();
            self.sampler = Some(Sampler::start(
                Arc::clone(&self.nvml),
                gpus,
                self.sample_period,
                self.clock,
                now,
            ));
        }
        Ok(())
    }

    fn poll(&mut self) {
        if self.started.is_some() {
            self.advance();
        }
    }

    fn checkpoint(&mut self) -> Vec<(String, Option<f64>)> {
        if self.started.is_none() {
            return Vec::new();
        }
        self.advance();
        self.gpus
            .iter()
            .map(|gpu| {
                let mj = match gpu.state {
                    CounterState::Running { total_mj, .. } => Some(total_mj as f64),
                    _ => None,
                };
                (gpu.device_id.clone(), mj)
            })
            .collect()
    }

    fn set_idle_power_w(&mut self, device_id: &str, power_w: f64) {
        NvmlMeter::set_idle_power_w(self, device_id, power_w);
    }

    fn set_counter_period_ms(&mut self, device_id: &str, period_ms: f64, method: &str) {
        NvmlMeter::set_counter_period_ms(self, device_id, period_ms, method);
    }

    /// See [`super::baseline`]: a settle step, then the energy between the first and
    /// the last counter update, which also measures the counter's update period. The
    /// result is kept for the MIG attribution of the next windows.
    fn idle_baselines(&mut self, duration: Duration) -> Vec<IdleBaseline> {
        let measured = self.measure_idle(duration);
        for (gpu, b) in self.gpus.iter_mut().zip(&measured) {
            if let Some(p) = &b.counter_period {
                gpu.counter_period = Some(p.clone());
            }
        }
        for b in &measured {
            if let Some(w) = b.info.power_w {
                self.idle_power.insert(b.device_id.clone(), w);
            }
        }
        measured
    }

    fn stop(&mut self) -> Vec<EnergyReading> {
        let was_started = self.started.is_some();
        let read_ns = self.time.now_ns() as i64;
        if was_started {
            self.advance();
        }
        let window_ns = match self.clock {
            SamplerClock::Real if was_started => {
                (read_ns - self.window_start_ns as i64).max(0) as u64
            }
            SamplerClock::Real => 0,
            SamplerClock::Stepped if was_started => self.stepped_ns,
            SamplerClock::Stepped => 0,
        };
        // The trace covers the job's window: stop sampling before the end-edge wait.
        let sampled = self.sampler.take().map(|s| s.stop(None));
        // End edges: on each GPU's next counter update when aligning.
        let aligning = self.aligning();
        let mut end_edges: Vec<Option<Edge>> = self
            .gpus
            .iter()
            .map(|g| {
                let at = if aligning { read_ns } else { window_ns as i64 };
                was_started.then(|| Edge::unaligned(at, (g.period_ms() * 1e6) as u64))
            })
            .collect();
        if aligning && was_started {
            let last: Vec<Option<u64>> = self.gpus.iter().map(running_value).collect();
            let outcomes = self.edge_wait().run(&*self.time, read_ns, &last, |i| {
                Self::read_counter(&self.nvml, self.gpus[i].index)
                    .map_err(|(call, e)| nvml_reason(call, &e))
            });
            for ((gpu, outcome), edge) in self.gpus.iter_mut().zip(outcomes).zip(&mut end_edges) {
                apply_end_edge(gpu, outcome, edge);
            }
        }
        let origin_ns = if aligning {
            self.window_start_ns as i64
        } else {
            0
        };
        self.started = None;
        let period_ms = self.sample_period.as_secs_f64() * 1000.0;
        let simulated = self.is_simulated();
        let driver_version = self.driver_version.clone();
        let mut readings = Vec::new();
        for (i, gpu) in self.gpus.iter_mut().enumerate() {
            let state = std::mem::replace(&mut gpu.state, CounterState::Idle);
            let start_edge = gpu.start_edge.take();
            let mut trace = sampled.as_ref().and_then(|s| s.traces.get(i).cloned());
            // The counter's own window: between its edges, which may lie up to a period
            // outside the meter's.
            let edges = match (&state, start_edge, end_edges[i]) {
                (CounterState::Running { .. }, Some(a), Some(b)) => Some((a, b)),
                _ => None,
            };
            let (gpu_window_ns, offset_ns) = match edges {
                Some((a, b)) => ((b.t_ns - a.t_ns).max(0) as u64, Some(a.t_ns - origin_ns)),
                None => (window_ns, None),
            };
            let gpm = sampled
                .as_ref()
                .and_then(|s| s.gpm_activity.get(i).cloned())
                .unwrap_or_default();
            let energy = match state {
                CounterState::Running { total_mj, .. } => {
                    let (a, b) = edges.expect("a running counter has both edges");
                    let mean_w = if gpu_window_ns > 0 {
                        total_mj as f64 * 1e6 / gpu_window_ns as f64
                    } else {
                        0.0
                    };
                    let peak_w = trace.as_ref().map_or(0.0, max_trace_power_w).max(mean_w);
                    let brackets_ms = (a.half_width_ns + b.half_width_ns) as f64 / 1e6;
                    let edge_kind = |e: &Edge| {
                        if e.aligned {
                            "on an observed update"
                        } else {
                            "placed half a counter period before the read (no update seen)"
                        }
                    };
                    GpuEnergy {
                        energy_mj: Ok(total_mj as f64),
                        source: EnergySource::NvmlCounter,
                        sample_period_ms: Some(gpu.period_ms()),
                        // The edges' time brackets at the highest power seen, plus the
                        // counter's integer mJ.
                        uncertainty: Some((
                            peak_w * brackets_ms + 1.0,
                            format!(
                                "counter edges: start {}, end {}; ± {peak_w:.1} W (peak of trace and mean) × {brackets_ms:.2} ms (half-brackets of both edges) + 1 mJ resolution",
                                edge_kind(&a),
                                edge_kind(&b)
                            ),
                        )),
                    }
                }
                CounterState::Unsupported(reason) => match trace.as_ref().and_then(trace_energy) {
                    Some((mj, basis)) => GpuEnergy {
                        energy_mj: Ok(mj),
                        source: EnergySource::NvmlPower,
                        sample_period_ms: Some(period_ms),
                        uncertainty: trace.as_ref().map(|t| {
                            (
                                trace_uncertainty_mj(t, basis),
                                format!(
                                    "trace-integral bound on {basis:?} power (docs/measurement.md)"
                                ),
                            )
                        }),
                    },
                    None => GpuEnergy {
                        energy_mj: Err(format!(
                            "{reason}; and no complete power trace to integrate instead{}",
                            trace_gap(trace.as_ref(), self.sample_period)
                        )),
                        source: EnergySource::None,
                        sample_period_ms: None,
                        uncertainty: None,
                    },
                },
                CounterState::Failed(reason) => GpuEnergy {
                    energy_mj: Err(reason),
                    source: EnergySource::None,
                    sample_period_ms: None,
                    uncertainty: None,
                },
                CounterState::Idle => GpuEnergy {
                    energy_mj: Err("meter stopped without being started".to_owned()),
                    source: EnergySource::None,
                    sample_period_ms: None,
                    uncertainty: None,
                },
            };
            let counter_ratio = match (&energy.energy_mj, energy.source, trace.as_ref()) {
                (Ok(mj), EnergySource::NvmlCounter, Some(t)) => {
                    super::checks::counter_trace_ratio(*mj, gpu_window_ns, t)
                }
                _ => None,
            };
            let base = EnergyReading {
                device_name: gpu.name.clone(),
                simulated,
                driver_version: driver_version.clone(),
                window_start_offset_ns: offset_ns,
                sample_period_method: (energy.source == EnergySource::NvmlCounter).then(|| {
                    gpu.counter_period.as_ref().map_or_else(
                        || {
                            format!(
                                "nominal {NVML_COUNTER_PERIOD_MS} ms (not measured on this device)"
                            )
                        },
                        |(_, how)| how.clone(),
                    )
                }),
                counter_trace_ratio: counter_ratio,
                ..EnergyReading::unavailable(
                    DeviceKind::Gpu,
                    gpu.device_id.clone(),
                    "",
                    gpu_window_ns,
                )
            };
            let Some(layout) = &gpu.mig else {
                readings.push(gpu_reading(base, &energy, trace));
                continue;
            };
            // MIG: which slices are in use, and their GPM activity.
            let busy: Vec<Result<bool, String>> = layout
                .slices
                .iter()
                .map(|s| {
                    if s.owned_by_job {
                        Ok(true)
                    } else {
                        Self::slice_busy_of(&self.nvml, gpu.index, s.mig_index)
                    }
                })
                .collect();
            if let Some(t) = trace.as_mut() {
                for (s, b) in layout.slices.iter().zip(&busy) {
                    if let Err(reason) = b {
                        t.unavailable
                            .insert(format!("compute_processes/{}", s.uuid), reason.clone());
                    }
                }
                for (s, a) in layout.slices.iter().zip(&gpm) {
                    if let Err(reason) = a {
                        t.unavailable
                            .insert(format!("gpm_sm_activity/{}", s.uuid), reason.clone());
                    }
                }
            }
            let inputs: Vec<SliceInput> = layout
                .slices
                .iter()
                .enumerate()
                .map(|(k, s)| SliceInput {
                    slice_id: s.uuid.clone(),
                    profile: s.profile.clone(),
                    compute_slices: s.compute_slices,
                    sm_count: s.sm_count,
                    allocated: s.owned_by_job || matches!(busy[k], Ok(true)),
                    owned_by_job: s.owned_by_job,
                    sm_activity: gpm.get(k).and_then(|a| a.as_ref().ok().copied()),
                })
                .collect();
            let idle = self.idle_power.get(&gpu.device_id).copied();
            readings.extend(mig_readings(base, layout, inputs, &energy, idle, trace));
        }
        for t in &self.missing_targets {
            let kind = if t.trim().starts_with("MIG-") {
                DeviceKind::MigSlice
            } else {
                DeviceKind::Gpu
            };
            readings.push(EnergyReading {
                simulated,
                driver_version: driver_version.clone(),
                ..EnergyReading::unavailable(
                    kind,
                    t.clone(),
                    format!("target device `{t}` matches no GPU or MIG device NVML lists"),
                    window_ns,
                )
            });
        }
        readings
    }
}

impl NvmlMeter {
    fn slice_busy_of(nvml: &Nvml, index: u32, mig_index: u32) -> Result<bool, String> {
        let parent = nvml
            .device_by_index(index)
            .map_err(|e| nvml_reason("nvmlDeviceGetHandleByIndex_v2", &e))?;
        let mig = parent
            .mig_device_by_index(mig_index)
            .map_err(|e| nvml_reason("nvmlDeviceGetMigDeviceHandleByIndex", &e))?;
        mig.running_compute_processes_count()
            .map(|n| n > 0)
            .map_err(|e| nvml_reason("nvmlDeviceGetComputeRunningProcesses_v3", &e))
    }

    /// Settles and measures each GPU's idle power on its counter (see
    /// [`super::baseline`]); a GPU without a working counter gets no baseline.
    fn measure_idle(&mut self, duration: Duration) -> Vec<IdleBaseline> {
        let periods: Vec<f64> = self.gpus.iter().map(MeteredGpu::period_ms).collect();
        let nvml = &self.nvml;
        let indices: Vec<u32> = self.gpus.iter().map(|g| g.index).collect();
        let measured = super::baseline::measure(&*self.time, &periods, duration, |i| {
            Self::read_counter(nvml, indices[i]).map_err(|(call, e)| nvml_reason(call, &e))
        });
        self.gpus
            .iter()
            .zip(measured)
            .map(|(gpu, m)| {
                let (power_w, unavailable_reason) = match m.power_w {
                    Ok(w) => (Some(w), None),
                    Err(why) => (None, Some(why)),
                };
                IdleBaseline {
                    device_id: gpu.device_id.clone(),
                    info: BaselineInfo {
                        power_w,
                        unavailable_reason,
                        method: format!(
                            "counter-changes: energy between the first and last counter update after settling, polled every {} ms",
                            m.poll.as_millis()
                        ),
                        measured_ns: m.measured_ns,
                        settle_ns: Some(m.settle_ns),
                        settled: Some(m.settled),
                        spread_w: m.spread_w,
                        age_ns: 0,
                        note: None,
                    },
                    counter_period: m.period_ms.map(|ms| {
                        let poll_ms = m.poll.as_secs_f64() * 1000.0;
                        if ms < 2.0 * poll_ms {
                            // Updates on (nearly) every poll: only a bound is known.
                            (
                                poll_ms,
                                format!(
                                    "measured upper bound: the counter updated on (nearly) every {poll_ms:.0} ms poll of the idle baseline"
                                ),
                            )
                        } else {
                            (
                                ms,
                                format!(
                                    "measured: mean interval between counter updates over the idle baseline (each timed to ±{:.1} ms)",
                                    poll_ms / 2.0
                                ),
                            )
                        }
                    }),
                }
            })
            .collect()
    }

    /// How long an edge waits for the counter to move: two of the slowest periods.
    fn edge_wait(&self) -> EdgeWait {
        // At least 1 ms, so a GPU-less meter still polls once.
        let longest = self
            .gpus
            .iter()
            .map(MeteredGpu::period_ms)
            .fold(1.0, f64::max);
        EdgeWait {
            poll: EDGE_POLL,
            bound: Duration::from_secs_f64(2.0 * longest / 1000.0) + 2 * EDGE_POLL,
        }
    }
}

/// Why a trace could not give the energy, for the reason text.
fn trace_gap(trace: Option<&PowerTrace>, period: Duration) -> String {
    let Some(t) = trace else {
        return if period.is_zero() {
            " (the sampler is off)".to_owned()
        } else {
            String::new()
        };
    };
    let why: Vec<String> = ["power_instant_w", "power_avg_w", "trace"]
        .iter()
        .filter_map(|k| t.unavailable.get(*k).map(|v| format!("{k}: {v}")))
        .collect();
    if why.is_empty() {
        format!(" ({} samples)", t.samples.len())
    } else {
        format!(" ({})", why.join("; "))
    }
}

/// The reading of a GPU not in MIG mode: `base` carries its identity and window.
fn gpu_reading(
    base: EnergyReading,
    energy: &GpuEnergy,
    trace: Option<PowerTrace>,
) -> EnergyReading {
    match &energy.energy_mj {
        Ok(mj) => EnergyReading {
            source: energy.source,
            energy_mj: Some(*mj),
            unavailable_reason: None,
            sample_period_ms: energy.sample_period_ms,
            uncertainty_mj: energy.uncertainty.as_ref().map(|u| u.0),
            uncertainty_method: energy.uncertainty.as_ref().map(|u| u.1.clone()),
            trace,
            ..base
        },
        Err(reason) => EnergyReading {
            unavailable_reason: Some(reason.clone()),
            sample_period_method: None,
            trace,
            ..base
        },
    }
}

/// The readings of a GPU in MIG mode: the parent with the attribution when the job holds
/// every slice (exclusive), else one reading per job slice with its attributed share.
fn mig_readings(
    base: EnergyReading,
    layout: &MigLayout,
    inputs: Vec<SliceInput>,
    energy: &GpuEnergy,
    idle_power_w: Option<f64>,
    trace: Option<PowerTrace>,
) -> Vec<EnergyReading> {
    let owned: Vec<SliceInput> = inputs.iter().filter(|s| s.owned_by_job).cloned().collect();
    let parent_is_the_unit = owned.is_empty()
        || layout.whole_gpu
        || mode_for(&inputs, layout.total_compute_slices) == MigMode::Exclusive;
    let slice_base = |s: &SliceInput| EnergyReading {
        device_kind: DeviceKind::MigSlice,
        device_id: s.slice_id.clone(),
        device_name: format!("{} MIG {}", base.device_name, s.profile),
        trace: trace.clone(),
        ..base.clone()
    };
    let failed = |reason: String| -> Vec<EnergyReading> {
        if parent_is_the_unit {
            return vec![EnergyReading {
                unavailable_reason: Some(reason),
                trace: trace.clone(),
                ..base.clone()
            }];
        }
        owned
            .iter()
            .map(|s| EnergyReading {
                unavailable_reason: Some(format!("MIG parent {}: {reason}", base.device_id)),
                ..slice_base(s)
            })
            .collect()
    };
    if let Some(reason) = &layout.broken {
        return failed(format!("MIG layout unknown: {reason}"));
    }
    let parent_mj = match &energy.energy_mj {
        Ok(mj) => *mj,
        Err(reason) => return failed(reason.clone()),
    };
    let mut attribution = match attribute(
        &base.device_id,
        parent_mj.round().max(0.0) as u64,
        idle_power_w,
        base.window_ns,
        layout.total_compute_slices,
        inputs,
    ) {
        Ok(a) => a,
        Err(e) => return failed(format!("MIG attribution impossible: {e}")),
    };
    attribution
        .total_compute_slices_assumed
        .clone_from(&layout.slices_assumed);
    // A job given the whole GPU holds its free capacity too, so no one else can run
    // there: exclusive, even when the slices do not fill the GPU.
    if layout.whole_gpu {
        attribution.mode = MigMode::Exclusive;
    }
    let measured = |r: EnergyReading, mj: f64| EnergyReading {
        source: energy.source,
        energy_mj: Some(mj),
        unavailable_reason: None,
        sample_period_ms: energy.sample_period_ms,
        // A share carries the parent's uncertainty in proportion; the attribution
        // model's own error is not in it.
        uncertainty_mj: energy.uncertainty.as_ref().map(|u| {
            if parent_mj > 0.0 {
                u.0 * mj / parent_mj
            } else {
                u.0
            }
        }),
        uncertainty_method: energy.uncertainty.as_ref().map(|u| {
            if mj == parent_mj {
                u.1.clone()
            } else {
                format!("the parent's, × this share of its energy ({})", u.1)
            }
        }),
        mig: Some(attribution.clone()),
        ..r
    };
    if attribution.mode == MigMode::Exclusive || owned.is_empty() {
        let parent = EnergyReading {
            trace: trace.clone(),
            ..base.clone()
        };
        return vec![measured(parent, parent_mj)];
    }
    attribution
        .slices
        .iter()
        .zip(&attribution.shares)
        .filter(|(s, _)| s.owned_by_job)
        .map(|(s, share)| {
            let mut r = measured(slice_base(s), share.energy_mj as f64);
            // The slice's idle power is its compute-slice share of the parent's, so its
            // net energy is its dynamic share.
            if let Some(w) = idle_power_w {
                let frac = f64::from(s.compute_slices) / f64::from(layout.total_compute_slices);
                r.apply_baseline(w * frac);
            }
            r
        })
        .collect()
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
    fn profile_names_match_nvidias_for_real_instance_sizes() {
        let mib = |m: u64| m << 20;
        // A100 40GB, A100 80GB and H100 80GB instance memory as nvidia-smi lists it.
        assert_eq!(profile_name(1, mib(4_864)), "1g.5gb");
        assert_eq!(profile_name(2, mib(9_856)), "2g.10gb");
        assert_eq!(profile_name(3, mib(19_968)), "3g.20gb");
        assert_eq!(profile_name(7, mib(40_192)), "7g.40gb");
        assert_eq!(profile_name(3, mib(40_192)), "3g.40gb");
        assert_eq!(profile_name(7, mib(80_896)), "7g.80gb");
        assert_eq!(profile_name(1, mib(9_984)), "1g.10gb");
        // Off the nominal list: GiB rounded up.
        assert_eq!(profile_name(2, mib(30_000)), "2g.30gb");
    }

    #[test]
    fn explicit_path_wins_over_env() {
        let p = resolve_lib_path(Some(Path::new("/a.so")));
        assert_eq!(p.as_deref(), Some(Path::new("/a.so")));
    }
}
