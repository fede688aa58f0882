//! Which physical devices a job meters, named by stable opaque keys.
//!
//! A key names one energy counter of the machine, whoever reads it:
//!
//! | key                      | device                                              |
//! |--------------------------|-----------------------------------------------------|
//! | `rapl:package-N`         | RAPL package `N` (its `dram` subzone included)      |
//! | `gpu:<uuid>`             | a physical GPU (a MIG parent included)              |
//! | `mig:<uuid>`             | one MIG slice (GPU instance) of a parent            |
//!
//! Under a powercap root other than `/sys/class/powercap` (a test's fake tree) RAPL keys
//! carry the root, `rapl:package-0@/tmp/x/powercap`, since that tree's counters are not
//! the machine's. A GPU without a UUID is `gpu:gpu-<index>`, as its readings name it.
//!
//! Access: metering a counter over a window charges the job everything the device drew,
//! so a job needs its devices [`Access::Exclusive`]. The one exception is a MIG parent
//! in shared mode: each job on it is charged an attributed *share* of the parent's
//! energy (`lem_common::mig`), so several jobs may read the parent at once
//! ([`Access::Shared`]) as long as each holds its own slices exclusively. A job that holds
//! every slice of a parent, or the whole GPU, is charged the parent's energy and takes
//! the parent exclusively.
//!
//! [`plan_metered_devices`] is pure (config + [`MeterEnvironment`]); the batch scheduler
//! uses it to run only jobs with disjoint devices at once, and the runner claims the same
//! set in the process-wide [`super::claims::DeviceClaims`] before its idle baseline.

use super::nvml::GpuInfo;
use super::rapl::{RaplMeter, DEFAULT_POWERCAP_ROOT};
use crate::runner::DevicePlacement;
use crate::runner::RunContext;
use lem_common::config::{Device, ExperimentConfig};
use std::fmt;

/// A stable, opaque name of one metered physical device (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceKey(String);

impl DeviceKey {
    /// RAPL package `package` (a zone name, `package-0`) under the powercap root `scope`
    /// (`None` for the system's).
    pub fn rapl(scope: Option<&str>, package: &str) -> Self {
        match scope {
            None => Self(format!("rapl:{package}")),
            Some(root) => Self(format!("rapl:{package}@{root}")),
        }
    }

    /// A physical GPU by its reading's device id (UUID, or `gpu-<index>`).
    pub fn gpu(device_id: &str) -> Self {
        Self(format!("gpu:{device_id}"))
    }

    /// A MIG slice by its UUID.
    pub fn mig(uuid: &str) -> Self {
        Self(format!("mig:{uuid}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a job holds a device while it meters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// No other job may meter the device meanwhile.
    Exclusive,
    /// Other `Shared` holders may read it too (a MIG parent in shared mode).
    Shared,
}

/// One device a job meters, and how.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MeteredDevice {
    pub key: DeviceKey,
    pub access: Access,
}

impl MeteredDevice {
    fn exclusive(key: DeviceKey) -> Self {
        Self {
            key,
            access: Access::Exclusive,
        }
    }

    /// True when two jobs cannot hold `self` and `other` at once.
    pub fn conflicts_with(&self, other: &MeteredDevice) -> bool {
        self.key == other.key && !(self.access == Access::Shared && other.access == Access::Shared)
    }
}

/// The first device of `a` that conflicts with one of `b`, if any.
pub fn first_conflict<'a>(a: &'a [MeteredDevice], b: &[MeteredDevice]) -> Option<&'a DeviceKey> {
    a.iter()
        .find(|d| b.iter().any(|o| d.conflicts_with(o)))
        .map(|d| &d.key)
}

/// What planning needs to know about the machine, probed once by
/// [`MeterEnvironment::probe`] (or written out by a test).
#[derive(Debug, Clone, Default)]
pub struct MeterEnvironment {
    /// The powercap root when it is not the system's (part of every RAPL key).
    pub rapl_scope: Option<String>,
    /// RAPL package zones found (`package-0`, ...); empty without RAPL.
    pub rapl_packages: Vec<String>,
    /// An NVML library is named for this node (`LEM_NVML_LIB`): GPUs are metered even
    /// for CPU inference (a simulated node), as the runner does.
    pub nvml_lib_named: bool,
    /// Where the job's GPUs are (the run context's placement).
    pub placement: DevicePlacement,
    /// The GPUs NVML lists; `None` when NVML was not probed or could not be opened (no
    /// GPU is then metered, as the runner's NVML meter would not open either).
    pub gpus: Option<Vec<GpuInfo>>,
}

impl MeterEnvironment {
    /// Probes what a job run with `ctx` would meter: RAPL under its powercap root and,
    /// when `probe_gpus`, NVML (its named library, else the system's). Reads no
    /// environment variable.
    pub fn probe(ctx: &RunContext, probe_gpus: bool) -> Self {
        let powercap_root = ctx.powercap_root.as_path();
        let rapl_packages = RaplMeter::discover(powercap_root)
            .map(|m| {
                m.device_ids()
                    .into_iter()
                    .filter(|id| !id.contains('/'))
                    .collect()
            })
            .unwrap_or_default();
        let nvml_lib = ctx.nvml_lib.as_deref();
        let gpus = probe_gpus
            .then(|| super::nvml::discover_gpus_resolved(nvml_lib).ok())
            .flatten();
        Self {
            rapl_scope: (powercap_root != std::path::Path::new(DEFAULT_POWERCAP_ROOT))
                .then(|| powercap_root.display().to_string()),
            rapl_packages,
            nvml_lib_named: nvml_lib.is_some(),
            placement: ctx.placement.clone(),
            gpus,
        }
    }
}

/// Before the model is loaded: whether `cfg` may run inference on a GPU in this build
/// (`device: auto` or `cuda` with CUDA compiled in). A planner's superset: a job that
/// then falls back to the CPU meters fewer devices, never more.
pub fn may_run_on_gpu(cfg: &ExperimentConfig) -> bool {
    cfg.device != Device::Cpu && crate::engine::cuda_in_build()
}

/// The devices a job with `cfg` meters on `env`, sorted by key. `on_gpu`: inference
/// runs on a GPU (see [`may_run_on_gpu`] before the engine is loaded). Mirrors the
/// runner: every RAPL package; the GPUs of the job's placement (`gpu_list` through
/// `CUDA_VISIBLE_DEVICES`, or a lease's devices) when inference runs on a GPU or an
/// NVML library is named.
pub fn plan_metered_devices(
    cfg: &ExperimentConfig,
    on_gpu: bool,
    env: &MeterEnvironment,
) -> Vec<MeteredDevice> {
    let mut devices: Vec<MeteredDevice> = env
        .rapl_packages
        .iter()
        .map(|p| MeteredDevice::exclusive(DeviceKey::rapl(env.rapl_scope.as_deref(), p)))
        .collect();
    if on_gpu || env.nvml_lib_named {
        if let (Some(gpus), Ok(targets)) = (&env.gpus, env.placement.gpu_targets(&cfg.gpu_list)) {
            devices.extend(gpu_devices(gpus, &targets));
        }
    }
    devices.sort();
    devices.dedup();
    devices
}

/// What a job holds of one physical GPU.
#[derive(Debug, Default)]
struct GpuUse {
    whole: bool,
    /// UUIDs of the MIG slices it runs on.
    slices: Vec<String>,
}

/// A GPU's device id as its readings give it.
fn gpu_device_id(gpu: &GpuInfo) -> String {
    gpu.uuid
        .clone()
        .unwrap_or_else(|| format!("gpu-{}", gpu.index))
}

/// `id` matches `target` exactly or as a unique prefix, as CUDA (and the NVML meter)
/// accept UUID prefixes.
fn id_matches(id: &str, target: &str) -> bool {
    id == target || (target.len() >= 8 && id.starts_with(target))
}

/// The devices `targets` (GPU indices, GPU UUIDs, MIG UUIDs; empty = every GPU) meter,
/// as the NVML meter opens them: each physical GPU once.
fn gpu_devices(gpus: &[GpuInfo], targets: &[String]) -> Vec<MeteredDevice> {
    let mut uses: Vec<GpuUse> = gpus.iter().map(|_| GpuUse::default()).collect();
    if targets.is_empty() {
        uses.iter_mut().for_each(|u| u.whole = true);
    }
    for target in targets.iter().map(|t| t.trim()) {
        if let Ok(index) = target.parse::<u32>() {
            if let Some(k) = gpus.iter().position(|g| g.index == index) {
                uses[k].whole = true;
            }
            continue;
        }
        for (k, gpu) in gpus.iter().enumerate() {
            if id_matches(&gpu_device_id(gpu), target) {
                uses[k].whole = true;
            }
            for slice in &gpu.mig_instances {
                if let Some(uuid) = slice.uuid.as_deref().filter(|u| id_matches(u, target)) {
                    uses[k].slices.push(uuid.to_owned());
                }
            }
        }
    }
    let mut devices = Vec::new();
    for (gpu, used) in gpus.iter().zip(uses) {
        let parent = DeviceKey::gpu(&gpu_device_id(gpu));
        // Holding every listed slice leaves no one else to share the parent with.
        let holds_every_slice = !gpu.mig_instances.is_empty()
            && gpu
                .mig_instances
                .iter()
                .all(|s| s.uuid.as_ref().is_some_and(|u| used.slices.contains(u)));
        if used.whole || holds_every_slice {
            devices.push(MeteredDevice::exclusive(parent));
        } else if !used.slices.is_empty() {
            devices.push(MeteredDevice {
                key: parent,
                access: Access::Shared,
            });
            devices.extend(
                used.slices
                    .iter()
                    .map(|u| MeteredDevice::exclusive(DeviceKey::mig(u))),
            );
        }
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::nvml::MigInstanceInfo;
    use std::collections::BTreeMap;

    fn gpu(index: u32, uuid: &str, slices: &[&str]) -> GpuInfo {
        GpuInfo {
            index,
            uuid: Some(uuid.into()),
            name: None,
            memory_total_bytes: None,
            power_limit_w: None,
            driver_version: None,
            mig_mode: None,
            mig_instances: slices
                .iter()
                .enumerate()
                .map(|(i, s)| MigInstanceInfo {
                    parent_index: index,
                    parent_uuid: Some(uuid.into()),
                    mig_index: i as u32,
                    uuid: Some((*s).into()),
                    gpu_instance_id: None,
                    compute_instance_id: None,
                    profile: None,
                    compute_slices: Some(1),
                    sm_count: None,
                    memory_total_bytes: None,
                    unavailable: BTreeMap::new(),
                })
                .collect(),
            unavailable: BTreeMap::new(),
        }
    }

    fn cfg(gpu_list: &[u32]) -> ExperimentConfig {
        let mut c = ExperimentConfig::default_for("t", "m");
        c.gpu_list = gpu_list.to_vec();
        c
    }

    fn keys(devices: &[MeteredDevice]) -> Vec<(String, Access)> {
        devices
            .iter()
            .map(|d| (d.key.to_string(), d.access))
            .collect()
    }

    fn node() -> MeterEnvironment {
        MeterEnvironment {
            rapl_scope: None,
            rapl_packages: vec!["package-0".into(), "package-1".into()],
            nvml_lib_named: false,
            placement: DevicePlacement::default(),
            gpus: Some(vec![
                gpu(0, "GPU-aaaaaaaa-0000", &[]),
                gpu(
                    1,
                    "GPU-bbbbbbbb-1111",
                    &["MIG-s1-aaaaaaaa", "MIG-s2-bbbbbbbb"],
                ),
            ]),
        }
    }

    #[test]
    fn cpu_inference_meters_every_package_and_no_gpu() {
        let got = plan_metered_devices(&cfg(&[0]), false, &node());
        assert_eq!(
            keys(&got),
            [
                ("rapl:package-0".into(), Access::Exclusive),
                ("rapl:package-1".into(), Access::Exclusive)
            ]
        );
    }

    #[test]
    fn gpu_inference_holds_its_gpus_exclusively() {
        let got = plan_metered_devices(&cfg(&[0]), true, &node());
        assert!(keys(&got).contains(&("gpu:GPU-aaaaaaaa-0000".into(), Access::Exclusive)));
        assert!(!keys(&got).iter().any(|(k, _)| k.contains("bbbbbbbb")));
        // A named library meters the GPUs even for CPU inference (a simulated node).
        let env = MeterEnvironment {
            nvml_lib_named: true,
            ..node()
        };
        assert_eq!(
            plan_metered_devices(&cfg(&[0]), false, &env),
            plan_metered_devices(&cfg(&[0]), true, &node())
        );
        // Index 1 through CUDA_VISIBLE_DEVICES=1,0 is GPU 0.
        let env = MeterEnvironment {
            placement: DevicePlacement::GpuList {
                cuda_visible_devices: Some("1,0".into()),
            },
            ..node()
        };
        let got = plan_metered_devices(&cfg(&[1]), true, &env);
        assert!(keys(&got).contains(&("gpu:GPU-aaaaaaaa-0000".into(), Access::Exclusive)));
    }

    #[test]
    fn a_shared_mig_slice_shares_the_parent_and_holds_its_slice() {
        let env = MeterEnvironment {
            rapl_packages: Vec::new(),
            placement: DevicePlacement::GpuList {
                cuda_visible_devices: Some("MIG-s1-aaaaaaaa".into()),
            },
            ..node()
        };
        let got = plan_metered_devices(&cfg(&[0]), true, &env);
        assert_eq!(
            keys(&got),
            [
                ("gpu:GPU-bbbbbbbb-1111".into(), Access::Shared),
                ("mig:MIG-s1-aaaaaaaa".into(), Access::Exclusive)
            ]
        );
        // A second job on the other slice may run beside it; one on the same may not.
        let other = MeterEnvironment {
            placement: DevicePlacement::GpuList {
                cuda_visible_devices: Some("MIG-s2-bbbbbbbb".into()),
            },
            ..env.clone()
        };
        let beside = plan_metered_devices(&cfg(&[0]), true, &other);
        assert_eq!(first_conflict(&got, &beside), None);
        assert_eq!(
            first_conflict(&got, &got).map(DeviceKey::as_str),
            Some("mig:MIG-s1-aaaaaaaa")
        );
        // Every slice of the parent: the parent's energy is the job's, exclusively, and
        // it conflicts with a shared slice job.
        let all = MeterEnvironment {
            placement: DevicePlacement::GpuList {
                cuda_visible_devices: Some("MIG-s1-aaaaaaaa,MIG-s2-bbbbbbbb".into()),
            },
            ..env
        };
        let whole = plan_metered_devices(&cfg(&[0, 1]), true, &all);
        assert_eq!(
            keys(&whole),
            [("gpu:GPU-bbbbbbbb-1111".into(), Access::Exclusive)]
        );
        assert!(first_conflict(&whole, &beside).is_some());
    }

    #[test]
    fn rapl_keys_carry_a_non_system_root() {
        assert_eq!(
            DeviceKey::rapl(None, "package-0").as_str(),
            "rapl:package-0"
        );
        assert_eq!(
            DeviceKey::rapl(Some("/tmp/p"), "package-0").as_str(),
            "rapl:package-0@/tmp/p"
        );
        let tmp = tempfile::tempdir().unwrap();
        for (dir, name) in [("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "dram")] {
            let d = tmp.path().join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("energy_uj"), "1\n").unwrap();
        }
        let mut ctx = RunContext::from_env(Default::default());
        ctx.powercap_root = tmp.path().to_path_buf();
        let env = MeterEnvironment::probe(&ctx, false);
        let root = tmp.path().display().to_string();
        assert_eq!(env.rapl_scope.as_deref(), Some(root.as_str()));
        assert_eq!(env.rapl_packages, ["package-0"], "dram is the package's");
    }

    #[test]
    fn no_gpu_inventory_plans_no_gpu() {
        let env = MeterEnvironment {
            gpus: None,
            ..node()
        };
        let got = plan_metered_devices(&cfg(&[0]), true, &env);
        assert!(got.iter().all(|d| d.key.as_str().starts_with("rapl:")));
    }
}
