//! Everything a job takes from its surroundings, handed to the runner as one value:
//! model places and hub access, the powercap root, the NVML library, the job's devices
//! (its placement), the variables a config may name (`api_key_env`) and its stop flag.
//! The runner reads no environment variable itself; embedded mode builds this once at
//! CLI start ([`RunContext::from_env`]), a networked agent per lease
//! ([`RunContext::with_placement`]).

use super::placement::DevicePlacement;
use crate::hub::ResolveOptions;
use crate::meter::nvml::NVML_LIB_ENV;
use crate::meter::rapl::DEFAULT_POWERCAP_ROOT;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Environment variables as they were when the context was built: the only place a job
/// looks a variable up (`openai.api_key_env`). Values never appear in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvSnapshot {
    vars: BTreeMap<OsString, OsString>,
}

impl EnvSnapshot {
    /// This process's variables now.
    pub fn capture() -> Self {
        Self {
            vars: std::env::vars_os().collect(),
        }
    }

    /// A snapshot holding exactly `vars` (tests, or an agent passing a lease's secrets).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into().into(), v.into().into()))
                .collect(),
        }
    }

    /// The value of `key`; `None` when unset or not valid UTF-8 (as `std::env::var`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_os(key)?.to_str()
    }

    /// The value of `key` as the OS gave it (paths need not be UTF-8).
    pub fn get_os(&self, key: &str) -> Option<&OsStr> {
        self.vars.get(OsStr::new(key)).map(OsString::as_os_str)
    }
}

impl fmt::Debug for EnvSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a snapshot may hold tokens and keys.
        f.debug_struct("EnvSnapshot")
            .field(
                "names",
                &self
                    .vars
                    .keys()
                    .map(|k| k.to_string_lossy())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Where the runner finds models, prompts and meters, and which devices are this job's.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub resolve: ResolveOptions,
    pub powercap_root: PathBuf,
    /// The NVML library named for this node (`--nvml-lib` / `LEM_NVML_LIB`), already
    /// chosen: `None` loads the system's library. A named library (a simulated node)
    /// meters GPUs even for CPU inference.
    pub nvml_lib: Option<PathBuf>,
    /// The job's devices. A networked agent sets it from its lease
    /// ([`DevicePlacement::Devices`]); embedded mode indexes `gpu_list` into the
    /// `CUDA_VISIBLE_DEVICES` read at start ([`DevicePlacement::GpuList`]).
    pub placement: DevicePlacement,
    /// Variables a config may name (`openai.api_key_env`).
    pub env: EnvSnapshot,
    /// Set by a Ctrl+C handler (or a lost lease); the runner stops at the next token.
    pub stop: Arc<AtomicBool>,
}

impl RunContext {
    /// Embedded mode: the process environment, read once here (the CLI calls this at
    /// start, before any job): model places and hub access (`ResolveOptions::from_env`),
    /// `LEM_POWERCAP_ROOT`, `LEM_NVML_LIB`, `CUDA_VISIBLE_DEVICES` and the variables a
    /// config may name.
    pub fn from_env(stop: Arc<AtomicBool>) -> Self {
        let env = EnvSnapshot::capture();
        let non_empty = |key: &str| env.get_os(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            resolve: ResolveOptions::from_lookup(|key| env.get(key).map(str::to_string)),
            powercap_root: env
                .get_os("LEM_POWERCAP_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_POWERCAP_ROOT)),
            nvml_lib: non_empty(NVML_LIB_ENV),
            placement: DevicePlacement::GpuList {
                cuda_visible_devices: env.get("CUDA_VISIBLE_DEVICES").map(str::to_string),
            },
            env,
            stop,
        }
    }

    /// The same context for a job placed on other devices (a networked agent: one base
    /// context per process, one placement per lease).
    pub fn with_placement(mut self, placement: DevicePlacement) -> Self {
        self.placement = placement;
        self
    }

    /// The same context with the job's own stop flag.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_answers_lookups_and_hides_values_from_debug() {
        let env = EnvSnapshot::from_vars([("LEM_KEY", "s3cret"), ("OTHER", "x")]);
        assert_eq!(env.get("LEM_KEY"), Some("s3cret"));
        assert_eq!(env.get("ABSENT"), None);
        let shown = format!("{env:?}");
        assert!(
            shown.contains("LEM_KEY") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn with_placement_replaces_only_the_devices() {
        let stop = Arc::new(AtomicBool::new(false));
        let base = RunContext::from_env(stop.clone());
        let leased = base.clone().with_placement(DevicePlacement::Devices {
            targets: vec!["MIG-abc".into()],
            cuda_ordinal: 1,
        });
        assert_eq!(
            leased.placement.gpu_targets(&[0, 5]).unwrap(),
            vec!["MIG-abc".to_string()]
        );
        assert_eq!(leased.powercap_root, base.powercap_root);
        assert_eq!(leased.nvml_lib, base.nvml_lib);
        assert!(Arc::ptr_eq(&leased.stop, &stop));
    }
}
