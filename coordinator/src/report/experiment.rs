//! One experiment's section: power traces with baseline, window and phases; energy by
//! phase; latency distributions; cycle values with their 95% CI. Built from the stored
//! aggregate and the raw results it was computed from.

use super::model::{
    CycleMetric, ExperimentSection, LatencyDistributions, PhaseEnergyPlot, PhaseSpan, PowerPlot,
};
use super::provenance;
use super::ExperimentInput;
use crate::aggregate::{metric_cycle_values, JobMetrics};
use lem_common::domain::{EnergyReading, RawResult, RequestRecord};
use std::collections::{BTreeMap, BTreeSet};

/// The statistics drawn per cycle: name, label, unit.
pub const CYCLE_METRICS: [(&str, &str, &str); 7] = [
    ("output_tokens_per_s", "Output throughput", "tokens/s"),
    ("ttft_p50_ms", "TTFT p50", "ms"),
    ("e2e_p90_ms", "E2E latency p90", "ms"),
    ("energy_total_j", "Energy, all devices", "J"),
    (
        "j_per_output_token",
        "Energy per output token, all devices",
        "J/token",
    ),
    ("gpu_energy_j", "Energy, GPUs", "J"),
    (
        "gpu_j_per_output_token",
        "Energy per output token, GPUs",
        "J/token",
    ),
];

/// The raw result each aggregated cycle was computed from (its accepted attempt), in
/// cycle order.
pub fn aggregated_raws(input: &ExperimentInput) -> Vec<(&JobMetrics, &RawResult)> {
    input
        .aggregate
        .cycles
        .iter()
        .filter_map(|m| {
            input
                .raws
                .iter()
                .find(|r| r.cycle == m.cycle && r.attempt == m.attempt)
                .map(|r| (m, r))
        })
        .collect()
}

pub fn section(input: &ExperimentInput) -> ExperimentSection {
    let agg = &input.aggregate;
    let cycles = aggregated_raws(input);
    let first = cycles.first().map(|(_, raw)| *raw);
    ExperimentSection {
        id: input.record.id.clone(),
        config_name: input.record.config_name.clone(),
        model_name: input.record.model_name.clone(),
        status: input.record.status.as_str().to_string(),
        complete: agg.complete,
        simulated: agg.simulated,
        num_cycles_expected: agg.num_cycles_expected,
        num_cycles_with_results: agg.cycles.len(),
        warnings: agg.warnings.clone(),
        trace_cycle: first.map(|r| r.cycle + 1),
        power: first.map(power_plots).unwrap_or_default(),
        phase_energy: phase_energy(&cycles),
        latency: latencies(&cycles),
        cycle_metrics: cycle_metrics(input),
        provenance: provenance::rows(&cycles),
    }
}

/// Each distinct device's reading, in reading order (a device read twice counts once,
/// as in the totals).
pub fn distinct_readings(raw: &RawResult) -> Vec<&EnergyReading> {
    let mut seen = BTreeSet::new();
    raw.energy
        .iter()
        .filter(|r| seen.insert((r.device_kind, r.device_id.clone())))
        .collect()
}

fn power_plots(raw: &RawResult) -> Vec<PowerPlot> {
    let (phases, phases_why) = phase_spans(&raw.requests);
    distinct_readings(raw)
        .into_iter()
        .map(|r| power_plot(r, &phases, phases_why.clone()))
        .collect()
}

fn power_plot(
    r: &EnergyReading,
    phases: &[PhaseSpan],
    phases_unavailable_reason: Option<String>,
) -> PowerPlot {
    let window_start_s = r.window_start_offset_ns.unwrap_or(0) as f64 / 1e9;
    let mut plot = PowerPlot {
        device_id: r.device_id.clone(),
        device_name: r.device_name.clone(),
        device_kind: kind_name(r),
        simulated: r.simulated,
        t_s: Vec::new(),
        power_w: Vec::new(),
        power_field: None,
        baseline_w: r.baseline_power_w,
        baseline_unavailable_reason: r.baseline_power_w.is_none().then(|| {
            r.baseline
                .as_ref()
                .and_then(|b| b.unavailable_reason.clone())
                .unwrap_or_else(|| "no idle baseline was taken".into())
        }),
        window_start_s,
        window_end_s: window_start_s + r.window_ns as f64 / 1e9,
        phases: phases.to_vec(),
        phases_unavailable_reason,
        unavailable_reason: None,
    };
    let Some(trace) = &r.trace else {
        plot.unavailable_reason = Some(match &r.unavailable_reason {
            Some(why) => format!("not read: {why}"),
            None => format!("{} keeps no power trace", source_name(r)),
        });
        return plot;
    };
    // The sensor with the most samples; NVML's power usage when they tie.
    let avg = trace
        .samples
        .iter()
        .filter(|s| s.power_avg_w.is_some())
        .count();
    let instant = trace
        .samples
        .iter()
        .filter(|s| s.power_instant_w.is_some())
        .count();
    if avg == 0 && instant == 0 {
        let why = trace
            .unavailable
            .get("power_avg_w")
            .cloned()
            .unwrap_or_else(|| "the trace has no power samples".into());
        plot.unavailable_reason = Some(format!("no power in the trace: {why}"));
        return plot;
    }
    let use_instant = instant > avg;
    plot.power_field = Some(
        if use_instant {
            "power_instant_w"
        } else {
            "power_avg_w"
        }
        .into(),
    );
    for s in &trace.samples {
        plot.t_s.push(s.t_ns as f64 / 1e9);
        plot.power_w.push(if use_instant {
            s.power_instant_w
        } else {
            s.power_avg_w
        });
    }
    plot
}

fn kind_name(r: &EnergyReading) -> String {
    serde_json::to_value(r.device_kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn source_name(r: &EnergyReading) -> String {
    serde_json::to_value(r.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Prefill and decode spans of each batch from the request timings (seconds since the
/// window start): a batch starts at its requests' `start_offset_ns`, its prefill ends at
/// its first token (finish − (E2E − TTFT), the same for every row of a batch) and its
/// decode at its last request's finish. The reason says why there are none.
pub fn phase_spans(requests: &[RequestRecord]) -> (Vec<PhaseSpan>, Option<String>) {
    // Batch start → (earliest first token, latest finish).
    let mut batches: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in requests {
        let (Some(start), Some(finish)) = (r.start_offset_ns, r.finish_offset_ns) else {
            return (
                Vec::new(),
                Some("the results have no request start/finish times".into()),
            );
        };
        let first_token = finish
            .saturating_sub(r.e2e_ns.saturating_sub(r.ttft_ns))
            .max(start);
        let b = batches.entry(start).or_insert((first_token, finish));
        b.0 = b.0.min(first_token);
        b.1 = b.1.max(finish);
    }
    let mut spans = Vec::new();
    for (start, (first_token, finish)) in batches {
        spans.push(PhaseSpan {
            phase: "prefill".into(),
            start_s: start as f64 / 1e9,
            end_s: first_token as f64 / 1e9,
        });
        spans.push(PhaseSpan {
            phase: "decode".into(),
            start_s: first_token as f64 / 1e9,
            end_s: finish as f64 / 1e9,
        });
    }
    (spans, None)
}

fn phase_energy(cycles: &[(&JobMetrics, &RawResult)]) -> Vec<PhaseEnergyPlot> {
    let mut plots: Vec<PhaseEnergyPlot> = Vec::new();
    for (_, raw) in cycles {
        for r in distinct_readings(raw) {
            let i = match plots.iter().position(|p| p.device_id == r.device_id) {
                Some(i) => i,
                None => {
                    plots.push(PhaseEnergyPlot {
                        device_id: r.device_id.clone(),
                        device_name: r.device_name.clone(),
                        simulated: r.simulated,
                        cycles: Vec::new(),
                        prefill_j: Vec::new(),
                        decode_j: Vec::new(),
                        other_j: Vec::new(),
                        methods: Vec::new(),
                        gaps: Vec::new(),
                    });
                    plots.len() - 1
                }
            };
            let p = &mut plots[i];
            p.cycles.push(raw.cycle + 1);
            let split = r.phases.as_ref().filter(|_| r.energy_mj.is_some());
            p.prefill_j.push(split.map(|s| s.prefill_mj / 1e3));
            p.decode_j.push(split.map(|s| s.decode_mj / 1e3));
            p.other_j.push(split.map(|s| s.other_mj / 1e3));
            p.methods.push(split.map(|s| {
                serde_json::to_value(s.method)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            }));
            if split.is_none() {
                let why = match &r.unavailable_reason {
                    Some(why) => format!("not read: {why}"),
                    None => "no phase split was recorded".into(),
                };
                p.gaps.push(format!("cycle {}: {why}", raw.cycle + 1));
            }
        }
    }
    plots
}

fn latencies(cycles: &[(&JobMetrics, &RawResult)]) -> LatencyDistributions {
    let mut out = LatencyDistributions {
        ttft_ms: Vec::new(),
        itl_ms: Vec::new(),
        e2e_ms: Vec::new(),
        arrivals: Vec::new(),
    };
    for (m, raw) in cycles {
        for r in &raw.requests {
            out.ttft_ms.push(r.ttft_ns as f64 / 1e6);
            out.e2e_ms.push(r.e2e_ns as f64 / 1e6);
            out.itl_ms.extend(r.itl_ns.iter().map(|&n| n as f64 / 1e6));
        }
        if !out.arrivals.contains(&m.arrivals) {
            out.arrivals.push(m.arrivals.clone());
        }
    }
    out
}

fn cycle_metrics(input: &ExperimentInput) -> Vec<CycleMetric> {
    let agg = &input.aggregate;
    CYCLE_METRICS
        .iter()
        .map(|&(name, label, unit)| {
            let values: Vec<Option<f64>> = agg
                .cycles
                .iter()
                .map(
                    |m| match metric_cycle_values(std::slice::from_ref(m), name) {
                        Some(Ok(v)) => v.first().copied(),
                        _ => None,
                    },
                )
                .collect();
            let summary = agg.stats.get(name).cloned();
            let unavailable_reason = if summary.is_some() {
                None
            } else {
                Some(match metric_cycle_values(&agg.cycles, name) {
                    Some(Err(why)) => why,
                    _ => "not in this aggregate (re-aggregate with this lem)".into(),
                })
            };
            CycleMetric {
                name: name.into(),
                label: label.into(),
                unit: unit.into(),
                cycles: agg.cycles.iter().map(|m| m.cycle + 1).collect(),
                values,
                summary,
                unavailable_reason,
                left_out: agg
                    .energy_cycles_left_out
                    .get(name)
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_common::domain::StopReason;

    fn request(start_ms: u64, ttft_ms: u64, e2e_ms: u64, finish_ms: u64) -> RequestRecord {
        RequestRecord {
            index: 0,
            input_tokens: 4,
            output_tokens: 3,
            ttft_ns: ttft_ms * 1_000_000,
            itl_ns: vec![],
            e2e_ns: e2e_ms * 1_000_000,
            stop_reason: StopReason::MaxTokens,
            output_text: None,
            arrival_offset_ns: None,
            start_offset_ns: Some(start_ms * 1_000_000),
            finish_offset_ns: Some(finish_ms * 1_000_000),
        }
    }

    #[test]
    fn phase_spans_follow_each_batch_from_start_to_first_and_last_token() {
        // Batch at 100 ms: both rows' first token at 100 + 30 ms; rows finish at 200 and
        // 250 ms. Batch at 300 ms: first token at 300 + 20 ms, finish at 380 ms.
        let reqs = [
            request(100, 30, 100, 200),
            request(100, 30, 150, 250),
            request(300, 20, 80, 380),
        ];
        let (spans, why) = phase_spans(&reqs);
        assert!(why.is_none());
        let ms = |s: &PhaseSpan| {
            (
                s.phase.clone(),
                (s.start_s * 1e3).round() as u64,
                (s.end_s * 1e3).round() as u64,
            )
        };
        let got: Vec<_> = spans.iter().map(ms).collect();
        let want = [
            ("prefill", 100, 130),
            ("decode", 130, 250),
            ("prefill", 300, 320),
            ("decode", 320, 380),
        ]
        .map(|(p, a, b)| (p.to_string(), a, b));
        assert_eq!(got, want.to_vec());
    }

    #[test]
    fn phase_spans_say_why_when_requests_have_no_offsets() {
        let mut r = request(0, 1, 2, 2);
        r.start_offset_ns = None;
        let (spans, why) = phase_spans(&[r]);
        assert!(spans.is_empty());
        assert!(why.unwrap().contains("start/finish"));
    }
}
