//! Every CLI message (`lem-cli/1`) survives encode → frame → decode unchanged, and the
//! read-only split a viewer is held to is the one the coordinator enforces.

mod wire_strategies;

use lem_common::wire::cli::*;
use lem_common::wire::{decode_frame, encode_frame, Decoded, MAX_FRAME_BYTES};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use wire_strategies::{json, raw_result, text};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Clone + Debug>(message: &T) {
    let frame = encode_frame(message, MAX_FRAME_BYTES).unwrap();
    let decoded = decode_frame::<T>(&frame, MAX_FRAME_BYTES).unwrap();
    assert_eq!(
        decoded,
        Decoded::Frame {
            message: message.clone(),
            frame_bytes: frame.len()
        }
    );
}

fn needs() -> impl Strategy<Value = DeviceNeeds> {
    prop_oneof![
        Just(DeviceNeeds::CpuPackages),
        (any::<u32>(), of(text())).prop_map(|(count, model)| DeviceNeeds::Gpus { count, model }),
        (text(), any::<bool>(), of(text())).prop_map(|(profile, exclusive_parent, model)| {
            DeviceNeeds::MigSlice {
                profile,
                exclusive_parent,
                model,
            }
        }),
    ]
}

prop_compose! {
    fn submission()(
        idempotency_token in text(), name in text(), cycles in any::<u32>(),
        pin_device_model in any::<bool>(),
        experiments in vec((text(), json(), needs()), 0..4),
    ) -> SweepSubmission {
        SweepSubmission {
            idempotency_token, name, cycles, pin_device_model,
            experiments: experiments.into_iter()
                .map(|(name, config, needs)| ExperimentSubmission { name, config, needs })
                .collect(),
        }
    }
}

prop_compose! {
    fn record_selection()(
        id_prefixes in vec(text(), 0..3), sweep in of(text()), without_aggregates in any::<bool>(),
    ) -> RecordSelection {
        RecordSelection { id_prefixes, sweep, without_aggregates }
    }
}

fn request() -> impl Strategy<Value = CliRequest> {
    prop_oneof![
        submission().prop_map(CliRequest::SubmitSweep),
        Just(CliRequest::ListSweeps),
        any::<u64>().prop_map(|sweep| CliRequest::ShowSweep { sweep }),
        any::<u64>().prop_map(|sweep| CliRequest::CancelSweep { sweep }),
        any::<u64>().prop_map(|sweep| CliRequest::ResumeSweep { sweep }),
        Just(CliRequest::Status),
        Just(CliRequest::ListAgents),
        text().prop_map(|agent| CliRequest::DrainAgent { agent }),
        Just(CliRequest::ListResults),
        text().prop_map(|id| CliRequest::ShowResult { id }),
        (any::<u64>(), of(vec(text(), 0..3)))
            .prop_map(|(sweep, experiments)| CliRequest::AggregateSweep { sweep, experiments }),
        (of(text()), record_selection())
            .prop_map(|(after, select)| CliRequest::ResultRecords { after, select }),
        (text(), of(any::<u32>()))
            .prop_map(|(id, after_cycle)| CliRequest::AcceptedResults { id, after_cycle }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(ttl_ms, uses)| CliRequest::CreateJoinToken { ttl_ms, uses }),
        Just(CliRequest::ListJoinTokens),
        text().prop_map(|id| CliRequest::RevokeJoinToken { id }),
    ]
}

prop_compose! {
    fn aggregated_experiment()(id in text(), cycles in any::<u32>(), complete in any::<bool>())
        -> AggregatedExperiment {
        AggregatedExperiment { id, cycles, complete }
    }
}

prop_compose! {
    fn join_token_summary()(
        id in text(), created_unix_ms in of(any::<u64>()), expires_unix_ms in any::<u64>(),
        uses in any::<u32>(), max_uses in any::<u32>(), state in text(),
        revoked_unix_ms in of(any::<u64>()),
    ) -> JoinTokenSummary {
        JoinTokenSummary {
            id, created_unix_ms, expires_unix_ms, uses, max_uses, state, revoked_unix_ms,
        }
    }
}

prop_compose! {
    fn progress()(p in any::<[u64; 5]>()) -> SweepProgress {
        SweepProgress { pending: p[0], leased: p[1], accepted: p[2], failed: p[3], cancelled: p[4] }
    }
}

prop_compose! {
    fn sweep_summary()(sweep in any::<u64>(), name in text(), progress in progress()) -> SweepSummary {
        SweepSummary { sweep, name, progress }
    }
}

prop_compose! {
    fn job_summary()(
        job in any::<u64>(), experiment_name in text(), cycle in any::<u32>(),
        status in text(), errors in vec(text(), 0..3), pending_reason in of(text()),
    ) -> JobSummary {
        JobSummary { job, experiment_name, cycle, status, errors, pending_reason }
    }
}

prop_compose! {
    fn agent_summary()(
        id in text(), alive in any::<bool>(), draining in any::<bool>(),
        gpus in vec((text(), text(), vec(text(), 0..3)), 0..3),
        cpu_packages in vec(text(), 0..3),
    ) -> AgentSummary {
        AgentSummary {
            id, alive, draining, cpu_packages,
            gpus: gpus.into_iter()
                .map(|(key, model, mig_slices)| GpuSummary { key, model, mig_slices })
                .collect(),
        }
    }
}

prop_compose! {
    fn lease_summary()(
        attempt in any::<u64>(), job in any::<u64>(), agent in text(),
        devices in vec(text(), 0..3), reclaimed in any::<bool>(),
    ) -> LeaseSummary {
        LeaseSummary { attempt, job, agent, devices, reclaimed }
    }
}

prop_compose! {
    fn result_summary()(
        id in text(), sweep in any::<u64>(), experiment_name in text(), model in text(),
        cycles_accepted in any::<u64>(), cycles_total in any::<u64>(), status in text(),
    ) -> ResultSummary {
        ResultSummary { id, sweep, experiment_name, model, cycles_accepted, cycles_total, status }
    }
}

prop_compose! {
    fn result_experiment()(
        names in vec(text(), 5), config in json(), cycles_planned in any::<u32>(),
        error in of(text()), aggregate in of(json()), cycles_accepted in of(any::<u32>()),
    ) -> ResultExperiment {
        let [id, config_name, model_name, status, created_at]: [String; 5] =
            names.try_into().unwrap();
        ResultExperiment {
            origin: format!("sweep `{id}`"),
            id, config_name, model_name, config, cycles_planned, status, error, created_at,
            aggregate, cycles_accepted,
        }
    }
}

fn reply() -> impl Strategy<Value = CliReply> {
    prop_oneof![
        (any::<u64>(), any::<bool>(), any::<u64>()).prop_map(|(sweep, created, jobs)| {
            CliReply::SweepSubmitted {
                sweep,
                created,
                jobs,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(sweep, jobs_cancelled)| {
            CliReply::SweepCancelled {
                sweep,
                jobs_cancelled,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(sweep, jobs_requeued)| {
            CliReply::SweepResumed {
                sweep,
                jobs_requeued,
            }
        }),
        text().prop_map(|agent| CliReply::AgentDraining { agent }),
        vec(sweep_summary(), 0..3).prop_map(CliReply::Sweeps),
        (sweep_summary(), vec(job_summary(), 0..4))
            .prop_map(|(summary, jobs)| CliReply::Sweep(SweepDetail { summary, jobs })),
        (
            vec(agent_summary(), 0..3),
            vec(lease_summary(), 0..3),
            any::<u64>(),
            vec(sweep_summary(), 0..3),
            vec(text(), 0..3),
        )
            .prop_map(|(agents, leases, queued_jobs, sweeps, waiting)| {
                CliReply::Status(StatusSnapshot {
                    agents,
                    leases,
                    queued_jobs,
                    sweeps,
                    waiting,
                })
            }),
        vec(agent_summary(), 0..3).prop_map(CliReply::Agents),
        vec(result_summary(), 0..3).prop_map(CliReply::Results),
        (text(), json(), of(json())).prop_map(|(id, aggregate, model_info)| {
            CliReply::Aggregate {
                id,
                aggregate,
                model_info,
            }
        }),
        (
            any::<u64>(),
            vec(text(), 0..3),
            vec(aggregated_experiment(), 0..3)
        )
            .prop_map(|(sweep, ids, experiments)| CliReply::Aggregated {
                sweep,
                ids,
                experiments
            }),
        (text(), any::<u64>(), any::<u32>()).prop_map(|(token, expires_unix_ms, uses)| {
            CliReply::JoinToken {
                token,
                expires_unix_ms,
                uses,
            }
        }),
        vec(join_token_summary(), 0..3).prop_map(CliReply::JoinTokens),
        (text(), any::<u64>(), any::<bool>()).prop_map(|(id, revoked_unix_ms, newly_revoked)| {
            CliReply::JoinTokenRevoked {
                id,
                revoked_unix_ms,
                newly_revoked,
            }
        }),
        text().prop_map(|reason| CliReply::Refused { reason }),
        (vec(result_experiment(), 0..3), any::<bool>())
            .prop_map(|(experiments, more)| CliReply::ResultRecords { experiments, more }),
        (text(), vec(raw_result(), 0..2), any::<bool>())
            .prop_map(|(id, results, more)| CliReply::AcceptedResults { id, results, more }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn cli_requests_round_trip(message in request()) {
        round_trip(&message);
    }

    #[test]
    fn cli_replies_round_trip(message in reply()) {
        round_trip(&message);
    }
}

#[test]
fn only_requests_that_change_nothing_are_read_only() {
    let writes = [
        CliRequest::SubmitSweep(SweepSubmission {
            idempotency_token: "t".into(),
            name: "n".into(),
            experiments: vec![],
            cycles: 1,
            pin_device_model: true,
        }),
        CliRequest::CancelSweep { sweep: 0 },
        CliRequest::ResumeSweep { sweep: 0 },
        CliRequest::DrainAgent { agent: "a".into() },
        CliRequest::AggregateSweep {
            sweep: 0,
            experiments: None,
        },
        CliRequest::CreateJoinToken { ttl_ms: 1, uses: 1 },
        CliRequest::RevokeJoinToken { id: "abcd".into() },
    ];
    let reads = [
        CliRequest::ListSweeps,
        CliRequest::ShowSweep { sweep: 0 },
        CliRequest::Status,
        CliRequest::ListAgents,
        CliRequest::ListResults,
        CliRequest::ShowResult { id: "x".into() },
        CliRequest::ResultRecords {
            after: None,
            select: RecordSelection::default(),
        },
        CliRequest::AcceptedResults {
            id: "x".into(),
            after_cycle: Some(1),
        },
        CliRequest::ListJoinTokens,
    ];
    for w in &writes {
        assert!(!w.is_read_only(), "{} passes as read-only", w.name());
    }
    for r in &reads {
        assert!(r.is_read_only(), "{} is refused to viewers", r.name());
    }
}

/// A peer built before join tokens had a use count sends no `uses`: it gets what it
/// meant, a single-use token.
#[test]
fn a_token_request_without_uses_asks_for_one() {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum OlderRequest {
        CreateJoinToken { ttl_ms: u64 },
    }
    let bytes = rmp_serde::to_vec_named(&OlderRequest::CreateJoinToken { ttl_ms: 900 }).unwrap();
    let decoded: CliRequest = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(
        decoded,
        CliRequest::CreateJoinToken {
            ttl_ms: 900,
            uses: 1
        }
    );
}

/// A CLI built before record selections sends `ResultRecords { after }` alone: it asks
/// for every experiment with its aggregate, as it did. A coordinator built before them
/// reads a selecting request as that same request (it ignores `select`), so a newer CLI
/// still gets every record it needs and selects among them itself.
#[test]
fn a_record_request_without_a_selection_asks_for_every_experiment() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum OlderRequest {
        ResultRecords { after: Option<String> },
    }
    let older = OlderRequest::ResultRecords {
        after: Some("sweep-0/a".into()),
    };
    let decoded: CliRequest =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&older).unwrap()).unwrap();
    assert_eq!(
        decoded,
        CliRequest::ResultRecords {
            after: Some("sweep-0/a".into()),
            select: RecordSelection::default(),
        }
    );
    let newer = CliRequest::ResultRecords {
        after: None,
        select: RecordSelection {
            id_prefixes: vec!["sweep-0/c".into()],
            sweep: Some("c".into()),
            without_aggregates: true,
        },
    };
    let read_by_older: OlderRequest =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&newer).unwrap()).unwrap();
    assert_eq!(read_by_older, OlderRequest::ResultRecords { after: None });
}

/// A record from a coordinator built before it counted accepted cycles has no count:
/// unknown (`None`), never zero.
#[test]
fn a_record_without_an_accepted_count_reads_as_unknown() {
    let record = serde_json::json!({
        "id": "sweep-0/a", "config_name": "a", "model_name": "m", "config": {},
        "cycles_planned": 3, "status": "completed", "error": null,
        "created_at": "2026-01-01T00:00:00Z", "origin": "sweep `s` (sweep-0)",
        "aggregate": null,
    });
    let bytes = rmp_serde::to_vec_named(&record).unwrap();
    let decoded: ResultExperiment = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(decoded.cycles_accepted, None);
    assert_eq!(decoded.cycles_planned, 3);
}

/// A CLI built before `AggregateSweep` took experiments asks for the whole sweep; a
/// coordinator built before `Aggregated` listed what each aggregate covers sends none.
#[test]
fn an_older_aggregate_request_and_reply_read_as_the_whole_sweep() {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum OlderRequest {
        AggregateSweep { sweep: u64 },
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum OlderReply {
        Aggregated { sweep: u64, ids: Vec<String> },
    }
    let bytes = rmp_serde::to_vec_named(&OlderRequest::AggregateSweep { sweep: 4 }).unwrap();
    let decoded: CliRequest = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(
        decoded,
        CliRequest::AggregateSweep {
            sweep: 4,
            experiments: None
        }
    );
    let bytes = rmp_serde::to_vec_named(&OlderReply::Aggregated {
        sweep: 4,
        ids: vec!["sweep-4/a".into()],
    })
    .unwrap();
    let decoded: CliReply = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(
        decoded,
        CliReply::Aggregated {
            sweep: 4,
            ids: vec!["sweep-4/a".into()],
            experiments: vec![]
        }
    );
}
