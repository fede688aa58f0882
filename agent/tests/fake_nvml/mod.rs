//! A loaded copy of the fake `libnvidia-ml.so` (tests/fake-nvml) for the NVML tests of
//! this crate, and the scenario integral the expected energies come from.
//!
//! The fake is built once per test binary (`cargo build -p fake-nvml`, a no-op when
//! fresh). Each `Fake` copies it into its own temp dir as `libnvidia-ml.so.1`: a
//! different file is a separate load with its own state, so tests run in parallel without
//! sharing a clock or a scenario. The scenario path is handed over with the fake's
//! `fakeNvmlSetScenario` (not the process-wide `FAKE_NVML_SCENARIO`), and the virtual
//! clock (`time_scale: 0`) is moved with `fakeNvmlAdvanceMs`.

#![allow(dead_code)] // each test binary uses a subset

use lem_agent::meter::clock::MeterClock;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[path = "../../../tests/support.rs"]
pub mod support;

/// Builds the fake library once per test binary; returns its path.
pub fn fake_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(support::build_fake_nvml)
}

/// The fake's virtual clock as a meter clock: sleeping advances it (whole ms, at least
/// one, plus a seeded 0..=`jitter_ms` overshoot, as sleeps on a loaded machine overrun),
/// so a meter polling for counter updates runs without real sleeping. Valid while its
/// `Fake` lives.
pub struct FakeClock {
    advance: unsafe extern "C" fn(u64),
    now_ms: AtomicU64,
    jitter_ms: AtomicU64,
    jitter_state: AtomicU64,
}

impl FakeClock {
    fn advance_ms(&self, ms: u64) {
        // SAFETY: the fake's export, with its signature; the library outlives the clock
        // in every test (the `Fake` is dropped last).
        unsafe { (self.advance)(ms) };
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl MeterClock for FakeClock {
    fn now_ns(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst) * 1_000_000
    }
    fn sleep(&self, d: Duration) {
        let jitter = self.jitter_ms.load(Ordering::SeqCst);
        let extra = if jitter == 0 {
            0
        } else {
            // SplitMix64 step.
            let mut z = self
                .jitter_state
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % (jitter + 1)
        };
        self.advance_ms((d.as_millis() as u64).max(1) + extra);
    }
}

/// One loaded copy of the fake with its scenario and virtual clock.
pub struct Fake {
    _dir: tempfile::TempDir,
    /// The copy to hand to NVML (`NvmlMeter::open`, `discover_gpus`).
    pub path: PathBuf,
    _lib: libloading::Library,
    clock: Arc<FakeClock>,
}

impl Fake {
    pub fn new(scenario: &serde_json::Value) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libnvidia-ml.so.1");
        std::fs::copy(fake_library(), &path).unwrap();
        let scenario_path = dir.path().join("scenario.json");
        std::fs::write(&scenario_path, scenario.to_string()).unwrap();
        // SAFETY: loading our own test library, whose initialisers do nothing.
        let lib = unsafe { libloading::Library::new(&path) }.unwrap();
        let c_path = std::ffi::CString::new(scenario_path.to_str().unwrap()).unwrap();
        // SAFETY: the signature matches the fake's export; the string outlives the call.
        unsafe {
            let set: libloading::Symbol<unsafe extern "C" fn(*const std::ffi::c_char) -> u32> =
                lib.get(b"fakeNvmlSetScenario\0").unwrap();
            assert_eq!(set(c_path.as_ptr()), 0);
        }
        // SAFETY: the signature matches the fake's export.
        let advance = unsafe {
            *lib.get::<unsafe extern "C" fn(u64)>(b"fakeNvmlAdvanceMs\0")
                .unwrap()
        };
        Fake {
            _dir: dir,
            path,
            _lib: lib,
            clock: Arc::new(FakeClock {
                advance,
                now_ms: AtomicU64::new(0),
                jitter_ms: AtomicU64::new(0),
                jitter_state: AtomicU64::new(0),
            }),
        }
    }

    /// Moves the fake's virtual clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.clock.advance_ms(ms);
    }

    /// Moves the virtual clock to `t_ms` since init.
    pub fn goto_ms(&self, t_ms: u64) {
        let now = self.now_ms();
        assert!(t_ms >= now, "{t_ms} ms is before now ({now} ms)");
        self.advance_ms(t_ms - now);
    }

    /// Virtual milliseconds since init.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms.load(Ordering::SeqCst)
    }

    /// The virtual clock, for `NvmlMeter::set_time_source`.
    pub fn clock(&self) -> Arc<FakeClock> {
        Arc::clone(&self.clock)
    }

    /// Makes every meter sleep overrun by a seeded 0..=`max_ms` ms.
    pub fn set_sleep_jitter(&self, max_ms: u64, seed: u64) {
        self.clock.jitter_ms.store(max_ms, Ordering::SeqCst);
        self.clock.jitter_state.store(seed, Ordering::SeqCst);
    }
}

/// ∫ P dt in mJ over [t0, t1] s of a piecewise-constant trace of `[from_s, watts]` points
/// (0 W before the first) — the scenario's own integral, computed independently of lem
/// and the fake.
pub fn integral_mj(trace: &[(f64, f64)], t0: f64, t1: f64) -> f64 {
    let mut joules = 0.0;
    for (i, &(from, watts)) in trace.iter().enumerate() {
        let to = trace.get(i + 1).map_or(f64::INFINITY, |p| p.0);
        let (a, b) = (from.max(t0), to.min(t1));
        if b > a {
            joules += watts * (b - a);
        }
    }
    joules * 1000.0
}
