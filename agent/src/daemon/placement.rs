//! Where a leased job runs: the lease's `devices` (keys from this node's inventory)
//! become the runner's placement argument ([`DevicePlacement::Devices`]). The one place
//! that maps a lease onto what the runner is given.
//!
//! A long-lived agent cannot change `CUDA_VISIBLE_DEVICES` once CUDA has started, so
//! devices are selected explicitly: the meters open the leased GPU / MIG UUIDs, and CUDA
//! inference loads on the first GPU's index (a MIG slice: its parent's; CUDA inference on
//! a slice needs an agent started with `CUDA_VISIBLE_DEVICES` naming that slice). The
//! config's `gpu_list` is not consulted and the leased config is run as it came.

use crate::runner::DevicePlacement;
use lem_common::wire::LeaseGrant;
use std::collections::BTreeMap;

/// The devices of this node by inventory key, as the runner addresses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceDirectory {
    /// `gpu:<uuid>` → the runner's index for it (see [`super::inventory`]).
    pub gpu_index: BTreeMap<String, u32>,
    /// `mig:<uuid>` → its parent's `gpu:<uuid>`.
    pub mig_parent: BTreeMap<String, String>,
    /// `rapl:<node>:package-N`.
    pub cpu_packages: Vec<String>,
}

/// A lease's devices, resolved on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Runner indices of whole GPUs (a slice: its parent's), in lease order (empty for a
    /// CPU job).
    pub gpu_indices: Vec<u32>,
    /// What the meters open: GPU UUIDs, or MIG UUIDs (`MIG-…`), in lease order.
    pub nvml_targets: Vec<String>,
}

impl Placement {
    /// The runner's placement argument for this lease.
    pub fn device_placement(&self) -> DevicePlacement {
        DevicePlacement::Devices {
            targets: self.nvml_targets.clone(),
            cuda_ordinal: self.gpu_indices.first().map_or(0, |&i| i as usize),
        }
    }
}

/// Resolves `lease.devices` against the node's devices; a key that is not here, or a
/// lease with nothing to run on, is an error in words (sent back as LeaseRejected).
pub fn place(lease: &LeaseGrant, devices: &DeviceDirectory) -> Result<Placement, String> {
    if lease.devices.is_empty() {
        return Err("the lease names no device to run on".into());
    }
    let mut placement = Placement {
        gpu_indices: Vec::new(),
        nvml_targets: Vec::new(),
    };
    for key in &lease.devices {
        if let Some(&index) = devices.gpu_index.get(key) {
            placement.gpu_indices.push(index);
            placement
                .nvml_targets
                .push(key.trim_start_matches("gpu:").to_owned());
        } else if let Some(parent) = devices.mig_parent.get(key) {
            if let Some(&index) = devices.gpu_index.get(parent) {
                placement.gpu_indices.push(index);
            }
            placement
                .nvml_targets
                .push(key.trim_start_matches("mig:").to_owned());
        } else if devices.cpu_packages.contains(key) {
            // CPU jobs need no selection: the runner meters the host's RAPL packages.
        } else {
            return Err(format!("device {key} is not on this node"));
        }
    }
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_common::wire::AttemptRef;

    fn directory() -> DeviceDirectory {
        DeviceDirectory {
            gpu_index: [("gpu:GPU-a".to_owned(), 0), ("gpu:GPU-b".to_owned(), 1)].into(),
            mig_parent: [("mig:MIG-x".to_owned(), "gpu:GPU-a".to_owned())].into(),
            cpu_packages: vec!["rapl:n:package-0".into()],
        }
    }

    fn lease(devices: &[&str]) -> LeaseGrant {
        LeaseGrant {
            attempt: AttemptRef {
                attempt: 1,
                epoch: 1,
            },
            job: 1,
            sweep: 1,
            experiment_name: "e".into(),
            cycle: 0,
            job_key: "k".into(),
            config: serde_json::Value::Null,
            devices: devices.iter().map(|d| d.to_string()).collect(),
            claims: Vec::new(),
            device_model: None,
            ttl_ms: 1000,
        }
    }

    #[test]
    fn gpu_keys_become_their_nvml_indices_and_uuids() {
        let p = place(&lease(&["gpu:GPU-b", "gpu:GPU-a"]), &directory()).unwrap();
        assert_eq!(p.gpu_indices, vec![1, 0]);
        assert_eq!(p.nvml_targets, vec!["GPU-b", "GPU-a"]);
        let cpu = place(&lease(&["rapl:n:package-0"]), &directory()).unwrap();
        assert!(cpu.gpu_indices.is_empty() && cpu.nvml_targets.is_empty());
    }

    #[test]
    fn unknown_and_empty_leases_are_refused_in_words() {
        let err = place(&lease(&["gpu:GPU-z"]), &directory()).unwrap_err();
        assert!(
            err.contains("gpu:GPU-z") && err.contains("not on this node"),
            "{err}"
        );
        assert!(place(&lease(&[]), &directory()).is_err());
    }

    #[test]
    fn a_mig_slice_is_metered_by_its_uuid_and_loads_on_its_parent() {
        let p = place(&lease(&["mig:MIG-x"]), &directory()).unwrap();
        assert_eq!(p.nvml_targets, vec!["MIG-x"]);
        assert_eq!(
            p.device_placement(),
            DevicePlacement::Devices {
                targets: vec!["MIG-x".into()],
                cuda_ordinal: 0
            }
        );
        let gpus = place(&lease(&["gpu:GPU-b", "gpu:GPU-a"]), &directory()).unwrap();
        assert_eq!(
            gpus.device_placement(),
            DevicePlacement::Devices {
                targets: vec!["GPU-b".into(), "GPU-a".into()],
                cuda_ordinal: 1
            }
        );
    }
}
