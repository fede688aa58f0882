//! The leased jobs this agent runs, each on its own OS thread (never a tokio worker, so
//! a long run starves no heartbeat). One `JobRunner` per device set is kept between
//! runs, so cycles of one experiment on the same devices load the model once.
//!
//! A run's outcome is spooled durably by its thread before the session hears of it; a
//! run that is no longer ours (cancelled, or its lease expired) is stopped and its
//! outcome dropped; a run stopped by shutdown keeps its running marker, so the next
//! start reports it as lost.

use super::inputs::ShippedInputs;
use super::lease_clock::LeaseClock;
use super::placement::{self, DeviceDirectory};
use super::running::RunningMarkers;
use super::spool::{Spool, SpoolEntry, SpooledOutcome};
use crate::runner::{JobRunner, NoProgress, RunContext};
use lem_common::config::ExperimentConfig;
use lem_common::domain::JobSpec;
use lem_common::wire::{AttemptRef, ClaimMode, HeldAttempt, LeaseGrant};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<JobRunner>();
};

/// Why a run was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Disowned {
    No = 0,
    /// The coordinator cancelled it, or its lease ran out: drop the outcome and marker.
    NotOurs = 1,
    /// The agent is shutting down: drop the outcome, keep the marker (reported lost).
    Shutdown = 2,
}

/// What a job thread hands back when its run is over.
pub struct Finished {
    pub attempt: AttemptRef,
    /// The spooled outcome to send; `None` when the outcome was dropped.
    pub spooled: Option<SpoolEntry>,
    devices: Vec<String>,
    runner: JobRunner,
}

struct RunningJob {
    claims: BTreeMap<String, ClaimMode>,
    stop: Arc<AtomicBool>,
    disowned: Arc<AtomicU8>,
    lease: LeaseClock,
    thread: JoinHandle<()>,
}

/// Everything a job thread needs besides its lease.
#[derive(Clone)]
pub struct JobEnvironment {
    pub spool: Spool,
    pub markers: RunningMarkers,
    /// Where prompt files shipped with a lease are written before its run.
    pub inputs: ShippedInputs,
    /// This node's name, put in front of every failure it reports: a model path or
    /// file that is missing here must say where it is missing.
    pub node_name: String,
    pub devices: DeviceDirectory,
    /// The process's context (models, hub, powercap root, NVML library, variables),
    /// built once at start; each lease gets a copy with its placement and stop flag.
    pub run_context: RunContext,
}

pub struct Jobs {
    env: JobEnvironment,
    running: BTreeMap<AttemptRef, RunningJob>,
    /// Idle runners by device set (sorted keys).
    runners: BTreeMap<Vec<String>, JobRunner>,
    finished: UnboundedSender<Finished>,
}

impl Jobs {
    pub fn new(env: JobEnvironment, finished: UnboundedSender<Finished>) -> Self {
        Self {
            env,
            running: BTreeMap::new(),
            runners: BTreeMap::new(),
            finished,
        }
    }

    /// Attempts running now.
    pub fn held(&self) -> Vec<HeldAttempt> {
        self.running
            .keys()
            .map(|a| HeldAttempt {
                attempt: a.attempt,
                epoch: a.epoch,
                running: true,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The shortest time left on a running lease, for pacing heartbeats.
    pub fn shortest_ttl_left(&self, now: Instant) -> Option<Duration> {
        self.running
            .values()
            .map(|j| j.lease.expires_at().saturating_duration_since(now))
            .min()
    }

    /// Starts `lease` on its own thread, or says why it cannot run here.
    pub fn start(&mut self, lease: LeaseGrant) -> Result<(), String> {
        if self.running.contains_key(&lease.attempt) {
            return Err("this attempt is already running here".into());
        }
        let placement = placement::place(&lease, &self.env.devices)?;
        let claims = claimed(&lease);
        if let Some((key, other)) = self.busy(&claims) {
            return Err(format!(
                "device {key} is busy with attempt {} (epoch {})",
                other.attempt, other.epoch
            ));
        }
        // A config this build cannot read is the attempt's failure, reported like any
        // other (as embedded mode does), not a rejection that another agent would repeat.
        let config = serde_json::from_value::<ExperimentConfig>(lease.config.clone())
            .map_err(|e| format!("the leased config does not parse: {e}"))
            .and_then(|mut config| {
                self.env.inputs.materialize(&mut config)?;
                Ok(config)
            });
        self.env
            .markers
            .mark(lease.attempt)
            .map_err(|e| format!("cannot write its running marker: {e}"))?;

        let mut devices = lease.devices.clone();
        devices.sort();
        let runner = self.runners.remove(&devices).unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let disowned = Arc::new(AtomicU8::new(Disowned::No as u8));
        let job = config.map(|config| JobSpec {
            experiment_id: lease.experiment_name.clone(),
            job_key: lease.job_key.clone(),
            cycle: lease.cycle,
            // Attempt ids are global; a raw result keeps the low bits for display only.
            attempt: lease.attempt.attempt as u32,
            config,
            cli_overrides: BTreeMap::new(),
        });
        let ctx = self
            .env
            .run_context
            .clone()
            .with_placement(placement.device_placement())
            .with_stop(stop.clone());
        let thread = JobThread {
            attempt: lease.attempt,
            job,
            ctx,
            runner,
            devices: devices.clone(),
            disowned: disowned.clone(),
            spool: self.env.spool.clone(),
            markers: self.env.markers.clone(),
            node_name: self.env.node_name.clone(),
            finished: self.finished.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("lem-job-{}", lease.attempt.attempt))
            .spawn(move || thread.run())
            .map_err(|e| {
                let _ = self.env.markers.clear(lease.attempt);
                format!("cannot start a thread for it: {e}")
            })?;
        tracing::info!(attempt = lease.attempt.attempt, epoch = lease.attempt.epoch, job = lease.job, devices = ?lease.devices, "lease started");
        self.running.insert(
            lease.attempt,
            RunningJob {
                claims,
                stop,
                disowned,
                lease: LeaseClock::granted(Instant::now(), Duration::from_millis(lease.ttl_ms)),
                thread: handle,
            },
        );
        Ok(())
    }

    /// A running job that holds one of `claims` in a way that excludes it.
    fn busy<'c>(&self, claims: &'c BTreeMap<String, ClaimMode>) -> Option<(&'c str, AttemptRef)> {
        for (attempt, job) in &self.running {
            for (key, mode) in claims {
                let shared =
                    *mode == ClaimMode::Shared && job.claims.get(key) == Some(&ClaimMode::Shared);
                if job.claims.contains_key(key) && !shared {
                    return Some((key, *attempt));
                }
            }
        }
        None
    }

    /// A Hello or heartbeat listing every running attempt is about to be sent.
    pub fn note_listed(&mut self, sent_at: Instant) {
        for job in self.running.values_mut() {
            job.lease.listed(sent_at);
        }
    }

    /// A new session: what the old one sent will never be renewed.
    pub fn forget_unanswered(&mut self) {
        for job in self.running.values_mut() {
            job.lease.forget_unanswered();
        }
    }

    /// These leases now end `ttl` after the message the renewal answers was sent
    /// (`LeaseClock`), so no later than the coordinator's own count.
    pub fn renew(&mut self, attempts: &[AttemptRef], ttl: Duration) {
        for a in attempts {
            if let Some(job) = self.running.get_mut(a) {
                job.lease.renewed(ttl);
            }
        }
    }

    /// Stops `attempt`: it is no longer ours.
    pub fn cancel(&mut self, attempt: AttemptRef) {
        if let Some(job) = self.running.get(&attempt) {
            tracing::info!(attempt = attempt.attempt, "cancelled: stopping its run");
            disown(job, Disowned::NotOurs);
        }
    }

    /// Stops runs whose lease was not renewed in time.
    pub fn expire(&mut self, now: Instant) {
        for (attempt, job) in &self.running {
            if job.lease.expires_at() <= now && !job.stop.load(Ordering::SeqCst) {
                tracing::warn!(
                    attempt = attempt.attempt,
                    "lease expired without renewal: stopping its run"
                );
                disown(job, Disowned::NotOurs);
            }
        }
    }

    /// Takes back a finished run's thread and runner.
    pub fn on_finished(&mut self, done: Finished) -> Option<SpoolEntry> {
        if let Some(job) = self.running.remove(&done.attempt) {
            // The thread sent this as its last act: joining does not block.
            let _ = job.thread.join();
        }
        self.runners.insert(done.devices, done.runner);
        done.spooled
    }

    /// Stops every run for shutdown (their markers stay: the next start reports them
    /// lost) and waits up to `wait` for their threads.
    pub fn shut_down(&mut self, wait: Duration) {
        for job in self.running.values() {
            disown(job, Disowned::Shutdown);
        }
        let deadline = Instant::now() + wait;
        while self.running.values().any(|j| !j.thread.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = self
            .running
            .values()
            .filter(|j| !j.thread.is_finished())
            .count();
        if left > 0 {
            tracing::warn!(
                left,
                "runs still stopping at exit; the next start reports them lost"
            );
        }
    }
}

fn disown(job: &RunningJob, why: Disowned) {
    // Shutdown must not be downgraded: its marker has to stay.
    let _ = job.disowned.compare_exchange(
        Disowned::No as u8,
        why as u8,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    job.stop.store(true, Ordering::SeqCst);
}

/// The devices a lease holds and how: its claims, and its devices (exclusively unless
/// claimed otherwise).
fn claimed(lease: &LeaseGrant) -> BTreeMap<String, ClaimMode> {
    let mut claims: BTreeMap<String, ClaimMode> = lease
        .devices
        .iter()
        .map(|d| (d.clone(), ClaimMode::Exclusive))
        .collect();
    for c in &lease.claims {
        claims.insert(c.key.clone(), c.mode);
    }
    claims
}

/// One run on its own thread.
struct JobThread {
    attempt: AttemptRef,
    /// The job, or why the lease could not become one.
    job: Result<JobSpec, String>,
    ctx: RunContext,
    runner: JobRunner,
    devices: Vec<String>,
    disowned: Arc<AtomicU8>,
    spool: Spool,
    markers: RunningMarkers,
    node_name: String,
    finished: UnboundedSender<Finished>,
}

impl JobThread {
    fn run(mut self) {
        let outcome = match &self.job {
            Err(error) => SpooledOutcome::Failed {
                error: error.clone(),
            },
            Ok(job) => {
                let runner = &mut self.runner;
                let ctx = &self.ctx;
                // A panic must not leave the attempt held forever: it is the attempt's
                // failure, and the runner (its state unknown) is replaced.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runner.run(job, ctx, &mut NoProgress)
                }));
                match run {
                    Ok(Ok(result)) => SpooledOutcome::Result(Box::new(result)),
                    Ok(Err(error)) => SpooledOutcome::Failed {
                        error: error.to_string(),
                    },
                    Err(panic) => {
                        self.runner = JobRunner::default();
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "no message".into());
                        SpooledOutcome::Failed {
                            error: format!("the runner panicked: {what}"),
                        }
                    }
                }
            }
        };
        let outcome = match outcome {
            SpooledOutcome::Failed { error } => SpooledOutcome::Failed {
                error: format!("on node {}: {error}", self.node_name),
            },
            other => other,
        };
        let attempt = self.attempt;
        let spooled = match self.disowned.load(Ordering::SeqCst) {
            d if d == Disowned::Shutdown as u8 => None,
            d if d == Disowned::NotOurs as u8 => {
                tracing::info!(
                    attempt = attempt.attempt,
                    "run over; its outcome is dropped (no longer ours)"
                );
                self.clear_marker();
                None
            }
            _ => {
                let entry = SpoolEntry { attempt, outcome };
                match self.spool.write(&entry) {
                    Ok(()) => {
                        self.clear_marker();
                        Some(entry)
                    }
                    Err(error) => {
                        // Unsent and unspooled: the marker stays, so the attempt is
                        // reported lost rather than silently forgotten.
                        tracing::error!(attempt = attempt.attempt, %error, "cannot spool the outcome");
                        None
                    }
                }
            }
        };
        let _ = self.finished.send(Finished {
            attempt,
            spooled,
            devices: self.devices,
            runner: self.runner,
        });
    }

    fn clear_marker(&self) {
        if let Err(error) = self.markers.clear(self.attempt) {
            tracing::warn!(attempt = self.attempt.attempt, %error, "cannot remove the running marker");
        }
    }
}
