//! The in-process agent of embedded mode: it reads the driver's messages from a channel
//! and runs each leased job on its own OS thread (never an async worker, so a long run
//! blocks nothing else), spooling the outcome in memory until it is acknowledged.
//!
//! What runs a job is a [`JobExecutor`]; embedded mode's wraps the agent's `JobRunner`
//! (`crate::embedded_agent`), tests use fakes, and the coordinator library itself does
//! not depend on the runner.

use crate::scheduler::{
    AgentId, AttemptId, Epoch, Event, HeldAttempt, Inventory, Lease, Outcome, SchedulerConfig,
    ToAgent,
};
use lem_common::domain::RawResult;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

/// Runs one leased job to its raw result, or says why it could not.
pub trait JobExecutor: Send {
    fn execute(&mut self, lease: &Lease) -> Result<RawResult, String>;
}

/// Scheduler settings for agents in the coordinator's own process. They cannot be lost
/// apart from it, so leases and agents do not time out (a week, not forever, so a bug
/// still ends); after a restart nothing can reclaim a lease of the dead process, so the
/// grace is zero and its leases are requeued at once.
pub fn in_process_scheduler_config(max_failures: u32) -> SchedulerConfig {
    const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
    SchedulerConfig {
        lease_ttl_ms: WEEK_MS,
        agent_timeout_ms: WEEK_MS,
        restart_grace_ms: 0,
        max_failures,
        ..SchedulerConfig::default()
    }
}

/// An event for the driver, with the result body of a success.
pub type AgentEvent = (Event, Option<RawResult>);

/// Starts the agent thread (named `lem-runner`). It announces itself with a Hello that
/// reports `lost` (attempts a previous process of this agent held: they died with it),
/// then serves messages until the driver drops its sender; it returns the executor, so a
/// runner's model cache outlives one sweep.
pub fn spawn_local_agent<E: JobExecutor + 'static>(
    agent: AgentId,
    inventory: Inventory,
    lost: Vec<HeldAttempt>,
    executor: E,
    messages: Receiver<ToAgent>,
    events: Sender<AgentEvent>,
) -> std::io::Result<JoinHandle<E>> {
    std::thread::Builder::new()
        .name("lem-runner".into())
        .spawn(move || {
            let mut a = LocalAgent {
                agent,
                inventory,
                executor,
                spool: BTreeMap::new(),
                events,
            };
            a.hello(lost);
            for msg in messages {
                if !a.on_message(msg) {
                    break;
                }
            }
            a.executor
        })
}

#[cfg(test)]
#[path = "local_agent_tests.rs"]
mod tests;

struct LocalAgent<E> {
    agent: AgentId,
    inventory: Inventory,
    executor: E,
    /// Outcomes sent and not yet acknowledged, resent after a Hello.
    spool: BTreeMap<AttemptId, (Epoch, Outcome, Option<RawResult>)>,
    events: Sender<AgentEvent>,
}

impl<E: JobExecutor> LocalAgent<E> {
    fn hello(&mut self, lost: Vec<HeldAttempt>) {
        let held = self
            .spool
            .iter()
            .map(|(a, (e, ..))| HeldAttempt {
                attempt: *a,
                epoch: *e,
                running: false,
            })
            .collect();
        let hello = Event::AgentHello {
            agent: self.agent.clone(),
            inventory: self.inventory.clone(),
            held,
            lost,
        };
        let _ = self.events.send((hello, None));
        let resend: Vec<AgentEvent> = self
            .spool
            .iter()
            .map(|(a, (e, outcome, body))| (self.finished(*a, *e, outcome.clone()), body.clone()))
            .collect();
        for ev in resend {
            let _ = self.events.send(ev);
        }
    }

    fn finished(&self, attempt: AttemptId, epoch: Epoch, outcome: Outcome) -> Event {
        Event::AttemptFinished {
            agent: self.agent.clone(),
            attempt,
            epoch,
            outcome,
        }
    }

    /// Handles one message; false once the driver is gone.
    fn on_message(&mut self, msg: ToAgent) -> bool {
        match msg {
            ToAgent::Lease(lease) => {
                let (outcome, body) = match self.executor.execute(&lease) {
                    Ok(raw) => (Outcome::Succeeded, Some(raw)),
                    Err(error) => (Outcome::Failed { error }, None),
                };
                self.spool
                    .insert(lease.attempt, (lease.epoch, outcome.clone(), body.clone()));
                let event = self.finished(lease.attempt, lease.epoch, outcome);
                return self.events.send((event, body)).is_ok();
            }
            ToAgent::Ack { attempt, .. } => {
                self.spool.remove(&attempt.attempt);
            }
            ToAgent::HelloRequired => self.hello(Vec::new()),
            // Runs are synchronous on this thread: a Cancel or Drain arrives after the
            // run it concerns has finished. Renewals need no answer.
            ToAgent::Cancel(_) | ToAgent::Drain | ToAgent::Renewed { .. } => {}
            ToAgent::Refused(e) => tracing::warn!(agent = %self.agent, "refused: {e}"),
        }
        true
    }
}
