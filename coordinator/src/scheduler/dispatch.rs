//! The pending queue and placement of pending jobs onto free devices.
//!
//! Pending jobs are grouped by placement class (device needs + model constraint) so a
//! pass tries each class's oldest job once: a class that does not fit anywhere is skipped
//! as a whole, which keeps a pass cheap with thousands of agents and jobs.

use super::event::{Action, Lease, ToAgent};
use super::placement::{find_placement, has_idle_device};
use super::record::Record;
use super::state::Scheduler;
use super::types::{AgentId, AttemptId, DeviceNeeds, Epoch, JobId, Placement};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Needs plus the GPU model the job is held to (its own need or its experiment's pin).
pub type Class = (DeviceNeeds, Option<String>);

#[derive(Debug, Default, Clone)]
pub struct JobQueue {
    by_class: BTreeMap<Class, BTreeSet<JobId>>,
    class_of: BTreeMap<JobId, Class>,
}

impl JobQueue {
    /// Queues `job`; true when its class had no queued job (so no agent has been tried
    /// for it yet).
    pub fn push(&mut self, job: JobId, needs: DeviceNeeds, pinned_model: Option<String>) -> bool {
        let model = match &needs {
            DeviceNeeds::Gpus { model: Some(m), .. }
            | DeviceNeeds::MigSlice { model: Some(m), .. } => Some(m.clone()),
            _ => pinned_model,
        };
        let class = (needs, model);
        let jobs = self.by_class.entry(class.clone()).or_default();
        let new_class = jobs.is_empty();
        jobs.insert(job);
        self.class_of.insert(job, class);
        new_class
    }

    pub fn remove(&mut self, job: JobId) {
        if let Some(class) = self.class_of.remove(&job) {
            if let Some(set) = self.by_class.get_mut(&class) {
                set.remove(&job);
                if set.is_empty() {
                    self.by_class.remove(&class);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.class_of.len()
    }

    /// The needs and model constraint `job` is queued under.
    pub fn class_of(&self, job: JobId) -> Option<&Class> {
        self.class_of.get(&job)
    }

    /// Classes ordered by their oldest job, so older work is placed first.
    fn classes_by_age(&self) -> Vec<Class> {
        let mut heads: Vec<(JobId, &Class)> = self
            .by_class
            .iter()
            .filter_map(|(c, jobs)| jobs.first().map(|j| (*j, c)))
            .collect();
        heads.sort();
        heads.into_iter().map(|(_, c)| c.clone()).collect()
    }

    fn head(&self, class: &Class) -> Option<JobId> {
        self.by_class
            .get(class)
            .and_then(|jobs| jobs.first().copied())
    }
}

impl Scheduler {
    /// Grants leases until no pending class fits any free device.
    pub(super) fn dispatch(&mut self, out: &mut Vec<Action>) {
        if !self.dispatch_needed {
            return;
        }
        self.dispatch_needed = false;
        if std::mem::take(&mut self.rescan_agents) {
            let live = self
                .agents
                .iter()
                .filter(|(id, a)| a.alive && !self.drained.contains(*id))
                .map(|(id, _)| id.clone());
            self.maybe_free = live.collect();
        }
        // Within one dispatch devices are only taken, never freed, so an agent that
        // failed a class stays failed: each class resumes its search where it last
        // succeeded, which keeps a pass linear in agents + grants.
        let mut cursors: BTreeMap<Class, AgentId> = BTreeMap::new();
        loop {
            let mut granted = false;
            for class in self.queue.classes_by_age() {
                while let Some(job) = self.queue.head(&class) {
                    if self.maybe_free.is_empty() {
                        return;
                    }
                    let Some(placement) = self.place(&class, cursors.get(&class)) else {
                        break;
                    };
                    cursors.insert(class.clone(), placement.agent.clone());
                    self.grant(job, placement, out);
                    granted = true;
                }
            }
            // A grant can pin an experiment and move its jobs to a new class.
            if !granted {
                // Every queued class failed on every candidate: none is worth trying
                // again until a device is released or a job is queued.
                self.maybe_free.clear();
                return;
            }
        }
    }

    /// The first agent from `from` on with room for `class`; agents found with nothing
    /// idle are dropped from the candidates.
    fn place(&mut self, class: &Class, from: Option<&AgentId>) -> Option<Placement> {
        let (needs, model) = class;
        let mut full = Vec::new();
        let mut found = None;
        let candidates = match from {
            Some(start) => self.maybe_free.range(start.clone()..),
            None => self.maybe_free.range::<AgentId, _>(..),
        };
        for id in candidates {
            let agent = &self.agents[id];
            let fit = find_placement(id, &agent.inventory, needs, model.as_deref(), &self.claims);
            if let Some(p) = fit {
                found = Some(p);
                break;
            }
            if !has_idle_device(&agent.inventory, &self.claims) {
                full.push(id.clone());
            }
        }
        for id in full {
            self.maybe_free.remove(&id);
        }
        found
    }

    /// Persists the attempt, then sends the lease.
    fn grant(&mut self, job: JobId, placement: Placement, out: &mut Vec<Action>) {
        let attempt = AttemptId(self.next_attempt);
        let epoch = Epoch(self.jobs[job.0 as usize].epoch.0 + 1);
        let agent = placement.agent.clone();
        self.commit(
            Record::AttemptStarted {
                attempt,
                job,
                epoch,
                placement: placement.clone(),
            },
            out,
        );
        let j = &self.jobs[job.0 as usize];
        let sweep = &self.sweeps[&j.sweep];
        let exp = &sweep.experiments[j.experiment as usize];
        let lease = Lease {
            attempt,
            epoch,
            job,
            sweep: j.sweep,
            experiment_name: exp.name.clone(),
            cycle: j.cycle,
            job_key: j.key.clone(),
            config: Arc::clone(&exp.config),
            placement,
            ttl_ms: self.config.lease_ttl_ms,
        };
        out.push(Action::Send {
            agent,
            msg: ToAgent::Lease(lease),
        });
    }
}
