//! Multi-host on one machine: `lem serve` on a bridge address, three real `lem-agent`
//! processes each in its own network namespace (simulated GPU nodes, the real SmolLM2
//! with a few tokens). A sweep completes with one accepted result per job; and an agent
//! cut off from the network while it holds a lease is declared lost, its job requeued
//! and run elsewhere, and its late result, sent after the network heals, is stored as
//! superseded and never aggregated.
//!
//! The sweep's aggregates equal the same configs run embedded (`lem batch`), compared as
//! `cluster_loopback` compares them (`aggregate_compare`). Its size is
//! `LEM_CLUSTER_EXPERIMENTS` experiments × 3 cycles (default 4, so CI stays short;
//! `docs/reliability.md` has the 50-experiment run).
//!
//! Needs root and `ip` (iproute2); otherwise each test prints why and returns. Under
//! `CI` with root they must run. The partition lasts `LEM_PARTITION_S` seconds (default
//! 20; `LEM_PARTITION_S=60` is the documented long run), always above the agent timeout
//! given to `lem serve`.

mod aggregate_compare;
mod netns_support;
mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use aggregate_compare::{assert_same_aggregates, embedded_aggregates, experiments_from_env};
use lem_coordinator::store::{Disposition, Store};
use netns_support::{agent_binary, eventually, lab_unavailable, NetAgent, NetLab, Node};
use serde_json::Value;
use serve_support::{join_token, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const AGENTS: usize = 3;
/// An agent silent this long is lost and its jobs requeued.
const AGENT_TIMEOUT_MS: u64 = 3_000;
/// The agents' heartbeat interval (`serve_support::node` starts them with it).
const HEARTBEAT_INTERVAL_MS: u64 = 500;
/// Long enough that the cut-off agent's own copy of its lease outlives its job, so the
/// job finishes during the partition and its result arrives late (stale epoch).
const LEASE_TTL_MS: u64 = 30_000;
/// Longer than one job takes on a loaded 2-core box (model load included), so the cut-off
/// job finishes during the partition and its result arrives late.
const DEFAULT_PARTITION_S: u64 = 20;

/// The two tests each run three agents on the real model: one at a time on a small box.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A coordinator on the lab's bridge and one agent per namespace, all enrolled.
struct Cluster {
    // Drop order is field order: agents die before their namespaces go.
    agents: Vec<NetAgent>,
    nodes: Vec<Node>,
    /// Agent id (from its certificate) of each node.
    agent_ids: Vec<String>,
    server: Server,
    lab: NetLab,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("coord");
        let tokens: Vec<String> = (0..AGENTS).map(|_| join_token(&data_dir)).collect();
        let lab = NetLab::create(AGENTS);
        let listen = format!("{}:0", lab.host_ip);
        let (ttl, timeout) = (LEASE_TTL_MS.to_string(), AGENT_TIMEOUT_MS.to_string());
        let server = Server::start_on(
            &data_dir,
            &listen,
            &[
                "--server-name",
                &lab.host_ip,
                "--lease-ttl-ms",
                &ttl,
                "--agent-timeout-ms",
                &timeout,
            ],
        );
        assert!(
            server.addr.starts_with(&lab.host_ip),
            "lem serve listens on {}, not on the bridge {}",
            server.addr,
            lab.host_ip
        );
        let agent = agent_binary();
        let nodes: Vec<Node> = (0..AGENTS).map(|i| Node::new(dir.path(), i)).collect();
        let agents: Vec<NetAgent> = nodes
            .iter()
            .zip(&lab.namespaces)
            .zip(&tokens)
            .map(|((node, ns), token)| node.spawn(&agent, &ns.name, &server.addr, token))
            .collect();
        let status = server.wait_status("every agent enrolled and connected", |s| {
            s["agents"]
                .as_array()
                .is_some_and(|a| a.len() == AGENTS && a.iter().all(|agent| agent["alive"] == true))
        });
        let ids: Vec<String> = status["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        let agent_ids = nodes
            .iter()
            .map(|node| {
                let prefix = format!("{}-", node.name);
                ids.iter()
                    .find(|id| id.starts_with(&prefix))
                    .unwrap_or_else(|| panic!("no agent id for {} among {ids:?}", node.name))
                    .clone()
            })
            .collect();
        Cluster {
            agents,
            nodes,
            agent_ids,
            server,
            lab,
            dir,
        }
    }

    /// Submits `configs` configs × `cycles`; the number of jobs and the config files.
    fn submit(&self, configs: usize, cycles: u64, idle_baseline_s: f64) -> (u64, Vec<PathBuf>) {
        let paths = netns_support::write_model_configs(self.dir.path(), configs, idle_baseline_s);
        let cycles_text = cycles.to_string();
        let mut submit = vec!["sweep", "submit", "--cycles", &cycles_text];
        submit.extend(paths.iter().map(|p| p.to_str().unwrap()));
        self.server.cli_ok(&submit);
        (configs as u64 * cycles, paths)
    }

    fn wait_sweep_done(&self, jobs: u64) {
        // A large sweep takes longer than one status wait: poll, bounded by its size.
        let wait = serve_support::WAIT + Duration::from_secs(20 * jobs);
        eventually(wait, "every job ended", || {
            let status = self.server.status_json();
            let progress = &status["sweeps"][0]["progress"];
            progress["pending"].as_u64() == Some(0) && progress["leased"].as_u64() == Some(0)
        });
        let status = self.server.wait_status("every job accepted", |s| {
            s["sweeps"][0]["progress"]["accepted"].as_u64() == Some(jobs)
        });
        let progress = &status["sweeps"][0]["progress"];
        assert_eq!(
            (
                progress["pending"].as_u64(),
                progress["leased"].as_u64(),
                progress["failed"].as_u64()
            ),
            (Some(0), Some(0), Some(0)),
            "{status:#}\nagent logs:\n{}",
            self.agent_logs()
        );
    }

    fn agent_logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| format!("== {}\n{}", a.log.display(), a.log_text()))
            .collect()
    }

    /// Through the coordinator: every experiment has `cycles` distinct cycles; returns
    /// how many cycle rows the aggregates hold beyond one per cycle (duplicates), and
    /// each experiment's `results show --json` by config name.
    fn aggregates(&self, configs: usize, cycles: u64) -> (usize, BTreeMap<String, Value>) {
        let listed: serde_json::Value =
            serde_json::from_str(&self.server.cli_ok(&["results", "list", "--json"])).unwrap();
        let rows = listed.as_array().unwrap();
        assert_eq!(rows.len(), configs, "{listed:#}");
        let mut duplicates = 0;
        let mut by_name = BTreeMap::new();
        for row in rows {
            assert_eq!(row["cycles_done"].as_u64(), Some(cycles), "{row}");
            assert_eq!(row["status"], "completed", "{row}");
            let id = row["id"].as_str().unwrap();
            let shown: serde_json::Value =
                serde_json::from_str(&self.server.cli_ok(&["results", "show", id, "--json"]))
                    .unwrap();
            let listed_cycles: Vec<u64> = shown["cycles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["cycle"].as_u64().unwrap())
                .collect();
            let distinct: BTreeSet<u64> = listed_cycles.iter().copied().collect();
            assert_eq!(distinct, (0..cycles).collect(), "{id}: {listed_cycles:?}");
            duplicates += listed_cycles.len() - distinct.len();
            let name = shown["config_name"].as_str().unwrap().to_owned();
            by_name.insert(name, shown);
        }
        let sweep = self.server.status_json()["sweeps"][0]["sweep"]
            .as_u64()
            .unwrap();
        let aggregated = self.server.cli_ok(&["aggregate", "--all", "--force"]);
        assert!(
            aggregated.contains(&format!("sweep-{sweep}/")) && aggregated.contains("aggregated"),
            "{aggregated}"
        );
        (duplicates, by_name)
    }

    /// Attempts each agent's log says were acknowledged as accepted.
    fn acked_accepted(&self) -> BTreeMap<usize, BTreeSet<u64>> {
        (0..AGENTS)
            .map(|i| (i, self.agents[i].acknowledged("Accepted")))
            .collect()
    }

    /// Stops the agents and the server, then reads the store.
    fn stop(self) -> (Store, tempfile::TempDir, NetLab) {
        let Cluster {
            agents,
            server,
            lab,
            dir,
            ..
        } = self;
        drop(agents);
        let data_dir = server.data_dir.clone();
        server.stop();
        let store = Store::open(&data_dir, Duration::from_secs(10)).unwrap();
        (store, dir, lab)
    }
}

/// What the store says about a finished sweep.
struct Ledger {
    jobs: u64,
    /// Jobs with exactly one accepted stored result, the one `accepted` names.
    accepted_once: u64,
    accepted_attempts: BTreeSet<u64>,
    superseded_attempts: BTreeSet<u64>,
}

fn ledger(store: &Store) -> Ledger {
    let sweeps = store.sweeps().unwrap();
    assert_eq!(sweeps.len(), 1);
    let jobs = store.jobs_of_sweep(&sweeps[0]).unwrap();
    let stored = store.stored_results().unwrap();
    let mut accepted_once = 0;
    for job in &jobs {
        let accepted: Vec<u64> = stored
            .iter()
            .filter(|r| r.job == job.job && r.disposition == Disposition::Accepted)
            .map(|r| r.attempt.0)
            .collect();
        let named = store.accepted_attempt(job.job).unwrap().map(|a| a.0);
        if accepted.len() == 1 && named == Some(accepted[0]) {
            accepted_once += 1;
        }
    }
    let with = |d: Disposition| {
        stored
            .iter()
            .filter(|r| r.disposition == d)
            .map(|r| r.attempt.0)
            .collect::<BTreeSet<u64>>()
    };
    Ledger {
        jobs: jobs.len() as u64,
        accepted_once,
        accepted_attempts: with(Disposition::Accepted),
        superseded_attempts: with(Disposition::Superseded),
    }
}

/// Acknowledged-as-accepted attempts (from the agents' logs) missing from the store.
fn acked_lost(acked: &BTreeMap<usize, BTreeSet<u64>>, ledger: &Ledger) -> usize {
    acked
        .values()
        .flatten()
        .filter(|a| !ledger.accepted_attempts.contains(a))
        .count()
}

fn partition() -> Duration {
    let seconds = match std::env::var("LEM_PARTITION_S") {
        Ok(text) => text.parse::<u64>().unwrap_or_else(|_| {
            panic!("LEM_PARTITION_S={text:?} is not a whole number of seconds")
        }),
        Err(_) => DEFAULT_PARTITION_S,
    };
    let partition = Duration::from_secs(seconds);
    assert!(
        partition > Duration::from_millis(AGENT_TIMEOUT_MS),
        "LEM_PARTITION_S={seconds} must exceed the agent timeout ({AGENT_TIMEOUT_MS} ms), \
         or the agent is never declared lost"
    );
    partition
}

#[test]
fn a_sweep_across_agents_in_network_namespaces_accepts_each_job_once() {
    if let Some(why) = lab_unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (configs, cycles) = (experiments_from_env(4), 3);
    let cluster = Cluster::start();
    let started = Instant::now();
    let (jobs, paths) = cluster.submit(configs, cycles, 0.2);
    cluster.wait_sweep_done(jobs);
    let cluster_s = started.elapsed().as_secs_f64();
    let (duplicates, remote) = cluster.aggregates(configs, cycles);
    let acked = cluster.acked_accepted();
    // Every agent got work: the first leases go to three idle one-GPU nodes.
    for (i, attempts) in &acked {
        assert!(
            !attempts.is_empty(),
            "agent {i} in its namespace ran nothing\n{}",
            cluster.agent_logs()
        );
    }
    // The same configs embedded, on one node's simulated GPU, after the cluster ran.
    let embedded_dir = cluster.dir.path().join("embedded");
    let node = &cluster.nodes[0];
    let started = Instant::now();
    let local = embedded_aggregates(
        serve_support::lem,
        |batch| node.apply_to(batch),
        &embedded_dir,
        &paths,
        cycles as usize,
    );
    let embedded_s = started.elapsed().as_secs_f64();
    assert_same_aggregates(&remote, &local);
    let per_agent: Vec<usize> = acked.values().map(BTreeSet::len).collect();
    let (store, _dir, _lab) = cluster.stop();
    let ledger = ledger(&store);
    let lost = acked_lost(&acked, &ledger);
    println!(
        "netns sweep: agents={AGENTS} experiments={configs} cycles={cycles} jobs={jobs} \
         accepted_once={} acked_lost={lost} aggregate_duplicates={duplicates} \
         accepted_per_agent={per_agent:?} cluster_s={cluster_s:.1} embedded_s={embedded_s:.1} \
         aggregates_equal_embedded=true",
        ledger.accepted_once
    );
    assert_eq!(ledger.jobs, jobs);
    assert_eq!(ledger.accepted_once, jobs);
    assert_eq!(lost, 0);
    assert_eq!(duplicates, 0);
    assert!(ledger.superseded_attempts.is_empty());
    // The agents' acks and the store agree exactly.
    let acked_all: BTreeSet<u64> = acked.values().flatten().copied().collect();
    assert_eq!(acked_all, ledger.accepted_attempts);
}

#[test]
fn an_agent_cut_off_past_its_timeout_is_requeued_and_its_late_result_superseded() {
    if let Some(why) = lab_unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let partition = partition();
    let (configs, cycles) = (3, 2);
    let cluster = Cluster::start();
    // Each job idles 2 s first, so the lease seen below is still running when cut.
    let (jobs, _) = cluster.submit(configs, cycles, 2.0);
    let status = cluster.server.wait_status("a lease held", |s| {
        s["leases"].as_array().is_some_and(|l| !l.is_empty())
    });
    let lease = &status["leases"][0];
    let victim_attempt = lease["attempt"].as_u64().unwrap();
    let victim_job = lease["job"].as_u64().unwrap();
    let victim_agent = lease["agent"].as_str().unwrap().to_owned();
    let victim = cluster
        .agent_ids
        .iter()
        .position(|id| *id == victim_agent)
        .unwrap();
    cluster.lab.cut(victim);
    let cut_at = Instant::now();

    // Requeued: the attempt's lease is gone from the coordinator's view.
    let status = cluster
        .server
        .wait_status("the cut-off lease requeued", |s| {
            s["leases"].as_array().is_some_and(|l| {
                l.iter()
                    .all(|x| x["attempt"].as_u64() != Some(victim_attempt))
            })
        });
    let requeue = cut_at.elapsed();
    let victim_alive = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == victim_agent.as_str())
        .map(|a| a["alive"].clone());
    assert_eq!(
        victim_alive,
        Some(serde_json::Value::Bool(false)),
        "{status:#}"
    );
    std::thread::sleep(partition.saturating_sub(cut_at.elapsed()));
    cluster.lab.heal(victim);
    let healed_after = cut_at.elapsed();

    cluster.wait_sweep_done(jobs);
    // The late result reaches the coordinator and is acknowledged as superseded.
    eventually(serve_support::WAIT, "the late result acknowledged", || {
        cluster.agents[victim]
            .acknowledged("Superseded")
            .contains(&victim_attempt)
            && cluster.nodes[victim].spooled() == 0
    });
    let (duplicates, _) = cluster.aggregates(configs, cycles);
    let acked = cluster.acked_accepted();
    // Reconnecting is quiet: one Hello per connection the agent made, not one per
    // heartbeat it queued while cut off.
    let victim_log = &cluster.agents[victim];
    let (hellos, connections) = (
        victim_log.count("hello sent"),
        victim_log.count("connected"),
    );
    let connect_failures = victim_log.count("cannot reach the coordinator");
    let (store, _dir, _lab) = cluster.stop();
    let ledger = ledger(&store);
    let lost = acked_lost(&acked, &ledger);
    let victim_job_accepted = store
        .accepted_attempt(lem_coordinator::scheduler::JobId(victim_job))
        .unwrap()
        .map(|a| a.0);
    println!(
        "netns partition: agents={AGENTS} jobs={jobs} partition_s={:.1} agent_timeout_ms={AGENT_TIMEOUT_MS} \
         requeue_s={:.2} accepted_once={} acked_lost={lost} aggregate_duplicates={duplicates} \
         late_result_attempt={victim_attempt} superseded={:?} victim_hellos={hellos} \
         victim_connections={connections} victim_connect_failures={connect_failures}",
        healed_after.as_secs_f64(),
        requeue.as_secs_f64(),
        ledger.accepted_once,
        ledger.superseded_attempts
    );
    assert_eq!(ledger.jobs, jobs);
    assert_eq!(ledger.accepted_once, jobs);
    assert_eq!(lost, 0);
    assert_eq!(duplicates, 0);
    assert_eq!(ledger.superseded_attempts, BTreeSet::from([victim_attempt]));
    assert!(!ledger.accepted_attempts.contains(&victim_attempt));
    assert!(
        victim_job_accepted.is_some_and(|a| a != victim_attempt),
        "job {victim_job} accepted {victim_job_accepted:?}"
    );
    // Requeued by the agent timeout, well before the partition healed. The coordinator
    // counts the timeout from the last heartbeat, up to one interval before the cut.
    assert!(
        requeue >= Duration::from_millis(AGENT_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS),
        "{requeue:?}"
    );
    assert!(requeue < healed_after, "{requeue:?} vs {healed_after:?}");
    assert_eq!(hellos, connections, "one Hello per connection");
    let acked_all: BTreeSet<u64> = acked.values().flatten().copied().collect();
    assert_eq!(acked_all, ledger.accepted_attempts);
}
