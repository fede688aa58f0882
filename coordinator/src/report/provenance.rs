//! The provenance table: for each cycle, every device reading behind the energy figures
//! (device, driver, engine, model, lem version, simulated or real, method and
//! uncertainty), and one row for the timing figures.

use super::experiment::{distinct_readings, source_name};
use super::model::ProvenanceRow;
use crate::aggregate::JobMetrics;
use lem_common::domain::{EnergyReading, RawResult};

/// Results written before lem hashed the weights it loaded.
const MODEL_HASH_NOT_RECORDED: &str = "not recorded (result written before lem hashed models)";

pub fn rows(cycles: &[(&JobMetrics, &RawResult)]) -> Vec<ProvenanceRow> {
    let mut rows = Vec::new();
    for (_, raw) in cycles {
        let cycle = raw.cycle + 1;
        let base = |figure: String| ProvenanceRow {
            figure,
            device: String::new(),
            driver: None,
            engine: engine(raw),
            model: format!(
                "{} → {} ({})",
                raw.model.requested, raw.model.resolved_path, raw.model.resolved_from
            ),
            model_hash: raw
                .model
                .weights_sha256
                .as_ref()
                .and_then(|m| m.value.clone()),
            model_hash_unavailable_reason: match &raw.model.weights_sha256 {
                Some(m) if m.value.is_some() => None,
                Some(m) => m.unavailable_reason.clone(),
                None => Some(MODEL_HASH_NOT_RECORDED.into()),
            },
            lem_version: raw.lem_version.clone(),
            simulated: false,
            method: String::new(),
            energy_j: None,
            uncertainty_j: None,
            uncertainty_method: None,
            baseline: None,
            phase_split: None,
            unavailable_reason: None,
        };
        for r in distinct_readings(raw) {
            let mut row = base(format!(
                "cycle {cycle} · {} energy, power trace, phase split",
                r.device_id
            ));
            row.device = format!("{} ({})", r.device_name, r.device_id);
            row.driver = r.driver_version.clone();
            row.simulated = r.simulated;
            row.method = method(r);
            row.energy_j = r.energy_mj.map(|mj| mj / 1e3);
            row.uncertainty_j = r.uncertainty_mj.map(|mj| mj / 1e3);
            row.uncertainty_method = r.uncertainty_method.clone();
            row.baseline = baseline(r);
            row.phase_split = r.phases.as_ref().map(|p| {
                serde_json::to_value(p.method)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            });
            row.unavailable_reason = r.unavailable_reason.clone();
            rows.push(row);
        }
        let mut timing = base(format!(
            "cycle {cycle} · throughput, latency (TTFT, ITL, E2EL)"
        ));
        timing.device = format!(
            "{} {} on {}",
            raw.compute_device.kind, raw.compute_device.name, raw.hostname
        );
        timing.method = "host monotonic clock, a device sync before each token stamp".into();
        timing.unavailable_reason = Some("not an energy figure".into());
        rows.push(timing);
    }
    rows
}

fn engine(raw: &RawResult) -> String {
    format!(
        "lem candle engine on {} ({}); {} weights {}, compute {}",
        raw.compute_device.kind,
        raw.compute_device.name,
        raw.model.format,
        raw.model.weight_dtype,
        raw.model.compute_dtype
    )
}

fn method(r: &EnergyReading) -> String {
    let mut m = source_name(r);
    if r.estimated {
        m.push_str(" (estimate)");
    }
    if let Some(p) = r.sample_period_ms {
        m.push_str(&format!("; period {p:.1} ms"));
        if let Some(how) = &r.sample_period_method {
            m.push_str(&format!(" ({how})"));
        }
    }
    if let Some(mig) = &r.mig {
        if let Ok(v) = serde_json::to_value(mig.mode) {
            m.push_str(&format!("; MIG {}", v.as_str().unwrap_or_default()));
        }
    }
    m
}

fn baseline(r: &EnergyReading) -> Option<String> {
    let b = r.baseline.as_ref()?;
    Some(match b.power_w {
        Some(w) => format!(
            "{w:.2} W idle ({}, over {:.2} s{})",
            b.method,
            b.measured_ns as f64 / 1e9,
            b.spread_w
                .map(|s| format!(", spread {s:.2} W"))
                .unwrap_or_default()
        ),
        None => format!(
            "none: {}",
            b.unavailable_reason.as_deref().unwrap_or("not measured")
        ),
    })
}
