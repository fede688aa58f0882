//! The NVML sampler, the trace-integral fallback, failure modes and MIG attribution,
//! through lem's real NVML path (nvml-wrapper → `NvmlMeter`) against the fake
//! `libnvidia-ml.so` of `tests/fake-nvml`.
//!
//! Most tests drive the sampler on a stepped clock in lockstep with the fake's virtual
//! clock (`time_scale: 0`), so a 20 s window takes no real time and every sample lands
//! where the test says. Expected energies are integrals of the scenario's own trace,
//! computed here.

use lem_agent::meter::nvml::{discover_gpus, NvmlMeter};
use lem_agent::meter::sampler::{trace_energy, SamplerClock, TraceBasis};
use lem_agent::meter::EnergyMeter;
use lem_common::domain::{DeviceKind, EnergyReading, EnergySource};
use lem_common::mig::{DynamicBasis, MigMode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

mod fake_nvml;
use fake_nvml::{integral_mj, support, Fake};

/// How this file opens a meter on the fake.
trait OpenMeter {
    fn meter(&self, targets: &[&str]) -> NvmlMeter;
}

impl OpenMeter for Fake {
    fn meter(&self, targets: &[&str]) -> NvmlMeter {
        let targets: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        let mut m = NvmlMeter::open_targets(Some(&self.path), &targets).expect("open meter");
        m.set_sampler_clock(SamplerClock::Stepped);
        m
    }
}

/// A window from `start_ms` to `end_ms` of virtual time, sampled every `period_ms` on
/// the stepped clock and polled every second.
fn window(
    fake: &Fake,
    meter: &mut NvmlMeter,
    start_ms: u64,
    end_ms: u64,
    period_ms: u64,
) -> Vec<EnergyReading> {
    meter.set_sample_period(Duration::from_millis(period_ms));
    fake.goto_ms(start_ms);
    meter.start().unwrap();
    let mut t = start_ms;
    while t < end_ms {
        let next = (t + period_ms).min(end_ms);
        fake.goto_ms(next);
        t = next;
        meter.step_to(Duration::from_millis(t - start_ms));
        if (t - start_ms).is_multiple_of(1000) {
            meter.poll();
        }
    }
    meter.stop()
}

fn h100(uuid: &str, trace: &[(f64, f64)]) -> Value {
    json!({
        "name": "NVIDIA H100 80GB HBM3", "uuid": uuid,
        "memory_total_bytes": 85_899_345_920u64, "power_limit_mw": 700_000,
        "power": trace, "energy_start_mj": 987_654_321u64,
        "temperature_c": [[0.0, 40], [5.0, 63]], "sm_clock_mhz": [[0.0, 1980]],
        "throttle_reasons": [[0.0, 0], [5.0, 4]],
    })
}

fn scenario(gpus: Vec<Value>) -> Value {
    json!({ "driver_version": "550.54.15", "step_ms": 100, "time_scale": 0.0, "gpus": gpus })
}

fn assert_labelled_null(r: &EnergyReading, reason_part: &str) {
    assert_eq!(r.energy_mj, None, "{r:?}");
    assert_ne!(r.energy_mj, Some(0.0));
    let reason = r.unavailable_reason.as_deref().expect("a reason");
    assert!(reason.contains(reason_part), "{reason:?}");
}

// ---- sampler ----

#[test]
fn the_trace_rides_beside_the_counter() {
    let trace = [(0.0, 250.0)];
    let fake = Fake::new(&scenario(vec![h100("GPU-a", &trace)]));
    let mut meter = fake.meter(&[]);
    let r = window(&fake, &mut meter, 2_000, 8_000, 100);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(
        r.source,
        EnergySource::NvmlCounter,
        "the counter stays the source"
    );
    assert_eq!(r.window_ns, 6_000_000_000);
    let t = r.trace.as_ref().expect("a trace");
    assert_eq!(t.period_ms, 100.0);
    assert_eq!(t.samples.len(), 61, "t = 0, 0.1, …, 6.0 s");
    assert!(t.unavailable.is_empty(), "{:?}", t.unavailable);
    for (k, s) in t.samples.iter().enumerate() {
        assert_eq!(s.t_ns, k as u64 * 100_000_000);
        assert_eq!(s.power_instant_w, Some(250.0));
        assert_eq!(s.power_avg_w, Some(250.0));
        assert_eq!(s.sm_clock_mhz, Some(1980));
    }
    // Sensors follow the scenario (virtual time = 2 s + t).
    assert_eq!(t.samples[0].temperature_c, Some(40));
    assert_eq!(t.samples[30].temperature_c, Some(63));
    assert_eq!(t.samples[29].throttle_reasons, Some(0));
    assert_eq!(t.samples[30].throttle_reasons, Some(4));
    // The counter in the trace moves in 100 ms steps of 25 J and agrees with the reading.
    let c: Vec<u64> = t
        .samples
        .iter()
        .map(|s| s.energy_counter_mj.unwrap())
        .collect();
    assert!(c.windows(2).all(|w| w[1] - w[0] == 25_000), "{c:?}");
    assert_eq!((c[60] - c[0]) as f64, r.energy_mj.unwrap());
}

#[test]
fn the_power_average_lags_a_step_by_the_sensor_window() {
    // 100 W, then 500 W from 10 s: the 1 s average ramps over [10, 11] s.
    let trace = [(0.0, 100.0), (10.0, 500.0)];
    let fake = Fake::new(&scenario(vec![h100("GPU-a", &trace)]));
    let mut meter = fake.meter(&[]);
    let r = window(&fake, &mut meter, 9_000, 12_000, 100);
    let s = &r[0].trace.as_ref().unwrap().samples;
    let at = |ms: u64| &s[((ms - 9_000) / 100) as usize];
    assert_eq!(at(10_000).power_avg_w, Some(100.0));
    assert_eq!(at(10_500).power_avg_w, Some(300.0));
    assert_eq!(at(10_500).power_instant_w, Some(500.0));
    assert_eq!(at(11_000).power_avg_w, Some(500.0));
}

#[test]
fn real_clock_sampler_samples_every_period_and_stops_with_the_window() {
    let mut s = scenario(vec![h100("GPU-a", &[(0.0, 300.0)])]);
    s["time_scale"] = json!(1.0);
    let fake = Fake::new(&s);
    let mut meter = NvmlMeter::open(Some(&fake.path)).unwrap();
    meter.set_sample_period(Duration::from_millis(50));
    meter.start().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let r = meter.stop();
    let t = r[0].trace.as_ref().unwrap();
    assert_eq!(t.period_ms, 50.0);
    // One sample per tick over the span the sampler ran, plus the first and the last; a
    // loaded machine may skip ticks (never burst them), so only the upper bound is
    // tight: first, at least one tick (600 ms ≫ 50 ms), last.
    let n = t.samples.len();
    let last = t.samples.last().unwrap().t_ns;
    let ticks = (last / 50_000_000) as usize;
    assert!(n >= 3 && n <= ticks + 2, "{n} samples over {last} ns");
    assert!(t.samples.windows(2).all(|w| w[1].t_ns > w[0].t_ns));
    assert!(
        last <= r[0].window_ns + 5_000_000,
        "{last} vs {}",
        r[0].window_ns
    );
    // The next window starts a fresh trace.
    meter.start().unwrap();
    let r = meter.stop();
    assert!(r[0].trace.as_ref().unwrap().samples.len() <= 3);
    // Period zero: no sampler, no trace.
    meter.set_sample_period(Duration::ZERO);
    meter.start().unwrap();
    assert!(meter.stop()[0].trace.is_none());
}

#[test]
fn sampling_cost_per_sample() {
    // Eight GPUs; every sample reads six sensors on each, through the fake.
    let gpus = (0..8)
        .map(|i| h100(&format!("GPU-{i}"), &[(0.0, 650.0)]))
        .collect();
    let fake = Fake::new(&scenario(gpus));
    let mut meter = fake.meter(&[]);
    meter.start().unwrap();
    let n = 2_000u64;
    let t0 = Instant::now();
    for k in 1..=n {
        meter.step_to(Duration::from_millis(k * 100));
    }
    let per_sample = t0.elapsed() / n as u32;
    let r = meter.stop();
    assert_eq!(r[0].trace.as_ref().unwrap().samples.len() as u64, n + 1);
    eprintln!("sampler: {per_sample:?} per sample of 8 GPUs (incl. the step handshake)");
    // Far below the 100 ms period even unoptimised on a shared machine.
    assert!(per_sample < Duration::from_millis(10), "{per_sample:?}");
}

// ---- fallback: no counter ----

fn no_counter(uuid: &str, trace: &[(f64, f64)], extra_fail: Value) -> Value {
    let mut g = h100(uuid, trace);
    let mut fail = json!({ "nvmlDeviceGetTotalEnergyConsumption": "NOT_SUPPORTED" });
    for (k, v) in extra_fail.as_object().unwrap() {
        fail[k] = v.clone();
    }
    g["fail"] = fail;
    g
}

#[test]
fn without_the_counter_a_steady_load_is_within_one_percent_over_20s() {
    let trace = [(0.0, 250.0)];
    for (extra, basis) in [
        (json!({}), TraceBasis::Instant),
        (
            json!({ "NVML_FI_DEV_POWER_INSTANT": "NOT_SUPPORTED" }),
            TraceBasis::Average,
        ),
    ] {
        let fake = Fake::new(&scenario(vec![no_counter("GPU-nc", &trace, extra)]));
        let mut meter = fake.meter(&[]);
        let r = window(&fake, &mut meter, 1_500, 22_000, 100);
        let r = &r[0];
        let expected = integral_mj(&trace, 1.5, 22.0);
        let got = r.energy_mj.expect("the fallback gives energy");
        assert!(
            (got - expected).abs() / expected < 0.01,
            "{got} vs {expected}"
        );
        assert_eq!(r.source, EnergySource::NvmlPower);
        assert_eq!(r.sample_period_ms, Some(100.0));
        assert_eq!(r.unavailable_reason, None);
        let t = r.trace.as_ref().unwrap();
        assert!(t.unavailable["energy_counter_mj"].contains("NotSupported"));
        assert_eq!(trace_energy(t).unwrap().1, basis);
    }
}

#[test]
fn without_the_counter_a_stepped_load_stays_within_the_documented_bound() {
    // Steps up and down inside a 20 s window.
    let trace = [(0.0, 80.0), (3.05, 600.0), (9.0, 200.0), (15.37, 650.0)];
    let (t0, t1) = (2.0, 22.5);
    let period_s = 0.1;
    let expected = integral_mj(&trace, t0, t1);
    let steps: Vec<f64> = trace.windows(2).map(|w| (w[1].1 - w[0].1).abs()).collect();
    let p_max = trace.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let p_min = trace.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    // Instant: ΔP × period / 2 per step. Average: plus 0.5 s × (P_max − P_min).
    let instant_bound = steps.iter().map(|d| d * period_s / 2.0).sum::<f64>() * 1000.0;
    let avg_bound = instant_bound + 0.5 * (p_max - p_min) * 1000.0;
    for (extra, bound) in [
        (json!({}), instant_bound),
        (
            json!({ "NVML_FI_DEV_POWER_INSTANT": "NOT_SUPPORTED" }),
            avg_bound,
        ),
    ] {
        let fake = Fake::new(&scenario(vec![no_counter("GPU-st", &trace, extra)]));
        let mut meter = fake.meter(&[]);
        let r = window(&fake, &mut meter, 2_000, 22_500, 100);
        let got = r[0].energy_mj.unwrap();
        assert!(
            (got - expected).abs() <= bound,
            "{got} vs {expected}: bound {bound}"
        );
        // And within 5% here: the lag is small against a 20 s window.
        assert!((got - expected).abs() / expected < 0.05);
    }
}

// ---- failure modes: a labelled null, never a crash or a zero ----

#[test]
fn each_failure_gives_a_labelled_null_or_the_labelled_fallback() {
    let trace = [(0.0, 300.0)];
    // Sensors that fail: the energy is still the counter's, the sensor null with a reason.
    let mut g = h100("GPU-s", &trace);
    g["fail"] = json!({ "nvmlDeviceGetTemperature": "NOT_SUPPORTED",
                        "nvmlDeviceGetClockInfo": "NO_PERMISSION",
                        "nvmlDeviceGetCurrentClocksThrottleReasons": "NOT_SUPPORTED",
                        "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
                        "NVML_FI_DEV_POWER_INSTANT": "NOT_SUPPORTED" });
    let fake = Fake::new(&scenario(vec![g]));
    let mut meter = fake.meter(&[]);
    let r = &window(&fake, &mut meter, 1_000, 3_000, 100)[0];
    assert_eq!(r.source, EnergySource::NvmlCounter);
    assert!((r.energy_mj.unwrap() - integral_mj(&trace, 1.0, 3.0)).abs() <= 1.0);
    let t = r.trace.as_ref().unwrap();
    for (sensor, err) in [
        ("temperature_c", "NotSupported"),
        ("sm_clock_mhz", "NoPermission"),
        ("throttle_reasons", "NotSupported"),
        ("power_avg_w", "NotSupported"),
        ("power_instant_w", "NotSupported"),
    ] {
        assert!(
            t.unavailable[sensor].contains(err),
            "{sensor}: {:?}",
            t.unavailable
        );
    }
    assert!(t.samples.iter().all(|s| s.temperature_c.is_none()
        && s.sm_clock_mhz.is_none()
        && s.power_avg_w.is_none()
        && s.energy_counter_mj.is_some()));

    // Counter: NO_PERMISSION is a null (only a missing counter falls back).
    let mut g = h100("GPU-perm", &trace);
    g["fail"] = json!({ "nvmlDeviceGetTotalEnergyConsumption": "NO_PERMISSION" });
    let fake = Fake::new(&scenario(vec![g]));
    let mut meter = fake.meter(&[]);
    let r = &window(&fake, &mut meter, 1_000, 3_000, 100)[0];
    assert_labelled_null(r, "NoPermission");
    assert!(r.trace.is_some(), "the trace is kept even without energy");

    // GPU lost mid-window, with and without the counter.
    for g in [
        h100("GPU-lost", &trace),
        no_counter("GPU-lost", &trace, json!({})),
    ] {
        let mut g = g;
        g["lost_at_s"] = json!(5.0);
        let fake = Fake::new(&scenario(vec![g]));
        let mut meter = fake.meter(&[]);
        let r = &window(&fake, &mut meter, 1_000, 8_000, 100)[0];
        assert_labelled_null(r, "GpuLost");
        let t = r.trace.as_ref().unwrap();
        assert!(t.unavailable["power_avg_w"].contains("GpuLost"));
    }

    // Counter reset mid-window.
    let mut g = h100("GPU-reset", &trace);
    g["counter_reset_at_s"] = json!(4.0);
    let fake = Fake::new(&scenario(vec![g]));
    let mut meter = fake.meter(&[]);
    let r = &window(&fake, &mut meter, 1_000, 8_000, 100)[0];
    assert_labelled_null(r, "counter reset");

    // No counter and no power at all: null, naming both.
    let g = no_counter(
        "GPU-none",
        &trace,
        json!({ "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED", "nvmlDeviceGetFieldValues": "NOT_SUPPORTED" }),
    );
    let fake = Fake::new(&scenario(vec![g]));
    let mut meter = fake.meter(&[]);
    let r = &window(&fake, &mut meter, 1_000, 3_000, 100)[0];
    assert_labelled_null(r, "nvmlDeviceGetTotalEnergyConsumption");
    assert_labelled_null(
        r,
        "power_avg_w: NVML nvmlDeviceGetPowerUsage failed: NotSupported",
    );
}

// ---- MIG ----

const A100: &str = "GPU-a1000000-0000-4000-8000-000000000040";
const MIG_3G: &str = "MIG-a1000000-3g20-4000-8000-000000000001";
const MIG_2G_A: &str = "MIG-a1000000-2g10-4000-8000-000000000002";
const MIG_2G_B: &str = "MIG-a1000000-2g10-4000-8000-000000000003";

/// The shipped `a100-mig.json` scenario on a virtual clock.
fn a100_mig() -> Value {
    let path = support::repo_root().join("tests/fake-nvml/scenarios/a100-mig.json");
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    s["time_scale"] = json!(0.0);
    s
}

fn a100_power(s: &Value) -> Vec<(f64, f64)> {
    serde_json::from_value(s["gpus"][0]["power"].clone()).unwrap()
}

/// The parent counter's difference over [t0, t1] (on counter steps), from the scenario.
fn parent_delta_mj(s: &Value, t0: f64, t1: f64) -> f64 {
    integral_mj(&a100_power(s), t0, t1)
}

#[test]
fn mig_shared_slices_add_up_to_the_parent_exactly_with_gpm() {
    let s = a100_mig();
    let fake = Fake::new(&s);
    let mut meter = fake.meter(&[MIG_3G]);
    assert_eq!(
        meter.device_ids(),
        [A100],
        "the counter is read on the parent"
    );
    meter.set_idle_power_w(A100, 55.0);
    let r = window(&fake, &mut meter, 2_000, 24_000, 100);
    assert_eq!(r.len(), 1, "one reading: the job's slice");
    let r = &r[0];
    assert_eq!(r.device_kind, DeviceKind::MigSlice);
    assert_eq!(r.device_id, MIG_3G);
    assert_eq!(r.source, EnergySource::NvmlCounter);
    assert!(r.simulated);
    let a = r.mig.as_ref().unwrap();
    assert_eq!(a.mode, MigMode::Shared);
    assert_eq!(a.parent_id, A100);
    assert_eq!(a.total_compute_slices, 7);
    assert_eq!(a.window_ns, 22_000_000_000);
    assert_eq!(a.parent_idle_power_w, Some(55.0));
    // The parent's energy is the scenario's, and the split conserves it exactly.
    let expected = parent_delta_mj(&s, 2.0, 24.0);
    assert!((a.parent_energy_mj as f64 - expected).abs() <= 1.0);
    let sum: i64 = a.shares.iter().map(|s| s.energy_mj).sum::<i64>() + a.unattributed_mj;
    assert_eq!(sum, a.parent_energy_mj as i64);
    assert_eq!(r.energy_mj, Some(a.shares[0].energy_mj as f64));
    // Topology and GPM inputs are stored.
    let ids: Vec<&str> = a.slices.iter().map(|s| s.slice_id.as_str()).collect();
    assert_eq!(ids, [MIG_3G, MIG_2G_A, MIG_2G_B]);
    assert_eq!(a.slices[0].profile, "3g.20gb");
    assert_eq!(a.slices[1].profile, "2g.10gb");
    assert_eq!(
        a.slices.iter().map(|s| s.allocated).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(a.dynamic_basis, DynamicBasis::GpmSmActivity);
    assert!((a.slices[0].sm_activity.unwrap() - 0.85).abs() < 1e-9);
    assert!((a.slices[1].sm_activity.unwrap() - 0.30).abs() < 1e-9);
    // Dynamic split 0.85 × 42 : 0.30 × 28.
    let dynamic = a.shares[0].dynamic_mj as f64 / a.shares[1].dynamic_mj as f64;
    assert!(
        (dynamic - (0.85 * 42.0) / (0.30 * 28.0)).abs() < 1e-3,
        "{dynamic}"
    );
    assert_eq!(a.shares[2].energy_mj, 0, "unallocated");
    // Net energy of the slice, from the scenario alone: the parent's energy over the
    // window above its 55 W idle, shared between the two allocated slices by SM activity
    // × SMs (the 3g at 85% of 42 SMs, the 2g at 30% of 28; the third has no process).
    assert!((r.baseline_power_w.unwrap() - 55.0 * 3.0 / 7.0).abs() < 1e-9);
    let dynamic_mj = expected - 55.0 * 22.0 * 1000.0;
    let weight = 0.85 * 42.0 / (0.85 * 42.0 + 0.30 * 28.0);
    let expected_net = dynamic_mj * weight;
    let net = r.net_energy_mj.unwrap();
    // Integer-mJ shares: within 2 mJ of the real-valued split.
    assert!((net - expected_net).abs() <= 2.0, "{net} vs {expected_net}");
    assert!(a.total_compute_slices_assumed.is_none());
}

#[test]
fn mig_slice_count_nvml_does_not_give_is_a_labelled_assumption() {
    // The parent reports 0 compute slices: lem assumes 7 and says so on the reading.
    let mut s = a100_mig();
    s["gpus"][0]["mig_total_slices"] = json!(0);
    let fake = Fake::new(&s);
    let mut meter = fake.meter(&[MIG_3G]);
    let r = window(&fake, &mut meter, 2_000, 12_000, 100);
    let a = r[0].mig.as_ref().expect("an attribution");
    assert_eq!(a.total_compute_slices, 7);
    let why = a.total_compute_slices_assumed.as_deref().expect("labelled");
    assert!(why.contains("assumed 7 compute slices"), "{why}");
}

#[test]
fn mig_without_gpm_splits_by_compute_slices() {
    for s in [
        {
            // GPM not supported on the device at all.
            let mut s = a100_mig();
            for m in s["gpus"][0]["mig_instances"].as_array_mut().unwrap() {
                m.as_object_mut().unwrap().remove("sm_activity");
            }
            s
        },
        {
            let mut s = a100_mig();
            s["gpus"][0]["fail"] = json!({ "nvmlGpmMigSampleGet": "NOT_SUPPORTED" });
            s
        },
    ] {
        let fake = Fake::new(&s);
        let mut meter = fake.meter(&[MIG_3G]);
        let r = window(&fake, &mut meter, 2_000, 24_000, 100);
        let r = &r[0];
        let a = r.mig.as_ref().unwrap();
        assert_eq!(a.dynamic_basis, DynamicBasis::ComputeSliceShare);
        assert!(a.slices.iter().all(|s| s.sm_activity.is_none()));
        let sum: i64 = a.shares.iter().map(|s| s.energy_mj).sum::<i64>() + a.unattributed_mj;
        assert_eq!(sum, a.parent_energy_mj as i64);
        // No idle baseline: everything dynamic, 3 : 2 between the allocated slices.
        let ratio = a.shares[0].energy_mj as f64 / a.shares[1].energy_mj as f64;
        assert!((ratio - 1.5).abs() < 1e-5, "{ratio}");
        let why = &r.trace.as_ref().unwrap().unavailable[&format!("gpm_sm_activity/{MIG_3G}")];
        assert!(why.contains("NotSupported"), "{why}");
    }
}

#[test]
fn mig_job_on_every_slice_is_exclusive_and_gets_the_parent_energy() {
    let s = a100_mig();
    for targets in [
        vec![MIG_3G, MIG_2G_A, MIG_2G_B],
        vec![],
        vec!["0"],
        vec![A100],
    ] {
        let fake = Fake::new(&s);
        let mut meter = fake.meter(&targets);
        let r = window(&fake, &mut meter, 3_000, 25_000, 100);
        assert_eq!(r.len(), 1, "{targets:?}");
        let r = &r[0];
        assert_eq!(r.device_kind, DeviceKind::Gpu);
        assert_eq!(r.device_id, A100);
        let a = r.mig.as_ref().unwrap();
        assert_eq!(a.mode, MigMode::Exclusive);
        assert_eq!(r.energy_mj, Some(a.parent_energy_mj as f64));
        let expected = parent_delta_mj(&s, 3.0, 25.0);
        assert!((r.energy_mj.unwrap() - expected).abs() <= 1.0);
        assert_eq!(a.job_energy_mj(), a.parent_energy_mj as i64);
    }
}

#[test]
fn two_slices_of_one_parent_read_the_counter_once() {
    let s = a100_mig();
    let fake = Fake::new(&s);
    let mut meter = fake.meter(&[MIG_3G, MIG_2G_A, "MIG-ffffffff-nope"]);
    let r = window(&fake, &mut meter, 2_000, 23_000, 100);
    let slices: Vec<&EnergyReading> = r.iter().filter(|r| r.energy_mj.is_some()).collect();
    assert_eq!(slices.len(), 2);
    assert_eq!(
        slices[0].mig, slices[1].mig,
        "one attribution for the parent"
    );
    let a = slices[0].mig.as_ref().unwrap();
    assert_eq!(a.mode, MigMode::Shared);
    let job: f64 = slices.iter().map(|r| r.energy_mj.unwrap()).sum();
    assert_eq!(job, a.job_energy_mj() as f64);
    // The unknown target is a labelled null.
    let missing = r
        .iter()
        .find(|r| r.device_id == "MIG-ffffffff-nope")
        .unwrap();
    assert_eq!(missing.device_kind, DeviceKind::MigSlice);
    assert_labelled_null(missing, "matches no GPU or MIG device");
}

#[test]
fn mig_parent_failures_are_labelled_nulls_on_the_job_slices() {
    let mut s = a100_mig();
    s["gpus"][0]["lost_at_s"] = json!(10.0);
    let fake = Fake::new(&s);
    let mut meter = fake.meter(&[MIG_3G]);
    let r = window(&fake, &mut meter, 2_000, 12_000, 100);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].device_id, MIG_3G);
    assert_labelled_null(&r[0], "GpuLost");
    assert!(r[0].unavailable_reason.as_deref().unwrap().contains(A100));

    let mut s = a100_mig();
    s["gpus"][0]["counter_reset_at_s"] = json!(5.0);
    let fake = Fake::new(&s);
    let mut meter = fake.meter(&[MIG_3G]);
    let r = window(&fake, &mut meter, 2_000, 12_000, 100);
    assert_labelled_null(&r[0], "counter reset");
}

#[test]
fn discovery_lists_mig_instances_with_derived_profiles() {
    let fake = Fake::new(&a100_mig());
    let gpus = discover_gpus(Some(&fake.path)).unwrap();
    assert_eq!(gpus.len(), 1);
    let g = &gpus[0];
    assert!(g.mig_mode.as_ref().unwrap().current);
    let m = &g.mig_instances;
    assert_eq!(
        m.len(),
        3,
        "indices past the layout are NOT_FOUND and skipped"
    );
    assert_eq!(m[0].uuid.as_deref(), Some(MIG_3G));
    assert_eq!(m[0].parent_uuid.as_deref(), Some(A100));
    assert_eq!(m[0].parent_index, 0);
    assert_eq!(m[0].gpu_instance_id, Some(2));
    assert_eq!(m[0].compute_instance_id, Some(0));
    assert_eq!(m[0].profile.as_deref(), Some("3g.20gb"));
    assert_eq!(m[0].compute_slices, Some(3));
    assert_eq!(m[0].sm_count, Some(42));
    assert_eq!(m[0].memory_total_bytes, Some(19_968 << 20));
    assert_eq!(m[2].profile.as_deref(), Some("2g.10gb"));
    assert_eq!(m[2].gpu_instance_id, Some(4));
    assert!(m.iter().all(|i| i.unavailable.is_empty()));
}

#[test]
fn the_shipped_h100x8_scenario_loads_as_eight_gpus() {
    let path = support::repo_root().join("tests/fake-nvml/scenarios/h100x8.json");
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    s["time_scale"] = json!(0.0);
    let fake = Fake::new(&s);
    let mut meter = fake.meter(&[]);
    assert_eq!(meter.device_ids().len(), 8);
    let r = window(&fake, &mut meter, 5_000, 25_000, 100);
    for (g, reading) in s["gpus"].as_array().unwrap().iter().zip(&r) {
        let trace: Vec<(f64, f64)> = serde_json::from_value(g["power"].clone()).unwrap();
        let expected = integral_mj(&trace, 5.0, 25.0);
        let got = reading.energy_mj.unwrap();
        assert!(
            (got - expected).abs() / expected < 0.01,
            "{got} vs {expected}"
        );
        assert!(reading.simulated);
    }
}
