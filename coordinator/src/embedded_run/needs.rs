//! What an embedded experiment's jobs claim. Until the runner takes its devices from
//! the lease, it picks them itself from the config (its `gpu_list`, the host's RAPL
//! packages), so each job is pinned: it claims exactly the devices it will meter, plus
//! its experiment, so two cycles of one experiment never run at once.

use crate::scheduler::{Claim, ClaimMode, DeviceKey, DeviceNeeds};
use lem_agent::meter::ownership::{Access, MeteredDevice};

/// The claim that keeps an experiment's cycles one after another.
pub fn experiment_claim_key(experiment: &str) -> DeviceKey {
    DeviceKey(format!("experiment:{experiment}"))
}

/// `experiment`'s needs: its metered devices (as planned for its config) and itself.
pub fn pinned_needs(experiment: &str, metered: &[MeteredDevice]) -> DeviceNeeds {
    let mut claims = vec![Claim {
        key: experiment_claim_key(experiment),
        mode: ClaimMode::Exclusive,
    }];
    claims.extend(metered.iter().map(|d| Claim {
        key: DeviceKey(d.key.to_string()),
        mode: match d.access {
            Access::Exclusive => ClaimMode::Exclusive,
            Access::Shared => ClaimMode::Shared,
        },
    }));
    DeviceNeeds::Pinned { claims }
}
