//! One session with the coordinator: Hello (inventory, held, lost) and every spooled
//! outcome resent, then heartbeats, leases, renewals, cancels, acks and drain until the
//! connection is lost or the agent shuts down. The agent's state outlives sessions.

use super::jobs::{Finished, Jobs};
use super::spool::Spool;
use lem_common::wire::{AgentMessage, AttemptRef, CoordinatorMessage, HeldAttempt, Inventory};
use lem_net::{ClientSession, FramedSend};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The shortest heartbeat period, however short a lease's TTL.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// How long a stopping agent waits for the coordinator to read its Goodbye and close.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The connection broke or the coordinator ended it: reconnect.
    Lost(String),
    /// SIGTERM: stop.
    Shutdown,
}

/// What the agent keeps across sessions.
pub struct Agent {
    pub inventory: Inventory,
    pub spool: Spool,
    pub jobs: Jobs,
    /// Attempts the previous process died running; reported in every Hello of this one.
    pub lost: Vec<HeldAttempt>,
    /// Their marker files, removed once a Hello carrying them was sent.
    pub lost_markers: Vec<AttemptRef>,
    pub markers: super::running::RunningMarkers,
    /// Outcomes spooled and not yet acknowledged.
    pub spooled: BTreeSet<AttemptRef>,
    pub draining: bool,
    pub heartbeat_interval: Duration,
    /// The shortest lease TTL seen: heartbeats come at least three times per TTL.
    pub shortest_ttl: Option<Duration>,
    /// What the metrics endpoint shows.
    pub gauges: std::sync::Arc<super::metrics::AgentGauges>,
}

impl Agent {
    fn heartbeat_period(&self) -> Duration {
        heartbeat_period(self.heartbeat_interval, self.shortest_ttl)
    }

    /// Keeps the metrics endpoint's view current.
    fn publish(&self, connected: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let g = &self.gauges;
        g.connected.store(connected, Relaxed);
        g.draining.store(self.draining, Relaxed);
        g.jobs_running.store(self.jobs.held().len() as u64, Relaxed);
        g.spooled.store(self.spooled.len() as u64, Relaxed);
    }

    fn held(&self) -> Vec<HeldAttempt> {
        let mut held = self.jobs.held();
        held.extend(self.spooled.iter().map(|a| HeldAttempt {
            attempt: a.attempt,
            epoch: a.epoch,
            running: false,
        }));
        held
    }

    /// Serves one session until it is lost or `shutdown` is set.
    pub async fn serve(
        &mut self,
        session: ClientSession,
        finished: &mut mpsc::UnboundedReceiver<Finished>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let ClientSession {
            connection,
            mut send,
            mut recv,
        } = session;
        // Reading a frame is not cancel-safe: a task reads, the loop selects on a channel.
        let (incoming_tx, mut incoming) = mpsc::channel::<Result<CoordinatorMessage, String>>(64);
        let reader = tokio::spawn(async move {
            loop {
                let next = match recv.recv::<CoordinatorMessage>().await {
                    Ok(Some(message)) => Ok(message),
                    Ok(None) => Err("the coordinator ended the session".to_owned()),
                    Err(error) => Err(error.to_string()),
                };
                let stop = next.is_err();
                if incoming_tx.send(next).await.is_err() || stop {
                    break;
                }
            }
        });
        let end = self
            .session_loop(&mut send, &mut incoming, finished, shutdown)
            .await;
        reader.abort();
        self.publish(false);
        if matches!(end, SessionEnd::Shutdown) {
            // Holding nothing, it can leave at once; otherwise the coordinator counts its
            // leases until the agent timeout, as for any agent gone silent. A close
            // discards stream data not yet delivered, so the Goodbye ends the stream and
            // the agent waits (bounded) for the coordinator to close after reading it.
            if self.held().is_empty()
                && send_message(&mut send, &AgentMessage::Goodbye)
                    .await
                    .is_ok()
            {
                send.finish();
                let _ = tokio::time::timeout(GOODBYE_WAIT, connection.closed()).await;
            }
            connection.close(lem_net::close_code::DONE, "agent shutting down");
            connection.wait_idle(Duration::from_secs(2)).await;
        }
        end
    }

    async fn session_loop(
        &mut self,
        send: &mut FramedSend,
        incoming: &mut mpsc::Receiver<Result<CoordinatorMessage, String>>,
        finished: &mut mpsc::UnboundedReceiver<Finished>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        // Runs that finished while disconnected are on disk already: the Hello's resend
        // covers them.
        while let Ok(done) = finished.try_recv() {
            if let Some(entry) = self.jobs.on_finished(done) {
                self.spooled.insert(entry.attempt);
            }
        }
        self.jobs.forget_unanswered();
        if let Err(why) = self.hello(send).await {
            return SessionEnd::Lost(why);
        }
        let mut next_beat = Instant::now() + self.heartbeat_period();
        loop {
            self.publish(true);
            if *shutdown.borrow() {
                return SessionEnd::Shutdown;
            }
            let step = tokio::select! {
                _ = tokio::time::sleep_until(next_beat) => {
                    self.jobs.expire(std::time::Instant::now());
                    next_beat = Instant::now() + self.heartbeat_period();
                    let held = self.held();
                    // Before the send: a renewal's TTL counts from here.
                    self.jobs.note_listed(std::time::Instant::now());
                    send_message(send, &AgentMessage::Heartbeat { held }).await
                }
                message = incoming.recv() => match message {
                    Some(Ok(message)) => {
                        let step = self.on_message(message, send).await;
                        // A new lease may shorten the period.
                        next_beat = next_beat.min(Instant::now() + self.heartbeat_period());
                        step
                    }
                    Some(Err(why)) => Err(why),
                    None => Err("the session's reader stopped".to_owned()),
                },
                Some(done) = finished.recv() => match self.jobs.on_finished(done) {
                    Some(entry) => {
                        self.spooled.insert(entry.attempt);
                        send_message(send, &entry.to_message()).await
                    }
                    None => Ok(()),
                },
                _ = shutdown.changed() => Ok(()),
            };
            if let Err(why) = step {
                return SessionEnd::Lost(why);
            }
        }
    }

    /// Hello, then every spooled outcome (read from disk: a corrupt one is moved aside).
    async fn hello(&mut self, send: &mut FramedSend) -> Result<(), String> {
        let entries = match self.spool.load_all() {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(%error, "cannot read the spool; resending nothing this time");
                Vec::new()
            }
        };
        self.spooled = entries.iter().map(|e| e.attempt).collect();
        let hello = AgentMessage::Hello {
            inventory: self.inventory.clone(),
            held: self.held(),
            lost: self.lost.clone(),
        };
        self.jobs.note_listed(std::time::Instant::now());
        send_message(send, &hello).await?;
        for attempt in std::mem::take(&mut self.lost_markers) {
            if let Err(error) = self.markers.clear(attempt) {
                tracing::warn!(attempt = attempt.attempt, %error, "cannot remove a lost run's marker");
            }
        }
        for entry in &entries {
            send_message(send, &entry.to_message()).await?;
        }
        tracing::info!(
            held = self.jobs.held().len(),
            resent = entries.len(),
            lost = self.lost.len(),
            "hello sent"
        );
        Ok(())
    }

    async fn on_message(
        &mut self,
        message: CoordinatorMessage,
        send: &mut FramedSend,
    ) -> Result<(), String> {
        match message {
            CoordinatorMessage::Lease(lease) => {
                let attempt = lease.attempt;
                let ttl = Duration::from_millis(lease.ttl_ms);
                let started = if self.draining {
                    Err("this agent is draining: it takes no new work".to_owned())
                } else {
                    self.jobs.start(lease)
                };
                match started {
                    Ok(()) => self.note_ttl(ttl),
                    Err(reason) => {
                        tracing::warn!(attempt = attempt.attempt, %reason, "lease rejected");
                        let rejected = AgentMessage::LeaseRejected { attempt, reason };
                        send_message(send, &rejected).await?;
                    }
                }
            }
            CoordinatorMessage::Renew { attempts, ttl_ms } => {
                let ttl = Duration::from_millis(ttl_ms);
                self.jobs.renew(&attempts, ttl);
                self.note_ttl(ttl);
            }
            CoordinatorMessage::Cancel { attempt } => self.jobs.cancel(attempt),
            CoordinatorMessage::Ack { attempt, verdict } => {
                match self.spool.remove(attempt) {
                    Ok(()) => {
                        self.spooled.remove(&attempt);
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot delete an acknowledged spool entry")
                    }
                }
                tracing::info!(attempt = attempt.attempt, ?verdict, "outcome acknowledged");
            }
            CoordinatorMessage::Drain => {
                tracing::info!("draining: finishing held work, taking nothing new");
                self.draining = true;
            }
            CoordinatorMessage::HelloRequired => self.hello(send).await?,
            CoordinatorMessage::Refuse { reason } => {
                tracing::warn!(%reason, "the coordinator refused a request");
            }
        }
        Ok(())
    }

    fn note_ttl(&mut self, ttl: Duration) {
        self.shortest_ttl = Some(self.shortest_ttl.map_or(ttl, |t| t.min(ttl)));
    }
}

/// The configured interval, but at least three heartbeats per lease TTL, and never
/// faster than [`MIN_HEARTBEAT`].
fn heartbeat_period(interval: Duration, shortest_ttl: Option<Duration>) -> Duration {
    let period = match shortest_ttl {
        Some(ttl) => interval.min(ttl / 3),
        None => interval,
    };
    period.max(MIN_HEARTBEAT)
}

async fn send_message(send: &mut FramedSend, message: &AgentMessage) -> Result<(), String> {
    send.send(message).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_three_times_per_ttl_at_least() {
        let ms = Duration::from_millis;
        assert_eq!(heartbeat_period(ms(5_000), None), ms(5_000));
        assert_eq!(heartbeat_period(ms(5_000), Some(ms(30_000))), ms(5_000));
        // A 6 s lease: every 2 s, not every 5 s.
        assert_eq!(heartbeat_period(ms(5_000), Some(ms(6_000))), ms(2_000));
        assert_eq!(heartbeat_period(ms(5_000), Some(ms(30))), MIN_HEARTBEAT);
    }
}
