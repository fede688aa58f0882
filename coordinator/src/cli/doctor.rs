//! `lem doctor`: what lem can measure on this machine, and why not. Each check is one
//! line, ok / warning / error, with a remedy when it is not ok. Only an error (lem
//! cannot store results, or the store is broken) makes the exit code non-zero: a machine
//! without GPUs or RAPL still runs experiments, with those energies `null` and the reason.
//!
//! Doctor only looks: it makes no network call, creates no data dir and no store.

use super::error::outln;
use super::{CliError, Outcome};
use lem_agent::hub::{self, ResolveOptions};
use lem_agent::meter::nvml::{self, GpuInfo};
use lem_agent::meter::rapl::{RaplMeter, StdFs, SysfsRead, DEFAULT_POWERCAP_ROOT};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Free space in the data dir below which a run may fail to store its traces.
const LOW_DISK_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `nvml`, `gpu`, `rapl`, `models`, `datasets`, `hub`, `data_dir`,
    /// `store`.
    pub area: &'static str,
    pub status: Status,
    pub message: String,
    /// What to do about it; `None` when ok.
    pub remedy: Option<String>,
}

impl Check {
    fn ok(area: &'static str, message: impl Into<String>) -> Self {
        Check {
            area,
            status: Status::Ok,
            message: message.into(),
            remedy: None,
        }
    }
    fn warning(area: &'static str, message: impl Into<String>, remedy: impl Into<String>) -> Self {
        Check {
            area,
            status: Status::Warning,
            message: message.into(),
            remedy: Some(remedy.into()),
        }
    }
    fn error(area: &'static str, message: impl Into<String>, remedy: impl Into<String>) -> Self {
        Check {
            area,
            status: Status::Error,
            message: message.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// Where doctor looks.
pub struct Places<'a> {
    /// `--nvml-lib` / `LEM_NVML_LIB`; `None`: the system's libnvidia-ml.so.1.
    pub nvml_lib: Option<&'a Path>,
    pub powercap_root: &'a Path,
    pub resolve: &'a ResolveOptions,
    pub data_dir: &'a Path,
}

/// `lem doctor [--json]`.
pub fn run(data_dir: &Path, nvml_lib: Option<&Path>, json: bool) -> Result<Outcome, CliError> {
    let powercap_root = std::env::var_os("LEM_POWERCAP_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_POWERCAP_ROOT));
    let resolve = ResolveOptions::from_env();
    let places = Places {
        nvml_lib,
        powercap_root: &powercap_root,
        resolve: &resolve,
        data_dir,
    };
    let checks = all_checks(&places, Box::new(StdFs));
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("plain data")
        );
    } else {
        for c in &checks {
            outln!("{:<7}  {:<8}  {}", c.status.label(), c.area, c.message);
            if let Some(remedy) = &c.remedy {
                outln!("{:<7}  {:<8}  fix: {remedy}", "", "");
            }
        }
    }
    let errors = checks.iter().filter(|c| c.status == Status::Error).count();
    if errors > 0 {
        return Err(CliError::failure(format!(
            "lem doctor found {errors} error(s); see the `fix:` lines above"
        )));
    }
    Ok(Outcome::Success)
}

/// Every check, in report order; RAPL files are read through `fs`.
pub fn all_checks(places: &Places, fs: Box<dyn SysfsRead>) -> Vec<Check> {
    let mut checks = nvml_checks(places.nvml_lib);
    checks.extend(rapl_checks(places.powercap_root, fs));
    checks.extend(cache_checks(places.resolve));
    checks.push(hub_check(places.resolve));
    checks.extend(data_dir_checks(places.data_dir));
    checks
}

fn nvml_checks(lib: Option<&Path>) -> Vec<Check> {
    let library = nvml::resolve_lib_path(lib).map_or_else(
        || "libnvidia-ml.so.1".to_string(),
        |p| p.display().to_string(),
    );
    let gpus = match nvml::discover_gpus(lib) {
        Ok(gpus) => gpus,
        Err(e) => {
            return vec![Check::warning(
                "nvml",
                format!("{e}; GPU energy is not measured, lem runs on the CPU"),
                "install the NVIDIA driver (it provides libnvidia-ml.so.1), or point \
                 --nvml-lib / LEM_NVML_LIB at the library",
            )]
        }
    };
    let driver = gpus.iter().find_map(|g| g.driver_version.clone());
    let mut checks = Vec::new();
    let found = format!(
        "NVML {library} loaded (driver {}): {} GPU(s)",
        driver.as_deref().unwrap_or("unknown"),
        gpus.len()
    );
    checks.push(match nvml::simulation_reason(lib, driver.as_deref()) {
        Some(why) => Check::warning(
            "nvml",
            format!("{found}; simulated: {why}"),
            "readings are labelled simulated; unset LEM_NVML_LIB (and drop --nvml-lib) \
                 to measure the real GPUs",
        ),
        None if gpus.is_empty() => Check::warning(
            "nvml",
            found,
            "NVML sees no GPU: check `nvidia-smi`, and that the container was started \
                 with the GPUs (e.g. --gpus all)",
        ),
        None => Check::ok("nvml", found),
    });
    checks.extend(gpus.iter().map(gpu_check));
    checks
}

fn gpu_check(g: &GpuInfo) -> Check {
    let name = g.name.as_deref().unwrap_or("unknown name");
    let uuid = g.uuid.as_deref().unwrap_or("no UUID");
    let mig = match &g.mig_mode {
        None => "MIG not supported".to_string(),
        Some(m) if m.current => {
            let profiles: Vec<&str> = g
                .mig_instances
                .iter()
                .map(|i| i.profile.as_deref().unwrap_or("?"))
                .collect();
            format!(
                "MIG enabled, {} instance(s) [{}]",
                g.mig_instances.len(),
                profiles.join(", ")
            )
        }
        Some(_) => "MIG disabled".to_string(),
    };
    let mut message = format!("GPU {}: {name} ({uuid}), {mig}", g.index);
    if !g.unavailable.is_empty() {
        let fields: Vec<&str> = g.unavailable.keys().map(String::as_str).collect();
        message.push_str(&format!("; NVML cannot give: {}", fields.join(", ")));
    }
    match &g.mig_mode {
        Some(m) if m.pending != m.current => Check::warning(
            "gpu",
            format!(
                "{message}; MIG mode change to {} is pending",
                if m.pending { "enabled" } else { "disabled" }
            ),
            format!(
                "reset the GPU to apply it (`sudo nvidia-smi -r -i {}`) before measuring",
                g.index
            ),
        ),
        _ => Check::ok("gpu", message),
    }
}

fn rapl_checks(root: &Path, fs: Box<dyn SysfsRead>) -> Vec<Check> {
    let meter = match RaplMeter::discover_with(root, fs) {
        Ok(m) => m,
        Err(e) => {
            return vec![Check::warning(
                "rapl",
                format!("{e}; CPU package and DRAM energy are reported unavailable"),
                "on bare-metal Linux with an Intel or AMD CPU, load the powercap driver \
                 (`sudo modprobe intel_rapl_msr`); VMs and containers usually have no RAPL. \
                 LEM_POWERCAP_ROOT points lem at another powercap tree",
            )]
        }
    };
    meter
        .check_counters()
        .into_iter()
        .map(|c| match c.read {
            Ok(_) => Check::ok(
                "rapl",
                format!("{}: {} is readable", c.device_id, c.energy_path.display()),
            ),
            Err(why) if !c.permission_denied => Check::warning(
                "rapl",
                format!("{}: energy unavailable: {why}", c.device_id),
                "the kernel's powercap file looks wrong (compare `cat` of it with \
                 `dmesg | grep -i rapl`); lem reports this zone unavailable",
            ),
            Err(why) => Check::warning(
                "rapl",
                format!("{}: energy unavailable: {why}", c.device_id),
                format!(
                    "`sudo chmod a+r {}` (until reboot), a udev or tmpfiles.d rule making \
                     it readable, or run lem as root",
                    c.energy_path.display()
                ),
            ),
        })
        .collect()
}

fn cache_checks(opts: &ResolveOptions) -> Vec<Check> {
    let models = hub::list_cached_models(opts);
    let in_lem = models.iter().filter(|m| m.from == "lem-cache").count();
    let places = format!(
        "lem model dir {}, Hugging Face cache {}",
        opts.lem_model_dir.display(),
        opts.hf_cache_dir.display()
    );
    let model_check = if models.is_empty() {
        Check::warning(
            "models",
            format!("no model cached ({places})"),
            "run scripts/fetch-model.sh, copy a .gguf into the lem model dir \
             (<org>--<name>/), or let `lem experiment --model <repo id>` download one",
        )
    } else {
        Check::ok(
            "models",
            format!(
                "{} model(s) cached: {in_lem} in the lem model dir, {} in the Hugging Face \
                 cache ({places}); `lem models` lists them",
                models.len(),
                models.len() - in_lem
            ),
        )
    };
    let datasets = cached_dataset_count(&opts.hf_cache_dir);
    let dataset_check = if datasets == 0 && opts.offline {
        Check::warning(
            "datasets",
            format!(
                "no dataset in the Hugging Face cache {} and the hub is off",
                opts.hf_cache_dir.display()
            ),
            "use a prompt file or `prompt_source: {type: synthetic}`, or fetch the dataset \
             once with the hub on",
        )
    } else {
        Check::ok(
            "datasets",
            format!(
                "{datasets} dataset(s) in the Hugging Face cache {}",
                opts.hf_cache_dir.display()
            ),
        )
    };
    vec![model_check, dataset_check]
}

/// `datasets--*` folders in the hub cache.
fn cached_dataset_count(hf_cache_dir: &Path) -> usize {
    std::fs::read_dir(hf_cache_dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("datasets--"))
            .count()
    })
}

fn hub_check(opts: &ResolveOptions) -> Check {
    if opts.offline {
        Check::ok(
            "hub",
            "offline (HF_HUB_OFFLINE or LEM_OFFLINE set): only cached models and datasets \
             are used",
        )
    } else {
        Check::ok(
            "hub",
            "reachability not tested (lem doctor makes no network calls); a model or \
             dataset that is not cached is downloaded from the Hugging Face hub",
        )
    }
}

fn data_dir_checks(dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    // The folder itself, or the one it will be created in.
    let existing = dir.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf);
    let Some(existing) = existing.or_else(|| Some(PathBuf::from(".")).filter(|p| p.is_dir()))
    else {
        checks.push(Check::error(
            "data_dir",
            format!("{}: no existing folder on its path", dir.display()),
            "pass an existing folder with --data-dir or LEM_DATA_DIR",
        ));
        return checks;
    };
    let state = if existing == dir {
        format!("{}", dir.display())
    } else {
        format!(
            "{} (does not exist yet; created under {} on the first run)",
            dir.display(),
            existing.display()
        )
    };
    if !is_writable(&existing) {
        checks.push(Check::error(
            "data_dir",
            format!("{state}: {} is not writable", existing.display()),
            "pick a writable folder with --data-dir or LEM_DATA_DIR, or fix its permissions",
        ));
    } else {
        checks.push(match free_bytes(&existing) {
            Ok(free) if free < LOW_DISK_BYTES => Check::warning(
                "data_dir",
                format!("{state}: only {} free", human_bytes(free)),
                "free some space or use another --data-dir: traces and raw results of a run \
                 may not fit",
            ),
            Ok(free) => Check::ok("data_dir", format!("{state}: {} free", human_bytes(free))),
            Err(e) => Check::warning(
                "data_dir",
                format!("{state}: free space unknown: {e}"),
                "check the filesystem of the data dir (`df -h`)",
            ),
        });
    }
    checks.push(store_check(dir));
    checks
}

fn store_check(dir: &Path) -> Check {
    use crate::store::{Store, StoreError};
    match Store::open_existing(dir, Duration::ZERO) {
        Err(StoreError::NoStore { .. }) => Check::ok(
            "store",
            format!(
                "no result store in {} yet (the first experiment creates it)",
                dir.display()
            ),
        ),
        Err(e @ StoreError::HeldByServer { .. }) => Check::ok("store", format!("{e}")),
        Err(e @ StoreError::Locked { .. }) => Check::warning(
            "store",
            format!("{e}"),
            "another lem process is using it; run doctor again when it has finished",
        ),
        Err(e) => Check::error(
            "store",
            format!("{e}"),
            format!(
                "move {} aside (keep it: the results may be recoverable) and let lem \
                 create a new store",
                dir.display()
            ),
        ),
        Ok(store) => match store.experiments() {
            Ok(exps) => Check::ok(
                "store",
                format!(
                    "{} opens; {} experiment(s) recorded",
                    store.path().display(),
                    exps.len()
                ),
            ),
            Err(e) => Check::error(
                "store",
                format!("{} opens but cannot be read: {e}", store.path().display()),
                format!(
                    "move {} aside (keep it: the results may be recoverable) and let lem \
                     create a new store",
                    dir.display()
                ),
            ),
        },
    }
}

fn is_writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Bytes available to an unprivileged user on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs is plain data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn human_bytes(b: u64) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
