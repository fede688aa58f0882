//! Fitting a job's device needs onto one agent's free devices. Pure: it reads the claim
//! table and returns a placement; granting it is the caller's business.

use super::claims::ClaimTable;
use super::types::{
    AgentId, Claim, ClaimMode, DeviceKey, DeviceNeeds, GpuDevice, Inventory, Placement,
};

/// The first placement of `needs` on this agent (devices in inventory order), or `None`.
/// `model` restricts GPU and MIG placements to one product name (the job's own model
/// need, or else the model its experiment's cycles are pinned to; `JobQueue::push`
/// chooses).
pub fn find_placement(
    agent: &AgentId,
    inventory: &Inventory,
    needs: &DeviceNeeds,
    model: Option<&str>,
    claims: &ClaimTable,
) -> Option<Placement> {
    let model_ok = |g: &GpuDevice| model.is_none_or(|m| g.model == m);
    match needs {
        DeviceNeeds::CpuPackages => {
            let keys = &inventory.cpu_packages;
            if keys.is_empty()
                || !keys
                    .iter()
                    .all(|k| claims.can_claim(k, ClaimMode::Exclusive))
            {
                return None;
            }
            Some(Placement {
                agent: agent.clone(),
                devices: keys.clone(),
                claims: exclusive(keys),
                device_model: None,
            })
        }
        DeviceNeeds::Gpus { count, model: _ } => {
            // All GPUs of one job share a model: try each model the agent has, in order.
            let mut tried: Vec<&str> = Vec::new();
            for first in inventory.gpus.iter().filter(|g| g.mig_slices.is_empty()) {
                if tried.contains(&first.model.as_str()) || !model_ok(first) {
                    continue;
                }
                tried.push(first.model.as_str());
                let free: Vec<DeviceKey> = inventory
                    .gpus
                    .iter()
                    .filter(|g| g.mig_slices.is_empty() && g.model == first.model)
                    .filter(|g| claims.can_claim(&g.key, ClaimMode::Exclusive))
                    .map(|g| g.key.clone())
                    .take(*count as usize)
                    .collect();
                if free.len() == *count as usize {
                    return Some(Placement {
                        agent: agent.clone(),
                        claims: exclusive(&free),
                        devices: free,
                        device_model: Some(first.model.clone()),
                    });
                }
            }
            None
        }
        DeviceNeeds::MigSlice {
            profile,
            exclusive_parent,
            model: _,
        } => {
            let parent_mode = if *exclusive_parent {
                ClaimMode::Exclusive
            } else {
                ClaimMode::Shared
            };
            for gpu in inventory.gpus.iter().filter(|g| model_ok(g)) {
                if !claims.can_claim(&gpu.key, parent_mode) {
                    continue;
                }
                let slice = gpu.mig_slices.iter().find(|s| {
                    &s.profile == profile && claims.can_claim(&s.key, ClaimMode::Exclusive)
                });
                if let Some(slice) = slice {
                    return Some(Placement {
                        agent: agent.clone(),
                        devices: vec![slice.key.clone()],
                        claims: vec![
                            Claim {
                                key: slice.key.clone(),
                                mode: ClaimMode::Exclusive,
                            },
                            Claim {
                                key: gpu.key.clone(),
                                mode: parent_mode,
                            },
                        ],
                        device_model: Some(gpu.model.clone()),
                    });
                }
            }
            None
        }
        DeviceNeeds::Pinned { claims: pinned } => {
            if !pinned.iter().all(|c| claims.can_claim(&c.key, c.mode)) {
                return None;
            }
            let slot = inventory
                .runner_slots
                .iter()
                .find(|k| claims.can_claim(k, ClaimMode::Exclusive))?;
            let mut all = exclusive(std::slice::from_ref(slot));
            all.extend(pinned.iter().cloned());
            Some(Placement {
                agent: agent.clone(),
                devices: pinned.iter().map(|c| c.key.clone()).collect(),
                claims: all,
                device_model: None,
            })
        }
    }
}

/// True when some device of the agent is not held at all (a cheap "worth trying" test).
pub fn has_idle_device(inventory: &Inventory, claims: &ClaimTable) -> bool {
    inventory.cpu_packages.iter().any(|k| claims.is_idle(k))
        || inventory.runner_slots.iter().any(|k| claims.is_idle(k))
        || inventory
            .gpus
            .iter()
            .any(|g| claims.is_idle(&g.key) || g.mig_slices.iter().any(|s| claims.is_idle(&s.key)))
}

/// Checks an announced inventory: keys present and distinct.
pub fn check_inventory(inventory: &Inventory) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let all = inventory
        .cpu_packages
        .iter()
        .map(|k| (k, "cpu package"))
        .chain(inventory.runner_slots.iter().map(|k| (k, "runner slot")))
        .chain(inventory.gpus.iter().flat_map(|g| {
            std::iter::once((&g.key, "gpu"))
                .chain(g.mig_slices.iter().map(|s| (&s.key, "mig slice")))
        }));
    for (key, what) in all {
        if key.0.trim().is_empty() {
            return Err(format!("a {what} has an empty key"));
        }
        if !seen.insert(key) {
            return Err(format!("device key {key} is announced twice"));
        }
    }
    for g in &inventory.gpus {
        if let Some(s) = g.mig_slices.iter().find(|s| s.profile.trim().is_empty()) {
            return Err(format!(
                "mig slice {} of {} has an empty profile",
                s.key, g.key
            ));
        }
    }
    Ok(())
}

fn exclusive(keys: &[DeviceKey]) -> Vec<Claim> {
    keys.iter()
        .map(|k| Claim {
            key: k.clone(),
            mode: ClaimMode::Exclusive,
        })
        .collect()
}
