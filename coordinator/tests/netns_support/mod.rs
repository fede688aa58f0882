//! Test support for `cluster_netns`: a small network lab (a bridge on the host with the
//! coordinator's address, one network namespace per agent joined to it by a veth pair),
//! real `lem-agent` processes started inside those namespaces on simulated GPU nodes
//! (the fake NVML, one GPU each), and what their logs say was acknowledged.
//!
//! Everything the lab creates carries a tag unique to this process, and `NetLab`'s Drop
//! deletes it again, also when a test panics.

#![allow(dead_code)] // each test uses a subset

#[path = "../../../tests/support.rs"]
pub mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const GPU_MODEL: &str = "NVIDIA H100 80GB HBM3";

/// Why this machine cannot host the lab, or None when it can. Not root, or no `ip`:
/// the caller skips. Root with `ip` but namespaces failing: skipped too, except under
/// `CI`, where it is a failure (CI runs as root and must run these tests).
pub fn lab_unavailable() -> Option<String> {
    // Probed once per process: tests probing at the same time would collide on the name.
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(probe_lab).clone()
}

fn probe_lab() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces and veth pairs need CAP_NET_ADMIN".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Some(format!("`ip -V` failed: {}", out.status)),
        Err(e) => return Some(format!("no `ip` command (iproute2): {e}")),
    }
    let probe = format!("lemprobe{}", std::process::id());
    let created = ip(&["netns", "add", &probe]);
    let _ = ip(&["netns", "del", &probe]);
    if let Err(e) = created {
        let why = format!("root with `ip`, yet `ip netns add` failed: {e}");
        assert!(std::env::var_os("CI").is_none(), "CI is set: {why}");
        return Some(why);
    }
    None
}

/// Runs `ip args`, returning its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// One agent's namespace, with the host end of its veth pair (a bridge port).
pub struct Namespace {
    pub name: String,
    pub host_veth: String,
    pub ip: String,
}

/// A bridge holding the coordinator's address and one namespace per agent.
pub struct NetLab {
    pub bridge: String,
    /// The coordinator's address, on the bridge.
    pub host_ip: String,
    pub namespaces: Vec<Namespace>,
}

impl NetLab {
    /// A lab with `agents` namespaces on a free 10.231.x.0/24.
    pub fn create(agents: usize) -> NetLab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // Interface names are at most 15 bytes: "lemh" + 8 hex digits + agent index.
        let tag = format!("{:06x}{n:02x}", std::process::id() & 0xff_ffff);
        let octet = free_octet(std::process::id() + n);
        let mut lab = NetLab {
            bridge: format!("lemb{tag}"),
            host_ip: format!("10.231.{octet}.1"),
            namespaces: Vec::new(),
        };
        ip_ok(&["link", "add", &lab.bridge, "type", "bridge"]);
        ip_ok(&[
            "addr",
            "add",
            &format!("{}/24", lab.host_ip),
            "dev",
            &lab.bridge,
        ]);
        ip_ok(&["link", "set", &lab.bridge, "up"]);
        for i in 0..agents {
            let ns = Namespace {
                name: format!("lemt-{tag}-{i}"),
                host_veth: format!("lemh{tag}{i}"),
                ip: format!("10.231.{octet}.{}", 10 + i),
            };
            let ns_veth = format!("lemn{tag}{i}");
            ip_ok(&["netns", "add", &ns.name]);
            // Pushed at once so Drop removes it if a later step fails.
            lab.namespaces.push(ns);
            let ns = lab.namespaces.last().unwrap();
            ip_ok(&[
                "link",
                "add",
                &ns.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &ns_veth,
            ]);
            ip_ok(&["link", "set", &ns_veth, "netns", &ns.name]);
            ip_ok(&["link", "set", &ns.host_veth, "master", &lab.bridge]);
            ip_ok(&["link", "set", &ns.host_veth, "up"]);
            let addr = format!("{}/24", ns.ip);
            ip_ok(&["-n", &ns.name, "addr", "add", &addr, "dev", &ns_veth]);
            ip_ok(&["-n", &ns.name, "link", "set", &ns_veth, "up"]);
            ip_ok(&["-n", &ns.name, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// Cuts namespace `i` off: its bridge port goes down, so every packet between it and
    /// the coordinator is dropped silently, both ways (no reset, no error reply).
    pub fn cut(&self, i: usize) {
        ip_ok(&["link", "set", &self.namespaces[i].host_veth, "down"]);
    }

    pub fn heal(&self, i: usize) {
        ip_ok(&["link", "set", &self.namespaces[i].host_veth, "up"]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", &ns.name]);
            let _ = ip(&["link", "del", &ns.host_veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A third octet no address on this host uses yet, starting from `seed`.
fn free_octet(seed: u32) -> u32 {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("ip addr show");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..250)
        .map(|k| 1 + (seed + k) % 250)
        .find(|o| !used.contains(&format!("10.231.{o}.")))
        .expect("every 10.231.x.0/24 is in use")
}

/// The `lem-agent` binary next to the `lem` binary under test, built (a no-op when
/// fresh) as `build_fake_nvml` builds the fake library: a coordinator test cannot name
/// another package's binary through `CARGO_BIN_EXE_*`.
/// `LEM_AGENT_BIN` names a prebuilt one instead.
pub fn agent_binary() -> PathBuf {
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
/// links).
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

/// A simulated GPU node: the fake NVML (copied) with one GPU at a constant 200 W, an
/// empty powercap tree, and the agent's data dir.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    lib: PathBuf,
    scenario: PathBuf,
}

impl Node {
    pub fn new(root: &Path, index: usize) -> Node {
        let name = format!("nsnode{index}");
        let dir = root.join(&name);
        std::fs::create_dir_all(dir.join("powercap")).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        std::fs::copy(support::build_fake_nvml(), &lib).unwrap();
        let scenario = dir.join("scenario.json");
        let uuid = format!("GPU-0000{index:04x}-0000-4000-8000-00000000000{index}");
        let s = serde_json::json!({ "driver_version": "550.54.15", "gpus": [{
            "name": GPU_MODEL, "uuid": uuid, "power": [[0.0, 200.0]],
            "temperature_c": [[0.0, 41]], "energy_start_mj": 5_000_000 }] });
        std::fs::write(&scenario, s.to_string()).unwrap();
        Node {
            name,
            dir,
            lib,
            scenario,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("agent-data")
    }

    /// Points `cmd` at this node's simulated GPU (an embedded `lem batch` on it).
    pub fn apply_env(&self, cmd: &mut Command) {
        cmd.env("LEM_NVML_LIB", &self.lib)
            .env("FAKE_NVML_SCENARIO", &self.scenario)
            .env("LEM_POWERCAP_ROOT", self.dir.join("powercap"));
    }

    /// Result files spooled and not acknowledged yet.
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("spool"))
            .map(|d| d.flatten().filter(|e| e.path().is_file()).count())
            .unwrap_or(0)
    }

    /// Starts `lem-agent` inside `namespace` (`ip netns exec` execs it: the child is the
    /// agent itself), dialling `coordinator`.
    pub fn spawn(&self, agent: &Path, namespace: &str, coordinator: &str, token: &str) -> NetAgent {
        let log = self.dir.join("agent.log");
        let child = Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(agent)
            .args(["--coordinator", coordinator, "--join-token", token])
            .args(["--node-name", &self.name, "--data-dir"])
            .arg(self.data_dir())
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
            .env_remove("LEM_COORDINATOR")
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env("HF_HUB_OFFLINE", "1")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("LEM_NVML_LIB", &self.lib)
            .env("FAKE_NVML_SCENARIO", &self.scenario)
            .env("LEM_POWERCAP_ROOT", self.dir.join("powercap"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("ip netns exec lem-agent starts");
        NetAgent { child, log }
    }
}

/// A running `lem-agent`; killed (SIGKILL) when dropped.
pub struct NetAgent {
    child: Child,
    pub log: PathBuf,
}

impl NetAgent {
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

    /// Attempts whose outcome the coordinator acknowledged with `verdict` (`Accepted`,
    /// `Superseded`), read from the agent's own log.
    pub fn acknowledged(&self, verdict: &str) -> BTreeSet<u64> {
        let wanted = format!("verdict={verdict}");
        self.log_text()
            .lines()
            .filter(|l| l.contains("outcome acknowledged") && l.contains(&wanted))
            .filter_map(|l| field(l, "attempt="))
            .collect()
    }
}

impl Drop for NetAgent {
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

/// Polls `done` every 200 ms until it holds; panics naming `what` after `wait`.
pub fn eventually(wait: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !done() {
        assert!(Instant::now() < deadline, "not within {wait:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `count` small configs on the real SmolLM2 (synthetic prompts, a few tokens) in `dir`;
/// `idle_baseline_s` sets how long each job measures idle power first, i.e. a floor on
/// its duration.
pub fn write_model_configs(dir: &Path, count: usize, idle_baseline_s: f64) -> Vec<PathBuf> {
    support::model();
    (0..count)
        .map(|i| {
            let path = dir.join(format!("ns{i}.yaml"));
            std::fs::write(
                &path,
                format!(
                    "config_name: ns{i}\nmodel_name: HuggingFaceTB/SmolLM2-135M-Instruct\n\
                     max_input_tokens: 16\nmax_output_tokens: 2\nnum_input_prompts: 1\n\
                     fp_precision: float32\nnum_cycles: 1\nrandom_seed: {}\n\
                     idle_baseline_s: {idle_baseline_s}\n\
                     batching_options:\n  batch_size: 1\n  strategy: static\n\
                     decoder_config:\n  preset: deterministic\n\
                     prompt_source:\n  type: synthetic\n  input_tokens: 8\n",
                    42 + i
                ),
            )
            .unwrap();
            path
        })
        .collect()
}
