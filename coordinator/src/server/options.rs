//! What `lem serve` is told: where its data lives, where it listens, its timers.

use crate::scheduler::SchedulerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Names and addresses agents and CLIs dial; the server certificate carries them.
    pub server_names: Vec<String>,
    /// Lease TTL, agent timeout, restart grace, retry bounds for network agents.
    pub scheduler: SchedulerConfig,
    /// Where to serve Prometheus `/metrics` (TCP); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
}
