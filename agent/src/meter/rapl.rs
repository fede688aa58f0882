//! CPU package and DRAM energy from the Linux powercap (RAPL) interface.
//!
//! Layout read (the `/sys/class/powercap` view; Intel and AMD both use the `intel-rapl`
//! control type):
//!
//! ```text
//! intel-rapl:N/{name,energy_uj,max_energy_range_uj}     name = package-N | psys
//! intel-rapl:N:M/{name,energy_uj,max_energy_range_uj}   name = core | uncore | dram
//! ```
//!
//! Zones are identified by their `name` file, never by directory number (numbering
//! follows probe order and `psys` can take `intel-rapl:0`). Kept: `package-*` and their
//! `dram` subzones. Skipped: `core`/`uncore` (already inside the package), `psys`
//! (platform-wide, overlaps the package), and `intel-rapl-mmio:*` (a second interface to
//! the same package counter on recent Intel client CPUs: counting it would double).
//!
//! `energy_uj` wraps at `max_energy_range_uj`; a negative delta adds the range. One wrap
//! per read interval is recoverable, so while a window is open a thread reads every
//! counter well under the fastest wrap interval (`rapl_poll.rs`); `poll()` and
//! checkpoints read too.
//!
//! Since Linux 5.10 `energy_uj` is readable by root only (CVE-2020-8694); a permission
//! error becomes an unavailable reading that names the file and the fix. All file reads
//! go through [`SysfsRead`], so tests inject failures that root (who ignores mode 000)
//! would never see.

use super::rapl_poll::{self, Poller};
use super::{elapsed_ns, EnergyMeter, MeterError, UnavailableMeter};
use lem_common::domain::{DeviceKind, EnergyReading, EnergySource};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the kernel exposes powercap zones.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";

/// RAPL energy counters update about every millisecond (Intel SDM, "Platform Specific
/// Power Management Support"); recorded as the reading's sample period.
const RAPL_UPDATE_PERIOD_MS: f64 = 1.0;

/// Reads one sysfs file. Abstracted so tests can inject errors (e.g. EACCES as root).
pub trait SysfsRead: Send {
    fn read(&self, path: &Path) -> io::Result<String>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl SysfsRead for StdFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The CPU meters of this machine, and readings for what none of them can measure.
pub struct CpuMeters {
    /// Meters to start, poll and stop around the window (empty without RAPL).
    pub meters: Vec<Box<dyn EnergyMeter>>,
    /// Devices no meter covers, with the reason: (kind, device id, reason).
    unavailable: Vec<(DeviceKind, String, String)>,
}

impl CpuMeters {
    /// Readings for the uncovered devices over a window of `window_ns`.
    pub fn unavailable_with_window(&self, window_ns: u64) -> Vec<EnergyReading> {
        self.unavailable
            .iter()
            .map(|(kind, id, reason)| {
                EnergyReading::unavailable(*kind, id.clone(), reason.clone(), window_ns)
            })
            .collect()
    }
}

/// Opens RAPL under `powercap_root`; without it, the CPU package and DRAM are reported
/// unavailable with the reason. Either way a window yields readings for both.
pub fn open_cpu_meters(powercap_root: &Path) -> CpuMeters {
    match RaplMeter::discover(powercap_root) {
        Ok(meter) => CpuMeters {
            meters: vec![Box::new(meter)],
            unavailable: Vec::new(),
        },
        Err(e) => CpuMeters {
            meters: Vec::new(),
            unavailable: placeholder_devices()
                .into_iter()
                .map(|(kind, id)| (kind, id, e.to_string()))
                .collect(),
        },
    }
}

/// As [`open_cpu_meters`], as one meter: RAPL, or one that reports the CPU package and
/// DRAM unavailable with the reason.
pub fn cpu_meter(powercap_root: &Path) -> Box<dyn EnergyMeter> {
    match RaplMeter::discover(powercap_root) {
        Ok(meter) => Box::new(meter),
        Err(e) => Box::new(UnavailableMeter::new(placeholder_devices(), e.to_string())),
    }
}

/// Device ids used when no zone could be found at all (the package count is unknown).
fn placeholder_devices() -> Vec<(DeviceKind, String)> {
    vec![
        (DeviceKind::CpuPackage, "package".into()),
        (DeviceKind::Dram, "package/dram".into()),
    ]
}

/// One zone's counter read once by [`RaplMeter::check_counters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterCheck {
    /// `package-0` or `package-0/dram`.
    pub device_id: String,
    pub energy_path: PathBuf,
    /// The counter in µJ, or why it could not be read.
    pub read: Result<u64, String>,
    /// The read failed with EACCES (root-only since Linux 5.10): a chmod fixes it.
    pub permission_denied: bool,
}

/// One counter being metered.
#[derive(Debug)]
struct Zone {
    kind: DeviceKind,
    /// `package-0` or `package-0/dram`.
    device_id: String,
    energy_path: PathBuf,
    max_energy_range_uj: Option<u64>,
    /// Upper bound of the zone's power (W), for the read period.
    power_bound_w: f64,
    state: ZoneState,
}

#[derive(Debug)]
enum ZoneState {
    Idle,
    Running { last_uj: u64, total_uj: u128 },
    Failed(String),
}

/// The zones and how to read them; shared with the polling thread during a window.
struct Counters {
    zones: Vec<Zone>,
    fs: Box<dyn SysfsRead>,
}

/// RAPL package and DRAM counters found under a powercap root.
pub struct RaplMeter {
    counters: Arc<Mutex<Counters>>,
    /// Packages without a `dram` subzone: reported as unavailable DRAM readings.
    missing_dram: Vec<String>,
    /// How often the counters are read during a window; `None`: no zone has a range.
    poll_period: Option<Duration>,
    poller: Option<Poller>,
    started: Option<Instant>,
}

impl std::fmt::Debug for RaplMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaplMeter")
            .field("zones", &self.lock().zones)
            .field("missing_dram", &self.missing_dram)
            .field("poll_period", &self.poll_period)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// A directory name `intel-rapl:N` or `intel-rapl:N:M`, as its numbers.
fn parse_zone_dir(dir: &str) -> Option<(u32, Option<u32>)> {
    let rest = dir.strip_prefix("intel-rapl:")?;
    let mut parts = rest.split(':');
    let top = parts.next()?.parse().ok()?;
    let sub = match parts.next() {
        None => None,
        Some(s) => Some(s.parse().ok()?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some((top, sub))
}

/// Sort key so `package-2` comes before `package-10`.
fn package_order(device_id: &str) -> (u64, String) {
    let digits: String = device_id
        .trim_start_matches("package-")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (digits.parse().unwrap_or(u64::MAX), device_id.to_owned())
}

impl RaplMeter {
    /// Finds package and DRAM zones under `powercap_root` (normally
    /// [`DEFAULT_POWERCAP_ROOT`]). Counters are not read until `start`.
    pub fn discover(powercap_root: &Path) -> Result<RaplMeter, MeterError> {
        Self::discover_with(powercap_root, Box::new(StdFs))
    }

    /// As [`RaplMeter::discover`], reading files through `fs`.
    pub fn discover_with(
        powercap_root: &Path,
        fs: Box<dyn SysfsRead>,
    ) -> Result<RaplMeter, MeterError> {
        let entries = std::fs::read_dir(powercap_root).map_err(|e| MeterError::NoPowercap {
            root: powercap_root.to_owned(),
            reason: if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "no powercap interface at {} (not Linux, or a VM/container without RAPL)",
                    powercap_root.display()
                )
            } else {
                format!("cannot list {}: {e}", powercap_root.display())
            },
        })?;

        // (top, sub, zone name, dir)
        let mut found: Vec<(u32, Option<u32>, String, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let Some((top, sub)) = parse_zone_dir(&dir_name) else {
                continue;
            };
            let dir = entry.path();
            let name_path = dir.join("name");
            let name = fs.read(&name_path).map_err(|source| MeterError::Io {
                path: name_path,
                source,
            })?;
            found.push((top, sub, name.trim().to_owned(), dir));
        }

        let mut zones = Vec::new();
        for (top, sub, name, dir) in &found {
            let (kind, device_id) = match sub {
                None if name.starts_with("package-") => (DeviceKind::CpuPackage, name.clone()),
                Some(_) if name == "dram" => {
                    let parent = found
                        .iter()
                        .find(|(t, s, n, _)| t == top && s.is_none() && n.starts_with("package-"));
                    match parent {
                        Some((_, _, package, _)) => (DeviceKind::Dram, format!("{package}/dram")),
                        None => continue,
                    }
                }
                // psys, core, uncore and names we do not know.
                _ => continue,
            };
            let max_energy_range_uj = fs
                .read(&dir.join("max_energy_range_uj"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            zones.push(Zone {
                kind,
                device_id,
                energy_path: dir.join("energy_uj"),
                max_energy_range_uj,
                power_bound_w: rapl_poll::power_bound_w(dir, fs.as_ref()),
                state: ZoneState::Idle,
            });
        }

        if zones.is_empty() {
            return Err(MeterError::NoPowercap {
                root: powercap_root.to_owned(),
                reason: format!(
                    "no RAPL powercap zones under {} (virtual machine or unsupported CPU)",
                    powercap_root.display()
                ),
            });
        }
        zones.sort_by_key(|z| (package_order(&z.device_id), z.kind));
        let missing_dram = zones
            .iter()
            .filter(|z| z.kind == DeviceKind::CpuPackage)
            .map(|z| z.device_id.clone())
            .filter(|p| {
                !zones
                    .iter()
                    .any(|z| z.kind == DeviceKind::Dram && z.device_id == format!("{p}/dram"))
            })
            .collect();
        let poll_period = rapl_poll::poll_period(
            &zones
                .iter()
                .map(|z| (z.max_energy_range_uj, z.power_bound_w))
                .collect::<Vec<_>>(),
        );
        Ok(RaplMeter {
            counters: Arc::new(Mutex::new(Counters { zones, fs })),
            missing_dram,
            poll_period,
            poller: None,
            started: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // Every update of a zone is one assignment: a panic elsewhere leaves it whole.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device ids metered, in reading order (`package-0`, `package-0/dram`, ...).
    pub fn device_ids(&self) -> Vec<String> {
        self.lock()
            .zones
            .iter()
            .map(|z| z.device_id.clone())
            .collect()
    }

    /// Reads every zone's counter once, outside any window: what `lem doctor` reports
    /// (a permission error carries the fix, as in a reading).
    pub fn check_counters(&self) -> Vec<CounterCheck> {
        let counters = self.lock();
        counters
            .zones
            .iter()
            .map(|z| {
                let (read, permission_denied) = match counters.fs.read(&z.energy_path) {
                    Ok(text) => (parse_counter(&text, &z.energy_path), false),
                    Err(e) => (
                        Err(read_error_reason(&z.energy_path, &e)),
                        e.kind() == io::ErrorKind::PermissionDenied,
                    ),
                };
                CounterCheck {
                    device_id: z.device_id.clone(),
                    energy_path: z.energy_path.clone(),
                    read,
                    permission_denied,
                }
            })
            .collect()
    }

    /// How often the counters are read while a window is open (`None`: no zone has a
    /// `max_energy_range_uj`, so a wrap could not be corrected however often).
    pub fn poll_period(&self) -> Option<Duration> {
        self.poll_period
    }

    /// Reads one counter; an error is turned into a reason for the user.
    fn read_counter(fs: &dyn SysfsRead, path: &Path) -> Result<u64, String> {
        match fs.read(path) {
            Ok(text) => parse_counter(&text, path),
            Err(e) => Err(read_error_reason(path, &e)),
        }
    }
}

/// An `energy_uj` file's text as µJ; garbage becomes a reason naming the file.
fn parse_counter(text: &str, path: &Path) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "cannot parse {:?} from {} as an energy counter",
            text.trim(),
            path.display()
        )
    })
}

impl Counters {
    /// Reads every running zone and adds its delta since the last read.
    fn advance(&mut self) {
        for zone in &mut self.zones {
            let ZoneState::Running { last_uj, total_uj } = zone.state else {
                continue;
            };
            zone.state = match RaplMeter::read_counter(self.fs.as_ref(), &zone.energy_path) {
                Err(reason) => ZoneState::Failed(reason),
                Ok(now_uj) => match counter_delta_uj(last_uj, now_uj, zone.max_energy_range_uj) {
                    Ok(delta) => ZoneState::Running {
                        last_uj: now_uj,
                        total_uj: total_uj + u128::from(delta),
                    },
                    Err(reason) => {
                        ZoneState::Failed(format!("{}: {reason}", zone.energy_path.display()))
                    }
                },
            };
        }
    }
}

/// Energy between two reads of a counter that wraps at `max_range_uj`.
fn counter_delta_uj(last_uj: u64, now_uj: u64, max_range_uj: Option<u64>) -> Result<u64, String> {
    if now_uj >= last_uj {
        return Ok(now_uj - last_uj);
    }
    match max_range_uj {
        Some(range) if last_uj <= range => Ok(range - last_uj + now_uj),
        Some(range) => Err(format!(
            "counter value {last_uj} exceeds max_energy_range_uj {range}"
        )),
        None => Err(format!(
            "counter went backwards ({last_uj} -> {now_uj}) and max_energy_range_uj is \
             missing, so the wraparound cannot be corrected"
        )),
    }
}

/// A user-facing reason for a failed read of `path`.
fn read_error_reason(path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "permission denied reading {p}: RAPL energy counters are root-only since Linux \
             5.10 (CVE-2020-8694); run lem-agent as root or grant read access, e.g. \
             `sudo chmod a+r {p}` (until reboot) or a udev/tmpfiles rule",
            p = path.display()
        ),
        io::ErrorKind::NotFound => format!("{} is missing", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    }
}

impl EnergyMeter for RaplMeter {
    fn name(&self) -> &str {
        "rapl"
    }

    fn start(&mut self) -> Result<(), MeterError> {
        if self.started.is_some() {
            return Err(MeterError::AlreadyStarted(self.name().into()));
        }
        {
            let mut counters = self.lock();
            let Counters { zones, fs } = &mut *counters;
            for zone in zones.iter_mut() {
                zone.state = match Self::read_counter(fs.as_ref(), &zone.energy_path) {
                    Ok(last_uj) => ZoneState::Running {
                        last_uj,
                        total_uj: 0,
                    },
                    Err(reason) => ZoneState::Failed(reason),
                };
            }
        }
        self.started = Some(Instant::now());
        if let Some(period) = self.poll_period {
            let counters = Arc::clone(&self.counters);
            self.poller = Poller::spawn(period, move || {
                counters.lock().unwrap_or_else(|e| e.into_inner()).advance()
            });
        }
        Ok(())
    }

    fn poll(&mut self) {
        if self.started.is_some() {
            self.lock().advance();
        }
    }

    fn checkpoint(&mut self) -> Vec<(String, Option<f64>)> {
        if self.started.is_none() {
            return Vec::new();
        }
        let mut counters = self.lock();
        counters.advance();
        counters
            .zones
            .iter()
            .map(|zone| {
                let mj = match zone.state {
                    ZoneState::Running { total_uj, .. } => Some(total_uj as f64 / 1000.0),
                    _ => None,
                };
                (zone.device_id.clone(), mj)
            })
            .collect()
    }

    fn stop(&mut self) -> Vec<EnergyReading> {
        // The poller stops first, so the last read below is the window's last.
        self.poller = None;
        let was_started = self.started.is_some();
        let window_ns = elapsed_ns(self.started.take());
        let mut counters = self.lock();
        if was_started {
            counters.advance();
        }
        let mut readings = Vec::with_capacity(counters.zones.len() + self.missing_dram.len());
        for zone in &mut counters.zones {
            let state = std::mem::replace(&mut zone.state, ZoneState::Idle);
            let reading = match state {
                ZoneState::Running { total_uj, .. } => EnergyReading {
                    device_kind: zone.kind,
                    device_id: zone.device_id.clone(),
                    device_name: zone.device_id.clone(),
                    source: EnergySource::Rapl,
                    energy_mj: Some(total_uj as f64 / 1000.0),
                    unavailable_reason: None,
                    window_ns,
                    sample_period_ms: Some(RAPL_UPDATE_PERIOD_MS),
                    estimated: false,
                    baseline_power_w: None,
                    net_energy_mj: None,
                    simulated: false,
                    driver_version: None,
                    trace: None,
                    phases: None,
                    mig: None,
                    // Edges read anywhere between ~1 ms updates: half a period each.
                    uncertainty_mj: (window_ns > 0).then(|| {
                        total_uj as f64 / 1000.0 * 1e6 / window_ns as f64 * RAPL_UPDATE_PERIOD_MS
                    }),
                    uncertainty_method: Some(
                        "RAPL edges not aligned to its ~1 ms updates: ± mean power × one update period".into(),
                    ),
                    ..EnergyReading::unavailable(zone.kind, String::new(), "", 0)
                },
                ZoneState::Failed(reason) => {
                    EnergyReading::unavailable(zone.kind, zone.device_id.clone(), reason, window_ns)
                }
                ZoneState::Idle => EnergyReading::unavailable(
                    zone.kind,
                    zone.device_id.clone(),
                    "meter stopped without being started",
                    window_ns,
                ),
            };
            readings.push(reading);
        }
        for package in &self.missing_dram {
            readings.push(EnergyReading::unavailable(
                DeviceKind::Dram,
                format!("{package}/dram"),
                format!(
                    "RAPL zone {package} has no dram subzone (AMD and most client CPUs do \
                     not expose DRAM energy)"
                ),
                window_ns,
            ));
        }
        readings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::fs;
    use std::sync::{Arc, Mutex};

    /// Writes a zone directory: `name`, `energy_uj` and optionally `max_energy_range_uj`.
    fn zone(root: &Path, dir: &str, name: &str, energy_uj: u64, max_uj: Option<u64>) {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("name"), format!("{name}\n")).unwrap();
        fs::write(d.join("energy_uj"), format!("{energy_uj}\n")).unwrap();
        if let Some(m) = max_uj {
            fs::write(d.join("max_energy_range_uj"), format!("{m}\n")).unwrap();
        }
    }

    /// Replaces the counter in one step (write, then rename), as sysfs reads are atomic:
    /// the window's polling thread never sees a half-written file.
    fn set_energy(root: &Path, dir: &str, energy_uj: u64) {
        let tmp = root.join(dir).join("energy_uj.tmp");
        fs::write(&tmp, format!("{energy_uj}\n")).unwrap();
        fs::rename(tmp, root.join(dir).join("energy_uj")).unwrap();
    }

    fn by_id<'a>(readings: &'a [EnergyReading], id: &str) -> &'a EnergyReading {
        readings
            .iter()
            .find(|r| r.device_id == id)
            .unwrap_or_else(|| panic!("no reading for {id} in {readings:?}"))
    }

    const RANGE: u64 = 262_143_328_850;

    #[test]
    fn normal_delta() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 1_000_000, Some(RANGE));
        zone(root, "intel-rapl:0:0", "dram", 500, Some(RANGE));
        let mut m = RaplMeter::discover(root).unwrap();
        assert_eq!(m.device_ids(), ["package-0", "package-0/dram"]);
        m.start().unwrap();
        set_energy(root, "intel-rapl:0", 3_500_000);
        set_energy(root, "intel-rapl:0:0", 1_750);
        let r = m.stop();
        assert_eq!(r.len(), 2);
        let pkg = by_id(&r, "package-0");
        assert_eq!(pkg.device_kind, DeviceKind::CpuPackage);
        assert_eq!(pkg.source, EnergySource::Rapl);
        assert_eq!(pkg.energy_mj, Some(2_500.0));
        assert_eq!(pkg.unavailable_reason, None);
        assert_eq!(pkg.sample_period_ms, Some(1.0));
        assert!(!pkg.estimated);
        let dram = by_id(&r, "package-0/dram");
        assert_eq!(dram.device_kind, DeviceKind::Dram);
        assert_eq!(dram.energy_mj, Some(1.25));
    }

    #[test]
    fn wraparound_adds_the_range() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", RANGE - 50, Some(RANGE));
        let mut m = RaplMeter::discover(root).unwrap();
        m.start().unwrap();
        set_energy(root, "intel-rapl:0", 150);
        // 50 µJ up to the wrap + 150 after it.
        assert_eq!(by_id(&m.stop(), "package-0").energy_mj, Some(0.2));
    }

    #[test]
    fn polling_catches_several_wraps_in_one_window() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 100, Some(1_000));
        let mut m = RaplMeter::discover(root).unwrap();
        m.start().unwrap();
        set_energy(root, "intel-rapl:0", 900); // +800
        m.poll();
        set_energy(root, "intel-rapl:0", 300); // wrapped: +100 + 300
        m.poll();
        set_energy(root, "intel-rapl:0", 200); // wrapped again: +700 + 200
        let r = m.stop();
        assert_eq!(by_id(&r, "package-0").energy_mj, Some(2.1));
        // The meter is reusable: a second window starts from the current counter.
        m.start().unwrap();
        set_energy(root, "intel-rapl:0", 260);
        assert_eq!(by_id(&m.stop(), "package-0").energy_mj, Some(0.06));
    }

    /// A powercap tree whose package counter moves `step_uj` between two reads of it, on
    /// disk, so the energy over a window is `step_uj` × the reads after the start read,
    /// however the reads are timed.
    struct AdvancingFs {
        counter: PathBuf,
        range_uj: u64,
        step_uj: u64,
        reads: Arc<std::sync::atomic::AtomicU64>,
    }

    impl SysfsRead for AdvancingFs {
        fn read(&self, path: &Path) -> io::Result<String> {
            let text = StdFs.read(path)?;
            if path == self.counter {
                self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let now: u64 = text.trim().parse().expect("test counter");
                let tmp = path.with_extension("tmp");
                fs::write(&tmp, format!("{}\n", (now + self.step_uj) % self.range_uj))?;
                fs::rename(tmp, path)?;
            }
            Ok(text)
        }
    }

    #[test]
    fn the_polling_thread_follows_a_counter_that_wraps_between_start_and_stop() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // A 1 J range and a 50 W limit: at the 100 W bound it wraps every 10 ms, so the
        // thread reads every millisecond.
        let range_uj = 1_000_000;
        zone(root, "intel-rapl:0", "package-0", 900_000, Some(range_uj));
        fs::write(
            root.join("intel-rapl:0/constraint_0_power_limit_uw"),
            "50000000\n",
        )
        .unwrap();
        let step_uj = 300_000;
        let reads = Arc::new(AtomicU64::new(0));
        let fs_ = AdvancingFs {
            counter: root.join("intel-rapl:0/energy_uj"),
            range_uj,
            step_uj,
            reads: reads.clone(),
        };
        let mut m = RaplMeter::discover_with(root, Box::new(fs_)).unwrap();
        assert_eq!(m.poll_period(), Some(Duration::from_millis(1)));
        m.start().unwrap();
        // Nothing but the thread reads now; wait (bounded) until it has read enough for
        // the counter to wrap at least twice: 8 reads × 0.3 J = 2.4 J over a 1 J range.
        let deadline = Instant::now() + Duration::from_secs(60);
        while reads.load(Ordering::SeqCst) < 9 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = m.stop();
        // Reads after the start read, the stop's included; none after stop.
        let reads_after_start = reads.load(Ordering::SeqCst) - 1;
        assert!(
            reads_after_start >= 8,
            "the thread read {reads_after_start} times"
        );
        let expected_mj = (reads_after_start * step_uj) as f64 / 1000.0;
        assert_eq!(by_id(&r, "package-0").energy_mj, Some(expected_mj));
        assert!(
            expected_mj >= 2.0 * range_uj as f64 / 1000.0,
            "wrapped twice"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reads.load(Ordering::SeqCst), reads_after_start + 1);
    }

    #[test]
    fn missing_max_energy_range() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 1_000, None);
        let mut m = RaplMeter::discover(root).unwrap();
        // Forward deltas need no range.
        m.start().unwrap();
        set_energy(root, "intel-rapl:0", 4_000);
        assert_eq!(by_id(&m.stop(), "package-0").energy_mj, Some(3.0));
        // A wrap cannot be corrected: unavailable with the reason, not a guess.
        m.start().unwrap();
        set_energy(root, "intel-rapl:0", 10);
        let r = m.stop();
        let pkg = by_id(&r, "package-0");
        assert_eq!(pkg.energy_mj, None);
        assert_eq!(pkg.source, EnergySource::None);
        let reason = pkg.unavailable_reason.as_deref().unwrap();
        assert!(reason.contains("4000 -> 10"), "{reason}");
        assert!(
            reason.contains("max_energy_range_uj is missing"),
            "{reason}"
        );
    }

    #[test]
    fn zones_found_by_name_not_number() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // psys probed first; packages numbered out of order; dram at different indices.
        zone(root, "intel-rapl:0", "psys", 9_000_000, Some(RANGE));
        zone(root, "intel-rapl:1", "package-1", 1_000, Some(RANGE));
        zone(root, "intel-rapl:1:0", "dram", 2_000, Some(RANGE));
        zone(root, "intel-rapl:2", "package-0", 3_000, Some(RANGE));
        zone(root, "intel-rapl:2:0", "core", 4_000, Some(RANGE));
        zone(root, "intel-rapl:2:1", "uncore", 5_000, Some(RANGE));
        zone(root, "intel-rapl:2:2", "dram", 6_000, Some(RANGE));
        // Same package counter through MMIO, and the control-type directory: ignored.
        zone(root, "intel-rapl-mmio:0", "package-0", 7_000, Some(RANGE));
        fs::create_dir_all(root.join("intel-rapl")).unwrap();
        fs::write(root.join("intel-rapl/enabled"), "1\n").unwrap();

        let mut m = RaplMeter::discover(root).unwrap();
        assert_eq!(
            m.device_ids(),
            ["package-0", "package-0/dram", "package-1", "package-1/dram"]
        );
        m.start().unwrap();
        // Distinct deltas show which directory fed which device.
        set_energy(root, "intel-rapl:1", 1_000 + 10_000);
        set_energy(root, "intel-rapl:1:0", 2_000 + 20_000);
        set_energy(root, "intel-rapl:2", 3_000 + 30_000);
        set_energy(root, "intel-rapl:2:2", 6_000 + 60_000);
        set_energy(root, "intel-rapl:0", 9_999_999);
        set_energy(root, "intel-rapl-mmio:0", 99_999);
        let r = m.stop();
        let got: Vec<(&str, Option<f64>)> = r
            .iter()
            .map(|x| (x.device_id.as_str(), x.energy_mj))
            .collect();
        assert_eq!(
            got,
            [
                ("package-0", Some(30.0)),
                ("package-0/dram", Some(60.0)),
                ("package-1", Some(10.0)),
                ("package-1/dram", Some(20.0)),
            ]
        );
    }

    #[test]
    fn package_without_dram_reports_dram_unavailable() {
        // What AMD Zen exposes: a package and a core subzone, no dram.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 0, Some(RANGE));
        zone(root, "intel-rapl:0:0", "core", 0, Some(RANGE));
        let mut m = RaplMeter::discover(root).unwrap();
        m.start().unwrap();
        set_energy(root, "intel-rapl:0", 42_000);
        let r = m.stop();
        assert_eq!(r.len(), 2);
        assert_eq!(by_id(&r, "package-0").energy_mj, Some(42.0));
        let dram = by_id(&r, "package-0/dram");
        assert_eq!(dram.device_kind, DeviceKind::Dram);
        assert_eq!(dram.energy_mj, None);
        assert!(dram
            .unavailable_reason
            .as_deref()
            .unwrap()
            .contains("no dram subzone"));
    }

    /// Denies reads of chosen files with EACCES, as a non-root user sees on Linux ≥ 5.10.
    struct DenyFs {
        denied: Arc<Mutex<HashSet<PathBuf>>>,
    }

    impl SysfsRead for DenyFs {
        fn read(&self, path: &Path) -> io::Result<String> {
            if self.denied.lock().unwrap().contains(path) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            StdFs.read(path)
        }
    }

    #[test]
    fn permission_denied_becomes_unavailable_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 1_000, Some(RANGE));
        zone(root, "intel-rapl:0:0", "dram", 1_000, Some(RANGE));
        let pkg_energy = root.join("intel-rapl:0/energy_uj");
        let denied = Arc::new(Mutex::new(HashSet::from([pkg_energy.clone()])));
        let fs = DenyFs {
            denied: denied.clone(),
        };
        let mut m = RaplMeter::discover_with(root, Box::new(fs)).unwrap();
        m.start().unwrap();
        set_energy(root, "intel-rapl:0:0", 3_000);
        let r = m.stop();
        let pkg = by_id(&r, "package-0");
        assert_eq!(pkg.energy_mj, None);
        let reason = pkg.unavailable_reason.as_deref().unwrap();
        assert!(reason.contains("permission denied"), "{reason}");
        assert!(
            reason.contains(&pkg_energy.display().to_string()),
            "{reason}"
        );
        assert!(reason.contains("root"), "{reason}");
        // The readable DRAM counter is unaffected.
        assert_eq!(by_id(&r, "package-0/dram").energy_mj, Some(2.0));

        // Access lost mid-window (e.g. a chmod reverted): that zone becomes unavailable.
        denied.lock().unwrap().clear();
        m.start().unwrap();
        denied
            .lock()
            .unwrap()
            .insert(root.join("intel-rapl:0:0/energy_uj"));
        m.poll();
        let r = m.stop();
        assert_eq!(by_id(&r, "package-0").energy_mj, Some(0.0));
        assert_eq!(by_id(&r, "package-0/dram").energy_mj, None);
    }

    #[test]
    fn check_counters_reads_each_zone_once_and_names_the_fix_when_denied() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 1_234, Some(RANGE));
        zone(root, "intel-rapl:0:0", "dram", 5_678, Some(RANGE));
        let dram_energy = root.join("intel-rapl:0:0/energy_uj");
        let fs = DenyFs {
            denied: Arc::new(Mutex::new(HashSet::from([dram_energy.clone()]))),
        };
        let m = RaplMeter::discover_with(root, Box::new(fs)).unwrap();
        let checks = m.check_counters();
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].device_id, "package-0");
        assert_eq!(checks[0].read, Ok(1_234));
        assert_eq!(checks[1].device_id, "package-0/dram");
        assert_eq!(checks[1].energy_path, dram_energy);
        let why = checks[1].read.as_ref().unwrap_err();
        assert!(
            why.contains("permission denied") && why.contains("chmod"),
            "{why}"
        );
        assert!(checks[1].permission_denied && !checks[0].permission_denied);
    }

    /// The same mapping through the real filesystem; only meaningful when not root
    /// (root reads mode-000 files), so it is a no-op under root.
    #[test]
    fn mode_000_file_as_non_root() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("running as root: mode 000 is readable, covered by the injected test");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 1_000, Some(RANGE));
        let energy = root.join("intel-rapl:0/energy_uj");
        fs::set_permissions(&energy, fs::Permissions::from_mode(0o000)).unwrap();
        let mut m = RaplMeter::discover(root).unwrap();
        m.start().unwrap();
        let r = m.stop();
        let reason = r[0].unavailable_reason.as_deref().unwrap();
        assert!(reason.contains("permission denied"), "{reason}");
    }

    #[test]
    fn garbage_counter_is_unavailable() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 0, Some(RANGE));
        fs::write(root.join("intel-rapl:0/energy_uj"), "n/a\n").unwrap();
        let mut m = RaplMeter::discover(root).unwrap();
        m.start().unwrap();
        let r = m.stop();
        assert_eq!(r[0].energy_mj, None);
        assert!(r[0]
            .unavailable_reason
            .as_deref()
            .unwrap()
            .contains("\"n/a\""));
    }

    #[test]
    fn no_powercap() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("powercap");
        let err = RaplMeter::discover(&missing).unwrap_err();
        assert!(matches!(err, MeterError::NoPowercap { .. }));
        assert!(
            err.to_string().contains("no powercap interface at"),
            "{err}"
        );

        // The directory exists but holds no RAPL zone (another control type, psys only).
        fs::create_dir_all(tmp.path().join("empty/dtpm")).unwrap();
        zone(
            &tmp.path().join("empty"),
            "intel-rapl:0",
            "psys",
            0,
            Some(RANGE),
        );
        let err = RaplMeter::discover(&tmp.path().join("empty")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no RAPL powercap zones under {} (virtual machine or unsupported CPU)",
                tmp.path().join("empty").display()
            )
        );
    }

    #[test]
    fn cpu_meter_always_yields_package_and_dram() {
        let tmp = tempfile::tempdir().unwrap();
        let mut m = cpu_meter(&tmp.path().join("absent"));
        assert_eq!(m.name(), "unavailable");
        m.start().unwrap();
        m.poll();
        let r = m.stop();
        let kinds: Vec<DeviceKind> = r.iter().map(|x| x.device_kind).collect();
        assert_eq!(kinds, [DeviceKind::CpuPackage, DeviceKind::Dram]);
        for reading in &r {
            assert_eq!(reading.energy_mj, None);
            assert_eq!(reading.source, EnergySource::None);
            assert!(reading
                .unavailable_reason
                .as_deref()
                .unwrap()
                .contains("no powercap interface"));
        }

        zone(tmp.path(), "intel-rapl:0", "package-0", 0, Some(RANGE));
        let m = cpu_meter(tmp.path());
        assert_eq!(m.name(), "rapl");
    }

    #[test]
    fn open_cpu_meters_covers_package_and_dram() {
        let tmp = tempfile::tempdir().unwrap();
        let none = open_cpu_meters(&tmp.path().join("absent"));
        assert!(none.meters.is_empty());
        let r = none.unavailable_with_window(1_234);
        let got: Vec<(DeviceKind, &str, Option<f64>, u64)> = r
            .iter()
            .map(|x| {
                (
                    x.device_kind,
                    x.device_id.as_str(),
                    x.energy_mj,
                    x.window_ns,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (DeviceKind::CpuPackage, "package", None, 1_234),
                (DeviceKind::Dram, "package/dram", None, 1_234),
            ]
        );
        assert!(r[0]
            .unavailable_reason
            .as_deref()
            .unwrap()
            .starts_with("no powercap interface at"));

        zone(tmp.path(), "intel-rapl:0", "package-0", 0, Some(RANGE));
        let mut some = open_cpu_meters(tmp.path());
        assert!(some.unavailable_with_window(5).is_empty());
        assert_eq!(some.meters.len(), 1);
        some.meters[0].start().unwrap();
        set_energy(tmp.path(), "intel-rapl:0", 7_000);
        let r = some.meters[0].stop();
        // The package is metered; its missing dram subzone is reported by the meter.
        assert_eq!(by_id(&r, "package-0").energy_mj, Some(7.0));
        assert_eq!(by_id(&r, "package-0/dram").energy_mj, None);
    }

    #[test]
    fn stop_without_start_is_unavailable_not_zero() {
        let tmp = tempfile::tempdir().unwrap();
        zone(tmp.path(), "intel-rapl:0", "package-0", 5, Some(RANGE));
        let mut m = RaplMeter::discover(tmp.path()).unwrap();
        let r = m.stop();
        assert_eq!(r[0].energy_mj, None);
        assert_eq!(r[0].window_ns, 0);
        m.start().unwrap();
        assert!(matches!(m.start(), Err(MeterError::AlreadyStarted(_))));
    }

    #[test]
    fn zone_dir_names() {
        assert_eq!(parse_zone_dir("intel-rapl:0"), Some((0, None)));
        assert_eq!(parse_zone_dir("intel-rapl:1:2"), Some((1, Some(2))));
        assert_eq!(parse_zone_dir("intel-rapl"), None);
        assert_eq!(parse_zone_dir("intel-rapl-mmio:0"), None);
        assert_eq!(parse_zone_dir("intel-rapl:0:1:2"), None);
        assert_eq!(parse_zone_dir("intel-rapl:x"), None);
    }

    #[test]
    fn counter_delta_edges() {
        assert_eq!(counter_delta_uj(5, 5, None), Ok(0));
        assert_eq!(counter_delta_uj(1_000, 0, Some(1_000)), Ok(0));
        assert_eq!(counter_delta_uj(999, 1, Some(1_000)), Ok(2));
        assert!(counter_delta_uj(2_000, 1, Some(1_000)).is_err());
    }
}
