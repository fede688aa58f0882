//! The coordinator's edge between the CLI's wire messages (`lem-cli/1`) and the
//! scheduler: a submitted sweep becomes the scheduler's submission, the scheduler's
//! replies and views become wire replies and summaries. Like `wire_edge`, the one place
//! the two sets of types meet.

use crate::scheduler::{
    AgentView, DeviceNeeds, ExperimentSubmission, JobStatus, LeaseView, Reply, SweepProgress,
    SweepSubmission,
};
use lem_common::wire::cli as wire;

pub fn submission_from_wire(submission: wire::SweepSubmission) -> SweepSubmission {
    SweepSubmission {
        idempotency_token: submission.idempotency_token,
        name: submission.name,
        experiments: submission
            .experiments
            .into_iter()
            .map(|e| ExperimentSubmission {
                name: e.name,
                config: e.config,
                needs: needs_from_wire(e.needs),
            })
            .collect(),
        cycles: submission.cycles,
        pin_device_model: submission.pin_device_model,
    }
}

fn needs_from_wire(needs: wire::DeviceNeeds) -> DeviceNeeds {
    match needs {
        wire::DeviceNeeds::CpuPackages => DeviceNeeds::CpuPackages,
        wire::DeviceNeeds::Gpus { count, model } => DeviceNeeds::Gpus { count, model },
        wire::DeviceNeeds::MigSlice {
            profile,
            exclusive_parent,
            model,
        } => DeviceNeeds::MigSlice {
            profile,
            exclusive_parent,
            model,
        },
    }
}

/// The scheduler's answer to a client request, as the CLI reads it.
pub fn reply_to_wire(reply: Reply) -> wire::CliReply {
    match reply {
        Reply::SweepSubmitted {
            sweep,
            created,
            jobs,
        } => wire::CliReply::SweepSubmitted {
            sweep: sweep.0,
            created,
            jobs: jobs as u64,
        },
        Reply::SweepCancelled {
            sweep,
            jobs_cancelled,
        } => wire::CliReply::SweepCancelled {
            sweep: sweep.0,
            jobs_cancelled: jobs_cancelled as u64,
        },
        Reply::SweepResumed {
            sweep,
            jobs_requeued,
        } => wire::CliReply::SweepResumed {
            sweep: sweep.0,
            jobs_requeued: jobs_requeued as u64,
        },
        Reply::AgentDraining { agent } => wire::CliReply::AgentDraining { agent: agent.0 },
        Reply::Refused(error) => wire::CliReply::Refused {
            reason: error.to_string(),
        },
    }
}

pub fn progress_to_wire(p: SweepProgress) -> wire::SweepProgress {
    wire::SweepProgress {
        pending: p.pending as u64,
        leased: p.leased as u64,
        accepted: p.accepted as u64,
        failed: p.failed as u64,
        cancelled: p.cancelled as u64,
    }
}

pub fn agent_to_wire(view: AgentView<'_>) -> wire::AgentSummary {
    wire::AgentSummary {
        id: view.agent.0.clone(),
        alive: view.alive,
        draining: view.drained,
        gpus: view
            .inventory
            .gpus
            .iter()
            .map(|gpu| wire::GpuSummary {
                key: gpu.key.0.clone(),
                model: gpu.model.clone(),
                mig_slices: gpu
                    .mig_slices
                    .iter()
                    .map(|s| format!("{} {}", s.key.0, s.profile))
                    .collect(),
            })
            .collect(),
        cpu_packages: view
            .inventory
            .cpu_packages
            .iter()
            .map(|k| k.0.clone())
            .collect(),
    }
}

pub fn lease_to_wire(view: LeaseView<'_>) -> wire::LeaseSummary {
    wire::LeaseSummary {
        attempt: view.attempt.0,
        job: view.job.0,
        agent: view.placement.agent.0.clone(),
        devices: view.placement.devices.iter().map(|d| d.0.clone()).collect(),
        reclaimed: view.reclaimed,
    }
}

/// How status output names a job's state.
pub fn job_status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Pending => "pending",
        JobStatus::Leased(_) => "leased",
        JobStatus::Accepted(_) => "accepted",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{SchedulerError, SweepId};

    #[test]
    fn a_wire_submission_keeps_every_field_and_need() {
        let wire_submission = wire::SweepSubmission {
            idempotency_token: "tok".into(),
            name: "grid".into(),
            experiments: vec![
                wire::ExperimentSubmission {
                    name: "a".into(),
                    config: serde_json::json!({"batch_size": 4}),
                    needs: wire::DeviceNeeds::Gpus {
                        count: 2,
                        model: Some("H100".into()),
                    },
                },
                wire::ExperimentSubmission {
                    name: "b".into(),
                    config: serde_json::json!({}),
                    needs: wire::DeviceNeeds::MigSlice {
                        profile: "1g.10gb".into(),
                        exclusive_parent: true,
                        model: Some("A100".into()),
                    },
                },
                wire::ExperimentSubmission {
                    name: "c".into(),
                    config: serde_json::json!(null),
                    needs: wire::DeviceNeeds::CpuPackages,
                },
            ],
            cycles: 3,
            pin_device_model: false,
        };
        let s = submission_from_wire(wire_submission.clone());
        assert_eq!(s.idempotency_token, "tok");
        assert_eq!(
            (s.name.as_str(), s.cycles, s.pin_device_model),
            ("grid", 3, false)
        );
        let names: Vec<&str> = s.experiments.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            s.experiments[0].config,
            wire_submission.experiments[0].config
        );
        assert_eq!(
            s.experiments[0].needs,
            DeviceNeeds::Gpus {
                count: 2,
                model: Some("H100".into())
            }
        );
        assert_eq!(
            s.experiments[1].needs,
            DeviceNeeds::MigSlice {
                profile: "1g.10gb".into(),
                exclusive_parent: true,
                model: Some("A100".into()),
            }
        );
        assert_eq!(s.experiments[2].needs, DeviceNeeds::CpuPackages);
    }

    #[test]
    fn replies_keep_their_numbers_and_refusals_their_words() {
        assert_eq!(
            reply_to_wire(Reply::SweepSubmitted {
                sweep: SweepId(7),
                created: false,
                jobs: 6
            }),
            wire::CliReply::SweepSubmitted {
                sweep: 7,
                created: false,
                jobs: 6
            }
        );
        let error = SchedulerError::UnknownSweep(SweepId(9));
        assert_eq!(
            reply_to_wire(Reply::Refused(error.clone())),
            wire::CliReply::Refused {
                reason: error.to_string()
            }
        );
    }
}
