//! The driver's own OS thread: it takes inputs from one channel in arrival order, ticks
//! the scheduler when its next deadline passes, and answers CLI requests. When an action
//! fails (the store could not write), the scheduler may be ahead of the store, so the
//! driver is rebuilt from the store's records (agents then say Hello again).

use super::cli_requests::answer;
use super::metrics::{render, ClusterGauges, IngestTally, ResultContribution};
use super::quic_link::QuicLink;
use crate::driver::{Driver, DriverError, Executed, MonotonicClock};
use crate::scheduler::{Event, SchedulerConfig};
use crate::store::Store;
use lem_common::domain::RawResult;
use lem_common::wire::{CliReply, CliRequest};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// The longest the thread sleeps without a deadline (it then just looks again).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// One input for the driver thread.
pub enum DriverInput {
    /// An agent message as a scheduler event, with a success's result body.
    Agent {
        event: Event,
        body: Option<Box<RawResult>>,
    },
    /// A CLI request (the role was checked by the session); the reply goes back on
    /// `reply`.
    Cli {
        request: CliRequest,
        reply: tokio::sync::oneshot::Sender<CliReply>,
    },
    /// A metrics scrape: the exposition text goes back on `reply`.
    Metrics {
        reply: tokio::sync::oneshot::Sender<String>,
    },
    /// Stop: the store is flushed and the thread returns.
    Shutdown,
}

pub fn run(
    store: Arc<Store>,
    link: QuicLink,
    config: SchedulerConfig,
    inputs: Receiver<DriverInput>,
) -> Result<(), DriverError> {
    let clock = MonotonicClock::starting_at(0);
    let start = |now| Driver::start(store.clone(), link.clone(), config.clone(), now);
    let mut driver = start(clock.now())?;
    let mut next_request = 0u64;
    let mut ingest = IngestTally::default();
    loop {
        let now = clock.now();
        let wait = driver.poll_timeout().map_or(IDLE_WAKE, |t| {
            Duration::from_millis(t.0.saturating_sub(now.0)).min(IDLE_WAKE)
        });
        let outcome = match inputs.recv_timeout(wait) {
            Ok(DriverInput::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(DriverInput::Agent { event, body }) => {
                // Counted only once the scheduler accepted it (not a resend, not stale).
                let counted = match (&event, &body) {
                    (Event::AttemptFinished { attempt, .. }, Some(body)) => {
                        Some((*attempt, ResultContribution::of(body)))
                    }
                    _ => None,
                };
                let outcome = driver.handle(event, body.map(|b| *b), clock.now());
                if let (Ok(done), Some((attempt, contribution))) = (&outcome, counted) {
                    if done.accepted.iter().any(|(_, a)| *a == attempt) {
                        ingest.add(contribution);
                    }
                }
                outcome
            }
            Ok(DriverInput::Metrics { reply }) => {
                let text = render(&ClusterGauges::of(driver.scheduler()), &ingest);
                // The scraper may have given up waiting.
                let _ = reply.send(text);
                continue;
            }
            Ok(DriverInput::Cli { request, reply }) => {
                let (answered, outcome) =
                    answer(&mut driver, request, &mut next_request, clock.now());
                // The CLI may have given up waiting; the work is done either way.
                let _ = reply.send(answered);
                outcome
            }
            Err(RecvTimeoutError::Timeout) => driver.tick(clock.now()),
        };
        match outcome {
            Ok(done) => log_done(&done),
            Err(error) => {
                tracing::error!(%error, "driver action failed; rebuilding the scheduler from the store");
                driver = start(clock.now())?;
            }
        }
    }
    store.flush()?;
    Ok(())
}

fn log_done(done: &Executed) {
    for sweep in &done.finished {
        tracing::info!(%sweep, "sweep finished; aggregates stored");
        eprintln!("lem serve: {sweep} finished; its aggregates are stored");
    }
}
