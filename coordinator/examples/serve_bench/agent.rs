//! A benchmark agent: enrolls with a join token, says Hello with `gpus` GPUs, and answers
//! every lease at once with a raw result whose energy readings carry big power traces;
//! it heartbeats, counts acks and records when the first lease arrived. One tokio task
//! per agent on the benchmark's runtime.

use lem_common::domain::{
    DeviceKind, EnergyReading, EnergySource, PowerSample, PowerTrace, RawResult,
};
use lem_common::wire::{
    AgentMessage, AttemptRef, CoordinatorMessage, Gpu, HeldAttempt, Inventory, LeaseGrant,
};
use lem_net::{Alpn, ClientOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_millis(500);

pub struct Plan {
    pub node_name: String,
    pub gpus: usize,
    /// Trace points per device reading; each result has one reading per leased device.
    pub trace_points: usize,
}

/// Results sent and not acknowledged, by attempt: kept across sessions (and across a
/// coordinator restart), announced in Hello and resent, as the real agent's spool.
pub type Spool = Arc<Mutex<BTreeMap<u64, (AttemptRef, RawResult)>>>;

fn held(spool: &Spool) -> Vec<HeldAttempt> {
    let spool = spool.lock().unwrap();
    spool
        .values()
        .map(|(a, _)| HeldAttempt {
            attempt: a.attempt,
            epoch: a.epoch,
            running: false,
        })
        .collect()
}

/// What the benchmark reads while agents run.
#[derive(Default)]
pub struct Shared {
    /// Sessions that said Hello.
    pub sessions: AtomicU64,
    pub acks: AtomicU64,
    pub samples_acked: AtomicU64,
    pub first_lease: Mutex<Option<Instant>>,
    pub stop: AtomicBool,
    pub error: Mutex<Option<String>>,
}

/// Runs one agent until `shared.stop`, reconnecting (after 5 ms) whenever its session ends.
pub async fn run(
    data_dir: PathBuf,
    credential_dir: PathBuf,
    token: String,
    plan: Plan,
    spool: Spool,
    shared: Arc<Shared>,
) {
    let options = ClientOptions::default();
    while !shared.stop.load(Ordering::SeqCst) {
        let addr = match std::fs::read_to_string(data_dir.join("serve.addr")) {
            Ok(a) if a.ends_with('\n') => a.trim().to_owned(),
            _ => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        if let Err(e) = session(
            &addr,
            &credential_dir,
            &token,
            &plan,
            &options,
            &spool,
            &shared,
        )
        .await
        {
            *shared.error.lock().unwrap() = Some(e);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn session(
    addr: &str,
    credential_dir: &std::path::Path,
    token: &str,
    plan: &Plan,
    options: &ClientOptions,
    spool: &Spool,
    shared: &Shared,
) -> Result<(), String> {
    let e = |e: lem_net::NetError| e.to_string();
    let credential =
        lem_net::load_or_enroll(credential_dir, addr, Some(token), &plan.node_name, options)
            .await
            .map_err(e)?;
    let mut s = lem_net::connect(addr, &credential, Alpn::Agent, options)
        .await
        .map_err(e)?;
    let inventory = Inventory {
        gpus: (0..plan.gpus)
            .map(|i| Gpu {
                key: format!("gpu:{}-{i}", plan.node_name),
                model: "NVIDIA H100 80GB HBM3".into(),
                mig_slices: vec![],
            })
            .collect(),
        cpu_packages: vec![],
    };
    let hello = AgentMessage::Hello {
        inventory,
        held: held(spool),
        lost: vec![],
    };
    s.send.send(&hello).await.map_err(e)?;
    let resends: Vec<AgentMessage> = spool
        .lock()
        .unwrap()
        .values()
        .map(|(attempt, result)| AgentMessage::AttemptResult {
            attempt: *attempt,
            result: Box::new(result.clone()),
        })
        .collect();
    for resend in &resends {
        s.send.send(resend).await.map_err(e)?;
    }
    shared.sessions.fetch_add(1, Ordering::SeqCst);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            s.close().await;
            return Ok(());
        }
        tokio::select! {
            message = s.recv.recv::<CoordinatorMessage>() => {
                match message.map_err(e)?.ok_or("stream ended")? {
                    CoordinatorMessage::Lease(grant) => {
                        shared.first_lease.lock().unwrap().get_or_insert_with(Instant::now);
                        let result = result_for(&grant, plan.trace_points);
                        let answer = AgentMessage::AttemptResult {
                            attempt: grant.attempt,
                            result: Box::new(result.clone()),
                        };
                        spool.lock().unwrap().insert(grant.attempt.attempt, (grant.attempt, result));
                        s.send.send(&answer).await.map_err(e)?;
                    }
                    CoordinatorMessage::Ack { attempt, .. } => {
                        let acked = spool.lock().unwrap().remove(&attempt.attempt);
                        if let Some((_, result)) = acked {
                            let samples = lem_coordinator::server::trace_samples(&result);
                            shared.samples_acked.fetch_add(samples, Ordering::SeqCst);
                            shared.acks.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    CoordinatorMessage::HelloRequired => {
                        return Err("the coordinator asked for Hello again".into());
                    }
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                let held = held(spool);
                s.send.send(&AgentMessage::Heartbeat { held }).await.map_err(e)?;
            }
        }
    }
}

/// The lease's result: one NVML reading per leased device, each with `points` trace
/// samples at 10 ms (every sensor filled, as on a Hopper GPU).
fn result_for(grant: &LeaseGrant, points: usize) -> RawResult {
    let window_ns = points as u64 * 10_000_000;
    let mut raw =
        crate::test_fixtures::raw_result(&grant.experiment_name, grant.cycle, 8, window_ns);
    raw.job_key = grant.job_key.clone();
    raw.effective_config = grant.config.clone();
    raw.energy = grant
        .devices
        .iter()
        .map(|device| {
            let mut r = EnergyReading::unavailable(DeviceKind::Gpu, device.clone(), "", window_ns);
            r.source = EnergySource::NvmlCounter;
            r.unavailable_reason = None;
            r.energy_mj = Some(300.0 * window_ns as f64 / 1e6);
            r.trace = Some(PowerTrace {
                period_ms: 10.0,
                samples: (0..points as u64)
                    .map(|i| PowerSample {
                        t_ns: i * 10_000_000,
                        power_avg_w: Some(300.0 + (i % 7) as f64),
                        power_instant_w: Some(310.0 - (i % 5) as f64),
                        energy_counter_mj: Some(1_000_000 + i * 3_000),
                        temperature_c: Some(60),
                        sm_clock_mhz: Some(1_980),
                        throttle_reasons: Some(0),
                    })
                    .collect(),
                unavailable: BTreeMap::new(),
            });
            r
        })
        .collect();
    raw
}
