//! The simulation's invariants, checked from outside the scheduler: over the durable log
//! (replayed independently of `Scheduler::apply`), over the acks agents received, and
//! over the live leases.

use super::super::{
    AckVerdict, AgentId, AttemptEnd, AttemptId, Claim, ClaimMode, Epoch, HeldAttempt, JobId,
    Outcome, Record, Scheduler, TimeMs,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Follows the durable log record by record.
#[derive(Debug, Default)]
pub struct LogChecker {
    checked: usize,
    /// Per job: the latest started attempt and its epoch.
    latest: HashMap<JobId, (AttemptId, Epoch)>,
    ended: BTreeSet<AttemptId>,
    accepted: BTreeMap<JobId, AttemptId>,
    accepted_attempts: BTreeSet<AttemptId>,
    superseded: BTreeSet<AttemptId>,
    failed_outcome_recorded: BTreeSet<AttemptId>,
    sweep_created: bool,
    drained: BTreeSet<AgentId>,
}

impl LogChecker {
    /// Checks records appended since the last call.
    pub fn advance(&mut self, log: &[Record]) -> Result<(), String> {
        for (index, record) in log.iter().enumerate().skip(self.checked) {
            self.check(record)
                .map_err(|e| format!("log record {index} ({record:?}): {e}"))?;
        }
        self.checked = log.len();
        Ok(())
    }

    fn check(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::SweepCreated(_) => self.sweep_created = true,
            Record::AttemptStarted {
                attempt,
                job,
                epoch,
                placement,
            } => {
                if self.drained.contains(&placement.agent) {
                    return Err(format!("leased to {}, which was drained", placement.agent));
                }
                if !self.sweep_created {
                    return Err("an attempt started before its sweep was persisted".into());
                }
                if let Some((_, prev)) = self.latest.get(job) {
                    if epoch <= prev {
                        return Err(format!("epoch did not rise (was {prev})"));
                    }
                }
                if self.accepted.contains_key(job) {
                    return Err("a job with an accepted result was leased again".into());
                }
                self.latest.insert(*job, (*attempt, *epoch));
            }
            Record::AttemptEnded { attempt, end, .. } => {
                if !self.ended.insert(*attempt) {
                    return Err("attempt ended twice".into());
                }
                if matches!(end, AttemptEnd::Failed { .. }) {
                    self.failed_outcome_recorded.insert(*attempt);
                }
            }
            Record::ResultAccepted { attempt, job } => {
                if let Some(prev) = self.accepted.get(job) {
                    return Err(format!("second accepted attempt (first {prev})"));
                }
                // Stale-epoch results must never be accepted: only the latest lease of
                // the job, still live, may be.
                match self.latest.get(job) {
                    Some((latest, _)) if latest == attempt => {}
                    other => return Err(format!("accepted a fenced attempt (latest {other:?})")),
                }
                if self.ended.contains(attempt) {
                    return Err("accepted an attempt that had already ended".into());
                }
                self.ended.insert(*attempt);
                self.accepted.insert(*job, *attempt);
                self.accepted_attempts.insert(*attempt);
            }
            Record::ResultSuperseded { attempt, .. } => {
                if self.accepted_attempts.contains(attempt) {
                    return Err("superseded an accepted result".into());
                }
                self.superseded.insert(*attempt);
            }
            Record::AgentDrained { agent } => {
                self.drained.insert(agent.clone());
            }
            Record::JobFailed { .. }
            | Record::SweepCancelled { .. }
            | Record::SweepResumed { .. } => {}
        }
        Ok(())
    }

    /// Persist, then ack: an ack is only ever sent for an outcome already in the log.
    pub fn check_ack_sent(&self, held: HeldAttempt, verdict: AckVerdict) -> Result<(), String> {
        let a = held.attempt;
        let stored = match verdict {
            AckVerdict::Accepted => self.accepted_attempts.contains(&a),
            AckVerdict::Superseded => self.superseded.contains(&a),
            AckVerdict::FailureRecorded => self.ended.contains(&a),
        };
        if stored {
            Ok(())
        } else {
            Err(format!(
                "{a} acked as {verdict:?} before it was in the durable log"
            ))
        }
    }

    /// No acknowledged outcome is lost: what an agent saw acked is in the durable log, and
    /// the verdict fits the outcome it had spooled.
    pub fn check_ack_received(
        &self,
        held: HeldAttempt,
        verdict: AckVerdict,
        outcome: &Outcome,
    ) -> Result<(), String> {
        let fits = matches!(
            (verdict, outcome),
            (
                AckVerdict::Accepted | AckVerdict::Superseded,
                Outcome::Succeeded
            ) | (AckVerdict::FailureRecorded, Outcome::Failed { .. })
        );
        if !fits {
            return Err(format!(
                "{} acked as {verdict:?} for {outcome:?}",
                held.attempt
            ));
        }
        self.check_ack_sent(held, verdict)
    }

    /// Persist, then lease: a lease is only sent for the job's latest persisted attempt.
    pub fn check_lease_sent(&self, job: JobId, attempt: AttemptId) -> Result<(), String> {
        match self.latest.get(&job) {
            Some((latest, _)) if *latest == attempt => Ok(()),
            other => Err(format!(
                "lease {attempt} of {job} sent before it was persisted (latest {other:?})"
            )),
        }
    }

    pub fn accepted_jobs(&self) -> &BTreeMap<JobId, AttemptId> {
        &self.accepted
    }
}

/// The physical rule: whatever the coordinator believes, the agents never run two
/// attempts on one metered device at once (an exclusive use excludes every other; shared
/// MIG-parent uses coexist only with each other). Counts every run an agent still has,
/// including one it keeps running after being declared lost or partitioned away.
pub fn check_physical_exclusivity<'a>(
    runs: impl Iterator<Item = (AttemptId, &'a [Claim])>,
) -> Result<(), String> {
    let mut holders: BTreeMap<&str, (Vec<AttemptId>, Vec<AttemptId>)> = BTreeMap::new();
    for (attempt, claims) in runs {
        for c in claims {
            let h = holders.entry(c.key.0.as_str()).or_default();
            match c.mode {
                ClaimMode::Exclusive => h.0.push(attempt),
                ClaimMode::Shared => h.1.push(attempt),
            }
        }
    }
    for (key, (exclusive, shared)) in holders {
        if exclusive.len() > 1 || (!exclusive.is_empty() && !shared.is_empty()) {
            return Err(format!(
                "device {key} physically running {exclusive:?} exclusively and {shared:?} shared"
            ));
        }
    }
    Ok(())
}

/// Never two leases on one metered device, counted from the leases' own claims.
pub fn check_device_exclusivity(s: &Scheduler) -> Result<(), String> {
    let mut holders: HashMap<&str, (Vec<AttemptId>, Vec<AttemptId>)> = HashMap::new();
    for lease in s.leases() {
        for c in &lease.placement.claims {
            let h = holders.entry(c.key.0.as_str()).or_default();
            match c.mode {
                ClaimMode::Exclusive => h.0.push(lease.attempt),
                ClaimMode::Shared => h.1.push(lease.attempt),
            }
        }
    }
    for (key, (exclusive, shared)) in holders {
        if exclusive.len() > 1 || (!exclusive.is_empty() && !shared.is_empty()) {
            return Err(format!(
                "device {key} held exclusively by {exclusive:?} and shared by {shared:?}"
            ));
        }
    }
    Ok(())
}

/// Every run an agent still has is one the coordinator still counts as occupying its
/// devices: a live lease of that agent with the run's epoch, a fence, or a run the agent
/// reported after it ended (kept out of placement while reported). Otherwise the
/// coordinator may place other work on those devices while the run goes on: the agent
/// must stop a run no later than the coordinator stops counting its lease. Physical
/// exclusivity (4b) cannot show this in the simulation, since a device is only ever
/// leased again to the agent that runs it, which refuses a lease for a busy device.
pub fn check_runs_counted(
    s: &Scheduler,
    agent: &AgentId,
    runs: impl Iterator<Item = (AttemptId, Epoch, TimeMs)>,
) -> Result<(), String> {
    for (attempt, epoch, stops_at) in runs {
        let leased = s
            .leases
            .get(&attempt)
            .is_some_and(|l| &l.agent == agent && l.epoch == epoch);
        let fenced = s.fenced.get(&attempt).is_some_and(|f| &f.agent == agent);
        let reported = s
            .agents
            .get(agent)
            .is_some_and(|a| a.stale_running.contains_key(&attempt));
        if !(leased || fenced || reported) {
            return Err(format!(
                "{agent} still runs {attempt} ({epoch}) until {} ms, but the \
                 coordinator (at {} ms) no longer counts it: its devices may be leased again",
                stops_at.0, s.now.0
            ));
        }
    }
    Ok(())
}
