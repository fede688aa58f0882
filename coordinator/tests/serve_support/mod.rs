//! Test support for `serve_*` tests: the real `lem serve` binary on loopback in a temp
//! data dir, `lem` CLI runs against it, and a small in-test agent that speaks exactly the
//! wire messages (enrollment with a join token, Hello, heartbeats, results from a spool
//! resent until acknowledged); `node` runs the real `lem-agent` on a simulated GPU node.
//! The one way tests start a server or an agent process. Every wait is bounded and
//! generous.

#![allow(dead_code)] // each test binary uses a different subset

pub mod agent;
pub mod node;

#[path = "../../../tests/support.rs"]
pub mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core machine; a hang still ends.
pub const WAIT: Duration = Duration::from_secs(120);

/// `lem` with none of the variables that would point it elsewhere (another data dir,
/// coordinator, NVML library or GPU set), and offline.
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

/// Runs `lem` with `args` and returns its output.
pub fn run_lem(args: &[&str]) -> Output {
    lem().args(args).output().expect("lem runs")
}

/// `lem token create` in `data_dir` (before the server holds the store).
pub fn join_token(data_dir: &Path) -> String {
    let out = lem()
        .args(["token", "create", "--ttl", "1h", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A running `lem serve`.
pub struct Server {
    pub data_dir: PathBuf,
    pub addr: String,
    extra: Vec<String>,
    /// How long `wait_status` and `stop` wait.
    wait: Duration,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `lem serve` on 127.0.0.1:0 and waits for its address file.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts `lem serve` listening on `listen` and waits for its address file; a
    /// `listen` with a port other than 0 must be the address it reports.
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, log, addr) = spawn_serve(data_dir, listen, &extra);
        Server {
            data_dir: data_dir.to_owned(),
            addr,
            extra,
            wait: WAIT,
            child,
            log,
        }
    }

    /// Waits up to `wait` for a status or a stop (runs with real inference take longer
    /// than [`WAIT`]).
    pub fn waiting(mut self, wait: Duration) -> Server {
        self.wait = wait;
        self
    }

    /// kill -9 (no shutdown path runs), then a new `lem serve` on the same data dir,
    /// address and flags; returns when the new one has written its address.
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (child, log, addr) = spawn_serve(&self.data_dir, &self.addr, &self.extra);
        assert_eq!(addr, self.addr);
        self.child = child;
        self.log = log;
    }

    /// `lem --data-dir D --coordinator ADDR args...` (the operator credential).
    pub fn cli(&self, args: &[&str]) -> Output {
        lem()
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--coordinator", &self.addr])
            .args(args)
            .output()
            .unwrap()
    }

    /// Like `cli`, asserting success, returning stdout.
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

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).unwrap()
    }

    /// `status --json`; None while the server cannot answer (it is restarting).
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
        let deadline = Instant::now() + self.wait;
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

    /// kill -9: no shutdown path runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; the server must close, flush and exit 0 (its store is then free for the
    /// test to open).
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process by its pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + self.wait;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "lem serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "lem serve exited {status}: {}",
            self.log_text()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lem serve --listen listen` on `data_dir` and waits for its address file;
/// returns the process, its log and the address it wrote.
fn spawn_serve(data_dir: &Path, listen: &str, extra: &[String]) -> (Child, PathBuf, String) {
    let addr_file = data_dir.join("serve.addr");
    let _ = std::fs::remove_file(&addr_file);
    std::fs::create_dir_all(data_dir).unwrap();
    // One log per start: a restarted server's log does not replace the first one's.
    let log = data_dir.join(format!(
        "serve-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut child = lem()
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("LEM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("lem serve starts");
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if text.ends_with('\n') {
                break text.trim().to_owned();
            }
        }
        if Instant::now() >= deadline {
            // Not yet a `Server`, so no Drop would end it.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lem serve wrote no address: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !listen.ends_with(":0") {
        assert_eq!(addr, listen, "lem serve listens elsewhere");
    }
    (child, log, addr)
}

/// Two small configs (synthetic prompts, no prompt file) in `dir`.
pub fn write_configs(dir: &Path) -> Vec<PathBuf> {
    ["alpha", "beta"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(
                &path,
                format!(
                    "config_name: {name}\nmodel_name: test/model-{i}\nmax_input_tokens: 16\n\
                     max_output_tokens: 4\nnum_input_prompts: 2\nnum_cycles: 1\n\
                     batching_options:\n  batch_size: {}\nprompt_source:\n  type: synthetic\n  input_tokens: 8\n",
                    i + 1
                ),
            )
            .unwrap();
            path
        })
        .collect()
}
