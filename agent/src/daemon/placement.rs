//! Where a leased job runs: the lease's `devices` (keys from this node's inventory)
//! become the run's device selection. The ONE place that maps a lease onto what the
//! runner is given, so the runner's placement argument plugs in here.
//!
//! A long-lived agent cannot change `CUDA_VISIBLE_DEVICES` once CUDA has started, so
//! devices are selected explicitly: each GPU key becomes the index this build's runner
//! reads from the config's `gpu_list` (the NVML index, or the position in the agent's
//! `CUDA_VISIBLE_DEVICES` when a scheduler set it). The NVML targets (GPU / MIG UUIDs)
//! are computed as well: a runner that takes placement as an argument meters exactly
//! those. MIG slices cannot be expressed through `gpu_list` and are refused until then.

use lem_common::config::ExperimentConfig;
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
    /// Runner indices of whole GPUs, in lease order (empty for a CPU job).
    pub gpu_indices: Vec<u32>,
    /// What the meters open: GPU UUIDs, or MIG UUIDs (`MIG-…`), in lease order.
    pub nvml_targets: Vec<String>,
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
        } else if devices.mig_parent.contains_key(key) {
            return Err(format!(
                "{key}: this agent build cannot select a MIG slice for the runner yet \
                 (its runner takes GPUs by index only)"
            ));
        } else if devices.cpu_packages.contains(key) {
            // CPU jobs need no selection: the runner meters the host's RAPL packages.
        } else {
            return Err(format!("device {key} is not on this node"));
        }
    }
    Ok(placement)
}

/// Applies `placement` to the config the runner is given: with today's runner, the GPU
/// selection is the config's `gpu_list`. A CPU-only placement leaves the
/// config as leased.
pub fn apply(placement: &Placement, config: &mut ExperimentConfig) {
    if !placement.gpu_indices.is_empty() {
        config.gpu_list = placement.gpu_indices.clone();
    }
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
    fn unknown_empty_and_mig_leases_are_refused_in_words() {
        let err = place(&lease(&["gpu:GPU-z"]), &directory()).unwrap_err();
        assert!(
            err.contains("gpu:GPU-z") && err.contains("not on this node"),
            "{err}"
        );
        assert!(place(&lease(&[]), &directory()).is_err());
        let err = place(&lease(&["mig:MIG-x"]), &directory()).unwrap_err();
        assert!(err.contains("mig:MIG-x"), "{err}");
    }
}
