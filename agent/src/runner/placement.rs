//! Which GPUs a job runs on and meters. The placement is an argument of the run (part of
//! its [`RunContext`](super::RunContext)), never part of the job's key and never read
//! from the environment while the job runs.

/// The devices of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePlacement {
    /// Embedded mode: the config's `gpu_list` indexes the visible devices, which are
    /// `CUDA_VISIBLE_DEVICES` as the process saw it at start (`None`: unset, so every
    /// GPU by NVML index).
    GpuList {
        cuda_visible_devices: Option<String>,
    },
    /// A lease names the devices (a networked agent cannot change
    /// `CUDA_VISIBLE_DEVICES` once CUDA has started): NVML targets in order (GPU index,
    /// GPU UUID or MIG UUID, as `NvmlMeter::open_targets` takes them) and the CUDA
    /// ordinal inference loads on. The config's `gpu_list` is not consulted.
    Devices {
        targets: Vec<String>,
        cuda_ordinal: usize,
    },
}

impl Default for DevicePlacement {
    /// Every GPU by index, as with `CUDA_VISIBLE_DEVICES` unset.
    fn default() -> Self {
        Self::GpuList {
            cuda_visible_devices: None,
        }
    }
}

impl DevicePlacement {
    /// The job's GPUs as NVML targets (see [`gpu_targets`] for `GpuList`).
    pub fn gpu_targets(&self, gpu_list: &[u32]) -> Result<Vec<String>, String> {
        match self {
            Self::GpuList {
                cuda_visible_devices,
            } => gpu_targets(cuda_visible_devices.as_deref(), gpu_list),
            Self::Devices { targets, .. } if targets.is_empty() => {
                Err("the job's placement names no GPU".into())
            }
            Self::Devices { targets, .. } => Ok(targets.clone()),
        }
    }

    /// The CUDA device inference loads on: `gpu_list[0]` among the visible devices (as
    /// CUDA counts them), or the lease's ordinal.
    pub fn cuda_ordinal(&self, gpu_list: &[u32]) -> usize {
        match self {
            Self::GpuList { .. } => gpu_list.first().map_or(0, |&g| g as usize),
            Self::Devices { cuda_ordinal, .. } => *cuda_ordinal,
        }
    }
}

/// The GPUs a job uses, as NVML targets: `gpu_list` indexes the visible devices, which
/// are `CUDA_VISIBLE_DEVICES` (indices, GPU UUIDs or MIG UUIDs) when set, else all GPUs
/// by index. An empty or `-1` `CUDA_VISIBLE_DEVICES` hides every GPU.
pub fn gpu_targets(cuda_visible: Option<&str>, gpu_list: &[u32]) -> Result<Vec<String>, String> {
    let Some(visible) = cuda_visible else {
        return Ok(gpu_list.iter().map(u32::to_string).collect());
    };
    let visible: Vec<&str> = visible
        .split(',')
        .map(str::trim)
        .take_while(|v| !v.is_empty() && *v != "-1" && *v != "NoDevFiles")
        .collect();
    if visible.is_empty() {
        return Err("CUDA_VISIBLE_DEVICES hides every GPU".into());
    }
    gpu_list
        .iter()
        .map(|&i| {
            visible.get(i as usize).map(|v| v.to_string()).ok_or_else(|| {
                format!(
                    "gpu_list entry {i} is out of range: CUDA_VISIBLE_DEVICES makes {} device(s) visible",
                    visible.len()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_targets_follow_cuda_visible_devices() {
        assert_eq!(gpu_targets(None, &[0, 2]).unwrap(), vec!["0", "2"]);
        assert_eq!(
            gpu_targets(Some("MIG-aaaa,MIG-bbbb"), &[1]).unwrap(),
            vec!["MIG-bbbb"]
        );
        assert_eq!(gpu_targets(Some("3, 1"), &[0, 1]).unwrap(), vec!["3", "1"]);
        // CUDA stops at the first invalid entry.
        assert_eq!(gpu_targets(Some("2,-1,3"), &[0]).unwrap(), vec!["2"]);
        assert!(gpu_targets(Some("2,-1,3"), &[1])
            .unwrap_err()
            .contains("out of range"));
        assert!(gpu_targets(Some(""), &[0])
            .unwrap_err()
            .contains("hides every GPU"));
        assert!(gpu_targets(Some("-1"), &[0]).is_err());
    }

    #[test]
    fn a_leased_placement_ignores_gpu_list_and_the_visible_devices() {
        let leased = DevicePlacement::Devices {
            targets: vec!["GPU-b".into(), "GPU-c".into()],
            cuda_ordinal: 2,
        };
        // The same config (gpu_list [0]) lands wherever the lease says.
        assert_eq!(leased.gpu_targets(&[0]).unwrap(), ["GPU-b", "GPU-c"]);
        assert_eq!(leased.cuda_ordinal(&[0]), 2);
        let none = DevicePlacement::Devices {
            targets: vec![],
            cuda_ordinal: 0,
        };
        assert!(none.gpu_targets(&[0]).unwrap_err().contains("names no GPU"));
        let embedded = DevicePlacement::GpuList {
            cuda_visible_devices: Some("GPU-x,GPU-y".into()),
        };
        assert_eq!(embedded.gpu_targets(&[1]).unwrap(), ["GPU-y"]);
        assert_eq!(embedded.cuda_ordinal(&[1, 0]), 1);
    }
}
