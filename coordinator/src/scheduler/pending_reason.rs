//! Why a pending job waits, in words for `sweep show` and `status`: no connected agent
//! could ever hold it (a MIG profile or GPU model no node has), or every agent that could
//! is busy or draining.

use super::claims::ClaimTable;
use super::dispatch::Class;
use super::placement::find_placement;
use super::state::{JobStatus, Scheduler};
use super::types::{DeviceNeeds, JobId};
use std::collections::BTreeMap;

impl Scheduler {
    /// `None` unless `job` is pending in the queue.
    pub fn pending_reason(&self, job: JobId) -> Option<String> {
        self.pending_reasons([job]).remove(&job)
    }

    /// The reason of each of `jobs` that is pending, worked out once per placement
    /// class (a status of thousands of queued jobs tries each agent once per class).
    pub fn pending_reasons(
        &self,
        jobs: impl IntoIterator<Item = JobId>,
    ) -> BTreeMap<JobId, String> {
        let mut by_class: BTreeMap<&Class, String> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for job in jobs {
            let pending = self
                .jobs
                .get(job.0 as usize)
                .is_some_and(|j| j.status == JobStatus::Pending);
            let Some(class) = self.queue.class_of(job).filter(|_| pending) else {
                continue;
            };
            let reason = by_class
                .entry(class)
                .or_insert_with(|| self.class_reason(class));
            out.insert(job, reason.clone());
        }
        out
    }

    fn class_reason(&self, (needs, model): &Class) -> String {
        let wanted = describe_needs(needs, model.as_deref());
        // With nothing held anywhere: could this agent take the job at all?
        let nothing_held = ClaimTable::default();
        let mut live_fit = false;
        let mut drained_fit = false;
        for (id, agent) in self.agents.iter().filter(|(_, a)| a.alive) {
            if find_placement(id, &agent.inventory, needs, model.as_deref(), &nothing_held)
                .is_some()
            {
                if self.drained.contains(id) {
                    drained_fit = true;
                } else {
                    live_fit = true;
                    break;
                }
            }
        }
        if live_fit {
            format!("waiting for {wanted} to be free")
        } else if drained_fit {
            format!("only draining agents have {wanted}")
        } else {
            format!("no connected agent has {wanted}")
        }
    }
}

/// `2 whole GPUs (NVIDIA H100 80GB HBM3)`, `a MIG slice of profile 1g.10gb with its
/// parent GPU to itself`.
pub fn describe_needs(needs: &DeviceNeeds, model: Option<&str>) -> String {
    let on_model = |text: String| match model {
        Some(m) => format!("{text} ({m})"),
        None => text,
    };
    match needs {
        DeviceNeeds::CpuPackages => "the CPU packages of a node".to_owned(),
        DeviceNeeds::Gpus { count: 1, .. } => on_model("1 whole GPU".to_owned()),
        DeviceNeeds::Gpus { count, .. } => on_model(format!("{count} whole GPUs on one node")),
        DeviceNeeds::MigSlice {
            profile,
            exclusive_parent,
            ..
        } => {
            let slice = on_model(format!("a MIG slice of profile {profile}"));
            if *exclusive_parent {
                format!("{slice} with its parent GPU to itself")
            } else {
                slice
            }
        }
        DeviceNeeds::Pinned { .. } => "the devices its config names".to_owned(),
    }
}
