//! Tests of the record log and result ingest: durability across a reopen, the order
//! `recover` needs, idempotent resends, superseded results kept out of aggregation.

use super::*;
use crate::scheduler::{
    AgentId, AttemptEnd, Claim, ClaimMode, DeviceKey, DeviceNeeds, Epoch, ExperimentSubmission,
    JobRecord, JobStatus, Placement, Scheduler, SchedulerConfig, SweepCreated, SweepId, TimeMs,
};
use crate::test_fixtures::raw_result;
use lem_common::domain::job_key;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// A sweep of `experiments` configs × `cycles`, jobs numbered from 0 as the scheduler
/// expands them (experiments in order, cycles within).
fn sweep_created(experiments: u32, cycles: u32) -> SweepCreated {
    let experiments: Vec<ExperimentSubmission> = (0..experiments)
        .map(|i| ExperimentSubmission {
            name: format!("exp{i}"),
            config: serde_json::json!({ "model": "m", "i": i }),
            needs: DeviceNeeds::CpuPackages,
        })
        .collect();
    let mut jobs = Vec::new();
    for (e, exp) in experiments.iter().enumerate() {
        for cycle in 0..cycles {
            jobs.push(JobRecord {
                job: JobId(jobs.len() as u64),
                experiment: e as u32,
                cycle,
                key: job_key(&exp.config, cycle),
            });
        }
    }
    SweepCreated {
        sweep: SweepId(0),
        idempotency_token: "tok".into(),
        submission_fingerprint: "fp".into(),
        name: "s".into(),
        pin_device_model: true,
        experiments,
        jobs,
    }
}

fn started(attempt: u64, job: u64, epoch: u64) -> Record {
    Record::AttemptStarted {
        attempt: AttemptId(attempt),
        job: JobId(job),
        epoch: Epoch(epoch),
        placement: Placement {
            agent: AgentId("local".into()),
            devices: vec![DeviceKey("rapl:h:package-0".into())],
            claims: vec![Claim {
                key: DeviceKey("rapl:h:package-0".into()),
                mode: ClaimMode::Exclusive,
            }],
            device_model: None,
        },
    }
}

fn accepted(attempt: u64, job: u64) -> Record {
    Record::ResultAccepted {
        attempt: AttemptId(attempt),
        job: JobId(job),
    }
}

#[test]
fn records_survive_a_reopen_in_order_and_recover_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let log = vec![
        Record::SweepCreated(sweep_created(1, 2)),
        started(0, 0, 1),
        started(1, 1, 1),
        Record::AttemptEnded {
            attempt: AttemptId(1),
            job: JobId(1),
            end: AttemptEnd::Failed {
                error: "boom".into(),
            },
            fence_ms: None,
        },
        accepted(0, 0),
    ];
    {
        let store = Store::open(dir.path(), WAIT).unwrap();
        for (i, r) in log.iter().enumerate() {
            let body = raw_result("exp0", 0, 4, 1_000);
            let body = matches!(r, Record::ResultAccepted { .. }).then_some(&body);
            assert_eq!(
                store.persist(r, body).unwrap(),
                Persisted::Appended { seq: i as u64 }
            );
        }
    }
    // Reopened: the log is whole and in order, and the derived rows agree with it.
    let store = Store::open(dir.path(), WAIT).unwrap();
    assert_eq!(store.records().unwrap(), log);
    let s = Scheduler::recover(
        SchedulerConfig::default(),
        store.records().unwrap(),
        TimeMs(0),
    )
    .unwrap();
    assert_eq!(
        s.job(JobId(0)).unwrap().status,
        JobStatus::Accepted(AttemptId(0))
    );
    assert_eq!(s.job(JobId(1)).unwrap().status, JobStatus::Pending);
    assert_eq!(
        store.attempt(AttemptId(1)).unwrap().unwrap().end,
        Some(AttemptEnd::Failed {
            error: "boom".into()
        })
    );
    assert_eq!(
        store.accepted_attempt(JobId(0)).unwrap(),
        Some(AttemptId(0))
    );
    assert_eq!(store.accepted_attempt(JobId(1)).unwrap(), None);
    let sweep = store.sweep(SweepId(0)).unwrap().unwrap();
    assert_eq!(sweep.job_count, 2);
    let jobs = store.jobs_of_sweep(&sweep).unwrap();
    let expected_keys: Vec<String> = (0..2)
        .map(|c| job_key(&serde_json::json!({ "model": "m", "i": 0 }), c))
        .collect();
    let keys: Vec<String> = jobs.iter().map(|j| j.key.clone()).collect();
    assert_eq!(keys, expected_keys);
}

#[test]
fn a_resent_result_is_already_committed_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), WAIT).unwrap();
    store
        .persist(&Record::SweepCreated(sweep_created(1, 1)), None)
        .unwrap();
    store.persist(&started(0, 0, 1), None).unwrap();
    let first = raw_result("exp0", 0, 4, 1_000);
    assert_eq!(
        store.persist(&accepted(0, 0), Some(&first)).unwrap(),
        Persisted::Appended { seq: 2 }
    );
    // The agent did not hear the ack and sends the same attempt's result again.
    let resent = raw_result("exp0", 0, 4, 2_000);
    assert_eq!(
        store.persist(&accepted(0, 0), Some(&resent)).unwrap(),
        Persisted::AlreadyCommitted {
            disposition: Disposition::Accepted
        }
    );
    assert_eq!(store.records().unwrap().len(), 3, "nothing appended");
    let sweep = store.sweep(SweepId(0)).unwrap().unwrap();
    let results = store.accepted_results(&sweep).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].raw.wall_ns, 1_000, "the first body stays");
}

#[test]
fn a_stale_epoch_result_is_stored_superseded_and_never_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), WAIT).unwrap();
    store
        .persist(&Record::SweepCreated(sweep_created(1, 1)), None)
        .unwrap();
    // Attempt 0 (epoch 1) was lost and the job re-leased as attempt 1 (epoch 2).
    store.persist(&started(0, 0, 1), None).unwrap();
    store
        .persist(
            &Record::AttemptEnded {
                attempt: AttemptId(0),
                job: JobId(0),
                end: AttemptEnd::Lost {
                    reason: "agent lost".into(),
                },
                fence_ms: None,
            },
            None,
        )
        .unwrap();
    store.persist(&started(1, 0, 2), None).unwrap();
    let stale = raw_result("exp0", 0, 4, 111);
    store
        .persist(
            &Record::ResultSuperseded {
                attempt: AttemptId(0),
                job: JobId(0),
                epoch: Epoch(1),
            },
            Some(&stale),
        )
        .unwrap();
    let sweep = store.sweep(SweepId(0)).unwrap().unwrap();
    assert!(store.accepted_results(&sweep).unwrap().is_empty());
    let kept = store.result(AttemptId(0)).unwrap().unwrap();
    assert_eq!(kept.disposition, Disposition::Superseded);
    assert_eq!(kept.epoch, Epoch(1));

    let live = raw_result("exp0", 0, 4, 222);
    store.persist(&accepted(1, 0), Some(&live)).unwrap();
    let results = store.accepted_results(&sweep).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].attempt, AttemptId(1));
    assert_eq!(results[0].raw.wall_ns, 222);
    // Aggregation's input holds the live attempt only, whatever key sorts first.
    assert_eq!(
        store.accepted_attempt(JobId(0)).unwrap(),
        Some(AttemptId(1))
    );
}

#[test]
fn a_second_accepted_attempt_for_one_job_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), WAIT).unwrap();
    store
        .persist(&Record::SweepCreated(sweep_created(1, 1)), None)
        .unwrap();
    store.persist(&started(0, 0, 1), None).unwrap();
    store.persist(&started(1, 0, 2), None).unwrap();
    let body = raw_result("exp0", 0, 4, 1_000);
    store.persist(&accepted(0, 0), Some(&body)).unwrap();
    let before = store.records().unwrap().len();
    let err = store.persist(&accepted(1, 0), Some(&body)).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::AcceptedTwice {
                job: JobId(0),
                accepted: AttemptId(0),
                attempt: AttemptId(1)
            }
        ),
        "{err}"
    );
    assert_eq!(store.records().unwrap().len(), before);
    assert_eq!(store.result(AttemptId(1)).unwrap(), None);
}

#[test]
fn result_records_need_a_body_and_a_started_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), WAIT).unwrap();
    store
        .persist(&Record::SweepCreated(sweep_created(1, 1)), None)
        .unwrap();
    let err = store.persist(&accepted(0, 0), None).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::MissingResultBody {
                record: "ResultAccepted",
                attempt: AttemptId(0)
            }
        ),
        "{err}"
    );
    let body = raw_result("exp0", 0, 4, 1_000);
    let err = store.persist(&accepted(7, 0), Some(&body)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ResultAccepted names attempt-7, which the store has no AttemptStarted record for"
    );
    assert_eq!(store.records().unwrap().len(), 1);
}

#[test]
fn a_second_record_for_an_existing_sweep_or_attempt_is_refused_so_the_log_still_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), WAIT).unwrap();
    store
        .persist(&Record::SweepCreated(sweep_created(1, 2)), None)
        .unwrap();
    store.persist(&started(0, 0, 1), None).unwrap();
    let ended = Record::AttemptEnded {
        attempt: AttemptId(0),
        job: JobId(0),
        end: AttemptEnd::Cancelled,
        fence_ms: None,
    };
    store.persist(&ended, None).unwrap();
    // What a second scheduler minting the same ids would write.
    let err = store
        .persist(&Record::SweepCreated(sweep_created(1, 2)), None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "SweepCreated: sweep-0 already exists in the store; refusing a second record for it (is another scheduler writing this store?)"
    );
    let err = store.persist(&started(0, 1, 1), None).unwrap_err();
    assert!(
        matches!(&err, StoreError::IdReused { record: "AttemptStarted", id } if id == "attempt-0"),
        "{err}"
    );
    let err = store.persist(&ended, None).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::AttemptAlreadyEnded {
                attempt: AttemptId(0)
            }
        ),
        "{err}"
    );
    // Nothing was appended, and the log replays.
    let records = store.records().unwrap();
    assert_eq!(records.len(), 3);
    Scheduler::recover(SchedulerConfig::default(), records, TimeMs(0)).unwrap();
    // The refused AttemptStarted left the first attempt's row as it was.
    assert_eq!(store.attempt(AttemptId(0)).unwrap().unwrap().job, JobId(0));
}
