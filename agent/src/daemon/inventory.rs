//! What this node offers the coordinator: its GPUs (with MIG slices) from NVML, and its
//! CPU packages. Keys are stable across restarts: `gpu:<GPU UUID>`, `mig:<MIG UUID>`,
//! `rapl:<node>:package-N`.

use super::placement::DeviceDirectory;
use crate::meter::nvml::{discover_gpus, GpuInfo};
use lem_common::wire::{Gpu, Inventory, MigSlice};
use std::path::Path;

/// What the node offers, and how the runner addresses each device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDevices {
    pub inventory: Inventory,
    pub directory: DeviceDirectory,
}

/// The node's devices. NVML absent (no driver): no GPUs, with the reason logged. A GPU
/// or MIG slice without a UUID is left out with a warning: its key would not be stable.
/// With `cuda_visible` (the agent's `CUDA_VISIBLE_DEVICES`, as a scheduler like Slurm
/// sets it) only the GPUs it lists are offered, addressed by their position in it.
pub fn discover(
    node_name: &str,
    nvml_lib: Option<&Path>,
    powercap_root: &Path,
    cuda_visible: Option<&str>,
) -> NodeDevices {
    let infos = match discover_gpus(nvml_lib) {
        Ok(gpus) => gpus,
        Err(unavailable) => {
            tracing::info!(library = %unavailable.library, reason = %unavailable.reason, "no GPUs offered: NVML is unavailable");
            Vec::new()
        }
    };
    let cpu_packages = cpu_packages(node_name, powercap_root);
    let mut directory = DeviceDirectory {
        cpu_packages: cpu_packages.clone(),
        ..DeviceDirectory::default()
    };
    let mut gpus = Vec::new();
    for info in &infos {
        let Some(gpu) = gpu_entry(info) else { continue };
        let Some(index) = runner_index(info, cuda_visible) else {
            tracing::info!(gpu = %gpu.key, "GPU not offered: CUDA_VISIBLE_DEVICES hides it");
            continue;
        };
        directory.gpu_index.insert(gpu.key.clone(), index);
        for slice in &gpu.mig_slices {
            directory
                .mig_parent
                .insert(slice.key.clone(), gpu.key.clone());
        }
        gpus.push(gpu);
    }
    NodeDevices {
        inventory: Inventory { gpus, cpu_packages },
        directory,
    }
}

/// The index the runner's `gpu_list` uses for this GPU: its NVML index, or with
/// `CUDA_VISIBLE_DEVICES` its position there (entries are indices or UUIDs).
fn runner_index(info: &GpuInfo, cuda_visible: Option<&str>) -> Option<u32> {
    let Some(visible) = cuda_visible else {
        return Some(info.index);
    };
    let index = info.index.to_string();
    visible
        .split(',')
        .map(str::trim)
        .take_while(|v| !v.is_empty() && *v != "-1")
        .position(|v| v == index || info.uuid.as_deref() == Some(v))
        .map(|p| p as u32)
}

fn gpu_entry(info: &GpuInfo) -> Option<Gpu> {
    let Some(uuid) = &info.uuid else {
        tracing::warn!(
            index = info.index,
            "GPU left out of the inventory: NVML gave no UUID"
        );
        return None;
    };
    let mig_enabled = info.mig_mode.as_ref().is_some_and(|m| m.current);
    let mig_slices = if mig_enabled {
        info.mig_instances
            .iter()
            .filter_map(|mig| match (&mig.uuid, &mig.profile) {
                (Some(uuid), Some(profile)) => Some(MigSlice {
                    key: format!("mig:{uuid}"),
                    profile: profile.clone(),
                }),
                _ => {
                    tracing::warn!(gpu = %uuid, mig_index = mig.mig_index, "MIG slice left out of the inventory: no UUID or profile");
                    None
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(Gpu {
        key: format!("gpu:{uuid}"),
        model: info.name.clone().unwrap_or_else(|| "unknown".into()),
        mig_slices,
    })
}

/// `rapl:<node>:package-N` for each RAPL package zone under `powercap_root`; a host
/// without readable RAPL still has one package to run CPU jobs on (`package-0`).
fn cpu_packages(node_name: &str, powercap_root: &Path) -> Vec<String> {
    let mut packages: Vec<String> = std::fs::read_dir(powercap_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("intel-rapl:")
                .is_some_and(|rest| !rest.contains(':'))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("name")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("package-"))
        .collect();
    packages.sort();
    packages.dedup();
    if packages.is_empty() {
        packages.push("package-0".into());
    }
    packages
        .into_iter()
        .map(|p| format!("rapl:{node_name}:{p}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, uuid: &str) -> GpuInfo {
        GpuInfo {
            index,
            uuid: Some(uuid.into()),
            name: None,
            memory_total_bytes: None,
            power_limit_w: None,
            driver_version: None,
            mig_mode: None,
            mig_instances: Vec::new(),
            unavailable: Default::default(),
        }
    }

    #[test]
    fn runner_indices_follow_cuda_visible_devices() {
        let g2 = gpu(2, "GPU-c");
        assert_eq!(runner_index(&g2, None), Some(2));
        assert_eq!(runner_index(&g2, Some("3,2")), Some(1));
        assert_eq!(runner_index(&g2, Some("GPU-a, GPU-c")), Some(1));
        assert_eq!(runner_index(&g2, Some("0,1")), None);
        assert_eq!(runner_index(&g2, Some("-1")), None);
    }

    #[test]
    fn cpu_packages_come_from_the_powercap_tree() {
        let root = tempfile::tempdir().unwrap();
        for (dir, name) in [
            ("intel-rapl:0", "package-0"),
            ("intel-rapl:1", "package-1"),
            ("intel-rapl:0:0", "core"),
            ("intel-rapl:2", "psys"),
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
            std::fs::write(root.path().join(dir).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            cpu_packages("n1", root.path()),
            vec!["rapl:n1:package-0", "rapl:n1:package-1"]
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(cpu_packages("n1", empty.path()), vec!["rapl:n1:package-0"]);
    }
}
