//! Energy meters: the `EnergyMeter` trait and its readers (RAPL, NVML), device ownership,
//! window edges, idle baselines and the checks made on readings.
//!
//! A meter covers one measured window: `start`, optional periodic `poll`, `stop`. `stop`
//! returns one reading per physical device; a device that could not be measured gets a
//! reading with `energy_mj: None` and a reason — never 0 for "unknown".

pub mod baseline;
pub mod checks;
pub mod claims;
pub mod clock;
pub mod edges;
pub mod ledger;
pub mod nvml;
pub mod ownership;
pub mod phases;
pub mod probe;
pub mod rapl;
pub mod rapl_poll;
pub mod sampler;

pub use rapl::{cpu_meter, open_cpu_meters, CpuMeters, RaplMeter};

use lem_common::domain::{BaselineInfo, DeviceKind, EnergyReading};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why a meter could not be created or started. Per-device failures during a window are
/// not errors: they become unavailable readings.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// No usable powercap (RAPL) interface; `reason` is meant for the user.
    #[error("{reason}")]
    NoPowercap { root: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("meter `{0}` is already running a window; stop it first")]
    AlreadyStarted(String),
}

/// Measures the energy of a set of physical devices over one window.
pub trait EnergyMeter: Send {
    /// Short name of the meter (`rapl`, `nvml`, `unavailable`).
    fn name(&self) -> &str;
    /// Opens the window: takes the first counter readings.
    fn start(&mut self) -> Result<(), MeterError>;
    /// Optional intermediate read, so a counter that wraps during a long window is seen
    /// at most once between two reads. Call it periodically (e.g. every second).
    fn poll(&mut self) {}
    /// Cumulative energy (mJ) of each device since `start`, read now, by device id;
    /// `None` for a device that cannot be read. Taken at phase boundaries (see
    /// `phases.rs`). Empty when the meter is not running or cannot checkpoint.
    fn checkpoint(&mut self) -> Vec<(String, Option<f64>)> {
        Vec::new()
    }
    /// A (possibly cached) idle power for `device_id`, for meters that use it inside the
    /// window (NVML's MIG attribution splits the idle part by compute slices).
    fn set_idle_power_w(&mut self, _device_id: &str, _power_w: f64) {}
    /// A (possibly cached) measured update period of `device_id`'s counter, with how it
    /// was measured, for meters that place edges or choose phase splits by it.
    fn set_counter_period_ms(&mut self, _device_id: &str, _period_ms: f64, _method: &str) {}
    /// Closes the window: one reading per physical device, available or with a reason.
    /// The meter can then start a new window.
    fn stop(&mut self) -> Vec<EnergyReading>;
    /// The idle baseline of each device that can be read, over about `duration`. The
    /// default is one plain window: power = energy / window, and no baseline (with the
    /// reason) when the counter did not move; a meter whose counter moves in coarse steps
    /// overrides it to time the energy between counter updates (`baseline.rs`).
    fn idle_baselines(&mut self, duration: Duration) -> Vec<IdleBaseline> {
        if self.start().is_err() {
            return Vec::new();
        }
        std::thread::sleep(duration);
        self.stop()
            .into_iter()
            .filter_map(|r| window_baseline(&r))
            .collect()
    }
}

/// One device's idle baseline as a meter measured it (`info.age_ns` is 0: just taken).
#[derive(Debug, Clone, PartialEq)]
pub struct IdleBaseline {
    pub device_id: String,
    pub info: BaselineInfo,
    /// The counter's update period measured on the way (ms, how), where the meter does.
    pub counter_period: Option<(f64, String)>,
}

/// The baseline a plain idle window gives: mean power = energy / window; `None` for a
/// device that could not be read or an empty window.
pub fn window_baseline(r: &EnergyReading) -> Option<IdleBaseline> {
    let mj = r.energy_mj?;
    if r.window_ns == 0 {
        return None;
    }
    let (power_w, unavailable_reason) = if mj > 0.0 {
        (Some(mj * 1e6 / r.window_ns as f64), None)
    } else {
        (
            None,
            Some(format!(
                "the energy counter did not move during the {:.1} s idle baseline: idle power unknown (not 0 W)",
                r.window_ns as f64 / 1e9
            )),
        )
    };
    Some(IdleBaseline {
        device_id: r.device_id.clone(),
        info: BaselineInfo {
            power_w,
            unavailable_reason,
            method: "window-average: energy over one idle window / its length".into(),
            measured_ns: r.window_ns,
            settle_ns: None,
            settled: None,
            spread_w: None,
            age_ns: 0,
            note: None,
        },
        counter_period: None,
    })
}

/// How long a measured idle baseline is reused: cycles of one experiment share it, a
/// later experiment (the machine may have warmed or idled down) measures again.
pub const BASELINE_TTL: Duration = Duration::from_secs(600);

/// Idle baselines (and measured counter periods) per device id with the time they were
/// measured.
#[derive(Debug, Default)]
pub struct BaselineCache {
    entries: BTreeMap<String, (IdleBaseline, Instant)>,
}

impl BaselineCache {
    /// The baseline power of `device_id` if measured less than `ttl` before `now` (and
    /// the measurement gave one).
    pub fn get(&self, device_id: &str, now: Instant, ttl: Duration) -> Option<f64> {
        self.entry(device_id, now, ttl).and_then(|b| b.info.power_w)
    }

    /// The whole baseline of `device_id`, with its age at `now` in `info.age_ns`, if
    /// measured less than `ttl` before `now` (a null baseline is an entry too).
    pub fn entry(&self, device_id: &str, now: Instant, ttl: Duration) -> Option<IdleBaseline> {
        let (b, at) = self.entries.get(device_id)?;
        let age = now.saturating_duration_since(*at);
        (age < ttl).then(|| {
            let mut b = b.clone();
            b.info.age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
            b
        })
    }

    /// True when every one of `device_ids` has a fresh entry.
    pub fn all_fresh(&self, device_ids: &[String], now: Instant, ttl: Duration) -> bool {
        device_ids
            .iter()
            .all(|id| self.entry(id, now, ttl).is_some())
    }

    /// Caches a measured power (with nothing else known about how).
    pub fn insert(&mut self, device_id: String, power_w: f64, at: Instant) {
        let b = IdleBaseline {
            device_id: device_id.clone(),
            info: BaselineInfo {
                power_w: Some(power_w),
                unavailable_reason: None,
                method: "given".into(),
                measured_ns: 0,
                settle_ns: None,
                settled: None,
                spread_w: None,
                age_ns: 0,
                note: None,
            },
            counter_period: None,
        };
        self.insert_baseline(b, at);
    }

    pub fn insert_baseline(&mut self, baseline: IdleBaseline, at: Instant) {
        self.entries
            .insert(baseline.device_id.clone(), (baseline, at));
    }
}

/// A meter for devices that cannot be measured: every window yields unavailable readings
/// with the same reason, so results always say what is missing and why.
#[derive(Debug)]
pub struct UnavailableMeter {
    devices: Vec<(DeviceKind, String)>,
    reason: String,
    started: Option<Instant>,
}

impl UnavailableMeter {
    pub fn new(devices: Vec<(DeviceKind, String)>, reason: impl Into<String>) -> Self {
        Self {
            devices,
            reason: reason.into(),
            started: None,
        }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl EnergyMeter for UnavailableMeter {
    fn name(&self) -> &str {
        "unavailable"
    }

    fn start(&mut self) -> Result<(), MeterError> {
        if self.started.is_some() {
            return Err(MeterError::AlreadyStarted(self.name().into()));
        }
        self.started = Some(Instant::now());
        Ok(())
    }

    fn stop(&mut self) -> Vec<EnergyReading> {
        let window_ns = elapsed_ns(self.started.take());
        self.devices
            .iter()
            .map(|(kind, id)| {
                EnergyReading::unavailable(*kind, id.clone(), &self.reason, window_ns)
            })
            .collect()
    }
}

/// Nanoseconds since `start`, 0 for a window that never started.
pub(crate) fn elapsed_ns(start: Option<Instant>) -> u64 {
    start.map_or(0, |s| {
        u64::try_from(s.elapsed().as_nanos()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_expire_after_the_ttl() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(600);
        let mut cache = BaselineCache::default();
        cache.insert("gpu-0".into(), 61.5, t0);
        let ids = vec!["gpu-0".to_string()];
        assert_eq!(
            cache.get("gpu-0", t0 + Duration::from_secs(599), ttl),
            Some(61.5)
        );
        assert!(cache.all_fresh(&ids, t0 + Duration::from_secs(599), ttl));
        assert_eq!(cache.get("gpu-0", t0 + ttl, ttl), None);
        assert!(!cache.all_fresh(&ids, t0 + ttl, ttl));
        assert!(!cache.all_fresh(&["gpu-1".to_string()], t0, ttl));
        // Re-measured: fresh again from the new time.
        cache.insert("gpu-0".into(), 70.0, t0 + ttl);
        assert_eq!(cache.get("gpu-0", t0 + ttl, ttl), Some(70.0));
    }

    /// A meter whose windows report a fixed energy over the real window length.
    struct Fixed {
        energy_mj: f64,
        started: Option<Instant>,
    }

    impl EnergyMeter for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn start(&mut self) -> Result<(), MeterError> {
            self.started = Some(Instant::now());
            Ok(())
        }
        fn stop(&mut self) -> Vec<EnergyReading> {
            let window_ns = elapsed_ns(self.started.take());
            vec![EnergyReading {
                source: lem_common::domain::EnergySource::Rapl,
                energy_mj: Some(self.energy_mj),
                unavailable_reason: None,
                ..EnergyReading::unavailable(DeviceKind::CpuPackage, "package-0", "", window_ns)
            }]
        }
    }

    #[test]
    fn default_idle_power_is_energy_over_the_window() {
        // An unavailable meter has no energy, so no baseline.
        let mut m = UnavailableMeter::new(vec![(DeviceKind::Gpu, "g".into())], "none");
        assert!(m.idle_baselines(Duration::from_millis(1)).is_empty());
        // 5 J over the window: P = 5 J / window, the window as the reading states it.
        let mut m = Fixed {
            energy_mj: 5_000.0,
            started: None,
        };
        let b = m.idle_baselines(Duration::from_millis(20));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].device_id, "package-0");
        let window_s = b[0].info.measured_ns as f64 / 1e9;
        assert!(window_s >= 0.020, "{window_s}");
        let expected_w = 5.0 / window_s;
        let got = b[0].info.power_w.unwrap();
        assert!(
            (got - expected_w).abs() <= 1e-9 * expected_w,
            "{got} vs {expected_w}"
        );
        assert!(b[0].info.method.starts_with("window-average"));
        // A counter that did not move: no baseline, with the reason, not 0 W.
        let mut m = Fixed {
            energy_mj: 0.0,
            started: None,
        };
        let b = m.idle_baselines(Duration::from_millis(1));
        assert_eq!(b[0].info.power_w, None);
        assert!(b[0]
            .info
            .unavailable_reason
            .as_deref()
            .unwrap()
            .contains("did not move"));
    }

    #[test]
    fn unavailable_meter_reports_null_with_reason() {
        let mut m = UnavailableMeter::new(
            vec![
                (DeviceKind::CpuPackage, "package".into()),
                (DeviceKind::Dram, "package/dram".into()),
            ],
            "no RAPL",
        );
        m.start().unwrap();
        assert!(matches!(m.start(), Err(MeterError::AlreadyStarted(_))));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let r = m.stop();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].device_kind, DeviceKind::CpuPackage);
        assert_eq!(r[1].device_id, "package/dram");
        for reading in &r {
            assert_eq!(reading.energy_mj, None);
            assert_eq!(reading.unavailable_reason.as_deref(), Some("no RAPL"));
            assert!(reading.window_ns >= 2_000_000, "{}", reading.window_ns);
        }
        // Restartable; a stop without start has an empty window.
        assert_eq!(m.stop()[0].window_ns, 0);
        m.start().unwrap();
    }
}
