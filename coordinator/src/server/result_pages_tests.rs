//! Pages of experiment records and accepted results, from a store whose log holds a
//! superseded result, a re-leased job and a failed job.

use super::*;
use crate::scheduler::{
    AgentId, AttemptEnd, AttemptId, Claim, ClaimMode, DeviceKey, DeviceNeeds, Epoch,
    ExperimentSubmission, JobId, JobRecord, Placement, Record, SchedulerConfig, SweepCreated,
    TimeMs,
};
use crate::test_fixtures::raw_result;
use lem_common::domain::job_key;
use std::time::Duration;

const NO_LIMIT: usize = usize::MAX;
/// What a peer that sends no selection asks for: every experiment with its aggregate.
const EVERY: RecordSelection = RecordSelection {
    id_prefixes: Vec::new(),
    sweep: None,
    without_aggregates: false,
};

fn started(attempt: u64, job: u64, epoch: u64) -> Record {
    Record::AttemptStarted {
        attempt: AttemptId(attempt),
        job: JobId(job),
        epoch: Epoch(epoch),
        placement: Placement {
            agent: AgentId("node-a".into()),
            devices: vec![DeviceKey("gpu:GPU-1".into())],
            claims: vec![Claim {
                key: DeviceKey("gpu:GPU-1".into()),
                mode: ClaimMode::Exclusive,
            }],
            device_model: None,
        },
    }
}

/// Sweep 0: `alpha` (jobs 0, 1) and `beta` (jobs 2, 3), two cycles each. Job 0's first
/// attempt was lost and its late result superseded; job 2 failed. Returns the accepted
/// bodies of alpha's cycles, in cycle order.
fn fixture(store: &Store) -> (Scheduler, Vec<RawResult>) {
    let experiments: Vec<ExperimentSubmission> = ["alpha", "beta"]
        .iter()
        .enumerate()
        .map(|(i, name)| ExperimentSubmission {
            name: (*name).into(),
            config: serde_json::json!({ "model_name": format!("model-{i}"), "i": i }),
            needs: DeviceNeeds::CpuPackages,
        })
        .collect();
    let jobs = (0..4u64)
        .map(|job| JobRecord {
            job: JobId(job),
            experiment: (job / 2) as u32,
            cycle: (job % 2) as u32,
            key: job_key(&experiments[(job / 2) as usize].config, (job % 2) as u32),
        })
        .collect();
    let created = SweepCreated {
        sweep: SweepId(0),
        idempotency_token: "tok".into(),
        submission_fingerprint: "fp".into(),
        name: "pages".into(),
        pin_device_model: true,
        experiments,
        jobs,
    };
    let mut stale = raw_result("alpha", 0, 4, 111);
    stale.started_at = "2026-01-01T00:00:00.000Z".into();
    let mut cycle0 = raw_result("alpha", 0, 4, 222);
    cycle0.started_at = "2026-01-01T00:01:00.000Z".into();
    let mut cycle1 = raw_result("alpha", 1, 4, 333);
    cycle1.started_at = "2026-01-01T00:02:00.000Z".into();
    let beta1 = raw_result("beta", 1, 4, 444);
    let log: Vec<(Record, Option<&RawResult>)> = vec![
        (Record::SweepCreated(created), None),
        (started(0, 0, 1), None),
        (
            Record::AttemptEnded {
                attempt: AttemptId(0),
                job: JobId(0),
                end: AttemptEnd::Lost {
                    reason: "agent lost".into(),
                },
                fence_ms: None,
            },
            None,
        ),
        (started(1, 0, 2), None),
        (
            Record::ResultAccepted {
                attempt: AttemptId(1),
                job: JobId(0),
            },
            Some(&cycle0),
        ),
        (
            Record::ResultSuperseded {
                attempt: AttemptId(0),
                job: JobId(0),
                epoch: Epoch(1),
            },
            Some(&stale),
        ),
        (started(2, 1, 1), None),
        (
            Record::ResultAccepted {
                attempt: AttemptId(2),
                job: JobId(1),
            },
            Some(&cycle1),
        ),
        (started(3, 2, 1), None),
        (
            Record::AttemptEnded {
                attempt: AttemptId(3),
                job: JobId(2),
                end: AttemptEnd::Failed {
                    error: "model file truncated".into(),
                },
                fence_ms: None,
            },
            None,
        ),
        (
            Record::JobFailed {
                job: JobId(2),
                errors: vec!["failed: model file truncated".into()],
            },
            None,
        ),
        (started(4, 3, 1), None),
        (
            Record::ResultAccepted {
                attempt: AttemptId(4),
                job: JobId(3),
            },
            Some(&beta1),
        ),
    ];
    for (record, body) in &log {
        store.persist(record, *body).unwrap();
    }
    let scheduler = Scheduler::recover(
        SchedulerConfig::default(),
        store.records().unwrap(),
        TimeMs(0),
    )
    .unwrap();
    (scheduler, vec![cycle0, cycle1])
}

fn results(reply: CliReply) -> (Vec<RawResult>, bool) {
    match reply {
        CliReply::AcceptedResults { results, more, .. } => (results, more),
        other => panic!("not a page of results: {other:?}"),
    }
}

fn experiments(reply: CliReply) -> (Vec<ResultExperiment>, bool) {
    match reply {
        CliReply::ResultRecords { experiments, more } => (experiments, more),
        other => panic!("not a page of records: {other:?}"),
    }
}

#[test]
fn only_accepted_results_are_sent_never_a_superseded_one_and_pages_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
    let (scheduler, accepted) = fixture(&store);
    let with_id = |mut r: RawResult| {
        r.experiment_id = "sweep-0/alpha".into();
        r
    };
    let expected: Vec<RawResult> = accepted.into_iter().map(with_id).collect();

    let (all, more) =
        results(accepted_page(&scheduler, &store, "sweep-0/alpha", None, NO_LIMIT).unwrap());
    assert!(!more);
    assert_eq!(all, expected);
    assert!(
        all.iter().all(|r| r.wall_ns != 111),
        "the superseded result was sent"
    );

    // A budget of one byte: one result a page, resumed after the last cycle sent.
    let (first, more) =
        results(accepted_page(&scheduler, &store, "sweep-0/alpha", None, 1).unwrap());
    assert!(more);
    assert_eq!(first, expected[..1]);
    let (second, more) =
        results(accepted_page(&scheduler, &store, "sweep-0/alpha", Some(0), 1).unwrap());
    assert!(!more);
    assert_eq!(second, expected[1..]);

    let unknown = accepted_page(&scheduler, &store, "sweep-0/gamma", None, NO_LIMIT).unwrap_err();
    assert!(
        matches!(&unknown, PageError::UnknownExperiment { id } if id == "sweep-0/gamma"),
        "{unknown}"
    );
}

#[test]
fn records_say_what_each_experiment_ran_and_how_it_ended_and_pages_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
    let (scheduler, accepted) = fixture(&store);
    store
        .put_aggregate("sweep-0/alpha", &serde_json::json!({ "cycles": 2 }))
        .unwrap();

    let (all, more) =
        experiments(experiment_page(&scheduler, &store, None, &EVERY, NO_LIMIT).unwrap());
    assert!(!more);
    let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["sweep-0/alpha", "sweep-0/beta"]);
    let (alpha, beta) = (&all[0], &all[1]);
    assert_eq!(alpha.config_name, "alpha");
    assert_eq!(alpha.model_name, "model-0");
    assert_eq!(alpha.config["i"], 0);
    assert_eq!(alpha.cycles_planned, 2);
    assert_eq!(alpha.status, "completed");
    assert_eq!(alpha.error, None);
    // The first accepted cycle's start; the superseded attempt started earlier.
    assert_eq!(alpha.created_at, accepted[0].started_at);
    assert_eq!(alpha.aggregate, Some(serde_json::json!({ "cycles": 2 })));
    assert_eq!(alpha.origin, "sweep `pages` (sweep-0)");
    // Both cycles accepted (the superseded attempt is not counted twice).
    assert_eq!(alpha.cycles_accepted, Some(2));
    // Cycle 0 failed, cycle 1 accepted.
    assert_eq!(beta.cycles_accepted, Some(1));
    assert_eq!(beta.status, "failed");
    let why = beta.error.as_deref().unwrap();
    assert!(
        why.starts_with("1 of 2 cycles failed; cycle 1: ") && why.contains("model file truncated"),
        "{why}"
    );
    assert_eq!(beta.aggregate, None);

    let (first, more) = experiments(experiment_page(&scheduler, &store, None, &EVERY, 1).unwrap());
    assert!(more);
    assert_eq!(first, all[..1]);
    let (rest, more) =
        experiments(experiment_page(&scheduler, &store, Some("sweep-0/alpha"), &EVERY, 1).unwrap());
    assert!(!more);
    assert_eq!(rest, all[1..]);
}

/// Sweep 0 named `grid`: experiments `e000`…, one job each and none run, every one with
/// a stored aggregate naming it.
fn many(store: &Store, n: usize) -> Scheduler {
    let experiments: Vec<ExperimentSubmission> = (0..n)
        .map(|i| ExperimentSubmission {
            name: format!("e{i:03}"),
            config: serde_json::json!({ "model_name": "m", "i": i }),
            needs: DeviceNeeds::CpuPackages,
        })
        .collect();
    let jobs = (0..n)
        .map(|i| JobRecord {
            job: JobId(i as u64),
            experiment: i as u32,
            cycle: 0,
            key: job_key(&experiments[i].config, 0),
        })
        .collect();
    let created = SweepCreated {
        sweep: SweepId(0),
        idempotency_token: "tok".into(),
        submission_fingerprint: "fp".into(),
        name: "grid".into(),
        pin_device_model: true,
        experiments,
        jobs,
    };
    store.persist(&Record::SweepCreated(created), None).unwrap();
    for i in 0..n {
        let id = format!("sweep-0/e{i:03}");
        store
            .put_aggregate(&id, &serde_json::json!({ "of": id }))
            .unwrap();
    }
    Scheduler::recover(
        SchedulerConfig::default(),
        store.records().unwrap(),
        TimeMs(0),
    )
    .unwrap()
}

#[test]
fn a_selection_pages_back_only_the_experiments_it_names() {
    const N: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
    let scheduler = many(&store, N);
    let page = |select: &RecordSelection| {
        let (records, more) =
            experiments(experiment_page(&scheduler, &store, None, select, NO_LIMIT).unwrap());
        assert!(!more, "one page holds them all");
        records
    };
    let ids = |records: &[ResultExperiment]| -> Vec<String> {
        records.iter().map(|r| r.id.clone()).collect()
    };
    assert_eq!(page(&EVERY).len(), N);

    // One id of N: that record alone, with its aggregate.
    let one = page(&RecordSelection {
        id_prefixes: vec!["sweep-0/e007".into()],
        ..EVERY
    });
    assert_eq!(ids(&one), ["sweep-0/e007"]);
    assert_eq!(
        one[0].aggregate,
        Some(serde_json::json!({ "of": "sweep-0/e007" }))
    );
    // A prefix takes every id it starts: e010…e019, so the CLI can tell it is ambiguous.
    let expected: Vec<String> = (10..20).map(|i| format!("sweep-0/e{i:03}")).collect();
    let by_prefix = page(&RecordSelection {
        id_prefixes: vec!["sweep-0/e01".into()],
        ..EVERY
    });
    assert_eq!(ids(&by_prefix), expected);
    // A config-name sweep: the base name alone here (no `e003__…` points).
    let sweep = page(&RecordSelection {
        sweep: Some("e003".into()),
        ..EVERY
    });
    assert_eq!(ids(&sweep), ["sweep-0/e003"]);
    // No such experiment: an empty page, not an error (the CLI names what is missing).
    assert!(page(&RecordSelection {
        id_prefixes: vec!["sweep-9/".into()],
        ..EVERY
    })
    .is_empty());
    // Records without their aggregates, for `results list`.
    let bare = page(&RecordSelection {
        without_aggregates: true,
        ..EVERY
    });
    assert_eq!(bare.len(), N);
    assert!(bare.iter().all(|r| r.aggregate.is_none()));
    assert!(bare.iter().all(|r| r.cycles_accepted == Some(0)));

    // Paging a selection resumes within it: one record a page, only the selected ones.
    let select = RecordSelection {
        id_prefixes: vec!["sweep-0/e02".into()],
        ..EVERY
    };
    let mut after: Option<String> = None;
    let mut paged = Vec::new();
    for _ in 0..N {
        let (records, more) =
            experiments(experiment_page(&scheduler, &store, after.as_deref(), &select, 1).unwrap());
        assert_eq!(records.len(), 1);
        after = Some(records[0].id.clone());
        paged.extend(records);
        if !more {
            break;
        }
    }
    let expected: Vec<String> = (20..N).map(|i| format!("sweep-0/e{i:03}")).collect();
    assert_eq!(ids(&paged), expected);
}
