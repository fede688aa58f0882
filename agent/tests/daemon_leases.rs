//! Lease lifetime on the real `lem-agent`: a lease not renewed before its TTL is stopped
//! (it is no longer ours: no outcome is sent), renewals keep a run going, a Cancel stops
//! its run, after Drain new leases are rejected, an unreadable config is a spooled
//! failure, and leases on different GPUs both run, each metering its own GPU.

mod daemon_support;

use daemon_support::*;
use lem_common::wire::{AgentMessage, AttemptRef, CoordinatorMessage, HeldAttempt};
use std::time::Duration;

fn is_hello(m: &AgentMessage) -> bool {
    matches!(m, AgentMessage::Hello { .. })
}

fn holding(attempt: u64, epoch: u64) -> impl Fn(&AgentMessage) -> bool {
    move |m| matches!(m, AgentMessage::Heartbeat { held } if held == &vec![HeldAttempt { attempt, epoch, running: true }])
}

fn holding_nothing(m: &AgentMessage) -> bool {
    matches!(m, AgentMessage::Heartbeat { held } if held.is_empty())
}

/// Messages until a heartbeat holding nothing; none of them may be an outcome.
async fn until_idle_without_outcome(session: &mut lem_net::AcceptedSession) {
    let m = next_matching(session, WAIT, "an idle heartbeat", |m| {
        holding_nothing(m)
            || matches!(
                m,
                AgentMessage::AttemptResult { .. } | AgentMessage::AttemptFailed { .. }
            )
    })
    .await;
    assert!(
        holding_nothing(&m),
        "an outcome of a stopped run was sent: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrenewed_leases_stop_cancel_stops_and_drain_refuses_new_work() {
    let node = Node::new();
    let long_run = node.config("num_input_prompts: 500\nmax_output_tokens: 64\n");
    let mut coordinator = Coordinator::start();
    let _agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;
    let gpu_a = format!("gpu:{GPU_A}");

    // Renewed: still running after several of its (short) TTLs.
    let mut renewed = lease(21, 1, &gpu_a, long_run.clone());
    renewed.ttl_ms = 3_000;
    send(&mut session, &CoordinatorMessage::Lease(renewed)).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        next_matching(
            &mut session,
            WAIT,
            "a heartbeat holding the renewed run",
            holding(21, 1),
        )
        .await;
        let renew = CoordinatorMessage::Renew {
            attempts: vec![AttemptRef {
                attempt: 21,
                epoch: 1,
            }],
            ttl_ms: 3_000,
        };
        send(&mut session, &renew).await;
    }
    assert_eq!(node.running_markers(), vec!["21-1"]);

    // Not renewed any more: stopped once its TTL passes, nothing sent for it.
    until_idle_without_outcome(&mut session).await;
    eventually(WAIT, "the expired run's marker removed", || {
        node.running_markers().is_empty()
    })
    .await;
    assert!(node.spool_files().is_empty());

    // Cancelled: stopped, nothing sent.
    send(
        &mut session,
        &CoordinatorMessage::Lease(lease(22, 1, &gpu_a, long_run.clone())),
    )
    .await;
    next_matching(
        &mut session,
        WAIT,
        "a heartbeat holding the run",
        holding(22, 1),
    )
    .await;
    send(
        &mut session,
        &CoordinatorMessage::Cancel {
            attempt: AttemptRef {
                attempt: 22,
                epoch: 1,
            },
        },
    )
    .await;
    until_idle_without_outcome(&mut session).await;
    assert!(node.spool_files().is_empty());

    // Drained: a new lease is rejected, saying so.
    send(&mut session, &CoordinatorMessage::Drain).await;
    send(
        &mut session,
        &CoordinatorMessage::Lease(lease(23, 1, &gpu_a, long_run)),
    )
    .await;
    let m = next_matching(&mut session, WAIT, "LeaseRejected", |m| {
        matches!(m, AgentMessage::LeaseRejected { .. })
    })
    .await;
    let AgentMessage::LeaseRejected { attempt, reason } = m else {
        unreachable!()
    };
    assert_eq!(
        attempt,
        AttemptRef {
            attempt: 23,
            epoch: 1
        }
    );
    assert!(reason.contains("draining"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_renewed_while_disconnected_is_stopped() {
    let node = Node::new();
    let long_run = node.config("num_input_prompts: 500\nmax_output_tokens: 64\n");
    let mut coordinator = Coordinator::start();
    let agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;
    let mut grant = lease(31, 1, &format!("gpu:{GPU_A}"), long_run);
    grant.ttl_ms = 3_000;
    send(&mut session, &CoordinatorMessage::Lease(grant)).await;
    next_matching(
        &mut session,
        WAIT,
        "a heartbeat holding the run",
        holding(31, 1),
    )
    .await;

    // The coordinator goes away: no session, no renewal. The run must stop by itself.
    coordinator.server.close();
    drop(session);
    eventually(
        WAIT,
        "the unrenewable run stopped and its marker removed",
        || node.running_markers().is_empty(),
    )
    .await;
    assert!(
        node.spool_files().is_empty(),
        "its outcome is not ours to send"
    );
    assert!(
        agent.log_text().contains("lease expired"),
        "log:\n{}",
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_parse_is_the_attempts_spooled_failure() {
    let node = Node::new();
    let mut coordinator = Coordinator::start();
    let _agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;

    let bad = serde_json::json!({ "config_name": 7 });
    send(
        &mut session,
        &CoordinatorMessage::Lease(lease(41, 2, &format!("gpu:{GPU_B}"), bad)),
    )
    .await;
    let m = next_matching(&mut session, WAIT, "AttemptFailed", |m| {
        matches!(m, AgentMessage::AttemptFailed { .. })
    })
    .await;
    let AgentMessage::AttemptFailed { attempt, error } = m else {
        unreachable!()
    };
    let attempt_ref = AttemptRef {
        attempt: 41,
        epoch: 2,
    };
    assert_eq!(attempt, attempt_ref);
    assert!(error.contains("does not parse"), "{error}");
    assert!(error.starts_with("on node node-a: "), "{error}");
    assert_eq!(
        node.spool_files(),
        vec!["41-2.msgpack"],
        "spooled before sent"
    );
    send(
        &mut session,
        &CoordinatorMessage::Ack {
            attempt: attempt_ref,
            verdict: lem_common::wire::AckVerdict::FailureRecorded,
        },
    )
    .await;
    eventually(WAIT, "spool empty after the Ack", || {
        node.spool_files().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_on_different_gpus_both_run_and_each_meters_its_own() {
    let node = Node::new();
    let quick = node.config("num_input_prompts: 2\nmax_output_tokens: 8\n");
    let mut coordinator = Coordinator::start();
    let agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;

    let on_a = lease(51, 1, &format!("gpu:{GPU_A}"), quick.clone());
    let on_b = lease(52, 1, &format!("gpu:{GPU_B}"), quick);
    send(&mut session, &CoordinatorMessage::Lease(on_a)).await;
    send(&mut session, &CoordinatorMessage::Lease(on_b)).await;

    let mut results = std::collections::BTreeMap::new();
    while results.len() < 2 {
        let m = next_matching(&mut session, RUN_WAIT, "both outcomes", |m| {
            matches!(
                m,
                AgentMessage::AttemptResult { .. }
                    | AgentMessage::AttemptFailed { .. }
                    | AgentMessage::LeaseRejected { .. }
            )
        })
        .await;
        let AgentMessage::AttemptResult { attempt, result } = m else {
            panic!("{m:?}\nlog:\n{}", agent.log_text());
        };
        let gpus: Vec<String> = result
            .energy
            .iter()
            .filter(|r| r.device_id.starts_with("GPU-"))
            .map(|r| r.device_id.clone())
            .collect();
        results.insert(attempt.attempt, gpus);
    }
    assert_eq!(results[&51], vec![GPU_A.to_owned()]);
    assert_eq!(results[&52], vec![GPU_B.to_owned()]);
    let mut spooled = node.spool_files();
    spooled.sort();
    assert_eq!(spooled, vec!["51-1.msgpack", "52-1.msgpack"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_path_missing_on_the_node_fails_the_attempt_naming_node_and_path() {
    let node = Node::new();
    let mut coordinator = Coordinator::start();
    let _agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;

    // A path on the submitting machine that this node does not have.
    let missing = node.dir.path().join("no-such-dir").join("model.gguf");
    let missing = missing.to_str().unwrap();
    let mut config = node.config("num_input_prompts: 1\n");
    config["model_name"] = serde_json::json!(missing);
    send(
        &mut session,
        &CoordinatorMessage::Lease(lease(51, 1, &format!("gpu:{GPU_A}"), config)),
    )
    .await;
    let m = next_matching(&mut session, WAIT, "AttemptFailed", |m| {
        matches!(m, AgentMessage::AttemptFailed { .. })
    })
    .await;
    let AgentMessage::AttemptFailed { error, .. } = m else {
        unreachable!()
    };
    assert!(error.starts_with("on node node-a: "), "{error}");
    assert!(error.contains(missing), "{error}");
    assert!(error.contains("does not exist"), "{error}");
}
