//! Who holds each metered device. The one place that enforces "never two leases on one
//! metered device": an exclusive claim excludes every other claim; shared claims (a MIG
//! parent under attributed energy) coexist only with each other.

use super::types::{AttemptId, Claim, ClaimMode, DeviceKey};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default, Clone)]
struct Holders {
    exclusive: Option<AttemptId>,
    shared: BTreeSet<AttemptId>,
}

#[derive(Debug, Default, Clone)]
pub struct ClaimTable {
    by_device: BTreeMap<DeviceKey, Holders>,
    /// Devices a fenced attempt still occupies on its agent (the agent reported it
    /// running after its lease ended): not leasable until the agent stops it.
    stale_busy: BTreeMap<DeviceKey, u32>,
}

impl ClaimTable {
    /// True when a claim in `mode` on `key` would be compatible with what is held.
    pub fn can_claim(&self, key: &DeviceKey, mode: ClaimMode) -> bool {
        if self.stale_busy.contains_key(key) {
            return false;
        }
        match self.by_device.get(key) {
            None => true,
            Some(h) => match mode {
                ClaimMode::Exclusive => h.exclusive.is_none() && h.shared.is_empty(),
                ClaimMode::Shared => h.exclusive.is_none(),
            },
        }
    }

    /// True when nothing holds or occupies `key`.
    pub fn is_idle(&self, key: &DeviceKey) -> bool {
        !self.stale_busy.contains_key(key) && !self.by_device.contains_key(key)
    }

    /// Records `attempt`'s claims. The caller has checked them with `can_claim` (or is
    /// replaying persisted records, which were checked when they were made).
    pub fn acquire(&mut self, attempt: AttemptId, claims: &[Claim]) {
        for c in claims {
            let h = self.by_device.entry(c.key.clone()).or_default();
            match c.mode {
                ClaimMode::Exclusive => h.exclusive = Some(attempt),
                ClaimMode::Shared => {
                    h.shared.insert(attempt);
                }
            }
        }
    }

    pub fn release(&mut self, attempt: AttemptId, claims: &[Claim]) {
        for c in claims {
            if let Some(h) = self.by_device.get_mut(&c.key) {
                if h.exclusive == Some(attempt) {
                    h.exclusive = None;
                }
                h.shared.remove(&attempt);
                if h.exclusive.is_none() && h.shared.is_empty() {
                    self.by_device.remove(&c.key);
                }
            }
        }
    }

    pub fn mark_stale_busy(&mut self, keys: &[DeviceKey]) {
        for k in keys {
            *self.stale_busy.entry(k.clone()).or_default() += 1;
        }
    }

    pub fn clear_stale_busy(&mut self, keys: &[DeviceKey]) {
        for k in keys {
            if let Some(n) = self.stale_busy.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    self.stale_busy.remove(k);
                }
            }
        }
    }
}
