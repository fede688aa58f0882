//! The real `lem-agent` on a simulated GPU node: its own copy of the fake NVML with the
//! node's scenario, an empty powercap tree and the agent's data dir, all under one
//! directory; the process started directly or through a launcher (`ip netns exec`), and
//! what its log says the coordinator acknowledged.

use super::support;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `lem-agent` binary next to the `lem` binary under test, built (a no-op when
/// fresh) as `build_fake_nvml` builds the fake library: a coordinator test cannot name
/// another package's binary through `CARGO_BIN_EXE_*`.
/// `LEM_AGENT_BIN` names a prebuilt one instead.
pub fn agent_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(find_or_build_agent).clone()
}

fn find_or_build_agent() -> PathBuf {
    if let Some(bin) = std::env::var_os("LEM_AGENT_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.exists(),
            "LEM_AGENT_BIN={} does not exist",
            bin.display()
        );
        return bin;
    }
    let lem = PathBuf::from(env!("CARGO_BIN_EXE_lem"));
    let profile_dir = lem.parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    let bin = profile_dir.join("lem-agent");
    if is_fresh(&bin, &profile_dir.join("deps")) {
        // `cargo test --workspace` built it with the tests' features; a `cargo build`
        // here would flip those features and rebuild the TLS stack for minutes.
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        // `--workspace` as the tests are built: `-p` would unify features differently
        // and rebuild the dependencies.
        .args(["build", "--quiet", "--workspace", "--bin", "lem-agent"])
        .args(["--profile", &profile])
        .arg("--manifest-path")
        .arg(support::repo_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo build --bin lem-agent");
    assert!(status.success(), "cargo build --bin lem-agent failed");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// `bin` exists and is newer than every `liblem_agent-*.rlib` in `deps` (the library it
/// links; the test build rebuilds that library whenever the agent's or common's sources
/// change).
fn is_fresh(bin: &Path, deps: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(bin) else {
        return false;
    };
    std::fs::read_dir(deps).is_ok_and(|entries| {
        entries.flatten().all(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !(name.starts_with("liblem_agent-") && name.ends_with(".rlib"))
                || modified(&e.path()).is_some_and(|lib| lib <= built)
        })
    })
}

/// A simulated GPU node under `<parent>/<name>`.
pub struct SimNode {
    pub name: String,
    pub dir: PathBuf,
    lib: PathBuf,
    scenario: PathBuf,
}

impl SimNode {
    /// A node whose fake NVML reports `gpus` (scenario GPU entries, see tests/fake-nvml),
    /// laid out as `support::agent_command` expects.
    pub fn new(parent: &Path, name: &str, gpus: Vec<serde_json::Value>) -> SimNode {
        let dir = parent.join(name);
        std::fs::create_dir_all(dir.join("powercap")).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        std::fs::copy(support::build_fake_nvml(), &lib).unwrap();
        let scenario = dir.join("scenario.json");
        let s = serde_json::json!({ "driver_version": "550.54.15", "gpus": gpus });
        std::fs::write(&scenario, s.to_string()).unwrap();
        SimNode {
            name: name.to_owned(),
            dir,
            lib,
            scenario,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("agent-data")
    }

    /// Result files spooled and not acknowledged yet.
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("spool"))
            .map(|d| d.flatten().filter(|e| e.path().is_file()).count())
            .unwrap_or(0)
    }

    /// This node's hardware for `cmd` (a `lem` run, not an agent): the fake NVML with
    /// its scenario, its powercap tree.
    pub fn apply_to(&self, cmd: &mut Command) {
        cmd.env("LEM_NVML_LIB", &self.lib)
            .env("FAKE_NVML_SCENARIO", &self.scenario)
            .env("LEM_POWERCAP_ROOT", self.dir.join("powercap"));
    }

    /// Starts `lem-agent` for this node; `n` numbers its log (`agent-<n>.log`).
    pub fn spawn(&self, coordinator: &str, token: &str, n: u32) -> AgentProcess {
        let agent = Command::new(agent_binary());
        self.spawn_with(agent, coordinator, token, &format!("agent-{n}.log"))
    }

    /// Starts the agent through `launcher`: the agent binary itself, or a command that
    /// execs it (`ip netns exec NS lem-agent`), given the agent's flags and this node's
    /// environment; dialling `coordinator`, enrolling with `token`, logging to
    /// `<dir>/<log_name>`.
    pub fn spawn_with(
        &self,
        mut launcher: Command,
        coordinator: &str,
        token: &str,
        log_name: &str,
    ) -> AgentProcess {
        let log = self.dir.join(log_name);
        support::agent_command(
            &mut launcher,
            &self.dir,
            &self.name,
            coordinator,
            Some(token),
            &[],
        );
        let child = launcher
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("lem-agent starts");
        AgentProcess { child, log }
    }
}

/// A running `lem-agent`; killed (SIGKILL) when dropped.
pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Waits (bounded by `within`) for an agent expected to give up by itself, as one
    /// that is refused enrollment does; its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// SIGTERM: the agent's clean stop.
    pub fn sigterm(&self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// kill -9: the agent's running jobs die with it.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Lines of its log holding `needle` (e.g. how many Hellos it sent).
    pub fn count(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Attempts whose outcome the agent logged as acknowledged, whatever the verdict.
    pub fn acknowledged_attempts(&self) -> BTreeSet<u64> {
        self.acknowledged_where("")
    }

    /// Attempts whose outcome the coordinator acknowledged with `verdict` (`Accepted`,
    /// `Superseded`), read from the agent's own log.
    pub fn acknowledged(&self, verdict: &str) -> BTreeSet<u64> {
        self.acknowledged_where(&format!("verdict={verdict}"))
    }

    fn acknowledged_where(&self, wanted: &str) -> BTreeSet<u64> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("outcome acknowledged") && l.contains(wanted))
            .filter_map(|l| field(l, "attempt="))
            .collect()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after `key` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes terminal colour sequences (ESC [ ... letter), in case the logger adds them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
