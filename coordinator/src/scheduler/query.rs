//! Read-only views of the scheduler for status output and tests.

use super::state::{JobStatus, Scheduler};
use super::types::{
    AgentId, AttemptId, Epoch, HeldAttempt, Inventory, JobId, Placement, SweepId, TimeMs,
};

/// One agent the scheduler has heard from.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView<'a> {
    pub agent: &'a AgentId,
    pub inventory: &'a Inventory,
    /// Heard from within the agent timeout, and not gone with a goodbye.
    pub alive: bool,
    pub drained: bool,
}

/// One live lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView<'a> {
    pub attempt: AttemptId,
    pub job: JobId,
    pub epoch: Epoch,
    pub placement: &'a Placement,
    pub expires: TimeMs,
    /// False while a lease recovered after a restart waits for its agent.
    pub reclaimed: bool,
}

/// One job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView<'a> {
    pub job: JobId,
    pub sweep: SweepId,
    pub experiment: u32,
    pub cycle: u32,
    pub key: &'a str,
    pub status: JobStatus,
    pub epoch: Epoch,
    /// Each ended attempt, described.
    pub errors: &'a [String],
}

/// One experiment of a sweep: its name, resolved config and jobs (cycles ascending).
#[derive(Debug, Clone, PartialEq)]
pub struct SweepExperimentView<'a> {
    pub name: &'a str,
    pub config: &'a serde_json::Value,
    pub jobs: &'a [JobId],
}

/// Counts of a sweep's jobs by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepProgress {
    pub pending: usize,
    pub leased: usize,
    pub accepted: usize,
    pub failed: usize,
    pub cancelled: usize,
}

impl SweepProgress {
    pub fn total(&self) -> usize {
        self.pending + self.leased + self.accepted + self.failed + self.cancelled
    }
    pub fn is_finished(&self) -> bool {
        self.pending == 0 && self.leased == 0
    }
}

impl Scheduler {
    /// The ended attempts whose claims `agent` still holds fenced, as running attempts:
    /// what an agent living in the coordinator's own process reports `lost` after a
    /// restart (they died with the old process), which lifts their fences at once.
    pub fn fenced_runs_of(&self, agent: &AgentId) -> Vec<HeldAttempt> {
        self.fenced
            .iter()
            .filter(|(_, f)| &f.agent == agent)
            .map(|(attempt, f)| HeldAttempt {
                attempt: *attempt,
                epoch: f.epoch,
                running: true,
            })
            .collect()
    }

    pub fn leases(&self) -> impl Iterator<Item = LeaseView<'_>> {
        self.leases.iter().map(|(attempt, l)| LeaseView {
            attempt: *attempt,
            job: l.job,
            epoch: l.epoch,
            placement: &self.attempts[attempt].placement,
            expires: l.expires,
            reclaimed: l.reclaimed,
        })
    }

    pub fn jobs(&self) -> impl Iterator<Item = JobView<'_>> {
        self.jobs.iter().enumerate().map(|(i, j)| JobView {
            job: JobId(i as u64),
            sweep: j.sweep,
            experiment: j.experiment,
            cycle: j.cycle,
            key: &j.key,
            status: j.status,
            epoch: j.epoch,
            errors: &j.errors,
        })
    }

    pub fn job(&self, job: JobId) -> Option<JobView<'_>> {
        self.jobs().nth(job.0 as usize)
    }

    pub fn sweep_ids(&self) -> impl Iterator<Item = SweepId> + '_ {
        self.sweeps.keys().copied()
    }

    pub fn sweep_name(&self, sweep: SweepId) -> Option<&str> {
        self.sweeps.get(&sweep).map(|s| s.name.as_str())
    }

    /// The experiments of `sweep` in submission order (none for an unknown sweep).
    pub fn sweep_experiments(
        &self,
        sweep: SweepId,
    ) -> impl Iterator<Item = SweepExperimentView<'_>> {
        self.sweeps
            .get(&sweep)
            .into_iter()
            .flat_map(|s| s.experiments.iter())
            .map(|e| SweepExperimentView {
                name: &e.name,
                config: &e.config,
                jobs: &e.jobs,
            })
    }

    pub fn sweep_progress(&self, sweep: SweepId) -> Option<SweepProgress> {
        let s = self.sweeps.get(&sweep)?;
        let mut p = SweepProgress::default();
        for job in &s.jobs {
            match self.jobs[job.0 as usize].status {
                JobStatus::Pending => p.pending += 1,
                JobStatus::Leased(_) => p.leased += 1,
                JobStatus::Accepted(_) => p.accepted += 1,
                JobStatus::Failed => p.failed += 1,
                JobStatus::Cancelled => p.cancelled += 1,
            }
        }
        Some(p)
    }

    /// Jobs waiting for a placement.
    pub fn queued_jobs(&self) -> usize {
        self.queue.len()
    }

    /// Agents currently connected (heard from within the timeout, no goodbye since).
    pub fn live_agents(&self) -> impl Iterator<Item = &AgentId> {
        self.agents
            .iter()
            .filter(|(_, a)| a.alive)
            .map(|(id, _)| id)
    }

    /// Every agent heard from since the start (or the last restart), alive or lost.
    pub fn agents(&self) -> impl Iterator<Item = AgentView<'_>> {
        self.agents.iter().map(|(id, a)| AgentView {
            agent: id,
            inventory: &a.inventory,
            alive: a.alive,
            drained: self.drained.contains(id),
        })
    }

    pub fn is_drained(&self, agent: &AgentId) -> bool {
        self.drained.contains(agent)
    }
}
