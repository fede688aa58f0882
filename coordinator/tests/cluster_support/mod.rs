//! Support for `cluster_loopback` (with `serve_support`, which starts the real `lem
//! serve` and the real `lem-agent` on simulated GPU nodes): a fixed loopback port (so a
//! restart on the same data dir is dialled at the same address by agents that were
//! started once), the nodes' GPU scenarios, quick configs on the real SmolLM2 model, and
//! the checks every fault run reports: jobs accepted exactly once, acknowledged results
//! lost, duplicates in aggregates. Every wait is bounded and generous (a loaded 2-core
//! machine).

#![allow(dead_code)] // each test uses a subset

use crate::serve_support::{support, Server};
use lem_coordinator::store::{Disposition, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for a loaded 2-core machine running real inference; a hang still ends.
pub const WAIT: Duration = Duration::from_secs(600);

/// A loopback port free right now (bound and released), for a coordinator that must be
/// restarted at the same address.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lem serve --listen addr` on `data_dir` (a fixed address, so a restart keeps it),
/// waiting up to [`WAIT`] for statuses and for its stop.
pub fn start_coordinator(data_dir: &Path, addr: &str, extra: &[&str]) -> Server {
    Server::start_on(data_dir, addr, extra).waiting(WAIT)
}

/// A GPU of a simulated node's scenario.
pub fn whole_gpu(model: &str, uuid: &str) -> serde_json::Value {
    serde_json::json!({ "name": model, "uuid": uuid, "power": [[0.0, 200.0]],
        "temperature_c": [[0.0, 40]], "energy_start_mj": 1_000_000 })
}

/// An A100 in MIG mode with two allocated instances (3g.20gb and 2g.10gb).
pub fn mig_gpu(uuid_tail: &str) -> serde_json::Value {
    serde_json::json!({ "name": "NVIDIA A100-SXM4-40GB",
        "uuid": format!("GPU-a1000000-0000-4000-8000-{uuid_tail}"),
        "memory_total_bytes": 42949672960u64, "power_limit_mw": 400000, "mig_mode": 1,
        "sm_count": 108, "mig_total_slices": 7, "energy_start_mj": 500000000u64,
        "power": [[0.0, 150.0]], "mig_instances": [
            { "profile": "3g.20gb", "uuid": format!("MIG-a1000000-3g20-4000-8000-{uuid_tail}"),
              "gpu_instance_id": 2, "compute_instance_id": 0, "slices": 3, "sm_count": 42,
              "memory_total_bytes": 20937965568u64, "allocated": true },
            { "profile": "2g.10gb", "uuid": format!("MIG-a1000000-2g10-4000-8000-{uuid_tail}"),
              "gpu_instance_id": 3, "compute_instance_id": 0, "slices": 2, "sm_count": 28,
              "memory_total_bytes": 10334765056u64, "allocated": true } ] })
}

/// `n` quick configs on the real SmolLM2: one prompt of 8 tokens, 1 or 2 output tokens,
/// no warmup and no idle baseline; each its own seed, so each is its own experiment.
/// `output_tokens` overrides the 1-or-2 pattern (longer jobs for the kill test).
pub fn write_configs(dir: &Path, n: usize, output_tokens: Option<u32>) -> Vec<PathBuf> {
    let model = support::model();
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("c{i:03}.yaml"));
            let tokens = output_tokens.unwrap_or(1 + (i % 2) as u32);
            std::fs::write(
                &path,
                format!(
                    "config_name: c{i:03}\nmodel_name: {}\nmax_input_tokens: 16\n\
                     max_output_tokens: {tokens}\nnum_input_prompts: 1\nfp_precision: float32\n\
                     num_cycles: 1\nrandom_seed: {i}\nwarmup_prompts: 0\nidle_baseline_s: 0\n\
                     batching_options:\n  batch_size: 1\n  strategy: static\n\
                     decoder_config:\n  preset: deterministic\n\
                     prompt_source:\n  type: synthetic\n  input_tokens: 8\n",
                    model.display()
                ),
            )
            .unwrap();
            path
        })
        .collect()
}

/// What every fault run reports, read from the store after the coordinator stopped.
#[derive(Debug)]
pub struct Ledger {
    pub jobs: usize,
    /// Jobs with exactly one accepted attempt whose result is stored as accepted.
    pub accepted_once: usize,
    /// Attempts an agent logged as acknowledged with no stored result.
    pub acknowledged_lost: usize,
    /// Aggregated cycles beyond one per (experiment, cycle).
    pub aggregate_duplicates: usize,
    pub superseded: usize,
}

impl Ledger {
    /// Reads the store of a stopped coordinator; `acknowledged` is every attempt the
    /// agents logged as acknowledged; `aggregates` the `results show --json` of each
    /// experiment (taken while the coordinator ran).
    pub fn read(
        data_dir: &Path,
        acknowledged: &BTreeSet<u64>,
        aggregates: &[serde_json::Value],
    ) -> Ledger {
        let store = Store::open(data_dir, Duration::from_secs(30)).unwrap();
        let sweeps = store.sweeps().unwrap();
        let mut jobs = Vec::new();
        for sweep in &sweeps {
            jobs.extend(store.jobs_of_sweep(sweep).unwrap());
        }
        let stored = store.stored_results().unwrap();
        let mut accepted_by_job: BTreeMap<u64, usize> = BTreeMap::new();
        let mut superseded = 0;
        for r in &stored {
            match r.disposition {
                Disposition::Accepted => *accepted_by_job.entry(r.job.0).or_default() += 1,
                Disposition::Superseded => superseded += 1,
            }
        }
        let accepted_once = jobs
            .iter()
            .filter(|j| {
                accepted_by_job.get(&j.job.0) == Some(&1)
                    && store
                        .accepted_attempt(j.job)
                        .unwrap()
                        .and_then(|a| stored.iter().find(|r| r.attempt == a))
                        .is_some_and(|r| r.disposition == Disposition::Accepted)
            })
            .count();
        let stored_attempts: BTreeSet<u64> = stored.iter().map(|r| r.attempt.0).collect();
        let acknowledged_lost = acknowledged.difference(&stored_attempts).count();
        let aggregate_duplicates = aggregates
            .iter()
            .map(|a| {
                let cycles = a["cycles"].as_array().expect("an aggregate lists cycles");
                let distinct: BTreeSet<u64> = cycles
                    .iter()
                    .map(|c| c["cycle"].as_u64().unwrap())
                    .collect();
                cycles.len() - distinct.len()
            })
            .sum();
        Ledger {
            jobs: jobs.len(),
            accepted_once,
            acknowledged_lost,
            aggregate_duplicates,
            superseded,
        }
    }

    /// Prints the report line and asserts the invariants.
    pub fn assert_clean(&self, run: &str, acknowledged: usize) {
        println!(
            "{run}: jobs {} | accepted exactly once {} | acknowledged results (agent logs) {acknowledged}, \
             lost {} | duplicates in aggregates {} | superseded results kept {}",
            self.jobs,
            self.accepted_once,
            self.acknowledged_lost,
            self.aggregate_duplicates,
            self.superseded
        );
        assert!(self.jobs > 0, "{run}: no jobs in the store");
        assert_eq!(
            self.accepted_once, self.jobs,
            "{run}: jobs accepted exactly once"
        );
        assert_eq!(
            self.acknowledged_lost, 0,
            "{run}: acknowledged results lost"
        );
        assert_eq!(
            self.aggregate_duplicates, 0,
            "{run}: duplicates in aggregates"
        );
    }
}

/// `results show ID --json` of every experiment of sweep 0, by experiment name.
pub fn cluster_aggregates(
    coordinator: &Server,
    names: &[String],
) -> BTreeMap<String, serde_json::Value> {
    names
        .iter()
        .map(|name| {
            let id = format!("sweep-0/{name}");
            let shown = coordinator.cli_ok(&["results", "show", &id, "--json"]);
            (name.clone(), serde_json::from_str(&shown).unwrap())
        })
        .collect()
}

/// Accepted results per agent node name (the part of the agent id before its suffix),
/// from a stopped coordinator's store.
pub fn accepted_per_node(data_dir: &Path, nodes: &[&str]) -> BTreeMap<String, usize> {
    let store = Store::open(data_dir, Duration::from_secs(30)).unwrap();
    let mut out: BTreeMap<String, usize> = nodes.iter().map(|n| (n.to_string(), 0)).collect();
    for r in store.stored_results().unwrap() {
        if r.disposition != Disposition::Accepted {
            continue;
        }
        let attempt = store
            .attempt(r.attempt)
            .unwrap()
            .expect("an accepted attempt has a row");
        let agent = attempt.placement.agent.0;
        let node = nodes
            .iter()
            .find(|n| agent.starts_with(&format!("{n}-")))
            .unwrap_or_else(|| panic!("agent {agent} is none of {nodes:?}"));
        *out.get_mut(*node).unwrap() += 1;
    }
    out
}

/// The agent that ran `job`'s accepted attempt, from a stopped coordinator's store.
pub fn accepted_agent_of(data_dir: &Path, job: u64) -> (u64, String) {
    let store = Store::open(data_dir, Duration::from_secs(30)).unwrap();
    let attempt = store
        .accepted_attempt(lem_coordinator::scheduler::JobId(job))
        .unwrap()
        .unwrap_or_else(|| panic!("job {job} has no accepted attempt"));
    let row = store.attempt(attempt).unwrap().unwrap();
    (attempt.0, row.placement.agent.0)
}
