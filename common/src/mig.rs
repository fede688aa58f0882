//! Attribution of a MIG-mode GPU's measured energy to its slices.
//!
//! NVML's energy counter exists only on the physical GPU; slices have none. Two labelled
//! modes:
//! * **exclusive**: the job holds every slice of the parent, so the parent's energy is
//!   the job's, exactly;
//! * **shared**: the parent's energy `E` over the window is split as
//!   - idle part `I = P_idle × window` (when an idle baseline exists, else 0), shared by
//!     compute slices: each slice gets `I × slices_i / total_slices`; the share of
//!     unallocated slices and of free capacity goes to an explicit *unattributed* bucket;
//!   - dynamic part `E − I` shared among allocated slices by GPM SM activity × SM count
//!     when every allocated slice has a GPM reading (and their sum is positive), else by
//!     compute-slice share. With no allocated slice it is unattributed.
//!
//! Everything is apportioned in integer millijoules with the largest-remainder method,
//! so `Σ slices + unattributed == E` exactly. The inputs are stored with the result so
//! anyone can recompute the split.

use serde::{Deserialize, Serialize};

/// How a job relates to the MIG slices of a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigMode {
    /// The job holds every slice: the parent's energy is the job's.
    Exclusive,
    /// Other slices may run other work: the job's energy is an attributed share.
    Shared,
}

/// What the dynamic (above-idle) energy was split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DynamicBasis {
    /// GPM SM activity × SM count of each allocated slice.
    GpmSmActivity,
    /// Compute-slice count of each allocated slice (GPM unavailable).
    ComputeSliceShare,
}

/// One MIG slice (GPU instance) of the parent, as measured over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceInput {
    /// MIG device UUID (`MIG-...`).
    pub slice_id: String,
    /// Profile name, e.g. `3g.40gb`.
    pub profile: String,
    /// Compute slices of the GPU instance (3 for `3g.40gb`).
    pub compute_slices: u32,
    pub sm_count: u32,
    /// True when some work (this job or another) runs on the slice.
    pub allocated: bool,
    /// True for the slices this job runs on.
    pub owned_by_job: bool,
    /// GPM SM activity over the window, 0..=1; `None` where GPM is unsupported.
    pub sm_activity: Option<f64>,
}

/// The share of one slice, in millijoules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceShare {
    pub slice_id: String,
    pub idle_mj: i64,
    pub dynamic_mj: i64,
    pub energy_mj: i64,
}

/// A MIG attribution: the inputs and the split. Stored on readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigAttribution {
    pub mode: MigMode,
    pub parent_id: String,
    /// The parent's counter difference over the window.
    pub parent_energy_mj: u64,
    /// The parent's idle power; `None` = no baseline, everything split as dynamic.
    pub parent_idle_power_w: Option<f64>,
    pub window_ns: u64,
    /// Compute slices the parent has in all (7 on A100/H100).
    pub total_compute_slices: u32,
    /// Set when NVML could not give `total_compute_slices` and lem assumed it: why, and
    /// what was assumed. The idle split (and so every share) rests on that assumption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_compute_slices_assumed: Option<String>,
    pub slices: Vec<SliceInput>,
    pub dynamic_basis: DynamicBasis,
    /// One share per entry of `slices`, same order.
    pub shares: Vec<SliceShare>,
    /// Idle share of unallocated slices and free capacity, plus dynamic energy when no
    /// slice is allocated.
    pub unattributed_mj: i64,
}

impl MigAttribution {
    /// The job's energy on this parent: the parent's in exclusive mode, else the sum of
    /// the job's slices' shares.
    pub fn job_energy_mj(&self) -> i64 {
        match self.mode {
            MigMode::Exclusive => self.parent_energy_mj as i64,
            MigMode::Shared => self
                .slices
                .iter()
                .zip(&self.shares)
                .filter(|(s, _)| s.owned_by_job)
                .map(|(_, share)| share.energy_mj)
                .sum(),
        }
    }
}

/// Why an attribution could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MigError {
    #[error(
        "MIG parent {parent}: its slices hold {listed} compute slices, more than the GPU's {total}"
    )]
    TooManySlices {
        parent: String,
        listed: u32,
        total: u32,
    },
    #[error("MIG parent {parent}: total compute slices is 0")]
    NoCapacity { parent: String },
    #[error("MIG slice {slice}: SM activity {value} is outside 0..=1")]
    BadActivity { slice: String, value: f64 },
}

/// The mode for a job holding `slices`' `owned_by_job`: exclusive when it holds every
/// slice of the parent's full capacity.
pub fn mode_for(slices: &[SliceInput], total_compute_slices: u32) -> MigMode {
    let owned: u32 = slices
        .iter()
        .filter(|s| s.owned_by_job)
        .map(|s| s.compute_slices)
        .sum();
    if owned >= total_compute_slices && slices.iter().all(|s| s.owned_by_job) {
        MigMode::Exclusive
    } else {
        MigMode::Shared
    }
}

/// Splits `parent_energy_mj` among `slices` (see the module docs).
pub fn attribute(
    parent_id: &str,
    parent_energy_mj: u64,
    parent_idle_power_w: Option<f64>,
    window_ns: u64,
    total_compute_slices: u32,
    slices: Vec<SliceInput>,
) -> Result<MigAttribution, MigError> {
    if total_compute_slices == 0 {
        return Err(MigError::NoCapacity {
            parent: parent_id.into(),
        });
    }
    let listed: u32 = slices.iter().map(|s| s.compute_slices).sum();
    if listed > total_compute_slices {
        return Err(MigError::TooManySlices {
            parent: parent_id.into(),
            listed,
            total: total_compute_slices,
        });
    }
    for s in &slices {
        if let Some(a) = s.sm_activity {
            if !(0.0..=1.0).contains(&a) {
                return Err(MigError::BadActivity {
                    slice: s.slice_id.clone(),
                    value: a,
                });
            }
        }
    }
    let energy = parent_energy_mj as i64;
    // W × ns = 1e-9 J = 1e-6 mJ.
    let idle_total = parent_idle_power_w
        .map_or(0, |w| (w * window_ns as f64 / 1e6).round() as i64)
        .min(energy)
        .max(0);
    let dynamic_total = energy - idle_total;

    // Idle: by compute slices; unallocated slices and free capacity are unattributed.
    let mut idle_weights: Vec<f64> = slices
        .iter()
        .map(|s| {
            if s.allocated {
                f64::from(s.compute_slices)
            } else {
                0.0
            }
        })
        .collect();
    let allocated_slices: u32 = slices
        .iter()
        .filter(|s| s.allocated)
        .map(|s| s.compute_slices)
        .sum();
    idle_weights.push(f64::from(total_compute_slices - allocated_slices));
    let idle = apportion(idle_total, &idle_weights);

    // Dynamic: among allocated slices, by GPM activity where every one has it.
    let allocated: Vec<&SliceInput> = slices.iter().filter(|s| s.allocated).collect();
    let gpm_weights: Option<Vec<f64>> = allocated
        .iter()
        .map(|s| s.sm_activity.map(|a| a * f64::from(s.sm_count)))
        .collect();
    let (dynamic_basis, dyn_weights): (DynamicBasis, Vec<f64>) = match gpm_weights {
        Some(w) if !allocated.is_empty() && w.iter().sum::<f64>() > 0.0 => {
            (DynamicBasis::GpmSmActivity, w)
        }
        _ => (
            DynamicBasis::ComputeSliceShare,
            allocated
                .iter()
                .map(|s| f64::from(s.compute_slices))
                .collect(),
        ),
    };
    let mut dynamic_for = vec![0i64; slices.len()];
    let mut unattributed = idle[slices.len()];
    if allocated.is_empty() || dyn_weights.iter().sum::<f64>() <= 0.0 {
        unattributed += dynamic_total;
    } else {
        let parts = apportion(dynamic_total, &dyn_weights);
        let mut k = 0;
        for (i, s) in slices.iter().enumerate() {
            if s.allocated {
                dynamic_for[i] = parts[k];
                k += 1;
            }
        }
    }
    let shares = slices
        .iter()
        .enumerate()
        .map(|(i, s)| SliceShare {
            slice_id: s.slice_id.clone(),
            idle_mj: idle[i],
            dynamic_mj: dynamic_for[i],
            energy_mj: idle[i] + dynamic_for[i],
        })
        .collect();
    Ok(MigAttribution {
        mode: mode_for(&slices, total_compute_slices),
        parent_id: parent_id.into(),
        parent_energy_mj,
        parent_idle_power_w,
        window_ns,
        total_compute_slices,
        total_compute_slices_assumed: None,
        slices,
        dynamic_basis,
        shares,
        unattributed_mj: unattributed,
    })
}

/// Splits the integer `total` in proportion to `weights` (largest remainder, ties to
/// the lower index) so the parts sum to `total` exactly. All-zero weights put
/// everything in the last part.
pub fn apportion(total: i64, weights: &[f64]) -> Vec<i64> {
    let mut parts = vec![0i64; weights.len()];
    if weights.is_empty() {
        return parts;
    }
    let sum: f64 = weights.iter().map(|w| w.max(0.0)).sum();
    if sum <= 0.0 {
        *parts.last_mut().expect("non-empty") = total;
        return parts;
    }
    let sign = total.signum();
    let magnitude = total.unsigned_abs() as f64;
    let mut remainders = Vec::with_capacity(weights.len());
    let mut assigned: i64 = 0;
    for (i, w) in weights.iter().enumerate() {
        let exact = magnitude * w.max(0.0) / sum;
        let floor = exact.floor();
        parts[i] = floor as i64;
        assigned += parts[i];
        remainders.push((exact - floor, i));
    }
    // Float rounding can leave the floors a unit over or under; settle on the
    // remainders so the sum is exact.
    let mut left = total.abs() - assigned;
    remainders.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut k = 0;
    while left > 0 {
        let i = remainders[k % remainders.len()].1;
        if weights[i] > 0.0 {
            parts[i] += 1;
            left -= 1;
        }
        k += 1;
    }
    while left < 0 {
        let i = remainders[remainders.len() - 1 - (k % remainders.len())].1;
        if parts[i] > 0 {
            parts[i] -= 1;
            left += 1;
        }
        k += 1;
    }
    if sign < 0 {
        parts.iter_mut().for_each(|p| *p = -*p);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slice(
        id: &str,
        cs: u32,
        sm: u32,
        allocated: bool,
        owned: bool,
        act: Option<f64>,
    ) -> SliceInput {
        SliceInput {
            slice_id: id.into(),
            profile: format!("{cs}g.{}gb", cs * 10),
            compute_slices: cs,
            sm_count: sm,
            allocated,
            owned_by_job: owned,
            sm_activity: act,
        }
    }

    #[test]
    fn apportion_is_exact_and_proportional() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(apportion(-10, &[1.0, 1.0, 1.0]), vec![-4, -3, -3]);
        assert_eq!(apportion(7, &[0.0, 0.0]), vec![0, 7]);
        assert_eq!(apportion(100, &[3.0, 0.0, 1.0]), vec![75, 0, 25]);
    }

    #[test]
    fn shared_mode_by_gpm_activity() {
        // A100: 7 compute slices, 98 SMs; 3g (42 SMs) busy 80%, 2g (28 SMs) busy 20%,
        // 2g unallocated. 100 s at 50 W idle = 5000 J idle of 20000 J measured.
        let a = attribute(
            "GPU-0",
            20_000_000,
            Some(50.0),
            100_000_000_000,
            7,
            vec![
                slice("MIG-a", 3, 42, true, true, Some(0.8)),
                slice("MIG-b", 2, 28, true, false, Some(0.2)),
                slice("MIG-c", 2, 28, false, false, Some(0.0)),
            ],
        )
        .unwrap();
        assert_eq!(a.mode, MigMode::Shared);
        assert_eq!(a.dynamic_basis, DynamicBasis::GpmSmActivity);
        // Idle 5 000 000 mJ by 3 : 2 : 0 (c unallocated) : 2 (free) — the left-over unit
        // goes to the larger remainder, b before the free bucket on a tie.
        assert_eq!(a.shares[0].idle_mj, 2_142_857);
        assert_eq!(a.shares[1].idle_mj, 1_428_572);
        assert_eq!(a.shares[2].energy_mj, 0);
        assert_eq!(a.unattributed_mj, 1_428_571);
        // Dynamic 15 000 000 by 0.8×42 : 0.2×28 = 33.6 : 5.6 = 6 : 1.
        assert_eq!(a.shares[0].dynamic_mj, 12_857_143);
        assert_eq!(a.shares[1].dynamic_mj, 2_142_857);
        let total: i64 = a.shares.iter().map(|s| s.energy_mj).sum::<i64>() + a.unattributed_mj;
        assert_eq!(total, 20_000_000);
        assert_eq!(a.job_energy_mj(), a.shares[0].energy_mj);
    }

    #[test]
    fn without_gpm_falls_back_to_compute_slices() {
        let a = attribute(
            "GPU-0",
            7_000,
            None,
            1_000_000_000,
            7,
            vec![
                slice("MIG-a", 3, 42, true, true, None),
                slice("MIG-b", 4, 56, true, false, Some(0.5)),
            ],
        )
        .unwrap();
        assert_eq!(a.dynamic_basis, DynamicBasis::ComputeSliceShare);
        assert_eq!(a.shares[0].energy_mj, 3_000);
        assert_eq!(a.shares[1].energy_mj, 4_000);
        assert_eq!(a.unattributed_mj, 0);
    }

    #[test]
    fn exclusive_mode_gives_the_parent_energy() {
        let slices = vec![
            slice("MIG-a", 4, 56, true, true, Some(0.9)),
            slice("MIG-b", 3, 42, true, true, Some(0.1)),
        ];
        let a = attribute("GPU-0", 12_345, Some(10.0), 1_000_000_000, 7, slices).unwrap();
        assert_eq!(a.mode, MigMode::Exclusive);
        assert_eq!(a.job_energy_mj(), 12_345);
    }

    #[test]
    fn no_allocated_slice_leaves_everything_unattributed() {
        let a = attribute(
            "GPU-0",
            5_000,
            Some(1.0),
            1_000_000_000,
            7,
            vec![slice("MIG-a", 7, 98, false, false, None)],
        )
        .unwrap();
        assert_eq!(a.shares[0].energy_mj, 0);
        assert_eq!(a.unattributed_mj, 5_000);
    }

    #[test]
    fn idle_above_measured_is_capped_and_bad_inputs_are_refused() {
        // A baseline higher than the measured energy cannot make a slice negative.
        let a = attribute(
            "GPU-0",
            1_000,
            Some(100.0),
            1_000_000_000,
            7,
            vec![slice("MIG-a", 7, 98, true, true, None)],
        )
        .unwrap();
        assert_eq!(a.shares[0].energy_mj, 1_000);
        assert!(matches!(
            attribute(
                "GPU-0",
                1,
                None,
                1,
                2,
                vec![slice("MIG-a", 3, 1, true, true, None)]
            ),
            Err(MigError::TooManySlices {
                listed: 3,
                total: 2,
                ..
            })
        ));
        assert!(matches!(
            attribute(
                "GPU-0",
                1,
                None,
                1,
                7,
                vec![slice("MIG-a", 3, 1, true, true, Some(1.5))]
            ),
            Err(MigError::BadActivity { .. })
        ));
        assert!(attribute("GPU-0", 1, None, 1, 0, vec![]).is_err());
    }

    proptest! {
        /// Conservation: slices + unattributed = parent, exactly, for any layout.
        #[test]
        fn shares_add_up_to_the_parent_exactly(
            energy in 0u64..10_000_000_000,
            idle_w in proptest::option::of(0.0f64..800.0),
            window_ms in 1u64..3_600_000,
            layout in proptest::collection::vec((1u32..=3, any::<bool>(), any::<bool>(), proptest::option::of(0.0f64..=1.0)), 1..=3),
        ) {
            let slices: Vec<SliceInput> = layout
                .iter()
                .enumerate()
                .map(|(i, &(cs, alloc, owned, act))| {
                    slice(&format!("MIG-{i}"), cs, cs * 14, alloc || owned, owned, act)
                })
                .collect();
            prop_assume!(slices.iter().map(|s| s.compute_slices).sum::<u32>() <= 7);
            let a = attribute("GPU-0", energy, idle_w, window_ms * 1_000_000, 7, slices).unwrap();
            let sum: i64 = a.shares.iter().map(|s| s.energy_mj).sum::<i64>() + a.unattributed_mj;
            prop_assert_eq!(sum, energy as i64);
            for (s, share) in a.slices.iter().zip(&a.shares) {
                prop_assert!(share.idle_mj >= 0 && share.dynamic_mj >= 0, "{share:?}");
                if !s.allocated { prop_assert_eq!(share.energy_mj, 0); }
            }
        }

        #[test]
        fn apportion_sums_exactly(total in -1_000_000_000i64..1_000_000_000, w in proptest::collection::vec(0.0f64..100.0, 1..8)) {
            let parts = apportion(total, &w);
            prop_assert_eq!(parts.iter().sum::<i64>(), total);
        }
    }
}
