//! A small agent for tests, on its own thread and tokio runtime. It enrolls once with a
//! join token (credential saved in its dir), then connects on the agent ALPN, says Hello
//! with a fixed inventory and what it holds, heartbeats, and answers each lease with a
//! raw result kept in an in-memory spool until acknowledged — resent after every
//! reconnection, as the real agent resends from disk. It reads the coordinator's
//! address from the data dir's `serve.addr` before each connection, so it follows a
//! restarted server.

use lem_common::domain::RawResult;
use lem_common::wire::{
    AgentMessage, AttemptRef, CoordinatorMessage, Gpu, HeldAttempt, Inventory, LeaseGrant,
};
use lem_net::{Alpn, ClientOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HEARTBEAT: Duration = Duration::from_millis(500);
/// Holding a lease or an unacknowledged result and hearing nothing (no renewal, no ack)
/// this long, the connection is taken for dead (a killed coordinator sends no close;
/// QUIC would notice only at its idle timeout) and the agent reconnects.
const SILENCE: Duration = Duration::from_secs(3);

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    pub node_name: String,
    pub gpus: usize,
    /// Answer this many leases, then hold further ones (running) until `release`.
    pub answer_first: Option<usize>,
    /// After the first Ack, send that result once more (an ack lost on the way).
    pub resend_first_acked: bool,
    /// Answer the first this-many leases with a runner failure instead of a result.
    pub fail_first: usize,
}

/// What the test can look at and steer.
#[derive(Default)]
pub struct AgentShared {
    pub acks: Mutex<Vec<(AttemptRef, lem_common::wire::AckVerdict)>>,
    pub leases: Mutex<Vec<LeaseGrant>>,
    pub connections: AtomicUsize,
    pub released: AtomicBool,
    pub stop: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

pub struct TestAgent {
    pub shared: Arc<AgentShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestAgent {
    pub fn spawn(
        data_dir: PathBuf,
        credential_dir: PathBuf,
        token: String,
        plan: AgentPlan,
    ) -> Self {
        let shared = Arc::new(AgentShared::default());
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(run(data_dir, credential_dir, token, plan, s));
        });
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// Acks received for `attempt`.
    pub fn acks_of(&self, attempt: u64) -> usize {
        let acks = self.shared.acks.lock().unwrap();
        acks.iter().filter(|(a, _)| a.attempt == attempt).count()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An attempt's outcome, kept until acknowledged.
#[derive(Clone)]
enum Spooled {
    Result(Box<RawResult>),
    Failed(String),
}

impl Spooled {
    fn message(&self, attempt: AttemptRef) -> AgentMessage {
        match self {
            Spooled::Result(result) => AgentMessage::AttemptResult {
                attempt,
                result: result.clone(),
            },
            Spooled::Failed(error) => AgentMessage::AttemptFailed {
                attempt,
                error: error.clone(),
            },
        }
    }
}

/// The agent's memory across connections.
#[derive(Default)]
struct State {
    /// Leases received and not answered yet (running).
    running: BTreeMap<u64, LeaseGrant>,
    /// Outcomes sent and not acknowledged.
    spool: BTreeMap<u64, (AttemptRef, Spooled)>,
    answered: usize,
    resent_once: bool,
}

impl State {
    fn held(&self) -> Vec<HeldAttempt> {
        let running = self.running.values().map(|g| HeldAttempt {
            attempt: g.attempt.attempt,
            epoch: g.attempt.epoch,
            running: true,
        });
        let spooled = self.spool.values().map(|(a, _)| HeldAttempt {
            attempt: a.attempt,
            epoch: a.epoch,
            running: false,
        });
        running.chain(spooled).collect()
    }
}

fn inventory(plan: &AgentPlan) -> Inventory {
    Inventory {
        gpus: (0..plan.gpus)
            .map(|i| Gpu {
                key: format!("gpu:{}-{i}", plan.node_name),
                model: "NVIDIA H100 80GB HBM3".into(),
                mig_slices: vec![],
            })
            .collect(),
        cpu_packages: vec![],
    }
}

async fn run(
    data_dir: PathBuf,
    credential_dir: PathBuf,
    token: String,
    plan: AgentPlan,
    shared: Arc<AgentShared>,
) {
    let mut state = State::default();
    let options = ClientOptions::default();
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok(addr) = std::fs::read_to_string(data_dir.join("serve.addr")) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let addr = addr.trim().to_owned();
        let outcome = session(
            &addr,
            &credential_dir,
            &token,
            &plan,
            &options,
            &mut state,
            &shared,
        )
        .await;
        if let Err(error) = outcome {
            *shared.last_error.lock().unwrap() = Some(error);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One connection, until it breaks or the test stops the agent.
async fn session(
    addr: &str,
    credential_dir: &std::path::Path,
    token: &str,
    plan: &AgentPlan,
    options: &ClientOptions,
    state: &mut State,
    shared: &AgentShared,
) -> Result<(), String> {
    let credential =
        lem_net::load_or_enroll(credential_dir, addr, Some(token), &plan.node_name, options)
            .await
            .map_err(|e| e.to_string())?;
    let mut s = lem_net::connect(addr, &credential, Alpn::Agent, options)
        .await
        .map_err(|e| e.to_string())?;
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let hello = AgentMessage::Hello {
        inventory: inventory(plan),
        held: state.held(),
        lost: vec![],
    };
    s.send.send(&hello).await.map_err(|e| e.to_string())?;
    for (attempt, outcome) in state.spool.values() {
        let resend = outcome.message(*attempt);
        s.send.send(&resend).await.map_err(|e| e.to_string())?;
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut last_heard = std::time::Instant::now();
    loop {
        if !state.held().is_empty() && last_heard.elapsed() > SILENCE {
            return Err("holding work and hearing nothing: reconnecting".into());
        }
        if shared.stop.load(Ordering::SeqCst) {
            s.close().await;
            return Ok(());
        }
        // Answer held leases once released (or at once without a limit).
        let may_answer = |answered: usize| {
            plan.answer_first.is_none_or(|n| answered < n) || shared.released.load(Ordering::SeqCst)
        };
        while may_answer(state.answered) {
            let Some((&attempt, _)) = state.running.iter().next() else {
                break;
            };
            let grant = state.running.remove(&attempt).unwrap();
            let outcome = if state.answered < plan.fail_first {
                Spooled::Failed(format!("simulated runner failure {}", state.answered + 1))
            } else {
                Spooled::Result(Box::new(result_for(&grant)))
            };
            state
                .spool
                .insert(attempt, (grant.attempt, outcome.clone()));
            state.answered += 1;
            let message = outcome.message(grant.attempt);
            s.send.send(&message).await.map_err(|e| e.to_string())?;
        }
        tokio::select! {
            message = s.recv.recv::<CoordinatorMessage>() => {
                let message = message.map_err(|e| e.to_string())?.ok_or("stream ended")?;
                last_heard = std::time::Instant::now();
                match message {
                    CoordinatorMessage::Lease(grant) => {
                        shared.leases.lock().unwrap().push(grant.clone());
                        state.running.insert(grant.attempt.attempt, grant);
                    }
                    CoordinatorMessage::Ack { attempt, verdict } => {
                        shared.acks.lock().unwrap().push((attempt, verdict));
                        let entry = state.spool.remove(&attempt.attempt);
                        if plan.resend_first_acked && !state.resent_once {
                            if let Some((attempt, outcome)) = entry {
                                state.resent_once = true;
                                let again = outcome.message(attempt);
                                s.send.send(&again).await.map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    CoordinatorMessage::HelloRequired => {
                        let hello = AgentMessage::Hello {
                            inventory: inventory(plan),
                            held: state.held(),
                            lost: vec![],
                        };
                        s.send.send(&hello).await.map_err(|e| e.to_string())?;
                    }
                    CoordinatorMessage::Cancel { attempt } => {
                        state.running.remove(&attempt.attempt);
                    }
                    CoordinatorMessage::Renew { .. }
                    | CoordinatorMessage::Drain
                    | CoordinatorMessage::Refuse { .. } => {}
                }
            }
            _ = heartbeat.tick() => {
                let beat = AgentMessage::Heartbeat { held: state.held() };
                s.send.send(&beat).await.map_err(|e| e.to_string())?;
            }
        }
    }
}

/// A raw result for the lease's job, built from the lease alone: its experiment, cycle
/// and key, and output tokens that differ by cycle so aggregates have spread.
fn result_for(grant: &LeaseGrant) -> RawResult {
    let mut raw = crate::test_fixtures::raw_result(
        &grant.experiment_name,
        grant.cycle,
        8 + grant.cycle,
        1_000_000 * u64::from(grant.cycle + 1),
    );
    raw.job_key = grant.job_key.clone();
    raw.effective_config = grant.config.clone();
    if let Some(model) = grant.config.get("model_name").and_then(|m| m.as_str()) {
        raw.model.requested = model.to_owned();
    }
    raw
}
