//! The process-wide register of metered devices: a job claims every device it will meter
//! before its idle baseline and holds the claim (a guard) until its window closes, so two
//! concurrent jobs of one process never meter the same physical device (invariant 4).
//!
//! A claim is all or nothing, taken under one lock, so two jobs waiting for each other's
//! devices cannot deadlock: neither holds part of what it wants while it waits.

use super::ownership::{plan_metered_devices, DeviceKey, MeterEnvironment, MeteredDevice};
use crate::runner::RunContext;
use lem_common::config::ExperimentConfig;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a waiting claim looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// A device held by someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: DeviceKey,
    /// The label the holder claimed with (e.g. its experiment).
    pub holder: String,
}

/// A waiting claim gave up: the job was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped while waiting for a metered device")]
pub struct Stopped;

/// Who holds each device now.
#[derive(Debug, Default)]
struct Held {
    /// Per device key: (claim id, holder label, device as claimed).
    by_key: BTreeMap<DeviceKey, Vec<(u64, String, MeteredDevice)>>,
    next_id: u64,
    /// Claims waiting for a device now.
    waiting: usize,
}

impl Held {
    fn conflict(&self, wanted: &[MeteredDevice]) -> Option<Conflict> {
        wanted.iter().find_map(|d| {
            self.by_key
                .get(&d.key)?
                .iter()
                .find_map(|(_, holder, held)| {
                    d.conflicts_with(held).then(|| Conflict {
                        key: d.key.clone(),
                        holder: holder.clone(),
                    })
                })
        })
    }
}

/// A register of claimed devices; [`DeviceClaims::global`] is the process's.
#[derive(Debug, Default)]
pub struct DeviceClaims {
    held: Mutex<Held>,
    released: Condvar,
}

/// Devices held by one job; dropping it releases them.
#[derive(Debug)]
pub struct DeviceClaim<'r> {
    claims: &'r DeviceClaims,
    id: u64,
    devices: Vec<MeteredDevice>,
}

impl DeviceClaim<'_> {
    /// The devices held.
    pub fn devices(&self) -> &[MeteredDevice] {
        &self.devices
    }
}

impl Drop for DeviceClaim<'_> {
    fn drop(&mut self) {
        let mut held = self.claims.lock();
        for d in &self.devices {
            if let Some(holders) = held.by_key.get_mut(&d.key) {
                holders.retain(|(id, _, _)| *id != self.id);
                if holders.is_empty() {
                    held.by_key.remove(&d.key);
                }
            }
        }
        drop(held);
        self.claims.released.notify_all();
    }
}

/// A claim that had to wait: for whom, and how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Waited {
    /// The first conflict seen.
    pub conflict: Conflict,
    pub waited: Duration,
}

impl DeviceClaims {
    pub fn new() -> Self {
        Self::default()
    }

    /// The register shared by every job of this process.
    pub fn global() -> &'static DeviceClaims {
        static GLOBAL: std::sync::OnceLock<DeviceClaims> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(DeviceClaims::new)
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves the map consistent (every update is one
        // insert or retain), so a poisoned lock is still usable.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, held: &mut Held, holder: &str, devices: &[MeteredDevice]) -> DeviceClaim<'_> {
        let id = held.next_id;
        held.next_id += 1;
        for d in devices {
            held.by_key
                .entry(d.key.clone())
                .or_default()
                .push((id, holder.to_owned(), d.clone()));
        }
        DeviceClaim {
            claims: self,
            id,
            devices: devices.to_vec(),
        }
    }

    /// Claims all of `devices` for `holder` now, or none with the first conflict.
    pub fn try_claim(
        &self,
        holder: &str,
        devices: &[MeteredDevice],
    ) -> Result<DeviceClaim<'_>, Conflict> {
        let mut held = self.lock();
        match held.conflict(devices) {
            Some(c) => Err(c),
            None => Ok(self.insert(&mut held, holder, devices)),
        }
    }

    /// Claims all of `devices` for `holder`, waiting while another claim holds one of
    /// them; [`Stopped`] when `stop` is set while waiting (Ctrl+C). Says whom it waited
    /// for.
    pub fn claim(
        &self,
        holder: &str,
        devices: &[MeteredDevice],
        stop: &AtomicBool,
    ) -> Result<(DeviceClaim<'_>, Option<Waited>), Stopped> {
        let started = Instant::now();
        let mut first_conflict = None;
        let mut held = self.lock();
        loop {
            match held.conflict(devices) {
                None => {
                    if first_conflict.is_some() {
                        held.waiting -= 1;
                    }
                    let claim = self.insert(&mut held, holder, devices);
                    let waited = first_conflict.map(|conflict| Waited {
                        conflict,
                        waited: started.elapsed(),
                    });
                    return Ok((claim, waited));
                }
                Some(c) => {
                    if stop.load(Ordering::Relaxed) {
                        if first_conflict.is_some() {
                            held.waiting -= 1;
                        }
                        return Err(Stopped);
                    }
                    if first_conflict.is_none() {
                        held.waiting += 1;
                        first_conflict = Some(c);
                    }
                    held = self
                        .released
                        .wait_timeout(held, STOP_CHECK)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// How many claims wait for a device now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// The holders of `key` now (labels), for messages and tests.
    pub fn holders(&self, key: &DeviceKey) -> Vec<String> {
        self.lock()
            .by_key
            .get(key)
            .map(|v| v.iter().map(|(_, h, _)| h.clone()).collect())
            .unwrap_or_default()
    }
}

/// For the runner: claims, in the process's register, every device a job with `cfg`
/// meters under `ctx` (RAPL under its powercap root, the GPUs of its placement when
/// `on_gpu` or an NVML library is named), waiting while another job of this process
/// meters one. A wait is said in `warnings`. `None` when `stop` is set while waiting.
pub fn claim_for_job(
    cfg: &ExperimentConfig,
    ctx: &RunContext,
    on_gpu: bool,
    holder: &str,
    stop: &AtomicBool,
    warnings: &mut Vec<String>,
) -> Option<DeviceClaim<'static>> {
    let probe_gpus = on_gpu || ctx.nvml_lib.is_some();
    let env = MeterEnvironment::probe(ctx, probe_gpus);
    let devices = plan_metered_devices(cfg, on_gpu, &env);
    let (claim, waited) = DeviceClaims::global().claim(holder, &devices, stop).ok()?;
    if let Some(w) = waited {
        warnings.push(format!(
            "waited {:.1} s before the idle baseline: {} was metered by {} (two jobs never meter one device at once)",
            w.waited.as_secs_f64(),
            w.conflict.key,
            w.conflict.holder
        ));
    }
    Some(claim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::ownership::Access;
    use std::sync::mpsc;
    use std::sync::Arc;

    fn dev(key: DeviceKey, access: Access) -> MeteredDevice {
        MeteredDevice { key, access }
    }

    fn package() -> MeteredDevice {
        dev(DeviceKey::rapl(None, "package-0"), Access::Exclusive)
    }

    #[test]
    fn an_exclusive_device_has_one_holder_until_released() {
        let claims = DeviceClaims::new();
        let gpu = dev(DeviceKey::gpu("GPU-a"), Access::Exclusive);
        let a = claims
            .try_claim("job a", &[package(), gpu.clone()])
            .unwrap();
        let err = claims.try_claim("job b", &[package()]).unwrap_err();
        assert_eq!(
            err,
            Conflict {
                key: package().key,
                holder: "job a".into()
            }
        );
        // All or nothing: a conflict on the package leaves the free GPU-b unclaimed.
        let gpu_b = dev(DeviceKey::gpu("GPU-b"), Access::Exclusive);
        assert!(claims
            .try_claim("job b", &[gpu_b.clone(), package()])
            .is_err());
        assert!(claims.holders(&gpu_b.key).is_empty());
        drop(a);
        assert!(claims.holders(&package().key).is_empty());
        let b = claims.try_claim("job b", &[package()]).unwrap();
        assert_eq!(b.devices(), [package()]);
        assert_eq!(claims.holders(&package().key), ["job b"]);
    }

    #[test]
    fn shared_parents_admit_shared_holders_only() {
        let claims = DeviceClaims::new();
        let parent = DeviceKey::gpu("GPU-p");
        let shared = dev(parent.clone(), Access::Shared);
        let s1 = dev(DeviceKey::mig("MIG-1"), Access::Exclusive);
        let s2 = dev(DeviceKey::mig("MIG-2"), Access::Exclusive);
        let _a = claims
            .try_claim("a", &[shared.clone(), s1.clone()])
            .unwrap();
        let _b = claims.try_claim("b", &[shared.clone(), s2]).unwrap();
        assert_eq!(claims.holders(&parent), ["a", "b"]);
        assert!(claims.try_claim("c", &[shared, s1]).is_err(), "slice held");
        assert!(claims
            .try_claim("d", &[dev(parent, Access::Exclusive)])
            .is_err());
    }

    #[test]
    fn a_waiting_claim_proceeds_when_the_holder_releases() {
        let claims = Arc::new(DeviceClaims::new());
        let first = claims.try_claim("first", &[package()]).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let claims = claims.clone();
            std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                let (claim, waited) = claims.claim("second", &[package()], &stop).unwrap();
                tx.send(claims.holders(&package().key)).unwrap();
                drop(claim);
                waited
            })
        };
        // Bounded wait until the second claim is waiting (a loaded machine may be slow).
        let deadline = Instant::now() + Duration::from_secs(30);
        while claims.waiting() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(claims.waiting(), 1);
        // It cannot have the package while `first` holds it.
        assert!(rx.try_recv().is_err());
        assert_eq!(claims.holders(&package().key), ["first"]);
        drop(first);
        assert_eq!(rx.recv().unwrap(), ["second"]);
        let waited = waiter.join().unwrap().expect("it waited");
        assert_eq!(waited.conflict.holder, "first");
        assert_eq!(claims.waiting(), 0);
    }

    #[test]
    fn a_waiting_claim_gives_up_on_stop() {
        let claims = DeviceClaims::new();
        let _held = claims.try_claim("first", &[package()]).unwrap();
        let stop = AtomicBool::new(true);
        assert_eq!(
            claims.claim("second", &[package()], &stop).unwrap_err(),
            Stopped
        );
        assert_eq!(claims.holders(&package().key), ["first"]);
        assert_eq!(claims.waiting(), 0);
    }
}
