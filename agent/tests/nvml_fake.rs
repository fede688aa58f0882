//! lem's real NVML code path (nvml-wrapper → `NvmlMeter`, `discover_gpus`) against the
//! fake `libnvidia-ml.so` of `tests/fake-nvml`, driven by scenario files.
//!
//! Locating the fake: the test runs `cargo build -p fake-nvml` once (a no-op when it is
//! fresh) into the target directory this test executable lives in
//! (`<target>/<profile>/deps/nvml_fake-*`), then uses `<target>/<profile>/libnvidia_ml.so`.
//! Building every time rather than only when absent keeps a stale fake from being used.
//!
//! Each test copies the library into its own temp dir as `libnvidia-ml.so.1`: a different
//! file is a separate load with its own state, so tests run in parallel without sharing a
//! clock or a scenario. The scenario path is handed over with the fake's
//! `fakeNvmlSetScenario` (not the process-wide `FAKE_NVML_SCENARIO`), and the virtual
//! clock (`time_scale: 0`) is moved with `fakeNvmlAdvanceMs`, so a 20 s window takes no
//! real time. Expected energies are integrals of the scenario's trace computed here.

use lem_agent::meter::nvml::{discover_gpus, NvmlMeter};
use lem_agent::meter::EnergyMeter;
use lem_common::domain::{DeviceKind, EnergyReading, EnergySource};
use serde_json::json;

mod fake_nvml;
use fake_nvml::{integral_mj, Fake};

/// How this file opens a meter on the fake.
trait OpenMeter {
    fn meter(&self) -> NvmlMeter;
}

impl OpenMeter for Fake {
    fn meter(&self) -> NvmlMeter {
        let mut m = NvmlMeter::open(Some(&self.path)).expect("open NVML meter on the fake");
        // Edges read where the window starts and stops, not on counter updates: the
        // unaligned path and its documented bound (tests/nvml_edges.rs covers alignment).
        m.set_edge_alignment(false);
        m
    }
}

fn gpu(uuid: &str, trace: &[(f64, f64)]) -> serde_json::Value {
    json!({
        "name": "NVIDIA H100 80GB HBM3", "uuid": uuid,
        "memory_total_bytes": 85_899_345_920u64, "power_limit_mw": 700_000,
        "power": trace, "energy_start_mj": 987_654_321u64,
    })
}

fn scenario(gpus: Vec<serde_json::Value>) -> serde_json::Value {
    json!({ "driver_version": "550.54.15", "step_ms": 100, "time_scale": 0.0, "gpus": gpus })
}

/// Runs one window from `start_ms` to `end_ms` of virtual time (since init).
fn window(fake: &Fake, meter: &mut NvmlMeter, start_ms: u64, end_ms: u64) -> Vec<EnergyReading> {
    fake.advance_ms(start_ms);
    meter.start().unwrap();
    // Poll every second of virtual time, as the runner would.
    let mut t = start_ms;
    while t + 1000 < end_ms {
        fake.advance_ms(1000);
        t += 1000;
        meter.poll();
    }
    fake.advance_ms(end_ms - t);
    meter.stop()
}

fn assert_null(r: &EnergyReading, reason_part: &str) {
    assert_eq!(r.energy_mj, None, "{r:?}");
    assert_eq!(r.source, EnergySource::None);
    let reason = r.unavailable_reason.as_deref().unwrap();
    assert!(reason.contains(reason_part), "{reason:?}");
}

#[test]
fn steady_250w_over_20s_is_within_one_percent_of_the_integral() {
    let trace = [(0.0, 250.0)];
    let fake = Fake::new(&scenario(vec![gpu("GPU-aaaa", &trace)]));
    let mut meter = fake.meter();
    assert_eq!(meter.driver_version(), Some("fake-nvml-550.54.15"));
    // Start off a counter step, 20.5 s long.
    let r = window(&fake, &mut meter, 1_037, 21_537);
    assert_eq!(r.len(), 1);
    let expected = integral_mj(&trace, 1.037, 21.537);
    assert_eq!(expected, 5_125_000.0);
    let got = r[0].energy_mj.unwrap();
    assert!(
        (got - expected).abs() / expected < 0.01,
        "{got} vs {expected}"
    );
    assert_eq!(r[0].source, EnergySource::NvmlCounter);
    assert_eq!(r[0].device_kind, DeviceKind::Gpu);
    assert_eq!(r[0].device_id, "GPU-aaaa");
    assert_eq!(r[0].device_name, "NVIDIA H100 80GB HBM3");
    assert_eq!(r[0].sample_period_ms, Some(100.0));
    assert!(!r[0].estimated);
}

#[test]
fn short_window_error_is_below_one_counter_step_at_peak_power() {
    let trace = [(0.0, 60.0), (0.73, 410.0), (1.21, 180.0), (2.0, 700.0)];
    let p_max = 700.0;
    let step_s = 0.1;
    // Documented bound: |error| < P_max × step (+1 mJ for the counter's integer mJ).
    let bound_mj = p_max * step_s * 1000.0 + 1.0;
    for (start_ms, end_ms) in [(37, 287), (650, 1_333), (1_999, 2_049), (100, 2_100)] {
        let fake = Fake::new(&scenario(vec![gpu("GPU-q", &trace)]));
        let mut meter = fake.meter();
        let r = window(&fake, &mut meter, start_ms, end_ms);
        let expected = integral_mj(&trace, start_ms as f64 / 1e3, end_ms as f64 / 1e3);
        let got = r[0].energy_mj.unwrap();
        assert!(
            (got - expected).abs() <= bound_mj,
            "window {start_ms}..{end_ms} ms: {got} vs {expected} (bound {bound_mj})"
        );
        assert!(got >= 0.0);
    }
    // On counter steps the difference is the integral itself (to 1 mJ).
    let fake = Fake::new(&scenario(vec![gpu("GPU-q", &trace)]));
    let mut meter = fake.meter();
    let r = window(&fake, &mut meter, 500, 2_500);
    let expected = integral_mj(&trace, 0.5, 2.5);
    assert!((r[0].energy_mj.unwrap() - expected).abs() <= 1.0);
}

#[test]
fn not_supported_counter_is_a_labelled_null() {
    // Without the counter lem falls back to the power trace (tests/nvml_sampler.rs);
    // with no power reading either, the reading is null.
    let mut g = gpu("GPU-ns", &[(0.0, 250.0)]);
    g["fail"] = json!({ "nvmlDeviceGetTotalEnergyConsumption": "NOT_SUPPORTED",
                        "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
                        "nvmlDeviceGetFieldValues": "NOT_SUPPORTED" });
    let fake = Fake::new(&scenario(vec![g]));
    let mut meter = fake.meter();
    let r = window(&fake, &mut meter, 0, 3_000);
    assert_eq!(r.len(), 1);
    assert_null(&r[0], "NotSupported");
    assert!(r[0]
        .unavailable_reason
        .as_deref()
        .unwrap()
        .contains("nvmlDeviceGetTotalEnergyConsumption"));
    assert_eq!(r[0].device_id, "GPU-ns");
    assert_eq!(r[0].device_name, "NVIDIA H100 80GB HBM3");
}

#[test]
fn counter_reset_is_a_labelled_null() {
    let mut g = gpu("GPU-reset", &[(0.0, 300.0)]);
    g["counter_reset_at_s"] = json!(10.0);
    let fake = Fake::new(&scenario(vec![g]));
    let mut meter = fake.meter();
    let r = window(&fake, &mut meter, 5_000, 15_000);
    assert_null(&r[0], "counter reset");
    // The next window, after the reset, measures again.
    let trace = [(0.0, 300.0)];
    let r = window(&fake, &mut meter, 0, 2_000);
    let expected = integral_mj(&trace, 15.0, 17.0);
    assert!((r[0].energy_mj.unwrap() - expected).abs() <= 1.0);
}

#[test]
fn lost_gpu_is_a_labelled_null() {
    let mut g = gpu("GPU-lost", &[(0.0, 250.0)]);
    g["lost_at_s"] = json!(10.0);
    let fake = Fake::new(&scenario(vec![g]));
    let mut meter = fake.meter();
    let r = window(&fake, &mut meter, 5_000, 15_000);
    assert_null(&r[0], "GpuLost");
    // Lost before the window starts: still one labelled reading, with its UUID.
    let r = window(&fake, &mut meter, 0, 1_000);
    assert_null(&r[0], "GpuLost");
    assert_eq!(r[0].device_id, "GPU-lost");
}

#[test]
fn two_gpus_give_two_readings_each_with_its_own_energy() {
    let (t0, t1) = ([(0.0, 250.0)], [(0.0, 90.0), (7.0, 400.0)]);
    let fake = Fake::new(&scenario(vec![gpu("GPU-0", &t0), gpu("GPU-1", &t1)]));
    let mut meter = fake.meter();
    assert_eq!(meter.device_ids(), ["GPU-0", "GPU-1"]);
    let r = window(&fake, &mut meter, 2_000, 24_000);
    assert_eq!(r.len(), 2);
    for (reading, (uuid, trace)) in r.iter().zip([("GPU-0", &t0[..]), ("GPU-1", &t1[..])]) {
        assert_eq!(reading.device_id, uuid);
        let expected = integral_mj(trace, 2.0, 24.0);
        let got = reading.energy_mj.unwrap();
        assert!(
            (got - expected).abs() / expected < 0.01,
            "{uuid}: {got} vs {expected}"
        );
    }
    assert!(matches!(meter.start(), Ok(())));
    assert!(meter.start().is_err(), "a second start is refused");
}

#[test]
fn discover_gpus_reports_the_scenario_topology() {
    let mut a100 = gpu("GPU-mig", &[(0.0, 50.0)]);
    a100["name"] = json!("NVIDIA A100-SXM4-40GB");
    a100["memory_total_bytes"] = json!(42_949_672_960u64);
    a100["power_limit_mw"] = json!(400_000);
    a100["mig_mode"] = json!(1);
    let mut broken = gpu("GPU-nopl", &[(0.0, 50.0)]);
    broken["fail"] = json!({ "nvmlDeviceGetPowerManagementLimit": "NO_PERMISSION" });
    let fake = Fake::new(&scenario(vec![gpu("GPU-h100", &[]), a100, broken]));
    let gpus = discover_gpus(Some(&fake.path)).unwrap();
    assert_eq!(gpus.len(), 3);
    assert_eq!(gpus[0].index, 0);
    assert_eq!(gpus[0].uuid.as_deref(), Some("GPU-h100"));
    assert_eq!(gpus[0].memory_total_bytes, Some(85_899_345_920));
    assert_eq!(gpus[0].power_limit_w, Some(700.0));
    assert_eq!(
        gpus[0].driver_version.as_deref(),
        Some("fake-nvml-550.54.15")
    );
    assert!(!gpus[0].mig_mode.as_ref().unwrap().current);
    assert_eq!(gpus[1].name.as_deref(), Some("NVIDIA A100-SXM4-40GB"));
    assert_eq!(gpus[1].memory_total_bytes, Some(42_949_672_960));
    assert_eq!(gpus[1].power_limit_w, Some(400.0));
    assert!(gpus[1].mig_mode.as_ref().unwrap().current);
    assert_eq!(gpus[2].power_limit_w, None);
    assert!(gpus[2].unavailable["power_limit_w"].contains("NoPermission"));
    assert!(gpus[0].unavailable.is_empty());
}

#[test]
fn failing_init_is_an_error_not_a_crash() {
    let mut s = scenario(vec![gpu("GPU-x", &[])]);
    s["fail"] = json!({ "nvmlInit_v2": "DRIVER_NOT_LOADED" });
    let fake = Fake::new(&s);
    let e = NvmlMeter::open(Some(&fake.path)).unwrap_err();
    assert!(e.reason.contains("DriverNotLoaded"), "{e}");
    assert!(discover_gpus(Some(&fake.path)).is_err());
}
