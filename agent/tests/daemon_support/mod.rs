//! The daemon tests' scaffolding: an in-test coordinator built from lem-net (server
//! endpoint, enrollment desk, in-memory token book) that scripts the protocol, and the
//! real `lem-agent` binary on a simulated GPU node (the fake NVML with two GPUs).
//! Everything on loopback; every wait is bounded and generous.

#![allow(dead_code)] // each test binary uses a subset

#[path = "../../../tests/support.rs"]
pub mod support;

use lem_common::config::{load_config, resolve, CliOverrides};
use lem_common::wire::{AgentMessage, AttemptRef, CoordinatorMessage, LeaseGrant};
use lem_net::pki::{ClusterCa, LEAF_VALIDITY};
use lem_net::token::{create_join_token, InMemoryTokenBook};
use lem_net::{AcceptedSession, EnrollmentDesk, ServerEndpoint, ServerOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(120);
/// An inference run of the real model, including its load.
pub const RUN_WAIT: Duration = Duration::from_secs(420);

pub const GPU_A: &str = "GPU-0000a000-0000-4000-8000-000000000001";
pub const GPU_B: &str = "GPU-0000b000-0000-4000-8000-000000000002";
pub const GPU_MODEL: &str = "NVIDIA H100 80GB HBM3";
/// The fake GPUs' constant readings.
pub const GPU_POWER_W: f64 = 200.0;
pub const GPU_TEMPERATURE_C: u32 = 41;
pub const GPU_ENERGY_START_MJ: u64 = 5_000_000;

pub struct Coordinator {
    pub ca: Arc<ClusterCa>,
    pub book: Arc<InMemoryTokenBook>,
    pub server: ServerEndpoint,
    pub target: String,
}

impl Coordinator {
    /// Listens on a free loopback port. Inside a tokio runtime.
    pub fn start() -> Coordinator {
        let ca = Arc::new(ClusterCa::generate().unwrap());
        let book = Arc::new(InMemoryTokenBook::default());
        let desk = EnrollmentDesk {
            ca: ca.clone(),
            tokens: book.clone(),
            clock: lem_net::system_clock(),
            agent_validity: LEAF_VALIDITY,
        };
        let options = ServerOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            vec!["127.0.0.1".into(), "localhost".into()],
        );
        let server = ServerEndpoint::bind(desk, options).unwrap();
        let port = server.local_addr().unwrap().port();
        Coordinator {
            ca,
            book,
            server,
            target: format!("127.0.0.1:{port}"),
        }
    }

    pub fn token(&self) -> String {
        let now = (lem_net::system_clock())();
        create_join_token(self.book.as_ref(), self.ca.sha256(), now, 15 * 60 * 1000)
            .unwrap()
            .to_text()
    }

    /// The next agent session.
    pub async fn session(&mut self) -> AcceptedSession {
        tokio::time::timeout(WAIT, self.server.accept())
            .await
            .expect("no agent connected in time")
            .expect("the server endpoint closed")
    }
}

/// The next message that `keep` selects, skipping others (heartbeats); bounded.
pub async fn next_matching(
    session: &mut AcceptedSession,
    wait: Duration,
    what: &str,
    keep: impl Fn(&AgentMessage) -> bool,
) -> AgentMessage {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, session.recv.recv::<AgentMessage>())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {wait:?}"))
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
            .unwrap_or_else(|| panic!("the agent ended the session before {what}"));
        if keep(&message) {
            return message;
        }
    }
}

pub async fn send(session: &mut AcceptedSession, message: &CoordinatorMessage) {
    session.send.send(message).await.unwrap();
}

/// A simulated node: the fake NVML (copied, so another test's rebuild cannot change it)
/// with two GPUs at a constant 200 W, an empty powercap tree, and a data dir, laid out
/// as `support::agent_command` expects.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub lib: PathBuf,
    pub scenario: PathBuf,
}

impl Node {
    pub fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libnvidia-ml.so.1");
        std::fs::copy(support::build_fake_nvml(), &lib).unwrap();
        let scenario = dir.path().join("scenario.json");
        let gpu = |uuid: &str| {
            serde_json::json!({ "name": GPU_MODEL, "uuid": uuid, "power": [[0.0, GPU_POWER_W]],
                "temperature_c": [[0.0, GPU_TEMPERATURE_C]], "energy_start_mj": GPU_ENERGY_START_MJ })
        };
        let s = serde_json::json!({ "driver_version": "550.54.15",
            "gpus": [gpu(GPU_A), gpu(GPU_B)] });
        std::fs::write(&scenario, s.to_string()).unwrap();
        std::fs::create_dir_all(dir.path().join("powercap")).unwrap();
        Node { dir, lib, scenario }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("agent-data")
    }

    pub fn spool_files(&self) -> Vec<String> {
        files_in(&self.data_dir().join("spool"))
    }

    pub fn running_markers(&self) -> Vec<String> {
        files_in(&self.data_dir().join("running"))
    }

    /// Starts `lem-agent` against `target`; its log goes to `agent-<n>.log`.
    pub fn spawn(&self, target: &str, token: Option<&str>, n: u32) -> Agent {
        self.spawn_with(target, token, n, &[])
    }

    /// [`Node::spawn`] with extra arguments.
    pub fn spawn_with(&self, target: &str, token: Option<&str>, n: u32, extra: &[&str]) -> Agent {
        let log_path = self.dir.path().join(format!("agent-{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lem-agent"));
        support::agent_command(&mut cmd, self.dir.path(), "node-a", target, token, extra);
        cmd.stdout(Stdio::null()).stderr(log);
        Agent {
            child: cmd.spawn().unwrap(),
            log: log_path,
        }
    }

    /// A fast config on the real SmolLM2 model, resolved as the coordinator would send
    /// it; `extra` adds YAML lines.
    pub fn config(&self, extra: &str) -> serde_json::Value {
        support::model();
        let path = self.dir.path().join("job.yaml");
        std::fs::write(
            &path,
            format!(
                "_extends: {}\nidle_baseline_s: 0.5\n{extra}",
                support::repo_root()
                    .join("configs/examples/quick.yaml")
                    .display()
            ),
        )
        .unwrap();
        let loaded = load_config(&path, &|p: &Path| std::fs::read_to_string(p)).unwrap();
        let resolved = resolve(None, Some(&loaded), &CliOverrides::default()).unwrap();
        serde_json::to_value(resolved.config).unwrap()
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls `done` until it holds; panics naming `what` after `wait`.
pub async fn eventually(wait: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + wait;
    while !done() {
        assert!(Instant::now() < deadline, "not within {wait:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `lem-agent`; killed (SIGKILL) when dropped.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, wait: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lem-agent did not exit within {wait:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_9();
    }
}

pub fn lease(attempt: u64, epoch: u64, device: &str, config: serde_json::Value) -> LeaseGrant {
    LeaseGrant {
        attempt: AttemptRef { attempt, epoch },
        job: 100 + attempt,
        sweep: 1,
        experiment_name: "daemon-test".into(),
        cycle: 0,
        job_key: format!("job-key-{attempt}"),
        config,
        devices: vec![device.to_owned()],
        claims: Vec::new(),
        device_model: Some(GPU_MODEL.into()),
        // Long: these tests do not renew.
        ttl_ms: 30 * 60 * 1000,
    }
}
