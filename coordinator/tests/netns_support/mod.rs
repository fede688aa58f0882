//! Test support for `cluster_netns`: a small network lab (a bridge on the host with the
//! coordinator's address, one network namespace per agent joined to it by a veth pair),
//! and real `lem-agent` processes (`serve_support::node`) started inside those
//! namespaces on simulated GPU nodes (the fake NVML, one GPU each).
//!
//! Everything the lab creates carries a tag unique to this process, and `NetLab`'s Drop
//! deletes it again, also when a test panics; what a killed run left (its process gone)
//! is deleted before the first lab of a process is made.

#![allow(dead_code)] // each test uses a subset

pub use crate::serve_support::node::agent_binary;
use crate::serve_support::node::{AgentProcess, SimNode};
use crate::serve_support::support;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    remove_stale_labs();
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

/// Deletes the namespaces and links (bridges, host veth ends) that an earlier run killed
/// before its Drop left behind: their names carry the id of the process that made them,
/// and only those of a process that is gone are deleted (another run may be going on
/// beside this one). Once per process.
fn remove_stale_labs() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_labs_of_gone_processes);
}

fn remove_labs_of_gone_processes() {
    let ours = std::process::id();
    let gone = |pid: u32| pid != ours && !Path::new(&format!("/proc/{pid}")).exists();
    let listed = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in listed(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if owner_of(name).is_some_and(gone) {
            eprintln!("removing namespace {name} left by an earlier run");
            let _ = ip(&["netns", "del", name]);
        }
    }
    // `ip -o link show`: "7: lembxxxxxxxx: <...>" or "9: lemhxxxxxxxx0@if8: <...>".
    for line in listed(&["-o", "link", "show"]).lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or_default();
        if name.starts_with("lemt-") || name.starts_with("lemprobe") {
            continue;
        }
        if owner_of(name).is_some_and(gone) {
            eprintln!("removing link {name} left by an earlier run");
            let _ = ip(&["link", "del", name]);
        }
    }
}

/// The process id in the name of something this support creates (`lemprobe<pid>`, or
/// `lemt-` / `lemb` / `lemh` followed by the tag: 6 hex digits of the pid and 2 of a
/// counter); None for any other name.
fn owner_of(name: &str) -> Option<u32> {
    if let Some(pid) = name.strip_prefix("lemprobe") {
        return pid.parse().ok();
    }
    let tag = ["lemt-", "lemb", "lemh"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))?;
    let tag = tag.get(..8)?;
    if !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(&tag[..6], 16).ok()
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
        remove_stale_labs();
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

/// A simulated GPU node with one GPU at a constant 200 W, its agent started inside a
/// namespace.
pub struct Node(SimNode);

impl std::ops::Deref for Node {
    type Target = SimNode;
    fn deref(&self) -> &SimNode {
        &self.0
    }
}

impl Node {
    pub fn new(root: &Path, index: usize) -> Node {
        let uuid = format!("GPU-0000{index:04x}-0000-4000-8000-00000000000{index}");
        let gpu = serde_json::json!({ "name": GPU_MODEL, "uuid": uuid,
            "power": [[0.0, 200.0]], "temperature_c": [[0.0, 41]],
            "energy_start_mj": 5_000_000 });
        Node(SimNode::new(root, &format!("nsnode{index}"), vec![gpu]))
    }

    /// Starts `lem-agent` inside `namespace` (`ip netns exec` execs it: the child is the
    /// agent itself), dialling `coordinator`.
    pub fn spawn(&self, agent: &Path, namespace: &str, coordinator: &str, token: &str) -> NetAgent {
        let mut launcher = Command::new("ip");
        launcher.args(["netns", "exec", namespace]).arg(agent);
        self.0.spawn_with(launcher, coordinator, token, "agent.log")
    }
}

/// A running `lem-agent` in a namespace; killed (SIGKILL) when dropped.
pub type NetAgent = AgentProcess;

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

#[test]
fn lab_names_carry_the_id_of_the_process_that_made_them() {
    let pid = 0x01_2345;
    let tag = format!("{pid:06x}{:02x}", 7);
    for name in [
        format!("lemt-{tag}-2"),
        format!("lemb{tag}"),
        format!("lemh{tag}0"),
        format!("lemprobe{pid}"),
    ] {
        assert_eq!(owner_of(&name), Some(pid), "{name}");
    }
    for other in [
        "lo",
        "eth0",
        "lembridge",
        "lemh12",
        "lemt-zz345607-0",
        "docker0",
    ] {
        assert_eq!(owner_of(other), None, "{other}");
    }
}

#[test]
fn what_a_gone_process_left_is_removed_and_nothing_else() {
    if let Some(why) = lab_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // A process id no process has now, within the tag's 6 hex digits.
    let gone = (0x10_0000..0xff_ffffu32)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .unwrap();
    let ours = std::process::id();
    let stale_ns = format!("lemt-{gone:06x}ff-0");
    let stale_bridge = format!("lemb{gone:06x}ff");
    let live_bridge = format!("lemb{:06x}fe", ours & 0xff_ffff);
    ip_ok(&["netns", "add", &stale_ns]);
    ip_ok(&["link", "add", &stale_bridge, "type", "bridge"]);
    ip_ok(&["link", "add", &live_bridge, "type", "bridge"]);
    remove_labs_of_gone_processes();
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let live_kept = ip(&["link", "del", &live_bridge]);
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!namespaces.contains(&stale_ns), "{namespaces}");
    assert!(!links.contains(&format!(": {stale_bridge}:")), "{links}");
    assert_eq!(live_kept, Ok(()), "this process's bridge was removed");
}
