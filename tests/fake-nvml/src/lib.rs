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
//!   "fail": { "nvmlSystemGetDriverVersion": "NOT_SUPPORTED" },
//!   "gpus": [ { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-...",
//!               "memory_total_bytes": 85899345920, "memory_used_bytes": 0,
//!               "power_limit_mw": 700000, "mig_mode": 0,
//!               "power": [[0.0, 60.0], [1.0, 250.0]],
//!               "energy_start_mj": 0, "counter_reset_at_s": null, "lost_at_s": null,
//!               "fail": { "nvmlDeviceGetTotalEnergyConsumption": "NOT_SUPPORTED" } } ] }
//! ```
//!
//! * `power`: piecewise-constant watts, `[from_s, watts]` sorted by time, 0 W before the
//!   first point. Time is virtual seconds since the first `nvmlInit_v2`.
//! * The energy counter (mJ) advances in steps of `step_ms` (default 100, like real
//!   hardware): at virtual time `t` it reads `energy_start_mj + floor(∫₀^q P dt)` with
//!   `q = floor(t / step) · step`. After `counter_reset_at_s` (rounded down to a step) it
//!   restarts from 0: `floor(∫_r^q P dt)`.
//! * After `lost_at_s` every call on that GPU returns `NVML_ERROR_GPU_IS_LOST`.
//! * `fail`: per-function error names (`NOT_SUPPORTED`, `NO_PERMISSION`, `GPU_IS_LOST`,
//!   `UNKNOWN`, …), global or per GPU.
//! * Virtual time = real time since init × `time_scale` (default 1) + milliseconds added
//!   with [`fakeNvmlAdvanceMs`]. Tests use `time_scale: 0` and advance the clock by hand, so
//!   a 20 s window takes no real time.
//!
//! `nvmlSystemGetDriverVersion` returns `fake-nvml-<driver_version>`, so lem can tell a
//! simulated node from real hardware.
//!
//! `nvmlDeviceGetPowerUsage` returns the instantaneous trace value (no 1 s averaging yet).
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
    #[serde(default)]
    counter_reset_at_s: Option<f64>,
    #[serde(default)]
    lost_at_s: Option<f64>,
    #[serde(default)]
    fail: BTreeMap<String, String>,
}

impl Gpu {
    /// ∫₀^t P dt in mJ (t in seconds).
    fn integral_mj(&self, t: f64) -> f64 {
        let mut joules = 0.0;
        for (i, &(from, watts)) in self.power.iter().enumerate() {
            if from >= t {
                break;
            }
            let to = self.power.get(i + 1).map_or(t, |&(next, _)| next.min(t));
            joules += watts * (to - from);
        }
        joules * 1000.0
    }

    /// Power in watts at `t` seconds.
    fn power_at(&self, t: f64) -> f64 {
        self.power
            .iter()
            .take_while(|&&(from, _)| from <= t)
            .last()
            .map_or(0.0, |&(_, w)| w)
    }
}

struct State {
    scenario: Option<Scenario>,
    scenario_path: Option<String>,
    init_count: u32,
    epoch: Option<Instant>,
    advanced_ms: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    scenario: None,
    scenario_path: None,
    init_count: 0,
    epoch: None,
    advanced_ms: 0,
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

/// Runs `f` on the GPU behind `device`, applying configured failures and GPU loss.
fn with_gpu(
    func: &str,
    device: NvmlDevice,
    f: impl FnOnce(&Scenario, &Gpu, f64) -> NvmlReturn,
) -> NvmlReturn {
    with_scenario(func, |scenario, now_s| {
        // Handles are `index + 1` cast to a pointer; never dereferenced.
        let Some(gpu) = (device as usize)
            .checked_sub(1)
            .and_then(|i| scenario.gpus.get(i))
        else {
            return ERROR_INVALID_ARGUMENT;
        };
        if gpu.lost_at_s.is_some_and(|lost| now_s >= lost) {
            return ERROR_GPU_IS_LOST;
        }
        if let Some(e) = gpu.fail.get(func) {
            return error_code(e);
        }
        f(scenario, gpu, now_s)
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
    // Handles are `index + 1` cast to a pointer: opaque to the caller, never dereferenced.
    let handle = (index as usize).saturating_add(1) as NvmlDevice;
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
        // SAFETY: forwarded caller contract.
        unsafe { put(index, (device as usize - 1) as c_uint) }
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
    with_gpu("nvmlDeviceGetName", device, |_, g, _| unsafe {
        put_str(name, length, &g.name)
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
    with_gpu("nvmlDeviceGetUUID", device, |_, g, _| unsafe {
        put_str(uuid, length, &g.uuid)
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
    with_gpu("nvmlDeviceGetMemoryInfo_v2", device, |_, g, _| {
        if memory.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // NVML_STRUCT_VERSION(Memory, 2)
        let expected = (std::mem::size_of::<NvmlMemoryV2>() | (2 << 24)) as c_uint;
        // SAFETY: non-null and valid per the caller's contract.
        if unsafe { (*memory).version } != expected {
            return ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        let used = g.memory_used_bytes.min(g.memory_total_bytes);
        let value = NvmlMemoryV2 {
            version: expected,
            total: g.memory_total_bytes,
            reserved: 0,
            free: g.memory_total_bytes - used,
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
        let mw = (g.power_at(now_s) * 1000.0).round().max(0.0) as c_uint;
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
            // Quantise in milliseconds so step boundaries are exact (0.3 s / 0.1 s is not 3).
            let step_ms = s.step_ms as f64;
            let quantise_s =
                |t_s: f64| ((t_s * 1000.0).round() / step_ms).floor() * step_ms / 1000.0;
            let q = quantise_s(now_s);
            let value = match g.counter_reset_at_s.map(quantise_s) {
                Some(r) if q >= r => (g.integral_mj(q) - g.integral_mj(r)).floor() as u64,
                _ => g.energy_start_mj + g.integral_mj(q).floor() as u64,
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
    fn error_names_map_to_nvml_codes() {
        assert_eq!(error_code("NOT_SUPPORTED"), 3);
        assert_eq!(error_code("GPU_IS_LOST"), ERROR_GPU_IS_LOST);
        assert_eq!(error_code("bogus"), ERROR_UNKNOWN);
    }
}
