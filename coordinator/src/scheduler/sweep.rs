//! Sweep submission: validation and the deterministic expansion of experiments × cycles
//! into jobs. Expansion happens once, when the sweep is created; the jobs are persisted in
//! the `SweepCreated` record and never expanded again.

use super::error::SchedulerError;
use super::types::{DeviceNeeds, JobId, SweepId};
use lem_common::domain::{fingerprint, job_key};
use serde::{Deserialize, Serialize};

/// A sweep as a client submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSubmission {
    /// Chosen by the client; resubmitting with the same token creates nothing new.
    pub idempotency_token: String,
    pub name: String,
    /// One per config or grid point.
    pub experiments: Vec<ExperimentSubmission>,
    pub cycles: u32,
    /// Keep every cycle of one experiment on one GPU model (the default in lem).
    pub pin_device_model: bool,
}

/// One experiment of a sweep: a fully resolved config (JSON) and what it needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSubmission {
    pub name: String,
    pub config: serde_json::Value,
    pub needs: DeviceNeeds,
}

/// One job as persisted: which experiment, which cycle, and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: JobId,
    /// Index into the sweep's experiments.
    pub experiment: u32,
    pub cycle: u32,
    /// `job_key(config, cycle)`: hash of the canonical spec and cycle. Where it runs is
    /// the attempt's placement, not part of the key.
    pub key: String,
}

/// The persisted form of a created sweep, jobs included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepCreated {
    pub sweep: SweepId,
    pub idempotency_token: String,
    /// Fingerprint of the submission without its token: a resubmission under the same
    /// token must match it.
    pub submission_fingerprint: String,
    pub name: String,
    pub pin_device_model: bool,
    pub experiments: Vec<ExperimentSubmission>,
    pub jobs: Vec<JobRecord>,
}

/// The fingerprint a resubmission is compared by (everything but the token).
pub fn submission_fingerprint(submission: &SweepSubmission) -> String {
    let mut json = serde_json::to_value(submission).expect("a submission always serialises");
    if let Some(obj) = json.as_object_mut() {
        obj.remove("idempotency_token");
    }
    fingerprint(&json)
}

/// Checks a submission; errors name the experiment and field.
pub fn validate(submission: &SweepSubmission) -> Result<(), SchedulerError> {
    if submission.idempotency_token.trim().is_empty() {
        return Err(SchedulerError::BadSubmission {
            reason: "`idempotency_token` is empty".into(),
        });
    }
    if submission.cycles == 0 {
        return Err(SchedulerError::BadSubmission {
            reason: "`cycles` must be at least 1".into(),
        });
    }
    if submission.experiments.is_empty() {
        return Err(SchedulerError::BadSubmission {
            reason: "`experiments` is empty".into(),
        });
    }
    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (index, exp) in submission.experiments.iter().enumerate() {
        let bad = |reason: &str| SchedulerError::BadSubmission {
            reason: format!("experiments[{index}] ({}): {reason}", exp.name),
        };
        match &exp.needs {
            DeviceNeeds::Gpus { count: 0, .. } => {
                return Err(bad("`needs.count` must be at least 1"))
            }
            DeviceNeeds::Gpus { model: Some(m), .. } if m.trim().is_empty() => {
                return Err(bad("`needs.model` is empty"))
            }
            DeviceNeeds::MigSlice { profile, .. } if profile.trim().is_empty() => {
                return Err(bad("`needs.profile` is empty"))
            }
            DeviceNeeds::MigSlice { model: Some(m), .. } if m.trim().is_empty() => {
                return Err(bad("`needs.model` is empty"))
            }
            DeviceNeeds::Pinned { claims } => {
                let mut keys = std::collections::BTreeSet::new();
                if let Some(c) = claims.iter().find(|c| !keys.insert(&c.key)) {
                    return Err(bad(&format!("`needs.claims` names {} twice", c.key)));
                }
            }
            _ => {}
        }
        // Two experiments with one config would have the same job keys.
        if let Some(first) = seen.insert(fingerprint(&exp.config), index) {
            return Err(bad(&format!(
                "same config as experiments[{first}] ({})",
                submission.experiments[first].name
            )));
        }
    }
    Ok(())
}

/// Expands a validated submission into its sweep record: experiments in submission order,
/// cycles 0..n within each, job ids from `first_job` upwards.
pub fn expand(submission: &SweepSubmission, sweep: SweepId, first_job: JobId) -> SweepCreated {
    let mut jobs = Vec::with_capacity(submission.experiments.len() * submission.cycles as usize);
    for (index, exp) in submission.experiments.iter().enumerate() {
        for cycle in 0..submission.cycles {
            jobs.push(JobRecord {
                job: JobId(first_job.0 + jobs.len() as u64),
                experiment: index as u32,
                cycle,
                key: job_key(&exp.config, cycle),
            });
        }
    }
    SweepCreated {
        sweep,
        idempotency_token: submission.idempotency_token.clone(),
        submission_fingerprint: submission_fingerprint(submission),
        name: submission.name.clone(),
        pin_device_model: submission.pin_device_model,
        experiments: submission.experiments.clone(),
        jobs,
    }
}
