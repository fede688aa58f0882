//! The cluster as real processes on loopback: one `lem serve` and three `lem-agent`s on
//! simulated GPU nodes (the fake NVML; one node has an A100 in MIG mode next to a whole
//! H100), each agent enrolled with its own token from `lem token create`, running
//! quick jobs on the real SmolLM2 model.
//!
//! - A sweep of N experiments × 3 cycles through `lem --coordinator … sweep submit`
//!   aggregates as the same configs do embedded (`lem batch --cycles 3`). "Equal" means:
//!   what is deterministic — config, model, cycles, requests, failures, input and output
//!   tokens, FLOPs, window token counts, statistic sample counts — is equal exactly;
//!   what depends on wall time (energy, latency, throughput) is present or null in the
//!   same places and its values are not compared.
//! - kill -9 of an agent mid-job: its job completes on another agent.
//! - kill -9 of the coordinator during ingest, three times in one sweep, each time
//!   restarted on the same data dir and address.
//!
//! Every run reports jobs accepted exactly once, acknowledged results lost (0),
//! duplicates in aggregates (0) and the time to requeue. N is `LEM_CLUSTER_EXPERIMENTS`
//! (default 4, so CI stays short; `docs/reliability.md` has the 50-experiment run).

mod aggregate_compare;
mod cluster_support;
mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use aggregate_compare::{
    assert_same_aggregates, deterministic, embedded_aggregates, experiments_from_env,
};
use cluster_support::{
    accepted_agent_of, accepted_per_node, cluster_aggregates, mig_gpu, start_coordinator,
    whole_gpu, write_configs, Ledger,
};
use serde_json::Value;
use serve_support::node::{AgentProcess, SimNode as Node};
use serve_support::{join_token, lem, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CYCLES: usize = 3;
const H100: &str = "NVIDIA H100 80GB HBM3";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Three simulated nodes: two H100s; one H100; an A100 in MIG mode and one H100.
fn nodes(dir: &Path) -> Vec<Node> {
    vec![
        Node::new(
            dir,
            NODES[0],
            vec![
                whole_gpu(H100, "GPU-0000a000-0000-4000-8000-000000000001"),
                whole_gpu(H100, "GPU-0000a000-0000-4000-8000-000000000002"),
            ],
        ),
        Node::new(
            dir,
            NODES[1],
            vec![whole_gpu(H100, "GPU-0000b000-0000-4000-8000-000000000001")],
        ),
        Node::new(
            dir,
            NODES[2],
            vec![
                mig_gpu("00000000c001"),
                whole_gpu(H100, "GPU-0000c000-0000-4000-8000-000000000002"),
            ],
        ),
    ]
}

/// A coordinator with its three agents connected.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    coordinator: Server,
    agents: Vec<AgentProcess>,
}

impl Cluster {
    fn start(serve_flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes = nodes(dir.path());
        let data_dir = dir.path().join("coordinator");
        let tokens: Vec<String> = nodes.iter().map(|_| join_token(&data_dir)).collect();
        let addr = format!("127.0.0.1:{}", cluster_support::free_udp_port());
        let coordinator = start_coordinator(&data_dir, &addr, serve_flags);
        let agents: Vec<AgentProcess> = nodes
            .iter()
            .zip(&tokens)
            .map(|(node, token)| node.spawn(&addr, token, 0))
            .collect();
        let status = coordinator.wait_status("three agents", |s| {
            s["agents"]
                .as_array()
                .is_some_and(|a| a.len() == 3 && a.iter().all(|a| a["alive"] == true))
        });
        // The MIG node offers its whole H100 and the A100's two MIG slices.
        let mig_node = status["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"].as_str().unwrap().starts_with("node-c-"))
            .expect("node-c connected");
        let slices: usize = mig_node["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["mig_slices"].as_array().unwrap().len())
            .sum();
        assert_eq!(slices, 2, "{mig_node:#}");
        Cluster {
            dir,
            nodes,
            coordinator,
            agents,
        }
    }

    fn configs(&self, n: usize, output_tokens: Option<u32>) -> Vec<PathBuf> {
        write_configs(&self.dir.path().join("configs"), n, output_tokens)
    }

    fn submit(&self, configs: &[PathBuf]) {
        let mut args = vec!["sweep", "submit", "--cycles", "3", "--name", "loopback"];
        args.extend(configs.iter().map(|p| p.to_str().unwrap()));
        let out = self.coordinator.cli_ok(&args);
        let jobs = configs.len() * CYCLES;
        assert!(out.contains(&format!("{jobs} job(s)")), "{out}");
    }

    fn accepted(status: &Value) -> u64 {
        status["sweeps"][0]["progress"]["accepted"]
            .as_u64()
            .unwrap_or(0)
    }

    fn wait_all_accepted(&self, jobs: usize) -> Value {
        let status = self
            .coordinator
            .wait_status("every job accepted", |s| Self::accepted(s) == jobs as u64);
        assert_eq!(status["sweeps"][0]["progress"]["failed"].as_u64(), Some(0));
        status
    }

    fn acknowledged(&self) -> BTreeSet<u64> {
        self.agents
            .iter()
            .flat_map(|a| a.acknowledged_attempts())
            .collect()
    }

    /// Once every job is accepted: the sweep's aggregates and the attempts the agents
    /// saw acknowledged, read before the agents are killed and the coordinator stopped.
    fn finish(self, jobs: usize, configs: &[PathBuf]) -> Finished {
        self.wait_all_accepted(jobs);
        let aggregates = cluster_aggregates(&self.coordinator, &names(configs));
        let acknowledged = self.acknowledged();
        let data_dir = self.coordinator.data_dir.clone();
        let Cluster {
            dir,
            nodes,
            coordinator,
            agents,
        } = self;
        drop(agents);
        coordinator.stop();
        Finished {
            dir,
            nodes,
            aggregates,
            acknowledged,
            data_dir,
        }
    }
}

/// What a finished sweep left, with its temp dir (dropped last).
struct Finished {
    nodes: Vec<Node>,
    /// By experiment name.
    aggregates: BTreeMap<String, Value>,
    acknowledged: BTreeSet<u64>,
    data_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Finished {
    /// The ledger of the sweep's store, asserted clean.
    fn assert_clean(&self, what: &str) {
        let aggregates: Vec<Value> = self.aggregates.values().cloned().collect();
        Ledger::read(&self.data_dir, &self.acknowledged, &aggregates)
            .assert_clean(what, self.acknowledged.len());
    }
}

fn names(configs: &[PathBuf]) -> Vec<String> {
    configs
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_sweep_on_three_real_agents_aggregates_as_the_same_sweep_embedded() {
    let experiments = experiments_from_env(4);
    let jobs = experiments * CYCLES;
    let cluster = Cluster::start(&[]);
    let configs = cluster.configs(experiments, None);
    let started = Instant::now();
    cluster.submit(&configs);
    cluster.wait_all_accepted(jobs);
    let cluster_s = started.elapsed().as_secs_f64();
    let done = cluster.finish(jobs, &configs);
    done.assert_clean("loopback sweep");
    let (remote, data_dir) = (&done.aggregates, &done.data_dir);
    let per_node = accepted_per_node(data_dir, &NODES);
    println!(
        "loopback sweep: {experiments} experiments x {CYCLES} cycles = {jobs} jobs on 3 agents in \
         {cluster_s:.1} s; accepted per node {per_node:?}"
    );
    assert_eq!(per_node.values().sum::<usize>(), jobs);
    assert!(
        per_node.values().filter(|&&n| n > 0).count() >= 2,
        "the jobs were not spread over the agents: {per_node:?}"
    );

    let started = Instant::now();
    let local = embedded_aggregates(
        lem,
        |batch| done.nodes[0].apply_to(batch),
        &done.dir.path().join("embedded"),
        &configs,
        CYCLES,
    );
    println!(
        "embedded: the same {jobs} jobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_same_aggregates(remote, &local);
    for (name, cluster_aggregate) in remote {
        let exact = deterministic(cluster_aggregate);
        // Derived independently: the config asks for 1 prompt and 1 or 2 tokens.
        let index: usize = name[1..].parse().unwrap();
        for cycle in exact["cycles"].as_array().unwrap() {
            assert_eq!(cycle["num_requests"], 1, "{name}");
            assert_eq!(cycle["output_tokens"], 1 + (index % 2) as u64, "{name}");
        }
        assert_eq!(exact["cycles"].as_array().unwrap().len(), CYCLES);
    }
}

#[test]
fn kill_9_of_an_agent_mid_job_requeues_its_job_on_another_agent() {
    // Agents are declared lost after 3 s without a heartbeat; leases live 6 s.
    let cluster = Cluster::start(&["--agent-timeout-ms", "3000", "--lease-ttl-ms", "6000"]);
    // Longer jobs (12 tokens), so the kill lands while one runs.
    let experiments = 3;
    let jobs = experiments * CYCLES;
    let configs = cluster.configs(experiments, Some(12));
    cluster.submit(&configs);
    let victim = NODES[1];
    let status = cluster.coordinator.wait_status("a lease on node-b", |s| {
        s["leases"].as_array().is_some_and(|l| {
            l.iter().any(|l| {
                l["agent"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{victim}-"))
            })
        })
    });
    let lease = status["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["agent"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{victim}-"))
        })
        .unwrap()
        .clone();
    let (killed_attempt, job) = (
        lease["attempt"].as_u64().unwrap(),
        lease["job"].as_u64().unwrap(),
    );
    let mut cluster = cluster;
    cluster.agents[1].kill9();
    let killed_at = Instant::now();
    // Requeued: the killed attempt's lease is gone (the agent was declared lost).
    cluster
        .coordinator
        .wait_status("the killed lease dropped", |s| {
            s["leases"].as_array().is_some_and(|l| {
                l.iter()
                    .all(|l| l["attempt"].as_u64() != Some(killed_attempt))
            })
        });
    let requeue_s = killed_at.elapsed().as_secs_f64();
    // Then leased again under another attempt, once a GPU is free (or already accepted).
    cluster
        .coordinator
        .wait_status("the job leased again", |s| {
            let leased_again = s["leases"].as_array().is_some_and(|l| {
                l.iter().any(|l| {
                    l["job"].as_u64() == Some(job) && l["attempt"].as_u64() != Some(killed_attempt)
                })
            });
            leased_again || Cluster::accepted(s) == jobs as u64
        });
    let leased_again_s = killed_at.elapsed().as_secs_f64();
    let done = cluster.finish(jobs, &configs);
    let (accepted_attempt, agent) = accepted_agent_of(&done.data_dir, job);
    println!(
        "agent kill -9: attempt {killed_attempt} of job {job} killed on {victim}; requeued \
         {requeue_s:.2} s after the kill (agent timeout 3 s), leased again after \
         {leased_again_s:.2} s; accepted as attempt {accepted_attempt} on {agent}"
    );
    assert_ne!(accepted_attempt, killed_attempt);
    assert!(!agent.starts_with(&format!("{victim}-")), "{agent}");
    done.assert_clean("agent kill -9");
}

#[test]
fn kill_9_of_the_coordinator_three_times_during_ingest_loses_nothing() {
    // Enough jobs that the results agents spool during an outage (about one QUIC idle
    // timeout) cannot finish the sweep before the next kill.
    let experiments = experiments_from_env(4).max(8);
    let jobs = experiments * CYCLES;
    let mut cluster = Cluster::start(&["--restart-grace-ms", "20000"]);
    let configs = cluster.configs(experiments, None);
    cluster.submit(&configs);
    let mut resumed_s = Vec::new();
    for kill in 1..=3u64 {
        // Kill at an eighth, a quarter and three eighths of the sweep: results are
        // arriving, and most of the sweep is still ahead.
        let threshold = (jobs as u64 * kill / 8).max(kill);
        let status = cluster
            .coordinator
            .wait_status("results arriving", |s| Cluster::accepted(s) >= threshold);
        let before = Cluster::accepted(&status);
        assert!(
            before < jobs as u64,
            "the sweep finished before kill {kill}"
        );
        cluster.coordinator.kill9_and_restart();
        let restarted = Instant::now();
        cluster
            .coordinator
            .wait_status("the sweep running again", |s| Cluster::accepted(s) > before);
        resumed_s.push(restarted.elapsed().as_secs_f64());
    }
    let done = cluster.finish(jobs, &configs);
    let times: Vec<String> = resumed_s.iter().map(|s| format!("{s:.2} s")).collect();
    println!(
        "coordinator kill -9 x3: {jobs} jobs; restart to next accepted result: {}",
        times.join(", ")
    );
    done.assert_clean("coordinator kill -9 x3");
}
