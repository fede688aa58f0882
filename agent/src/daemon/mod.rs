//! The `lem-agent` daemon: enrolls once with a join token (key and certificate kept in
//! its data dir), then connects to the coordinator with its certificate and reconnects
//! with backoff and jitter forever, serving sessions ([`session`]) that run leased jobs
//! ([`jobs`]) and report their outcomes from a durable spool ([`spool`]).
//!
//! Data dir layout: `agent.key`/`agent.crt`/`ca.crt` (lem-net's credential files),
//! `spool/` (outcomes until acknowledged; `spool/corrupt/` for files that do not
//! decode), `running/` (a marker per running attempt, for reporting lost runs).

pub mod durable;
pub mod error;
pub mod inputs;
pub mod inventory;
pub mod jobs;
pub mod lease_clock;
pub mod metrics;
pub mod placement;
pub mod running;
pub mod session;
pub mod settings;
pub mod spool;

use crate::runner::RunContext;
use error::DaemonError;
use jobs::{JobEnvironment, Jobs};
use lem_common::wire::HeldAttempt;
use lem_net::{Alpn, Backoff, ClientOptions};
use running::RunningMarkers;
use session::{Agent, SessionEnd};
use settings::Settings;
use spool::Spool;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a shutdown waits for stopped runs to return.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// How often leases are checked for expiry while no session is up.
const EXPIRY_CHECK: Duration = Duration::from_millis(500);

/// Runs the agent until SIGTERM/SIGINT (Ok) or an error it cannot retry.
pub fn run(settings: Settings) -> Result<(), DaemonError> {
    create_private_dir(&settings.data_dir)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    ctrlc::set_handler(move || {
        tracing::info!("signal received: taking no new lease, stopping");
        let _ = shutdown_tx.send(true);
    })
    .map_err(|e| DaemonError::Signal(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lem-agent-io")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(serve(settings, shutdown))
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DaemonError::DataDir {
            path: dir.to_owned(),
            source,
        })
}

async fn serve(settings: Settings, mut shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    let options = ClientOptions::default();
    let mut backoff = Backoff::unseeded(settings.reconnect_initial, settings.reconnect_max);
    let attempts = settings.max_connect_attempts.unwrap_or(u32::MAX);
    let target = settings.coordinator.clone();
    let enrolled = lem_net::backoff::retry(&mut backoff, attempts, |_| {
        lem_net::load_or_enroll(
            &settings.data_dir,
            &target,
            settings.join_token.as_deref(),
            &settings.node_name,
            &options,
        )
    });
    let credential = tokio::select! {
        credential = enrolled => credential?,
        _ = shutdown.changed() => return Ok(()),
    };
    let agent_id = credential.identity().id.clone();
    tracing::info!(agent = %agent_id, coordinator = %target, "enrolled");

    let (mut agent, mut finished) = start_agent(&settings)?;
    if let Some(listen) = settings.metrics_listen {
        let reader = metrics::GpuReader::open(settings.nvml_lib.clone());
        let bound = metrics::serve(
            listen,
            settings.node_name.clone(),
            reader,
            agent.gauges.clone(),
        )
        .await
        .map_err(|source| DaemonError::MetricsListen {
            addr: listen,
            source,
        })?;
        tracing::info!("metrics listening on http://{bound}/metrics");
    }
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let connect = lem_net::connect(&target, &credential, Alpn::Agent, &options);
        let connected = tokio::select! {
            connected = expiring_leases(&mut agent.jobs, connect) => connected,
            _ = shutdown.changed() => break,
        };
        match connected {
            Ok(session) => {
                failures = 0;
                tracing::info!(agent = %agent_id, coordinator = %target, "connected");
                let started = std::time::Instant::now();
                let end = agent.serve(session, &mut finished, &mut shutdown).await;
                // Each connection sends one Hello; only a connection that lasted resets
                // the delay, so sessions that die at once do not become a Hello storm.
                backoff.connection_ended(started.elapsed());
                match end {
                    SessionEnd::Shutdown => break,
                    SessionEnd::Lost(why) => {
                        tracing::warn!(agent = %agent_id, %why, "session lost; reconnecting")
                    }
                }
            }
            Err(error) if !error.is_retryable() => return Err(error.into()),
            Err(error) => {
                failures += 1;
                if failures >= attempts {
                    return Err(DaemonError::GaveUp {
                        attempts: failures,
                        target,
                        last: error,
                    });
                }
                tracing::warn!(%error, failures, "cannot reach the coordinator");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = expiring_leases(&mut agent.jobs, tokio::time::sleep(delay)) => {}
            _ = shutdown.changed() => break,
        }
    }
    tokio::task::block_in_place(|| agent.jobs.shut_down(SHUTDOWN_WAIT));
    tracing::info!(agent = %agent_id, "stopped");
    Ok(())
}

/// Runs `future` while stopping runs whose lease ran out: without a session nothing
/// renews them, and a lease not renewed in time is no longer ours.
async fn expiring_leases<F: std::future::Future>(jobs: &mut Jobs, future: F) -> F::Output {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    tokio::pin!(future);
    loop {
        tokio::select! {
            output = &mut future => return output,
            _ = tick.tick() => jobs.expire(std::time::Instant::now()),
        }
    }
}

/// The agent's state at start: inventory, spool, and the runs a previous process of it
/// died in (markers without a spooled outcome).
fn start_agent(
    settings: &Settings,
) -> Result<(Agent, tokio::sync::mpsc::UnboundedReceiver<jobs::Finished>), DaemonError> {
    let data_dir_error = |source| DaemonError::DataDir {
        path: settings.data_dir.clone(),
        source,
    };
    let spool = Spool::open(&settings.data_dir)?;
    let markers = RunningMarkers::open(&settings.data_dir).map_err(data_dir_error)?;
    let spooled: BTreeSet<_> = spool.load_all()?.iter().map(|e| e.attempt).collect();
    let marked = markers.list().map_err(data_dir_error)?;
    let lost: Vec<HeldAttempt> = marked
        .iter()
        .filter(|a| !spooled.contains(a))
        .map(|a| HeldAttempt {
            attempt: a.attempt,
            epoch: a.epoch,
            running: true,
        })
        .collect();
    let cuda_visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let devices = inventory::discover(
        &settings.node_name,
        settings.nvml_lib.as_deref(),
        &settings.powercap_root,
        cuda_visible.as_deref(),
    );
    tracing::info!(
        gpus = devices.inventory.gpus.len(),
        mig_slices = devices
            .inventory
            .gpus
            .iter()
            .map(|g| g.mig_slices.len())
            .sum::<usize>(),
        cpu_packages = devices.inventory.cpu_packages.len(),
        spooled = spooled.len(),
        lost = lost.len(),
        "agent state loaded"
    );
    let (finished_tx, finished) = tokio::sync::mpsc::unbounded_channel();
    let env = JobEnvironment {
        spool: spool.clone(),
        markers: markers.clone(),
        inputs: inputs::ShippedInputs::new(&settings.data_dir),
        node_name: settings.node_name.clone(),
        devices: devices.directory,
        run_context: RunContext {
            powercap_root: settings.powercap_root.clone(),
            nvml_lib: settings.nvml_lib.clone(),
            ..RunContext::from_env(Arc::new(AtomicBool::new(false)))
        },
    };
    let agent = Agent {
        inventory: devices.inventory,
        spool,
        jobs: Jobs::new(env, finished_tx),
        lost,
        lost_markers: marked,
        markers,
        spooled,
        draining: false,
        heartbeat_interval: settings.heartbeat_interval,
        shortest_ttl: None,
        gauges: Default::default(),
    };
    Ok((agent, finished))
}
