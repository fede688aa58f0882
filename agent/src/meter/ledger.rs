//! Device-ownership ledger: each physical device of a job is read by exactly one reader
//! per window, however many processes or ranks run on it.
//!
//! The seed tool had every process read every GPU and summed the results, so four
//! data-parallel processes on one node reported four times the node's energy. Here each
//! rank claims the devices it uses; the first claim of a device makes that rank its
//! reader, and later claimants get nothing to read for it. Merging the ranks' readings
//! then counts each device once ([`merge_readings`]), which the aggregate relies on.

use lem_common::domain::EnergyReading;
use std::collections::BTreeMap;

/// Which rank reads which device.
#[derive(Debug, Default, Clone)]
pub struct DeviceLedger {
    reader_by_device: BTreeMap<String, usize>,
}

impl DeviceLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rank `rank` uses `devices`; returns the ones it must read (those no other rank
    /// reads yet). Claiming again is idempotent.
    pub fn claim(&mut self, rank: usize, devices: &[String]) -> Vec<String> {
        devices
            .iter()
            .filter(|d| *self.reader_by_device.entry((*d).clone()).or_insert(rank) == rank)
            .cloned()
            .collect()
    }

    /// The rank that reads `device`, if any claimed it.
    pub fn reader_of(&self, device: &str) -> Option<usize> {
        self.reader_by_device.get(device).copied()
    }
}

/// The readings of all ranks, each device once: a device reported by several ranks keeps
/// its first reading (in rank order) and the others are returned as duplicates, so the
/// caller can warn rather than add them.
pub fn merge_readings(
    per_rank: Vec<Vec<EnergyReading>>,
) -> (Vec<EnergyReading>, Vec<EnergyReading>) {
    let mut seen = std::collections::BTreeSet::new();
    let (mut kept, mut duplicates) = (Vec::new(), Vec::new());
    for r in per_rank.into_iter().flatten() {
        if seen.insert((r.device_kind, r.device_id.clone())) {
            kept.push(r);
        } else {
            duplicates.push(r);
        }
    }
    (kept, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_common::domain::{DeviceKind, EnergySource};

    fn reading(kind: DeviceKind, id: &str, mj: f64) -> EnergyReading {
        EnergyReading {
            source: EnergySource::NvmlCounter,
            energy_mj: Some(mj),
            unavailable_reason: None,
            ..EnergyReading::unavailable(kind, id, "", 1_000_000_000)
        }
    }

    #[test]
    fn n_ranks_on_shared_devices_read_each_device_once() {
        let gpus: Vec<String> = vec!["GPU-a".into(), "GPU-b".into()];
        let cpu = vec!["package-0".to_string()];
        let mut ledger = DeviceLedger::new();
        // Four ranks: each uses both GPUs (tensor-parallel style) and the CPU package.
        let mut per_rank = Vec::new();
        for rank in 0..4 {
            let mut wanted = gpus.clone();
            wanted.extend(cpu.clone());
            let to_read = ledger.claim(rank, &wanted);
            if rank == 0 {
                assert_eq!(to_read, wanted);
            } else {
                assert!(to_read.is_empty(), "rank {rank} must read nothing");
            }
            // A rank reads only what the ledger gave it.
            per_rank.push(
                to_read
                    .iter()
                    .map(|d| {
                        let kind = if d.starts_with("GPU") {
                            DeviceKind::Gpu
                        } else {
                            DeviceKind::CpuPackage
                        };
                        reading(kind, d, 100_000.0)
                    })
                    .collect(),
            );
        }
        let (merged, duplicates) = merge_readings(per_rank);
        assert_eq!(merged.len(), 3);
        assert!(duplicates.is_empty());
        let total: f64 = merged.iter().filter_map(|r| r.energy_mj).sum();
        assert_eq!(total, 300_000.0, "not 4 × 300 J");
        assert_eq!(ledger.reader_of("GPU-b"), Some(0));
        assert_eq!(ledger.claim(0, &gpus), gpus, "idempotent for the reader");
    }

    #[test]
    fn data_parallel_ranks_each_read_their_own_gpu() {
        let mut ledger = DeviceLedger::new();
        for rank in 0..4 {
            let mine = vec![format!("GPU-{rank}")];
            assert_eq!(ledger.claim(rank, &mine), mine);
        }
        assert_eq!(ledger.reader_of("GPU-3"), Some(3));
        assert_eq!(ledger.reader_of("GPU-9"), None);
    }

    #[test]
    fn readings_reported_twice_are_kept_once_and_returned_as_duplicates() {
        let a = reading(DeviceKind::Gpu, "GPU-a", 5.0);
        let (kept, dup) = merge_readings(vec![vec![a.clone()], vec![a.clone()], vec![a]]);
        assert_eq!(kept.len(), 1);
        assert_eq!(dup.len(), 2);
    }
}
