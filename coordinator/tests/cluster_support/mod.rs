//! Support for `cluster_loopback`: the real `lem serve` on a fixed loopback port (so a
//! restart on the same data dir is dialled at the same address by agents that were
//! started once), real `lem-agent` processes on simulated GPU nodes (the fake NVML, one
//! scenario per node), quick configs on the real SmolLM2 model, and the checks every
//! fault run reports: jobs accepted exactly once, acknowledged results lost, duplicates
//! in aggregates. Every wait is bounded and generous (a loaded 2-core machine).

#![allow(dead_code)] // each test uses a subset

#[path = "../../../tests/support.rs"]
pub mod support;

use lem_coordinator::store::{Disposition, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core machine running real inference; a hang still ends.
pub const WAIT: Duration = Duration::from_secs(600);

/// `lem` with none of the variables that would point it elsewhere.
pub fn lem() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lem"));
    for var in [
        "LEM_DATA_DIR",
        "LEM_COORDINATOR",
        "LEM_CREDENTIAL",
        "LEM_LISTEN",
        "LEM_NVML_LIB",
        "FAKE_NVML_SCENARIO",
        "CUDA_VISIBLE_DEVICES",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HUB_OFFLINE", "1");
    cmd
}

fn output_ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The `lem-agent` binary of this build, next to `lem`. `cargo test --workspace` builds
/// it; when it is missing or older than the agent's sources, cargo builds it here (slow:
/// a build of one binary resolves features apart from the test build).
pub fn agent_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let lem = PathBuf::from(env!("CARGO_BIN_EXE_lem"));
            let profile_dir = lem.parent().unwrap().to_path_buf();
            let agent = profile_dir.join("lem-agent");
            let built_at = std::fs::metadata(&agent).and_then(|m| m.modified()).ok();
            let root = support::repo_root();
            let sources = ["agent", "common", "Cargo.lock"].map(|p| root.join(p));
            if built_at.is_some_and(|b| sources.iter().all(|s| newest_mtime(s) <= b)) {
                return agent;
            }
            let target_dir = profile_dir.parent().unwrap();
            let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
                "debug" => "dev".to_owned(),
                other => other.to_owned(),
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "--bin",
                    "lem-agent",
                    "--profile",
                    &profile,
                ])
                .arg("--manifest-path")
                .arg(root.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(target_dir)
                .status()
                .expect("run cargo build --bin lem-agent");
            assert!(status.success(), "cargo build --bin lem-agent failed");
            assert!(agent.exists(), "{} not built", agent.display());
            agent
        })
        .clone()
}

/// The newest modification time of a file or of the sources under a directory.
fn newest_mtime(path: &Path) -> std::time::SystemTime {
    let meta = std::fs::metadata(path).unwrap();
    if !meta.is_dir() {
        return meta.modified().unwrap();
    }
    std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            e.path().is_dir() && name != "target" && !name.starts_with('.')
                || name.ends_with(".rs")
                || name == "Cargo.toml"
        })
        .map(|e| newest_mtime(&e.path()))
        .max()
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// A loopback port free right now (bound and released), for a coordinator that must be
/// restarted at the same address.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `lem serve`.
pub struct Coordinator {
    pub data_dir: PathBuf,
    pub addr: String,
    child: Child,
    log: PathBuf,
    extra: Vec<String>,
    starts: u32,
}

impl Coordinator {
    /// Starts `lem serve --listen addr` and waits for its address file.
    pub fn start(data_dir: &Path, addr: &str, extra: &[&str]) -> Coordinator {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, log) = spawn_serve(data_dir, addr, &extra, 0);
        Coordinator {
            data_dir: data_dir.to_owned(),
            addr: addr.to_owned(),
            child,
            log,
            extra,
            starts: 1,
        }
    }

    /// kill -9 (no shutdown path runs), then a new `lem serve` on the same data dir and
    /// address. Returns when the new one has written its address.
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (child, log) = spawn_serve(&self.data_dir, &self.addr, &self.extra, self.starts);
        self.child = child;
        self.log = log;
        self.starts += 1;
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        lem()
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--coordinator", &self.addr])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "lem {args:?}: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `status --json`; None while the coordinator cannot answer (it is restarting).
    pub fn try_status(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Polls `status --json` until `done` says so.
    pub fn wait_status(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(status) = self.try_status() {
                if done(&status) {
                    return status;
                }
                last = Some(status);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status {last:#?}\nserver log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: the store is flushed and released for the test to open.
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process by its pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "lem serve exited {status}");
                return;
            }
            assert!(Instant::now() < deadline, "lem serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(data_dir: &Path, addr: &str, extra: &[String], start: u32) -> (Child, PathBuf) {
    let addr_file = data_dir.join("serve.addr");
    let _ = std::fs::remove_file(&addr_file);
    std::fs::create_dir_all(data_dir).unwrap();
    let log = data_dir.join(format!("serve-{start}.log"));
    let mut child = lem()
        .args(["serve", "--listen", addr, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("LEM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("lem serve starts");
    let deadline = Instant::now() + WAIT;
    let listening = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if text.ends_with('\n') {
                break text.trim().to_owned();
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lem serve wrote no address: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listening, addr, "lem serve listens elsewhere");
    (child, log)
}

/// `lem token create` on the data dir before the server holds it.
pub fn join_token(data_dir: &Path) -> String {
    let out = lem()
        .args(["token", "create", "--ttl", "1h", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    output_ok("lem token create", &out).trim().to_owned()
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

/// A simulated GPU node: its own copy of the fake NVML, its scenario, an empty
/// powercap tree and the agent's data dir, all under `dir`.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    lib: PathBuf,
    scenario: PathBuf,
}

impl Node {
    pub fn new(parent: &Path, name: &str, gpus: Vec<serde_json::Value>) -> Node {
        let dir = parent.join(name);
        std::fs::create_dir_all(dir.join("powercap")).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        std::fs::copy(support::build_fake_nvml(), &lib).unwrap();
        let scenario = dir.join("scenario.json");
        let s = serde_json::json!({ "driver_version": "550.54.15", "gpus": gpus });
        std::fs::write(&scenario, s.to_string()).unwrap();
        Node {
            name: name.to_owned(),
            dir,
            lib,
            scenario,
        }
    }

    /// Starts `lem-agent` for this node; `n` numbers its log.
    pub fn spawn(&self, coordinator: &str, token: &str, n: u32) -> AgentProcess {
        let log = self.dir.join(format!("agent-{n}.log"));
        let child = Command::new(agent_binary())
            .args(["--coordinator", coordinator, "--node-name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("agent-data"))
            .args(["--join-token", token])
            .args(["--heartbeat-interval-ms", "500"])
            .args([
                "--reconnect-initial-ms",
                "100",
                "--reconnect-max-ms",
                "1000",
            ])
            .env_remove("LEM_DATA_DIR")
            .env_remove("LEM_AGENT_DATA_DIR")
            .env_remove("LEM_JOIN_TOKEN")
            .env_remove("LEM_AGENT_CONFIG")
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env("HF_HUB_OFFLINE", "1")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("LEM_NVML_LIB", &self.lib)
            .env("FAKE_NVML_SCENARIO", &self.scenario)
            .env("LEM_POWERCAP_ROOT", self.dir.join("powercap"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("lem-agent starts");
        AgentProcess { child, log }
    }

    /// The embedded run's environment: the same fake NVML with this node's scenario.
    pub fn apply_to(&self, cmd: &mut Command) {
        cmd.env("LEM_NVML_LIB", &self.lib)
            .env("FAKE_NVML_SCENARIO", &self.scenario)
            .env("LEM_POWERCAP_ROOT", self.dir.join("powercap"));
    }
}

/// A running `lem-agent`.
pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// kill -9: the agent's running jobs die with it.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Attempts whose outcome the agent logged as acknowledged by the coordinator.
    pub fn acknowledged_attempts(&self) -> BTreeSet<u64> {
        self.log_text()
            .lines()
            .filter(|line| line.contains("outcome acknowledged"))
            .filter_map(|line| {
                let rest = &line[line.find("attempt=")? + "attempt=".len()..];
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.parse().ok()
            })
            .collect()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    coordinator: &Coordinator,
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
