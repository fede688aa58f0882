//! What `lem serve --metrics-listen` shows: the cluster as the scheduler sees it (agents,
//! leases, queue) and what ingest accepted since this process started (results, trace
//! samples, and per device the energy and mean power the accepted results report).
//!
//! The driver thread owns both halves: it counts each accepted result here and renders
//! the text when a scrape asks, so a scrape reads one consistent state. Device numbers
//! are the results' own — measured windows, not live readings (those are lem-agent's
//! `DCGM_FI_DEV_*`) — hence Kepler-style `_joules_total` / `_watts` names. A value no
//! result gave is left out with a `# lem:` comment, never shown as 0.

use crate::scheduler::Scheduler;
use lem_common::domain::{EnergyReading, RawResult};
use lem_common::prometheus::{self, Kind};
use std::collections::BTreeMap;

/// The scheduler's state at scrape time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterGauges {
    /// Agents heard from since this process started (alive or lost).
    pub agents_known: u64,
    /// Heard from within the agent timeout.
    pub agents_connected: u64,
    pub agents_draining: u64,
    pub leases: u64,
    /// Leases recovered after a restart that their agent has not announced yet.
    pub leases_awaiting_agent: u64,
    /// Jobs waiting for a placement.
    pub jobs_queued: u64,
}

impl ClusterGauges {
    pub fn of(scheduler: &Scheduler) -> Self {
        let mut gauges = Self::default();
        for agent in scheduler.agents() {
            gauges.agents_known += 1;
            gauges.agents_connected += u64::from(agent.alive);
            gauges.agents_draining += u64::from(agent.drained);
        }
        for lease in scheduler.leases() {
            gauges.leases += 1;
            gauges.leases_awaiting_agent += u64::from(!lease.reclaimed);
        }
        gauges.jobs_queued = scheduler.queued_jobs() as u64;
        gauges
    }
}

/// One device as accepted results reported it; keyed by (hostname, device id).
#[derive(Debug, Clone, PartialEq)]
struct DeviceTally {
    device_name: String,
    kind: String,
    source: String,
    estimated: bool,
    simulated: bool,
    /// Sum of the reported window energies; `None` until one result had a number.
    energy_mj_total: Option<f64>,
    /// Mean power over the latest accepted window, or why it had none.
    last_power_w: Result<f64, String>,
}

/// What ingest accepted since the process started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestTally {
    pub results_accepted: u64,
    pub trace_samples_accepted: u64,
    devices: BTreeMap<(String, String), DeviceTally>,
}

/// The power/energy trace points a result carries, over all its devices: the unit the
/// ingest benchmark counts.
pub fn trace_samples(result: &RawResult) -> u64 {
    result
        .energy
        .iter()
        .filter_map(|r| r.trace.as_ref())
        .map(|t| t.samples.len() as u64)
        .sum()
}

/// What one result adds to the tally; taken before the body goes to the store, added
/// once the scheduler accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultContribution {
    hostname: String,
    trace_samples: u64,
    readings: Vec<ReadingContribution>,
}

#[derive(Debug, Clone, PartialEq)]
struct ReadingContribution {
    device_id: String,
    device_name: String,
    kind: String,
    source: String,
    estimated: bool,
    simulated: bool,
    energy_mj: Result<f64, String>,
    window_ns: u64,
}

impl ResultContribution {
    pub fn of(result: &RawResult) -> Self {
        Self {
            hostname: result.hostname.clone(),
            trace_samples: trace_samples(result),
            readings: result.energy.iter().map(reading).collect(),
        }
    }
}

fn reading(r: &EnergyReading) -> ReadingContribution {
    let name = |v: serde_json::Value| v.as_str().unwrap_or("unknown").to_owned();
    ReadingContribution {
        device_id: r.device_id.clone(),
        device_name: r.device_name.clone(),
        kind: name(serde_json::to_value(r.device_kind).unwrap_or_default()),
        source: name(serde_json::to_value(r.source).unwrap_or_default()),
        estimated: r.estimated,
        simulated: r.simulated,
        energy_mj: r.energy_mj.ok_or_else(|| {
            r.unavailable_reason
                .clone()
                .unwrap_or_else(|| "no reason given".into())
        }),
        window_ns: r.window_ns,
    }
}

impl IngestTally {
    /// Counts one accepted result.
    pub fn add(&mut self, result: ResultContribution) {
        self.results_accepted += 1;
        self.trace_samples_accepted += result.trace_samples;
        for r in result.readings {
            let key = (result.hostname.clone(), r.device_id);
            let last_power_w = match (&r.energy_mj, r.window_ns) {
                (Ok(mj), ns) if ns > 0 => Ok(mj / 1000.0 / (ns as f64 / 1e9)),
                (Ok(_), _) => Err("the result's window is empty".into()),
                (Err(why), _) => Err(why.clone()),
            };
            let tally = self.devices.entry(key).or_insert_with(|| DeviceTally {
                device_name: r.device_name.clone(),
                kind: r.kind.clone(),
                source: r.source.clone(),
                estimated: r.estimated,
                simulated: r.simulated,
                energy_mj_total: None,
                last_power_w: Err(String::new()),
            });
            tally.device_name = r.device_name;
            tally.source = r.source;
            tally.estimated |= r.estimated;
            tally.simulated |= r.simulated;
            if let Ok(mj) = r.energy_mj {
                *tally.energy_mj_total.get_or_insert(0.0) += mj;
            }
            tally.last_power_w = last_power_w;
        }
    }
}

/// The exposition text.
pub fn render(cluster: &ClusterGauges, ingest: &IngestTally) -> String {
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
        prometheus::single(out, name, help, Kind::Gauge, &value.to_string());
    };
    gauge(
        &mut out,
        "lem_coordinator_agents",
        "Agents heard from since this coordinator started, connected or lost.",
        cluster.agents_known,
    );
    gauge(
        &mut out,
        "lem_coordinator_agents_connected",
        "Agents heard from within the agent timeout.",
        cluster.agents_connected,
    );
    gauge(
        &mut out,
        "lem_coordinator_agents_draining",
        "Agents told to drain (no new leases).",
        cluster.agents_draining,
    );
    gauge(
        &mut out,
        "lem_coordinator_leases",
        "Live leases (jobs placed on an agent).",
        cluster.leases,
    );
    gauge(
        &mut out,
        "lem_coordinator_leases_awaiting_agent",
        "Leases recovered after a restart that their agent has not announced yet.",
        cluster.leases_awaiting_agent,
    );
    gauge(
        &mut out,
        "lem_coordinator_jobs_queued",
        "Jobs waiting for a placement.",
        cluster.jobs_queued,
    );
    prometheus::single(
        &mut out,
        "lem_coordinator_results_accepted_total",
        "Raw results accepted (stored, flushed, acknowledged) since this process started; \
         rate() of it is the ingest rate.",
        Kind::Counter,
        &ingest.results_accepted.to_string(),
    );
    prometheus::single(
        &mut out,
        "lem_coordinator_trace_samples_accepted_total",
        "Power/energy trace points in the accepted results since this process started.",
        Kind::Counter,
        &ingest.trace_samples_accepted.to_string(),
    );
    device_families(&mut out, ingest);
    out
}

fn device_families(out: &mut String, ingest: &IngestTally) {
    let energy = "lem_device_result_energy_joules_total";
    let power = "lem_device_result_power_watts";
    if ingest.devices.is_empty() {
        prometheus::note(
            out,
            "no device energy yet: no accepted result since this process started",
        );
        return;
    }
    let labels = |host: &str, id: &str, t: &DeviceTally| {
        [
            ("device", id.to_owned()),
            ("modelName", t.device_name.clone()),
            ("kind", t.kind.clone()),
            ("source", t.source.clone()),
            ("estimated", t.estimated.to_string()),
            ("simulated", t.simulated.to_string()),
            ("Hostname", host.to_owned()),
        ]
    };
    let write = |out: &mut String, name: &str, host: &str, id: &str, t: &DeviceTally, v: f64| {
        let owned = labels(host, id, t);
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        prometheus::sample(out, name, &pairs, &format!("{v:.3}"));
    };
    prometheus::header(
        out,
        energy,
        "Energy of the measured windows of the accepted results, summed per device (in J).",
        Kind::Counter,
    );
    for ((host, id), t) in &ingest.devices {
        match t.energy_mj_total {
            Some(mj) => write(out, energy, host, id, t, mj / 1000.0),
            None => prometheus::note(
                out,
                &format!("{energy} unavailable for {id} on {host}: no result had its energy"),
            ),
        }
    }
    prometheus::header(
        out,
        power,
        "Mean power over the latest accepted result's measured window, per device (in W).",
        Kind::Gauge,
    );
    for ((host, id), t) in &ingest.devices {
        match &t.last_power_w {
            Ok(w) => write(out, power, host, id, t, *w),
            Err(why) => prometheus::note(
                out,
                &format!("{power} unavailable for {id} on {host}: {why}"),
            ),
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
