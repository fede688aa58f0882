//! A fake `libnvidia-ml.so` for tests: exports the NVML C functions lem calls, driven by
//! a JSON scenario instead of hardware.
//!
//! Built as `libnvidia_ml.so` (cdylib). nvml-wrapper looks every symbol up when it loads
//! the library but only fails when a *missing* symbol is called, so only the functions
//! lem uses are exported (plus `nvmlShutdown`, which nvml-wrapper calls on drop). Calls
//! this fake does not know are not stubbed: they fail in nvml-wrapper as "symbol not
//! found", which is what lem would see with an old driver.
//!
//! # Scenario
//! Read at the first `nvmlInit_v2` from the file named by `FAKE_NVML_SCENARIO`, or from
//! the path given earlier to [`fakeNvmlSetScenario`]:
//!
//! ```json
//! { "driver_version": "550.54.15", "step_ms": 100, "time_scale": 1.0,
//!   "counter_phase_seed": 7,
//!   "fail": { "nvmlSystemGetDriverVersion": "NOT_SUPPORTED" },
//!   "gpus": [ { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-...",
//!               "memory_total_bytes": 85899345920, "memory_used_bytes": 0,
//!               "power_limit_mw": 700000, "mig_mode": 0, "sm_count": 132,
//!               "power": [[0.0, 60.0], [1.0, 250.0]], "architecture": "hopper",
//!               "power_average_window_s": 1.0,
//!               "temperature_c": [[0.0, 35]], "sm_clock_mhz": [[0.0, 1980]],
//!               "throttle_reasons": [[0.0, 0], [5.0, 4]],
//!               "energy_start_mj": 0, "counter_reset_at_s": null, "lost_at_s": null,
//!               "fail": { "nvmlDeviceGetTotalEnergyConsumption": "NOT_SUPPORTED",
//!                         "NVML_FI_DEV_POWER_INSTANT": "NOT_SUPPORTED" },
//!               "mig_total_slices": 7,
//!               "mig_instances": [ { "profile": "3g.20gb", "uuid": "MIG-...",
//!                   "gpu_instance_id": 2, "compute_instance_id": 0, "slices": 3,
//!                   "sm_count": 42, "memory_total_bytes": 20937965568,
//!                   "allocated": true, "sm_activity": [[0.0, 0.8]],
//!                   "fail": { "nvmlGpmMigSampleGet": "NOT_SUPPORTED" } } ] } ] }
//! ```
//!
//! Every field but `gpus`, and per GPU `name` and `uuid`, may be left out.
//!
//! * `power`: piecewise-constant watts, `[from_s, watts]` sorted by time, 0 W before the
//!   first point. Time is virtual seconds since the first `nvmlInit_v2`.
//! * `nvmlDeviceGetPowerUsage` returns the mean of `power` over the trailing
//!   `power_average_window_s` (0 = the instant value). Its default follows the GPU's
//!   `architecture` (or, absent, its name): NVML documents the call as instantaneous on
//!   GA100 and older (`ampere`, `volta`, `turing`: 0) and as a 1 s average on newer parts
//!   (`hopper`, `blackwell`: 1 s). `nvmlDeviceGetFieldValues` gives `NVML_FI_DEV_POWER_INSTANT` (186, the trace
//!   value) and `NVML_FI_DEV_POWER_AVERAGE` (185, the trailing mean) in mW; naming either
//!   field in `fail` makes that field alone fail.
//! * The energy counter (mJ) advances in steps of `step_ms` (default 100, like real
//!   hardware): at virtual time `t` it reads `energy_start_mj + floor(∫₀^q P dt)` with
//!   `q = φ + floor((t − φ) / step) · step` (clamped at 0), `φ` the GPU's grid phase: 0,
//!   or with `counter_phase_seed` a pseudo-random phase in `[0, step)` per GPU
//!   (SplitMix64 of seed + GPU index, in µs), so the grid does not line up with a reader's
//!   first read. After `counter_reset_at_s` (rounded down to a step) it restarts from 0:
//!   `floor(∫_r^q P dt)`. `counter_scale` (default 1) multiplies what the counter adds,
//!   for a counter that disagrees with the power readings.
//! * `temperature_c`, `sm_clock_mhz` (graphics and SM clocks), `throttle_reasons`
//!   (clock-event reason bits): piecewise-constant like `power`. A trace left out makes its
//!   call NOT_SUPPORTED.
//! * `mig_instances` (listed only when `mig_mode` is 1): MIG devices in index order.
//!   `nvmlDeviceGetMaxMigDeviceCount` returns `mig_total_slices` (like NVML: the most
//!   there could be; indices past the list are NOT_FOUND). A MIG handle answers UUID, name,
//!   memory, `nvmlDeviceGetAttributes_v2` (SMs, slices, memory), GPU/compute instance ids,
//!   its parent, and `nvmlDeviceGetComputeRunningProcesses_v3` (one process when
//!   `allocated`); power, energy and sensors on it are NOT_SUPPORTED, as on hardware.
//! * GPM: `nvmlGpmMigSampleGet` on the parent for a GPU instance with an `sm_activity`
//!   trace (fraction 0..=1); `nvmlGpmMetricsGet` gives `SM_UTIL` (percent) as the trace's
//!   mean between the two samples. A slice without `sm_activity` is NOT_SUPPORTED.
//! * After `lost_at_s` every call on that GPU (and its MIG devices) returns
//!   `NVML_ERROR_GPU_IS_LOST`.
//! * `fail`: per-function error names (`NOT_SUPPORTED`, `NO_PERMISSION`, `GPU_IS_LOST`,
//!   `UNKNOWN`, …), global, per GPU or per MIG instance.
//! * Virtual time = real time since init × `time_scale` (default 1) + milliseconds added
//!   with [`fakeNvmlAdvanceMs`]. Tests use `time_scale: 0` and advance the clock by hand, so
//!   a 20 s window takes no real time.
//!
//! `nvmlSystemGetDriverVersion` returns `fake-nvml-<driver_version>`, and the library
//! exports `lem_fake_nvml_marker`, so lem can tell a simulated node from real hardware
//! even when the driver-version call is made to fail.
//!
//! # Unsafe
//! Only at the FFI boundary: writing results through the caller's out-pointers and
//! reading the C string given to [`fakeNvmlSetScenario`]. Every pointer is checked for
//! null first; buffer lengths passed by the caller are respected.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_uint, c_ulonglong, c_void, CStr};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

type NvmlReturn = c_uint;
type NvmlDevice = *mut c_void;

const SUCCESS: NvmlReturn = 0;
const ERROR_UNINITIALIZED: NvmlReturn = 1;
const ERROR_INVALID_ARGUMENT: NvmlReturn = 2;
const ERROR_NOT_SUPPORTED: NvmlReturn = 3;
const ERROR_INSUFFICIENT_SIZE: NvmlReturn = 7;
const ERROR_DRIVER_NOT_LOADED: NvmlReturn = 9;
const ERROR_GPU_IS_LOST: NvmlReturn = 15;
const ERROR_ARGUMENT_VERSION_MISMATCH: NvmlReturn = 25;
const ERROR_UNKNOWN: NvmlReturn = 999;

/// NVML error names a scenario may use, with their codes (nvml.h `nvmlReturn_t`).
const ERRORS: &[(&str, NvmlReturn, &CStr)] = &[
    ("UNINITIALIZED", 1, c"Uninitialized"),
    ("INVALID_ARGUMENT", 2, c"Invalid Argument"),
    ("NOT_SUPPORTED", 3, c"Not Supported"),
    ("NO_PERMISSION", 4, c"Insufficient Permissions"),
    ("NOT_FOUND", 6, c"Not Found"),
    ("INSUFFICIENT_SIZE", 7, c"Insufficient Size"),
    ("DRIVER_NOT_LOADED", 9, c"Driver Not Loaded"),
    ("TIMEOUT", 10, c"Timeout"),
    ("GPU_IS_LOST", 15, c"GPU is lost"),
    ("NO_DATA", 21, c"No data"),
    (
        "ARGUMENT_VERSION_MISMATCH",
        25,
        c"Argument version mismatch",
    ),
    ("UNKNOWN", 999, c"Unknown Error"),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(default = "default_driver")]
    driver_version: String,
    #[serde(default = "default_step_ms")]
    step_ms: u64,
    #[serde(default = "default_time_scale")]
    time_scale: f64,
    /// Seed of each GPU's counter-grid phase (see the module docs); absent: the grid starts
    /// at t = 0 on every GPU.
    #[serde(default)]
    counter_phase_seed: Option<u64>,
    #[serde(default)]
    fail: BTreeMap<String, String>,
    gpus: Vec<Gpu>,
}

fn default_driver() -> String {
    "550.54.15".into()
}
fn default_step_ms() -> u64 {
    100
}
fn default_time_scale() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gpu {
    name: String,
    uuid: String,
    #[serde(default)]
    memory_total_bytes: u64,
    #[serde(default)]
    memory_used_bytes: u64,
    #[serde(default)]
    power_limit_mw: u32,
    /// 0 = MIG disabled, 1 = enabled (current; pending is the same).
    #[serde(default)]
    mig_mode: u32,
    /// `[from_s, watts]`, sorted by time.
    #[serde(default)]
    power: Vec<(f64, f64)>,
    #[serde(default)]
    energy_start_mj: u64,
    /// Factor on what the energy counter adds (1 = true): a miscalibrated counter that
    /// disagrees with the power readings.
    #[serde(default = "default_counter_scale")]
    counter_scale: f64,
    #[serde(default)]
    counter_reset_at_s: Option<f64>,
    #[serde(default)]
    lost_at_s: Option<f64>,
    #[serde(default)]
    fail: BTreeMap<String, String>,
    /// `ampere` (and older: `volta`, `turing`) or `hopper` (and newer: `blackwell`); absent:
    /// taken from the name (A100/A30/A10/V100/T4 are Ampere or older, anything else Hopper).
    #[serde(default)]
    architecture: Option<String>,
    /// Length of the trailing average `nvmlDeviceGetPowerUsage` reports; absent: by
    /// architecture (0 = instantaneous up to Ampere, 1 s from Hopper on).
    #[serde(default)]
    power_average_window_s: Option<f64>,
    /// `[from_s, °C]`; absent: `nvmlDeviceGetTemperature` is NOT_SUPPORTED.
    #[serde(default)]
    temperature_c: Option<Vec<(f64, f64)>>,
    /// `[from_s, MHz]`; absent: `nvmlDeviceGetClockInfo` is NOT_SUPPORTED.
    #[serde(default)]
    sm_clock_mhz: Option<Vec<(f64, f64)>>,
    /// `[from_s, bits]`; absent: the clock-event reasons call is NOT_SUPPORTED.
    #[serde(default)]
    throttle_reasons: Option<Vec<(f64, f64)>>,
    /// SMs of the whole GPU (`nvmlDeviceGetAttributes_v2`).
    #[serde(default)]
    sm_count: u32,
    /// Compute slices of the whole GPU in MIG mode (7 on A100/H100).
    #[serde(default = "default_mig_slices")]
    mig_total_slices: u32,
    /// MIG devices, in NVML's MIG index order (only listed when `mig_mode` is 1).
    #[serde(default)]
    mig_instances: Vec<MigInstance>,
}

fn default_counter_scale() -> f64 {
    1.0
}

/// Whether `nvmlDeviceGetPowerUsage` averages over 1 s on this architecture: NVML documents
/// it as instantaneous on GA100 and older, a 1 s average on newer parts.
fn averages_power(architecture: &str) -> bool {
    !matches!(
        architecture.to_ascii_lowercase().as_str(),
        "ampere" | "volta" | "turing" | "pascal"
    )
}

/// The architecture a GPU name implies, for scenarios that do not say.
fn architecture_from_name(name: &str) -> &'static str {
    const OLDER: &[&str] = &["A100", "A30", "A10", "A40", "V100", "T4"];
    if OLDER.iter().any(|m| name.contains(m)) {
        "ampere"
    } else {
        "hopper"
    }
}

/// SplitMix64, so a seed gives the same phases on every platform.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
fn default_mig_slices() -> u32 {
    7
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigInstance {
    /// Informational (NVML reports a profile id, not a name).
    #[serde(default)]
    profile: Option<String>,
    uuid: String,
    gpu_instance_id: u32,
    #[serde(default)]
    compute_instance_id: u32,
    /// Compute (GPU-instance) slices: 3 for `3g.20gb`.
    slices: u32,
    sm_count: u32,
    memory_total_bytes: u64,
    /// Whether a compute process runs on the slice.
    #[serde(default)]
    allocated: bool,
    /// GPM SM activity, `[from_s, 0..=1]`; absent: GPM NOT_SUPPORTED for this slice.
    #[serde(default)]
    sm_activity: Option<Vec<(f64, f64)>>,
    #[serde(default)]
    fail: BTreeMap<String, String>,
}

/// Value of a piecewise-constant trace at `t` (0 before the first point).
fn step_at(trace: &[(f64, f64)], t: f64) -> f64 {
    trace
        .iter()
        .take_while(|&&(from, _)| from <= t)
        .last()
        .map_or(0.0, |&(_, v)| v)
}

/// ∫₀^t of a piecewise-constant trace (t in seconds; 0 before the first point).
fn step_integral(trace: &[(f64, f64)], t: f64) -> f64 {
    let mut sum = 0.0;
    for (i, &(from, v)) in trace.iter().enumerate() {
        if from >= t {
            break;
        }
        let to = trace.get(i + 1).map_or(t, |&(next, _)| next.min(t));
        sum += v * (to - from);
    }
    sum
}

impl Gpu {
    /// ∫₀^t P dt in mJ (t in seconds).
    fn integral_mj(&self, t: f64) -> f64 {
        step_integral(&self.power, t) * 1000.0
    }

    /// Power in watts at `t` seconds.
    fn power_at(&self, t: f64) -> f64 {
        step_at(&self.power, t)
    }

    /// Length of the trailing mean `nvmlDeviceGetPowerUsage` reports (0 = instantaneous).
    fn average_window_s(&self) -> f64 {
        self.power_average_window_s.unwrap_or_else(|| {
            let arch = self
                .architecture
                .clone()
                .unwrap_or_else(|| architecture_from_name(&self.name).to_owned());
            if averages_power(&arch) {
                1.0
            } else {
                0.0
            }
        })
    }

    /// What `nvmlDeviceGetPowerUsage` reports at `t`: the instant value, or the mean over
    /// the trailing averaging window (the time before 0 counts as 0 W).
    fn power_avg_at(&self, t: f64) -> f64 {
        let w = self.average_window_s();
        if w <= 0.0 {
            return self.power_at(t);
        }
        (self.integral_mj(t) - self.integral_mj((t - w).max(0.0))) / 1000.0 / w
    }
}

struct State {
    scenario: Option<Scenario>,
    scenario_path: Option<String>,
    init_count: u32,
    epoch: Option<Instant>,
    advanced_ms: u64,
    /// Live GPM samples by handle id.
    gpm: BTreeMap<usize, GpmData>,
    gpm_next: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    scenario: None,
    scenario_path: None,
    init_count: 0,
    epoch: None,
    advanced_ms: 0,
    gpm: BTreeMap::new(),
    gpm_next: 0,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// Virtual milliseconds since the first init.
    fn now_ms(&self, scale: f64) -> f64 {
        let real = self
            .epoch
            .map_or(0.0, |e| e.elapsed().as_secs_f64() * 1000.0);
        self.advanced_ms as f64 + real * scale
    }
}

fn error_code(name: &str) -> NvmlReturn {
    ERRORS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(ERROR_UNKNOWN, |(_, code, _)| *code)
}

/// A configured failure of `func`, globally.
fn global_failure(scenario: &Scenario, func: &str) -> Option<NvmlReturn> {
    scenario.fail.get(func).map(|e| error_code(e))
}

/// Runs `f` on an initialised scenario, unless `func` is configured to fail.
fn with_scenario(func: &str, f: impl FnOnce(&Scenario, f64) -> NvmlReturn) -> NvmlReturn {
    let st = state();
    let Some(scenario) = st.scenario.as_ref().filter(|_| st.init_count > 0) else {
        return ERROR_UNINITIALIZED;
    };
    if let Some(code) = global_failure(scenario, func) {
        return code;
    }
    let now_s = st.now_ms(scenario.time_scale) / 1000.0;
    f(scenario, now_s)
}

/// Handles encode indices, never addresses: the low 16 bits are the GPU index + 1, the
/// bits above the MIG index + 1 (0 for the physical GPU). They are never dereferenced.
fn gpu_handle(index: usize) -> NvmlDevice {
    index.saturating_add(1) as NvmlDevice
}

fn mig_handle(gpu: usize, mig: usize) -> NvmlDevice {
    (gpu.saturating_add(1) | (mig.saturating_add(1) << 16)) as NvmlDevice
}

/// The GPU index and, for a MIG handle, the MIG index behind `device`.
fn decode(device: NvmlDevice) -> Option<(usize, Option<usize>)> {
    let raw = device as usize;
    let gpu = (raw & 0xffff).checked_sub(1)?;
    let mig = (raw >> 16).checked_sub(1);
    Some((gpu, mig))
}

/// Runs `f` on the GPU or MIG device behind `device`, applying configured failures (the
/// GPU's, then the MIG device's) and GPU loss (a lost GPU takes its MIG devices along).
fn with_device(
    func: &str,
    device: NvmlDevice,
    f: impl FnOnce(&Scenario, &Gpu, Option<&MigInstance>, f64) -> NvmlReturn,
) -> NvmlReturn {
    with_scenario(func, |scenario, now_s| {
        let Some((gi, mi)) = decode(device) else {
            return ERROR_INVALID_ARGUMENT;
        };
        let Some(gpu) = scenario.gpus.get(gi) else {
            return ERROR_INVALID_ARGUMENT;
        };
        let mig = match mi {
            None => None,
            Some(m) => match gpu.mig_instances.get(m).filter(|_| gpu.mig_mode == 1) {
                Some(inst) => Some(inst),
                None => return ERROR_INVALID_ARGUMENT,
            },
        };
        if gpu.lost_at_s.is_some_and(|lost| now_s >= lost) {
            return ERROR_GPU_IS_LOST;
        }
        if let Some(e) = gpu.fail.get(func) {
            return error_code(e);
        }
        if let Some(e) = mig.and_then(|m| m.fail.get(func)) {
            return error_code(e);
        }
        f(scenario, gpu, mig, now_s)
    })
}

/// Runs `f` on the physical GPU behind `device`; a MIG handle is NOT_SUPPORTED, as on
/// real hardware for power, energy and sensors.
fn with_gpu(
    func: &str,
    device: NvmlDevice,
    f: impl FnOnce(&Scenario, &Gpu, f64) -> NvmlReturn,
) -> NvmlReturn {
    with_device(func, device, |s, g, mig, now_s| match mig {
        Some(_) => ERROR_NOT_SUPPORTED,
        None => f(s, g, now_s),
    })
}

/// Writes `value` through `ptr`.
///
/// # Safety
/// `ptr` must be null or valid for a write of `T`.
unsafe fn put<T>(ptr: *mut T, value: T) -> NvmlReturn {
    if ptr.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null, and valid for writes per the caller's contract.
    unsafe { ptr.write(value) };
    SUCCESS
}

/// Copies `s` and a NUL into the caller's buffer of `len` bytes.
///
/// # Safety
/// `buf` must be null or valid for writes of `len` bytes.
unsafe fn put_str(buf: *mut c_char, len: c_uint, s: &str) -> NvmlReturn {
    if buf.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    let bytes = s.as_bytes();
    if bytes.len() + 1 > len as usize {
        return ERROR_INSUFFICIENT_SIZE;
    }
    // SAFETY: bytes.len() + 1 <= len, and buf is valid for len bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
        buf.add(bytes.len()).write(0);
    }
    SUCCESS
}

fn load_scenario(st: &mut State) -> NvmlReturn {
    let path = st
        .scenario_path
        .clone()
        .or_else(|| std::env::var("FAKE_NVML_SCENARIO").ok());
    let Some(path) = path else {
        eprintln!("fake-nvml: no scenario (set FAKE_NVML_SCENARIO)");
        return ERROR_DRIVER_NOT_LOADED;
    };
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<Scenario>(&text).map_err(|e| e.to_string()));
    match parsed {
        Ok(s) if s.step_ms == 0 => {
            eprintln!("fake-nvml: {path}: step_ms must be > 0");
            ERROR_UNKNOWN
        }
        Ok(s) => {
            st.scenario = Some(s);
            SUCCESS
        }
        Err(e) => {
            eprintln!("fake-nvml: cannot load scenario {path}: {e}");
            ERROR_UNKNOWN
        }
    }
}

// ---- test controls (not NVML) ----

/// Marker: lem probes for this symbol and labels every reading from a library that
/// exports it `simulated`, whatever its driver version says.
#[no_mangle]
pub extern "C" fn lem_fake_nvml_marker() -> c_uint {
    1
}

/// Test control: read the scenario from `path` (a C string) at the next init, instead of
/// `FAKE_NVML_SCENARIO`. Returns 0, or 2 for an invalid argument.
///
/// # Safety
/// `path` must be null or a valid NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fakeNvmlSetScenario(path: *const c_char) -> NvmlReturn {
    if path.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null, NUL-terminated per the caller's contract.
    let Ok(path) = unsafe { CStr::from_ptr(path) }.to_str() else {
        return ERROR_INVALID_ARGUMENT;
    };
    let mut st = state();
    st.scenario_path = Some(path.to_owned());
    st.scenario = None;
    SUCCESS
}

/// Test control: advance the virtual clock by `ms` milliseconds.
#[no_mangle]
pub extern "C" fn fakeNvmlAdvanceMs(ms: c_ulonglong) {
    let mut st = state();
    st.advanced_ms = st.advanced_ms.saturating_add(ms);
}

// ---- NVML ----

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    let mut st = state();
    if st.scenario.is_none() {
        let rc = load_scenario(&mut st);
        if rc != SUCCESS {
            return rc;
        }
    }
    if let Some(code) = st
        .scenario
        .as_ref()
        .and_then(|s| global_failure(s, "nvmlInit_v2"))
    {
        return code;
    }
    st.init_count += 1;
    if st.epoch.is_none() {
        st.epoch = Some(Instant::now());
    }
    SUCCESS
}

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    nvmlInit_v2()
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    let mut st = state();
    if st.init_count == 0 {
        return ERROR_UNINITIALIZED;
    }
    st.init_count -= 1;
    SUCCESS
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: NvmlReturn) -> *const c_char {
    if result == SUCCESS {
        return c"Success".as_ptr();
    }
    ERRORS
        .iter()
        .find(|(_, code, _)| *code == result)
        .map_or(c"Unknown Error".as_ptr(), |(_, _, msg)| msg.as_ptr())
}

/// # Safety
/// `version` must be null or valid for writes of `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller contract.
    with_scenario("nvmlSystemGetDriverVersion", |s, _| unsafe {
        // The prefix lets lem label readings from this library as simulated.
        put_str(version, length, &format!("fake-nvml-{}", s.driver_version))
    })
}

/// # Safety
/// `count` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    with_scenario("nvmlDeviceGetCount_v2", |s, _| {
        let n = c_uint::try_from(s.gpus.len()).unwrap_or(c_uint::MAX);
        // SAFETY: forwarded caller contract.
        unsafe { put(count, n) }
    })
}

/// # Safety
/// `device` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    let handle = gpu_handle(index as usize);
    with_gpu("nvmlDeviceGetHandleByIndex_v2", handle, |_, _, _| {
        // SAFETY: forwarded caller contract.
        unsafe { put(device, handle) }
    })
}

/// # Safety
/// `index` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: NvmlDevice, index: *mut c_uint) -> NvmlReturn {
    with_gpu("nvmlDeviceGetIndex", device, |_, _, _| {
        let i = decode(device).map_or(0, |(g, _)| g);
        // SAFETY: forwarded caller contract.
        unsafe { put(index, i as c_uint) }
    })
}

/// # Safety
/// `name` must be null or valid for writes of `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: NvmlDevice,
    name: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller contract.
    with_device("nvmlDeviceGetName", device, |_, g, mig, _| unsafe {
        match mig {
            // Real NVML names a MIG device after its parent and profile.
            Some(m) => put_str(
                name,
                length,
                &format!("{} MIG {}", g.name, m.profile.as_deref().unwrap_or("?")),
            ),
            None => put_str(name, length, &g.name),
        }
    })
}

/// # Safety
/// `uuid` must be null or valid for writes of `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: NvmlDevice,
    uuid: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded caller contract.
    with_device("nvmlDeviceGetUUID", device, |_, g, mig, _| unsafe {
        put_str(uuid, length, mig.map_or(&g.uuid, |m| &m.uuid))
    })
}

/// nvml.h `nvmlMemory_v2_t`.
#[repr(C)]
pub struct NvmlMemoryV2 {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// # Safety
/// `memory` must be null or valid for reads and writes of an `nvmlMemory_v2_t`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: NvmlDevice,
    memory: *mut NvmlMemoryV2,
) -> NvmlReturn {
    with_device("nvmlDeviceGetMemoryInfo_v2", device, |_, g, mig, _| {
        if memory.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // NVML_STRUCT_VERSION(Memory, 2)
        let expected = (std::mem::size_of::<NvmlMemoryV2>() | (2 << 24)) as c_uint;
        // SAFETY: non-null and valid per the caller's contract.
        if unsafe { (*memory).version } != expected {
            return ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        let total = mig.map_or(g.memory_total_bytes, |m| m.memory_total_bytes);
        let used = if mig.is_some() {
            0
        } else {
            g.memory_used_bytes.min(total)
        };
        let value = NvmlMemoryV2 {
            version: expected,
            total,
            reserved: 0,
            free: total - used,
            used,
        };
        // SAFETY: as above.
        unsafe { put(memory, value) }
    })
}

/// # Safety
/// `limit` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: NvmlDevice,
    limit: *mut c_uint,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetPowerManagementLimit", device, |_, g, _| {
        // SAFETY: forwarded caller contract.
        unsafe { put(limit, g.power_limit_mw) }
    })
}

/// # Safety
/// `power` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: NvmlDevice,
    power: *mut c_uint,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetPowerUsage", device, |_, g, now_s| {
        // Hopper and newer: the mean over the trailing second; Ampere and older: instant.
        let mw = (g.power_avg_at(now_s) * 1000.0).round().max(0.0) as c_uint;
        // SAFETY: forwarded caller contract.
        unsafe { put(power, mw) }
    })
}

/// # Safety
/// `energy` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: NvmlDevice,
    energy: *mut c_ulonglong,
) -> NvmlReturn {
    with_gpu(
        "nvmlDeviceGetTotalEnergyConsumption",
        device,
        |s, g, now_s| {
            // Quantise in integer microseconds so step boundaries are exact (0.3 s / 0.1 s
            // is not 3); the grid is shifted by this GPU's phase.
            let step_us = s.step_ms.saturating_mul(1000) as i64;
            let index = s.gpus.iter().position(|x| std::ptr::eq(x, g)).unwrap_or(0);
            let phase_us = s.counter_phase_seed.map_or(0, |seed| {
                (splitmix64(seed.wrapping_add(index as u64)) % step_us as u64) as i64
            });
            let quantise_s = |t_s: f64| {
                let t_us = (t_s * 1e6).round() as i64;
                let k = (t_us - phase_us).div_euclid(step_us);
                (k * step_us + phase_us).max(0) as f64 / 1e6
            };
            let q = quantise_s(now_s);
            let k = g.counter_scale;
            let value = match g.counter_reset_at_s.map(quantise_s) {
                Some(r) if q >= r => (k * (g.integral_mj(q) - g.integral_mj(r))).floor() as u64,
                _ => g.energy_start_mj + (k * g.integral_mj(q)).floor() as u64,
            };
            // SAFETY: forwarded caller contract.
            unsafe { put(energy, value) }
        },
    )
}

/// # Safety
/// `current` and `pending` must be null or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: NvmlDevice,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetMigMode", device, |_, g, _| {
        if current.is_null() || pending.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: both non-null, valid per the caller's contract.
        unsafe {
            put(current, g.mig_mode);
            put(pending, g.mig_mode)
        }
    })
}

// ---- sensors ----

/// nvml.h `nvmlFieldValue_t`; `value` holds the union's bytes.
#[repr(C)]
pub struct NvmlFieldValue {
    pub field_id: c_uint,
    pub scope_id: c_uint,
    pub timestamp: i64,
    pub latency_usec: i64,
    pub value_type: c_uint,
    pub nvml_return: NvmlReturn,
    pub value: u64,
}

const FI_DEV_POWER_AVERAGE: c_uint = 185;
const FI_DEV_POWER_INSTANT: c_uint = 186;
/// `NVML_VALUE_TYPE_UNSIGNED_INT`.
const VALUE_TYPE_UNSIGNED_INT: c_uint = 1;

/// Power fields in mW. A field fails alone when the GPU's `fail` names it
/// (`NVML_FI_DEV_POWER_INSTANT`, `NVML_FI_DEV_POWER_AVERAGE`); other fields are
/// NOT_SUPPORTED.
///
/// # Safety
/// `values` must be null or valid for reads and writes of `count` field values.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: NvmlDevice,
    count: std::ffi::c_int,
    values: *mut NvmlFieldValue,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetFieldValues", device, |_, g, now_s| {
        let Ok(n) = usize::try_from(count) else {
            return ERROR_INVALID_ARGUMENT;
        };
        if values.is_null() || n == 0 {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null and valid for `count` elements per the caller's contract.
        let values = unsafe { std::slice::from_raw_parts_mut(values, n) };
        for v in values {
            let (name, watts) = match v.field_id {
                FI_DEV_POWER_INSTANT => ("NVML_FI_DEV_POWER_INSTANT", g.power_at(now_s)),
                FI_DEV_POWER_AVERAGE => ("NVML_FI_DEV_POWER_AVERAGE", g.power_avg_at(now_s)),
                _ => {
                    v.nvml_return = ERROR_NOT_SUPPORTED;
                    continue;
                }
            };
            v.timestamp = (now_s * 1e6) as i64;
            v.latency_usec = 0;
            if let Some(e) = g.fail.get(name) {
                v.nvml_return = error_code(e);
                continue;
            }
            v.value_type = VALUE_TYPE_UNSIGNED_INT;
            // The union's `uiVal` is its first 4 bytes (little-endian targets).
            v.value = u64::from((watts * 1000.0).round().max(0.0) as u32);
            v.nvml_return = SUCCESS;
        }
        SUCCESS
    })
}

/// A piecewise-constant sensor trace at `t`, or NOT_SUPPORTED when the scenario has none.
fn sensor(trace: &Option<Vec<(f64, f64)>>, t: f64) -> Result<f64, NvmlReturn> {
    trace
        .as_deref()
        .map(|tr| step_at(tr, t))
        .ok_or(ERROR_NOT_SUPPORTED)
}

/// # Safety
/// `temp` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: NvmlDevice,
    sensor_type: c_uint,
    temp: *mut c_uint,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetTemperature", device, |_, g, now_s| {
        if sensor_type != 0 {
            return ERROR_INVALID_ARGUMENT; // only NVML_TEMPERATURE_GPU exists
        }
        match sensor(&g.temperature_c, now_s) {
            // SAFETY: forwarded caller contract.
            Ok(c) => unsafe { put(temp, c.round().max(0.0) as c_uint) },
            Err(e) => e,
        }
    })
}

/// Graphics (0) and SM (1) clocks follow `sm_clock_mhz`; others are NOT_SUPPORTED.
///
/// # Safety
/// `clock` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: NvmlDevice,
    clock_type: c_uint,
    clock: *mut c_uint,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetClockInfo", device, |_, g, now_s| {
        if clock_type > 1 {
            return ERROR_NOT_SUPPORTED;
        }
        match sensor(&g.sm_clock_mhz, now_s) {
            // SAFETY: forwarded caller contract.
            Ok(mhz) => unsafe { put(clock, mhz.round().max(0.0) as c_uint) },
            Err(e) => e,
        }
    })
}

fn throttle(func: &str, device: NvmlDevice, reasons: *mut c_ulonglong) -> NvmlReturn {
    with_gpu(func, device, |_, g, now_s| {
        match sensor(&g.throttle_reasons, now_s) {
            // SAFETY: forwarded caller contract (null is checked in `put`).
            Ok(bits) => unsafe { put(reasons, bits.max(0.0) as c_ulonglong) },
            Err(e) => e,
        }
    })
}

/// # Safety
/// `reasons` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    device: NvmlDevice,
    reasons: *mut c_ulonglong,
) -> NvmlReturn {
    throttle("nvmlDeviceGetCurrentClocksThrottleReasons", device, reasons)
}

/// The newer name of the same call (drivers ≥ 535).
///
/// # Safety
/// `reasons` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksEventReasons(
    device: NvmlDevice,
    reasons: *mut c_ulonglong,
) -> NvmlReturn {
    throttle("nvmlDeviceGetCurrentClocksEventReasons", device, reasons)
}

// ---- MIG ----

/// Like real NVML: the most MIG devices the GPU can hold (its compute slices), not how
/// many exist; absent indices are NOT_FOUND.
///
/// # Safety
/// `count` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(
    device: NvmlDevice,
    count: *mut c_uint,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetMaxMigDeviceCount", device, |_, g, _| {
        if g.mig_mode != 1 {
            return ERROR_NOT_SUPPORTED;
        }
        let n = g.mig_total_slices.max(g.mig_instances.len() as u32);
        // SAFETY: forwarded caller contract.
        unsafe { put(count, n) }
    })
}

/// # Safety
/// `mig` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: NvmlDevice,
    index: c_uint,
    mig: *mut NvmlDevice,
) -> NvmlReturn {
    with_gpu("nvmlDeviceGetMigDeviceHandleByIndex", device, |_, g, _| {
        if g.mig_mode != 1 {
            return ERROR_NOT_SUPPORTED;
        }
        if index as usize >= g.mig_instances.len() {
            return error_code("NOT_FOUND");
        }
        let gi = decode(device).map_or(0, |(gi, _)| gi);
        // SAFETY: forwarded caller contract.
        unsafe { put(mig, mig_handle(gi, index as usize)) }
    })
}

/// # Safety
/// `is_mig` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(
    device: NvmlDevice,
    is_mig: *mut c_uint,
) -> NvmlReturn {
    with_device("nvmlDeviceIsMigDeviceHandle", device, |_, _, mig, _| {
        // SAFETY: forwarded caller contract.
        unsafe { put(is_mig, c_uint::from(mig.is_some())) }
    })
}

/// # Safety
/// `id` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(
    device: NvmlDevice,
    id: *mut c_uint,
) -> NvmlReturn {
    with_device(
        "nvmlDeviceGetGpuInstanceId",
        device,
        |_, _, mig, _| match mig {
            // SAFETY: forwarded caller contract.
            Some(m) => unsafe { put(id, m.gpu_instance_id) },
            None => ERROR_NOT_SUPPORTED,
        },
    )
}

/// # Safety
/// `id` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(
    device: NvmlDevice,
    id: *mut c_uint,
) -> NvmlReturn {
    with_device(
        "nvmlDeviceGetComputeInstanceId",
        device,
        |_, _, mig, _| match mig {
            // SAFETY: forwarded caller contract.
            Some(m) => unsafe { put(id, m.compute_instance_id) },
            None => ERROR_NOT_SUPPORTED,
        },
    )
}

/// # Safety
/// `parent` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
    device: NvmlDevice,
    parent: *mut NvmlDevice,
) -> NvmlReturn {
    with_device(
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        device,
        |_, _, mig, _| match (mig, decode(device)) {
            // SAFETY: forwarded caller contract.
            (Some(_), Some((gi, _))) => unsafe { put(parent, gpu_handle(gi)) },
            _ => ERROR_INVALID_ARGUMENT,
        },
    )
}

/// nvml.h `nvmlDeviceAttributes_t`.
#[repr(C)]
pub struct NvmlDeviceAttributes {
    pub multiprocessor_count: c_uint,
    pub shared_copy_engine_count: c_uint,
    pub shared_decoder_count: c_uint,
    pub shared_encoder_count: c_uint,
    pub shared_jpeg_count: c_uint,
    pub shared_ofa_count: c_uint,
    pub gpu_instance_slice_count: c_uint,
    pub compute_instance_slice_count: c_uint,
    pub memory_size_mb: c_ulonglong,
}

/// A MIG device's slices, SMs and memory; for the physical GPU its SMs, memory and
/// (in MIG mode) total slices.
///
/// # Safety
/// `attrs` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAttributes_v2(
    device: NvmlDevice,
    attrs: *mut NvmlDeviceAttributes,
) -> NvmlReturn {
    with_device("nvmlDeviceGetAttributes_v2", device, |_, g, mig, _| {
        let (sms, slices, bytes) = match mig {
            Some(m) => (m.sm_count, m.slices, m.memory_total_bytes),
            None => (
                g.sm_count,
                if g.mig_mode == 1 {
                    g.mig_total_slices
                } else {
                    0
                },
                g.memory_total_bytes,
            ),
        };
        let value = NvmlDeviceAttributes {
            multiprocessor_count: sms,
            shared_copy_engine_count: 0,
            shared_decoder_count: 0,
            shared_encoder_count: 0,
            shared_jpeg_count: 0,
            shared_ofa_count: 0,
            gpu_instance_slice_count: slices,
            compute_instance_slice_count: slices,
            memory_size_mb: bytes / (1 << 20),
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(attrs, value) }
    })
}

/// nvml.h `nvmlProcessInfo_t` (v2 layout, used by the `_v3` call).
#[repr(C)]
pub struct NvmlProcessInfo {
    pub pid: c_uint,
    pub used_gpu_memory: c_ulonglong,
    pub gpu_instance_id: c_uint,
    pub compute_instance_id: c_uint,
}

/// One process on each `allocated` MIG device, none elsewhere.
///
/// # Safety
/// `count` must be null or valid for reads and writes; `infos` null or valid for
/// `*count` writes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut NvmlProcessInfo,
) -> NvmlReturn {
    with_device(
        "nvmlDeviceGetComputeRunningProcesses_v3",
        device,
        |_, _, mig, _| {
            if count.is_null() {
                return ERROR_INVALID_ARGUMENT;
            }
            let running: Vec<NvmlProcessInfo> = mig
                .filter(|m| m.allocated)
                .map(|m| NvmlProcessInfo {
                    pid: 4242,
                    used_gpu_memory: 0,
                    gpu_instance_id: m.gpu_instance_id,
                    compute_instance_id: m.compute_instance_id,
                })
                .into_iter()
                .collect();
            // SAFETY: non-null, valid per the caller's contract.
            let room = unsafe { count.read() } as usize;
            let n = running.len() as c_uint;
            if running.is_empty() {
                // SAFETY: as above.
                return unsafe { put(count, 0) };
            }
            if infos.is_null() || room < running.len() {
                // SAFETY: as above.
                unsafe { put(count, n) };
                return ERROR_INSUFFICIENT_SIZE;
            }
            for (i, p) in running.into_iter().enumerate() {
                // SAFETY: i < room, and `infos` is valid for `room` writes.
                unsafe { infos.add(i).write(p) };
            }
            // SAFETY: as above.
            unsafe { put(count, n) }
        },
    )
}

// ---- GPM ----
//
// Sample handles are ids into `State::gpm` (never addresses), so a stale or foreign
// handle is an error, not a dereference.

#[derive(Debug, Clone, Copy)]
struct GpmData {
    /// Filled by a `...SampleGet`: (GPU index, GPU-instance id, virtual time in s).
    taken: Option<(usize, u32, f64)>,
}

/// nvml.h `nvmlGpmSupport_t`.
#[repr(C)]
pub struct NvmlGpmSupport {
    pub version: c_uint,
    pub is_supported_device: c_uint,
}

/// Supported when a MIG device of the GPU has an `sm_activity` trace.
///
/// # Safety
/// `support` must be null or valid for reads and writes.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: NvmlDevice,
    support: *mut NvmlGpmSupport,
) -> NvmlReturn {
    with_gpu("nvmlGpmQueryDeviceSupport", device, |_, g, _| {
        if support.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        let supported = g.mig_instances.iter().any(|m| m.sm_activity.is_some());
        // SAFETY: non-null, valid per the caller's contract.
        unsafe {
            (*support).is_supported_device = c_uint::from(supported);
        }
        SUCCESS
    })
}

/// # Safety
/// `sample` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(sample: *mut *mut c_void) -> NvmlReturn {
    let mut st = state();
    if st.scenario.is_none() || st.init_count == 0 {
        return ERROR_UNINITIALIZED;
    }
    st.gpm_next += 1;
    let id = st.gpm_next;
    st.gpm.insert(id, GpmData { taken: None });
    // SAFETY: forwarded caller contract.
    unsafe { put(sample, id as *mut c_void) }
}

#[no_mangle]
pub extern "C" fn nvmlGpmSampleFree(sample: *mut c_void) -> NvmlReturn {
    match state().gpm.remove(&(sample as usize)) {
        Some(_) => SUCCESS,
        None => ERROR_INVALID_ARGUMENT,
    }
}

/// The whole-GPU sample is not simulated (lem samples per MIG instance).
#[no_mangle]
pub extern "C" fn nvmlGpmSampleGet(device: NvmlDevice, _sample: *mut c_void) -> NvmlReturn {
    with_gpu("nvmlGpmSampleGet", device, |_, _, _| ERROR_NOT_SUPPORTED)
}

#[no_mangle]
pub extern "C" fn nvmlGpmMigSampleGet(
    device: NvmlDevice,
    gpu_instance_id: c_uint,
    sample: *mut c_void,
) -> NvmlReturn {
    let taken = with_gpu("nvmlGpmMigSampleGet", device, |_, g, _| {
        match g
            .mig_instances
            .iter()
            .find(|m| m.gpu_instance_id == gpu_instance_id)
        {
            None => ERROR_INVALID_ARGUMENT,
            Some(m) if m.sm_activity.is_none() => ERROR_NOT_SUPPORTED,
            Some(m) => match m.fail.get("nvmlGpmMigSampleGet") {
                Some(e) => error_code(e),
                None => SUCCESS,
            },
        }
    });
    if taken != SUCCESS {
        return taken;
    }
    let mut st = state();
    let now_s = st.now_ms(st.scenario.as_ref().map_or(1.0, |s| s.time_scale)) / 1000.0;
    let gi = decode(device).map_or(0, |(g, _)| g);
    match st.gpm.get_mut(&(sample as usize)) {
        Some(d) => {
            d.taken = Some((gi, gpu_instance_id, now_s));
            SUCCESS
        }
        None => ERROR_INVALID_ARGUMENT,
    }
}

/// nvml.h `nvmlGpmMetric_t`.
#[repr(C)]
pub struct NvmlGpmMetric {
    pub metric_id: c_uint,
    pub nvml_return: NvmlReturn,
    pub value: f64,
    pub short_name: *mut c_char,
    pub long_name: *mut c_char,
    pub unit: *mut c_char,
}

/// nvml.h `nvmlGpmMetricsGet_t`.
#[repr(C)]
pub struct NvmlGpmMetricsGet {
    pub version: c_uint,
    pub num_metrics: c_uint,
    pub sample1: *mut c_void,
    pub sample2: *mut c_void,
    pub metrics: [NvmlGpmMetric; 210],
}

/// `NVML_GPM_METRIC_SM_UTIL`: percent of time SMs were busy, averaged over the slice.
const GPM_METRIC_SM_UTIL: c_uint = 2;

/// SM utilisation (%) between two samples of one MIG instance: the mean of its
/// `sm_activity` trace over the interval. Other metrics are NOT_SUPPORTED.
///
/// # Safety
/// `request` must be null or valid for reads and writes of an `nvmlGpmMetricsGet_t`.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmMetricsGet(request: *mut NvmlGpmMetricsGet) -> NvmlReturn {
    if request.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null, valid per the caller's contract.
    let request = unsafe { &mut *request };
    let st = state();
    let Some(scenario) = st.scenario.as_ref().filter(|_| st.init_count > 0) else {
        return ERROR_UNINITIALIZED;
    };
    if let Some(code) = global_failure(scenario, "nvmlGpmMetricsGet") {
        return code;
    }
    let taken = |h: *mut c_void| st.gpm.get(&(h as usize)).and_then(|d| d.taken);
    let (Some((g1, gi1, t1)), Some((g2, gi2, t2))) =
        (taken(request.sample1), taken(request.sample2))
    else {
        return ERROR_INVALID_ARGUMENT;
    };
    let activity = scenario
        .gpus
        .get(g1)
        .and_then(|g| g.mig_instances.iter().find(|m| m.gpu_instance_id == gi1))
        .and_then(|m| m.sm_activity.as_deref());
    let (Some(activity), true) = (activity, g1 == g2 && gi1 == gi2) else {
        return ERROR_INVALID_ARGUMENT;
    };
    let n = (request.num_metrics as usize).min(request.metrics.len());
    for m in &mut request.metrics[..n] {
        if m.metric_id != GPM_METRIC_SM_UTIL {
            m.nvml_return = ERROR_NOT_SUPPORTED;
            continue;
        }
        let (a, b) = (t1.min(t2), t1.max(t2));
        if b <= a {
            m.nvml_return = error_code("NO_DATA");
            continue;
        }
        m.value = 100.0 * (step_integral(activity, b) - step_integral(activity, a)) / (b - a);
        m.nvml_return = SUCCESS;
    }
    SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(power: Vec<(f64, f64)>) -> Gpu {
        serde_json::from_value(serde_json::json!({
            "name": "g", "uuid": "u", "power": power
        }))
        .unwrap()
    }

    #[test]
    fn integral_of_piecewise_constant_trace() {
        let g = gpu(vec![(0.0, 100.0), (2.0, 300.0)]);
        assert_eq!(g.integral_mj(1.0), 100_000.0);
        assert_eq!(g.integral_mj(3.0), 500_000.0);
        assert_eq!(g.power_at(1.9), 100.0);
        assert_eq!(g.power_at(2.0), 300.0);
        let late = gpu(vec![(1.0, 50.0)]);
        assert_eq!(late.integral_mj(0.5), 0.0);
        assert_eq!(late.integral_mj(3.0), 100_000.0);
        assert_eq!(late.power_at(0.5), 0.0);
    }

    #[test]
    fn power_usage_averages_by_architecture() {
        // 100 W, then 500 W from 10 s: half a second later the 1 s mean is 300 W.
        let at = |v: serde_json::Value| {
            let g: Gpu = serde_json::from_value(v).unwrap();
            g.power_avg_at(10.5)
        };
        let power = serde_json::json!([[0.0, 100.0], [10.0, 500.0]]);
        let h100 =
            serde_json::json!({"name": "NVIDIA H100 80GB HBM3", "uuid": "u", "power": power});
        let a100 =
            serde_json::json!({"name": "NVIDIA A100-SXM4-40GB", "uuid": "u", "power": power});
        assert!((at(h100) - 300.0).abs() < 1e-9);
        assert_eq!(at(a100), 500.0);
        let named =
            serde_json::json!({"name": "x", "uuid": "u", "power": power, "architecture": "ampere"});
        assert_eq!(at(named), 500.0);
        let explicit = serde_json::json!({"name": "NVIDIA A100", "uuid": "u", "power": power,
            "power_average_window_s": 1.0});
        assert!((at(explicit) - 300.0).abs() < 1e-9);
    }

    #[test]
    fn error_names_map_to_nvml_codes() {
        assert_eq!(error_code("NOT_SUPPORTED"), 3);
        assert_eq!(error_code("GPU_IS_LOST"), ERROR_GPU_IS_LOST);
        assert_eq!(error_code("bogus"), ERROR_UNKNOWN);
    }
}
