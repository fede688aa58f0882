//! Window edges on the NVML counter's updates, the uncertainty they give, the measured
//! counter period and idle baseline, the simulated label, and the phase split — through
//! lem's real NVML path against the fake `libnvidia-ml.so` (tests/fake-nvml).
//!
//! The fake's counter grid has a seeded random phase (`counter_phase_seed`), so it does
//! not line up with lem's first read. The meter runs on the fake's virtual clock
//! (`set_time_source`): its polls advance virtual time, so no test sleeps. Expected
//! energies are integrals of the scenario's own power trace, computed here.

use lem_agent::meter::nvml::NvmlMeter;
use lem_agent::meter::sampler::SamplerClock;
use lem_agent::meter::{checks, EnergyMeter};
use lem_common::domain::{EnergyReading, EnergySource, PhaseSplitMethod};
use lem_common::phases::{split, Phase, Segment};
use serde_json::{json, Value};
use std::time::Duration;

mod fake_nvml;
use fake_nvml::{integral_mj, Fake};

const STEP_MS: u64 = 100;

fn h100(uuid: &str, power: &[(f64, f64)]) -> Value {
    json!({ "name": "NVIDIA H100 80GB HBM3", "uuid": uuid, "power": power,
            "energy_start_mj": 123_456_789u64 })
}

fn scenario(gpus: Vec<Value>, seed: u64) -> Value {
    json!({ "driver_version": "550.54.15", "step_ms": STEP_MS, "time_scale": 0.0,
            "counter_phase_seed": seed, "gpus": gpus })
}

/// A meter on the fake's virtual clock, without the sampler.
fn virtual_meter(fake: &Fake) -> NvmlMeter {
    let mut m = NvmlMeter::open(Some(&fake.path)).expect("open meter");
    m.set_time_source(fake.clock());
    m.set_sample_period(Duration::ZERO);
    m
}

/// SplitMix64, the test's own source of window placements.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// [from, to] in seconds of the reading's own window, given when the meter's window
/// started (virtual ms).
fn reading_span_s(r: &EnergyReading, window_start_ms: u64) -> (f64, f64) {
    let offset_ns = r
        .window_start_offset_ns
        .expect("an aligned reading has an offset");
    let from = window_start_ms as f64 / 1e3 + offset_ns as f64 / 1e9;
    (from, from + r.window_ns as f64 / 1e9)
}

#[test]
fn net_energy_over_60_windows_is_unbiased_to_within_2_percent_of_a_step() {
    const P_IDLE: f64 = 90.0;
    const P_LOAD: f64 = 400.0;
    // Loads at random places and lengths (ms), idle between them, from a seed.
    let mut rng = 0x5eed_u64;
    let mut power = vec![(0.0, P_IDLE)];
    let mut loads = Vec::new();
    let mut t_ms = 6_000u64;
    for _ in 0..60 {
        let len = 300 + splitmix(&mut rng) % 1_700;
        loads.push((t_ms, len));
        power.push((t_ms as f64 / 1e3, P_LOAD));
        power.push(((t_ms + len) as f64 / 1e3, P_IDLE));
        t_ms += len + 800 + splitmix(&mut rng) % 700;
    }
    let fake = Fake::new(&scenario(vec![h100("GPU-e", &power)], 42));
    // Polls overrun by 0–3 ms, so the poll grid does not keep one offset to the counter's.
    fake.set_sleep_jitter(3, 9);
    let mut meter = virtual_meter(&fake);

    // Idle baseline on the counter's updates: the scenario's idle power and step.
    let b = meter.idle_baselines(Duration::from_secs(2));
    let idle_w = b[0].info.power_w.expect("a baseline");
    assert!((idle_w - P_IDLE).abs() <= 0.005 * P_IDLE, "{idle_w}");
    let (period_ms, how) = b[0].counter_period.clone().expect("a measured period");
    assert!((period_ms - STEP_MS as f64).abs() < 1.0, "{period_ms}");
    assert!(how.starts_with("measured"), "{how}");
    assert_eq!(b[0].info.settled, Some(true));
    assert!(
        fake.now_ms() < loads[0].0 - 400,
        "baseline ran into the first load"
    );

    let step_mj = P_LOAD * STEP_MS as f64; // one counter step at load, in mJ
    let mut net_errors = Vec::new();
    for &(load_ms, len_ms) in &loads {
        // Start before the load (the start waits for an update), stop after it.
        fake.goto_ms(load_ms - 300);
        meter.start().unwrap();
        let started_ms = fake.now_ms();
        assert!(started_ms <= load_ms, "the start edge waited past the load");
        fake.goto_ms(load_ms + len_ms + 50);
        let r = meter.stop().remove(0);
        assert_eq!(r.source, EnergySource::NvmlCounter);
        assert_eq!(r.sample_period_ms, Some(period_ms));
        // Gross: the scenario's integral over the reading's own window, within its stated
        // uncertainty.
        let (from, to) = reading_span_s(&r, started_ms);
        let expected = integral_mj(&power, from, to);
        let got = r.energy_mj.unwrap();
        let u = r.uncertainty_mj.expect("an uncertainty");
        assert!((got - expected).abs() <= u, "{got} vs {expected} ± {u}");
        assert!(u < 0.05 * step_mj, "aligned edges: {u} mJ");
        assert!(r
            .uncertainty_method
            .as_deref()
            .unwrap()
            .contains("start on an observed update"));
        // Net over the measured idle power: the load's energy above idle, from the
        // scenario (the reading's window is the load plus idle around it).
        let mut r = r;
        r.apply_baseline(idle_w);
        let expected_net = (P_LOAD - P_IDLE) * len_ms as f64;
        net_errors.push(r.net_energy_mj.unwrap() - expected_net);
    }
    let bias = net_errors.iter().sum::<f64>() / net_errors.len() as f64;
    let worst = net_errors.iter().map(|e| e.abs()).fold(0.0, f64::max);
    eprintln!("net energy over {} windows: bias {bias:.1} mJ, worst {worst:.1} mJ (one step = {step_mj} mJ)", net_errors.len());
    assert!(
        bias.abs() <= 0.02 * step_mj,
        "bias {bias} mJ over {} windows (one step = {step_mj} mJ)",
        net_errors.len()
    );
}

#[test]
fn without_alignment_a_window_is_off_by_up_to_a_step_and_says_so() {
    let power = [(0.0, 300.0)];
    let fake = Fake::new(&scenario(vec![h100("GPU-u", &power)], 7));
    let mut meter = virtual_meter(&fake);
    meter.set_edge_alignment(false);
    fake.goto_ms(1_000);
    meter.start().unwrap();
    fake.goto_ms(3_000);
    let r = meter.stop().remove(0);
    let got = r.energy_mj.unwrap();
    let u = r.uncertainty_mj.unwrap();
    // Half a period at each edge at 300 W: 2 × 0.05 s × 300 W (+1 mJ).
    assert!((u - (2.0 * 0.05 * 300.0 * 1000.0 + 1.0)).abs() < 1.0, "{u}");
    assert!((got - integral_mj(&power, 1.0, 3.0)).abs() <= u);
    assert!(r
        .uncertainty_method
        .as_deref()
        .unwrap()
        .contains("no update seen"));
}

#[test]
fn a_failing_driver_version_still_labels_readings_simulated() {
    let mut s = scenario(vec![h100("GPU-s", &[(0.0, 100.0)])], 1);
    s["fail"] = json!({ "nvmlSystemGetDriverVersion": "NOT_SUPPORTED" });
    let fake = Fake::new(&s);
    let mut meter = virtual_meter(&fake);
    assert_eq!(meter.driver_version(), None);
    assert!(meter.is_simulated());
    let why = meter.simulation_reason().unwrap();
    assert!(why.contains("lem_fake_nvml_marker"), "{why}");
    meter.start().unwrap();
    fake.advance_ms(1_000);
    let r = meter.stop();
    assert!(r[0].simulated);
    assert_eq!(r[0].driver_version, None);
}

#[test]
fn a_counter_that_never_moves_gives_a_null_baseline_with_a_reason() {
    // 0 W: the counter never moves.
    let fake = Fake::new(&scenario(vec![h100("GPU-z", &[(0.0, 0.0)])], 3));
    let mut meter = virtual_meter(&fake);
    let b = meter.idle_baselines(Duration::from_secs(1));
    assert_eq!(b[0].info.power_w, None);
    let why = b[0].info.unavailable_reason.as_deref().unwrap();
    assert!(
        why.contains("did not move") && why.contains("not 0 W"),
        "{why}"
    );
    assert_eq!(b[0].counter_period, None);
    assert_eq!(b[0].info.settled, Some(false));
}

/// Counter checkpoints at the scenario's own phase boundaries on the stepped sampler
/// clock, then `split` as the runner's phase recorder calls it.
fn phase_split(
    fake: &Fake,
    meter: &mut NvmlMeter,
    phases: &[(Phase, u64, u64)],
    sample_ms: u64,
) -> (EnergyReading, Option<lem_common::domain::PhaseEnergy>) {
    let start_ms = phases[0].1;
    let end_ms = phases.last().unwrap().2;
    meter.set_sampler_clock(SamplerClock::Stepped);
    meter.set_sample_period(Duration::from_millis(sample_ms));
    fake.goto_ms(start_ms);
    meter.start().unwrap();
    let mut cumulative = vec![(0u64, 0.0)];
    let boundaries: Vec<u64> = phases.iter().map(|p| p.2).collect();
    let mut t = start_ms;
    while t < end_ms {
        // Samples every `sample_ms`, and one at every boundary.
        let boundary = boundaries
            .iter()
            .copied()
            .find(|&b| b > t)
            .unwrap_or(end_ms);
        let next = (t + sample_ms).min(boundary);
        fake.goto_ms(next);
        t = next;
        meter.step_to(Duration::from_millis(t - start_ms));
        if boundaries.contains(&t) && t < end_ms {
            let mj = meter.checkpoint()[0].1.unwrap();
            cumulative.push(((t - start_ms) * 1_000_000, mj));
        }
    }
    let r = meter.stop().remove(0);
    cumulative.push(((end_ms - start_ms) * 1_000_000, r.energy_mj.unwrap()));
    let segments: Vec<Segment> = phases
        .iter()
        .zip(cumulative.windows(2))
        .map(|(p, w)| Segment {
            phase: p.0,
            start_ns: w[0].0,
            end_ns: w[1].0,
            energy_mj: Some(w[1].1 - w[0].1),
        })
        .collect();
    let split = split(&segments, r.sample_period_ms, r.trace.as_ref());
    (r, split)
}

/// The scenario's energy in each phase.
fn phase_integrals(power: &[(f64, f64)], phases: &[(Phase, u64, u64)]) -> (f64, f64) {
    let sum = |want: Phase| -> f64 {
        phases
            .iter()
            .filter(|p| p.0 == want)
            .map(|p| integral_mj(power, p.1 as f64 / 1e3, p.2 as f64 / 1e3))
            .sum()
    };
    (sum(Phase::Prefill), sum(Phase::Decode))
}

#[test]
fn phase_split_follows_prefill_and_decode_power() {
    const P_PREFILL: f64 = 600.0;
    const P_DECODE: f64 = 250.0;
    // Long phases (≥ 10 counter periods): counter differences at the boundaries. The
    // boundaries sit off the counter grid, so each can misplace up to one step.
    let mut phases = Vec::new();
    let mut power = vec![(0.0, 60.0)];
    let mut t = 1_030;
    for _ in 0..3 {
        phases.push((Phase::Prefill, t, t + 1_510));
        phases.push((Phase::Decode, t + 1_510, t + 5_040));
        power.push((t as f64 / 1e3, P_PREFILL));
        power.push(((t + 1_510) as f64 / 1e3, P_DECODE));
        t += 5_040;
    }
    let fake = Fake::new(&scenario(vec![h100("GPU-p", &power)], 11));
    let mut meter = NvmlMeter::open(Some(&fake.path)).unwrap();
    let (_, p) = phase_split(&fake, &mut meter, &phases, 100);
    let p = p.expect("a split");
    assert_eq!(p.method, PhaseSplitMethod::CounterAtBoundaries);
    let (want_prefill, want_decode) = phase_integrals(&power, &phases);
    // Each boundary is read up to one step after the counter's last update, with the same
    // lag at every boundary (one grid): a phase loses up to a step at its end's power and
    // gains up to one at its start's, so each of the three segments is off by less than a
    // step at 600 W.
    let bound = 3.0 * P_PREFILL * STEP_MS as f64 + 10.0;
    assert!(
        (p.prefill_mj - want_prefill).abs() <= bound,
        "{} vs {want_prefill}",
        p.prefill_mj
    );
    assert!(
        (p.decode_mj - want_decode).abs() <= bound,
        "{} vs {want_decode}",
        p.decode_mj
    );
    // The two phases differ in power, and the split sees it: prefill's mean power is
    // within 10% of 600 W, decode's of 250 W.
    let prefill_s = 3.0 * 1.51;
    let decode_s = 3.0 * 3.53;
    assert!((p.prefill_mj / 1e3 / prefill_s - P_PREFILL).abs() < 0.1 * P_PREFILL);
    assert!((p.decode_mj / 1e3 / decode_s - P_DECODE).abs() < 0.1 * P_DECODE);

    // Short phases (150 ms prefill, 450 ms decode) sampled every 10 ms with
    // instantaneous power: the trace integral, scaled to the counter's total.
    let mut phases = Vec::new();
    let mut power = vec![(0.0, 60.0)];
    let mut t = 1_000;
    for _ in 0..20 {
        phases.push((Phase::Prefill, t, t + 150));
        phases.push((Phase::Decode, t + 150, t + 600));
        power.push((t as f64 / 1e3, P_PREFILL));
        power.push(((t + 150) as f64 / 1e3, P_DECODE));
        t += 600;
    }
    let fake = Fake::new(&scenario(vec![h100("GPU-q", &power)], 12));
    let mut meter = NvmlMeter::open(Some(&fake.path)).unwrap();
    let (r, p) = phase_split(&fake, &mut meter, &phases, 10);
    let p = p.expect("a split");
    assert_eq!(p.method, PhaseSplitMethod::TraceIntegral);
    let (want_prefill, want_decode) = phase_integrals(&power, &phases);
    // Scaled to the counter's total, whose unaligned edges are ± one step at 600 W; the
    // trace adds ΔP × 10 ms / 2 per power step.
    let total = want_prefill + want_decode;
    let rel = (P_PREFILL * STEP_MS as f64 + 40.0 * 350.0 * 5.0) / total;
    assert!(
        (p.prefill_mj - want_prefill).abs() <= rel * want_prefill + 1.0,
        "{} vs {want_prefill}",
        p.prefill_mj
    );
    assert!(
        (p.decode_mj - want_decode).abs() <= rel * want_decode + 1.0,
        "{} vs {want_decode}",
        p.decode_mj
    );
    assert!(r.trace.is_some());

    // The same short phases seen through the 1 s averaged power sampled every 100 ms:
    // the trace cannot resolve them; the split says it is a time apportionment.
    let mut s = scenario(vec![h100("GPU-r", &power)], 13);
    s["gpus"][0]["fail"] = json!({ "NVML_FI_DEV_POWER_INSTANT": "NOT_SUPPORTED" });
    let fake = Fake::new(&s);
    let mut meter = NvmlMeter::open(Some(&fake.path)).unwrap();
    let (_, p) = phase_split(&fake, &mut meter, &phases, 100);
    assert_eq!(
        p.expect("a split").method,
        PhaseSplitMethod::TimeApportioned
    );
}

#[test]
fn a_counter_that_disagrees_with_the_power_trace_is_a_warning() {
    // 300 W steady; one counter reads 12% high. The trace (instantaneous power every
    // 100 ms) integrates the truth.
    let power = [(0.0, 300.0)];
    let mut bad = h100("GPU-bad", &power);
    bad["counter_scale"] = json!(1.12);
    let fake = Fake::new(&scenario(vec![h100("GPU-good", &power), bad], 21));
    let mut meter = NvmlMeter::open(Some(&fake.path)).unwrap();
    meter.set_sampler_clock(SamplerClock::Stepped);
    meter.set_sample_period(Duration::from_millis(100));
    fake.goto_ms(1_000);
    meter.start().unwrap();
    for k in 1..=100u64 {
        fake.goto_ms(1_000 + k * 100);
        meter.step_to(Duration::from_millis(k * 100));
    }
    let r = meter.stop();
    let good = r[0].counter_trace_ratio.expect("a ratio");
    let high = r[1].counter_trace_ratio.expect("a ratio");
    // Over 10 s the counter's step at the edges is ≤ 1%: the ratios are 1 and 1.12.
    assert!((good - 1.0).abs() < 0.01, "{good}");
    assert!((high - 1.12).abs() < 0.015, "{high}");
    let w = checks::warnings(&r, 10.0);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("device GPU-bad: energy counter and power-trace integral disagree"),
        "{w:?}"
    );
}
