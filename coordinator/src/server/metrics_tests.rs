use super::*;
use crate::test_fixtures::raw_result;
use lem_common::domain::{DeviceKind, EnergySource, PowerSample, PowerTrace};

/// A GPU reading of `energy_mj` over `window_ns`, with a trace of `points` samples.
fn gpu_reading(id: &str, energy_mj: f64, window_ns: u64, points: usize) -> EnergyReading {
    let mut r = EnergyReading::unavailable(DeviceKind::Gpu, id, "", window_ns);
    r.device_name = "NVIDIA H100".into();
    r.source = EnergySource::NvmlCounter;
    r.energy_mj = Some(energy_mj);
    r.unavailable_reason = None;
    r.trace = Some(PowerTrace {
        period_ms: 10.0,
        samples: (0..points)
            .map(|i| PowerSample::power_usage_only(i as u64 * 10_000_000, 300.0))
            .collect(),
        unavailable: BTreeMap::new(),
    });
    r
}

fn line_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
}

#[test]
fn accepted_results_sum_energy_per_device_and_give_the_latest_mean_power() {
    let mut tally = IngestTally::default();
    // Two results on node-a's GPU-0 (energies and windows chosen here), one with an
    // unavailable package reading.
    let windows = [
        (90_000.0, 2_000_000_000u64, 5usize),
        (30_000.0, 1_000_000_000, 7),
    ];
    for (energy_mj, window_ns, points) in windows {
        let mut raw = raw_result("e", 0, 4, window_ns);
        raw.hostname = "node-a".into();
        raw.energy = vec![
            gpu_reading("GPU-0", energy_mj, window_ns, points),
            EnergyReading::unavailable(DeviceKind::CpuPackage, "package-0", "no RAPL", window_ns),
        ];
        tally.add(ResultContribution::of(&raw));
    }
    let cluster = ClusterGauges {
        agents_known: 3,
        agents_connected: 2,
        agents_draining: 1,
        leases: 4,
        leases_awaiting_agent: 1,
        jobs_queued: 9,
    };
    let text = render(&cluster, &tally);

    let expected_energy_j: f64 = windows.iter().map(|(mj, _, _)| mj / 1000.0).sum();
    let (last_mj, last_ns, _) = windows[1];
    let expected_power_w = last_mj / 1000.0 / (last_ns as f64 / 1e9);
    let expected_points: usize = windows.iter().map(|(_, _, p)| p).sum();
    let labels =
        "{device=\"GPU-0\",modelName=\"NVIDIA H100\",kind=\"gpu\",source=\"nvml-counter\",\
                  estimated=\"false\",simulated=\"false\",Hostname=\"node-a\"}";
    let energy = line_value(
        &text,
        &format!("lem_device_result_energy_joules_total{labels}"),
    );
    assert!((energy.unwrap() - expected_energy_j).abs() < 1e-6, "{text}");
    let power = line_value(&text, &format!("lem_device_result_power_watts{labels}"));
    assert!((power.unwrap() - expected_power_w).abs() < 1e-6, "{text}");
    for (name, value) in [
        ("lem_coordinator_agents", 3),
        ("lem_coordinator_agents_connected", 2),
        ("lem_coordinator_agents_draining", 1),
        ("lem_coordinator_leases", 4),
        ("lem_coordinator_leases_awaiting_agent", 1),
        ("lem_coordinator_jobs_queued", 9),
        ("lem_coordinator_results_accepted_total", windows.len()),
        (
            "lem_coordinator_trace_samples_accepted_total",
            expected_points,
        ),
    ] {
        let line = format!("{name} {value}");
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // The package never had a number: no sample, a reason instead of a zero.
    assert!(!text
        .lines()
        .any(|l| !l.starts_with('#') && l.contains("package-0")));
    assert!(text.contains(
        "# lem: lem_device_result_energy_joules_total unavailable for package-0 on node-a"
    ));
    assert!(
        text.contains("lem_device_result_power_watts unavailable for package-0 on node-a: no RAPL")
    );
}

#[test]
fn before_any_result_device_families_are_absent_with_a_reason() {
    let text = render(&ClusterGauges::default(), &IngestTally::default());
    assert!(
        !text.contains("lem_device_result_energy_joules_total"),
        "{text}"
    );
    assert!(text.contains("# lem: no device energy yet"), "{text}");
    assert!(text
        .lines()
        .any(|l| l == "lem_coordinator_results_accepted_total 0"));
}
