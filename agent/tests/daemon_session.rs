//! The real `lem-agent` against an in-test coordinator on loopback: enrollment, Hello
//! with the simulated node's GPUs, a leased run whose result is spooled before it is
//! sent and resent until acknowledged (across a dropped connection and a kill -9), runs
//! lost to a kill -9, busy and unknown devices, a corrupt spool file, and SIGTERM (a Goodbye only when it holds nothing).

mod daemon_support;

use daemon_support::*;
use lem_agent::daemon::spool::{Spool, SpoolEntry, SpooledOutcome};
use lem_common::wire::{AckVerdict, AgentMessage, AttemptRef, CoordinatorMessage, HeldAttempt};
use lem_net::Role;

/// What the agent sends until it closes the session (bounded by `WAIT`).
async fn messages_until_closed(session: &mut lem_net::AcceptedSession) -> Vec<AgentMessage> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, session.recv.recv::<AgentMessage>()).await {
            Ok(Ok(Some(message))) => got.push(message),
            Ok(_) => return got,
            Err(_) => panic!("the agent kept the session open {WAIT:?} after SIGTERM: {got:?}"),
        }
    }
}

fn is_hello(m: &AgentMessage) -> bool {
    matches!(m, AgentMessage::Hello { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_result_is_spooled_and_resent_until_acknowledged() {
    let node = Node::new();
    let config = node.config("num_input_prompts: 2\nmax_output_tokens: 8\n");
    let mut coordinator = Coordinator::start();
    let mut agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);

    // Enrolled with the token: an agent identity, its credential on disk.
    let mut session = coordinator.session().await;
    assert_eq!(session.peer.role, Role::Agent);
    let AgentMessage::Hello {
        inventory,
        held,
        lost,
    } = next_matching(&mut session, WAIT, "Hello", is_hello).await
    else {
        unreachable!()
    };
    let keys: Vec<&str> = inventory.gpus.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![format!("gpu:{GPU_A}"), format!("gpu:{GPU_B}")],
        "the fake NVML's two GPUs, keyed by UUID"
    );
    assert!(inventory.gpus.iter().all(|g| g.model == GPU_MODEL));
    assert_eq!(inventory.cpu_packages, vec!["rapl:node-a:package-0"]);
    assert!(held.is_empty() && lost.is_empty());
    assert!(
        coordinator
            .book
            .snapshot()
            .iter()
            .all(|t| t.used_at_unix_ms.is_some()),
        "the join token was redeemed"
    );

    // A lease on the second GPU runs and its result arrives, spooled first.
    let grant = lease(7, 3, &format!("gpu:{GPU_B}"), config);
    let attempt = grant.attempt;
    send(&mut session, &CoordinatorMessage::Lease(grant.clone())).await;
    let first = next_matching(&mut session, RUN_WAIT, "the attempt's result", |m| {
        matches!(
            m,
            AgentMessage::AttemptResult { .. } | AgentMessage::AttemptFailed { .. }
        )
    })
    .await;
    let AgentMessage::AttemptResult {
        attempt: got,
        result,
    } = first
    else {
        panic!("the run failed: {first:?}\nlog:\n{}", agent.log_text());
    };
    assert_eq!(got, attempt);
    assert_eq!(result.job_key, grant.job_key);
    assert_eq!(result.experiment_id, grant.experiment_name);
    assert_eq!(result.requests.len(), 2, "num_input_prompts: 2");
    // The lease's device was the one metered: GPU B, not GPU A.
    let gpu_ids: Vec<&str> = result
        .energy
        .iter()
        .filter(|r| r.device_id.starts_with("GPU-"))
        .map(|r| r.device_id.as_str())
        .collect();
    assert_eq!(gpu_ids, vec![GPU_B], "readings: {:?}", result.energy);
    assert_eq!(
        node.spool_files(),
        vec!["7-3.msgpack"],
        "spooled, not acknowledged"
    );
    assert!(node.running_markers().is_empty(), "the run is over");

    // The stub withholds the Ack and drops the connection: the agent reconnects,
    // announces the attempt as held (finished) and resends the same result.
    session.connection.close(9, "test drops the connection");
    let mut session = coordinator.session().await;
    let AgentMessage::Hello { held, lost, .. } =
        next_matching(&mut session, WAIT, "Hello after reconnect", is_hello).await
    else {
        unreachable!()
    };
    let finished = HeldAttempt {
        attempt: 7,
        epoch: 3,
        running: false,
    };
    assert_eq!(held, vec![finished]);
    assert!(lost.is_empty());
    let resent = next_matching(&mut session, WAIT, "the resent result", |m| {
        matches!(m, AgentMessage::AttemptResult { .. })
    })
    .await;
    assert_eq!(
        resent,
        AgentMessage::AttemptResult {
            attempt,
            result: result.clone()
        }
    );

    // kill -9 before the Ack: the restarted agent (no token now) resends it, same body.
    agent.kill_9();
    drop(session);
    let mut agent = node.spawn(&coordinator.target, None, 2);
    let mut session = coordinator.session().await;
    let AgentMessage::Hello { held, lost, .. } =
        next_matching(&mut session, WAIT, "Hello after restart", is_hello).await
    else {
        unreachable!()
    };
    assert_eq!(held, vec![finished]);
    assert!(lost.is_empty(), "a spooled attempt is not lost");
    let resent = next_matching(&mut session, WAIT, "the result resent after restart", |m| {
        matches!(m, AgentMessage::AttemptResult { .. })
    })
    .await;
    assert_eq!(resent, AgentMessage::AttemptResult { attempt, result });

    // The Ack deletes the spool entry; heartbeats then hold nothing.
    send(
        &mut session,
        &CoordinatorMessage::Ack {
            attempt,
            verdict: AckVerdict::Accepted,
        },
    )
    .await;
    eventually(WAIT, "spool empty after the Ack", || {
        node.spool_files().is_empty()
    })
    .await;
    next_matching(
        &mut session,
        WAIT,
        "a heartbeat holding nothing",
        |m| matches!(m, AgentMessage::Heartbeat { held } if held.is_empty()),
    )
    .await;

    // SIGTERM holding nothing: a Goodbye, then a clean exit.
    agent.terminate();
    let rest = messages_until_closed(&mut session).await;
    assert_eq!(rest.last(), Some(&AgentMessage::Goodbye), "{rest:?}");
    let status = agent.wait_exit(WAIT);
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_way_is_reported_lost_and_busy_devices_are_refused() {
    let node = Node::new();
    // Long enough to be mid-run when killed; it never finishes.
    let config = node.config("num_input_prompts: 500\nmax_output_tokens: 64\n");
    let mut coordinator = Coordinator::start();
    let mut agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;

    let gpu_a = format!("gpu:{GPU_A}");
    let grant = lease(11, 2, &gpu_a, config.clone());
    send(&mut session, &CoordinatorMessage::Lease(grant)).await;
    eventually(WAIT, "the running marker", || {
        node.running_markers() == vec!["11-2"]
    })
    .await;
    next_matching(&mut session, WAIT, "a heartbeat holding the run", |m| {
        matches!(m, AgentMessage::Heartbeat { held } if held == &vec![HeldAttempt { attempt: 11, epoch: 2, running: true }])
    })
    .await;

    // A second lease on the busy GPU, and one on a device this node lacks: rejected.
    send(
        &mut session,
        &CoordinatorMessage::Lease(lease(12, 1, &gpu_a, config.clone())),
    )
    .await;
    let rejected = next_matching(&mut session, WAIT, "LeaseRejected (busy)", |m| {
        matches!(m, AgentMessage::LeaseRejected { .. })
    })
    .await;
    let AgentMessage::LeaseRejected { attempt, reason } = rejected else {
        unreachable!()
    };
    assert_eq!(
        attempt,
        AttemptRef {
            attempt: 12,
            epoch: 1
        }
    );
    assert!(
        reason.contains(&gpu_a) && reason.contains("busy"),
        "{reason}"
    );
    send(
        &mut session,
        &CoordinatorMessage::Lease(lease(13, 1, "gpu:GPU-elsewhere", config)),
    )
    .await;
    let rejected = next_matching(&mut session, WAIT, "LeaseRejected (unknown)", |m| {
        matches!(m, AgentMessage::LeaseRejected { .. })
    })
    .await;
    let AgentMessage::LeaseRejected { reason, .. } = rejected else {
        unreachable!()
    };
    assert!(reason.contains("not on this node"), "{reason}");

    // kill -9 mid-run: the restarted agent reports the attempt as lost, holds nothing.
    agent.kill_9();
    drop(session);
    let _agent = node.spawn(&coordinator.target, None, 2);
    let mut session = coordinator.session().await;
    let AgentMessage::Hello { held, lost, .. } =
        next_matching(&mut session, WAIT, "Hello after restart", is_hello).await
    else {
        unreachable!()
    };
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(
        lost,
        vec![HeldAttempt {
            attempt: 11,
            epoch: 2,
            running: true
        }]
    );
    eventually(
        WAIT,
        "the lost run's marker removed after the Hello",
        || node.running_markers().is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_spool_file_is_moved_aside_and_the_rest_resent() {
    let node = Node::new();
    let mut coordinator = Coordinator::start();
    let mut agent = node.spawn(&coordinator.target, Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;
    agent.kill_9();
    drop(session);

    // While it is down: one good entry (a failure outcome), one file of garbage.
    let spool = Spool::open(&node.data_dir()).unwrap();
    let good = SpoolEntry {
        attempt: AttemptRef {
            attempt: 5,
            epoch: 1,
        },
        outcome: SpooledOutcome::Failed {
            error: "model not found on node-a".into(),
        },
    };
    spool.write(&good).unwrap();
    std::fs::write(
        spool.dir().join("6-1.msgpack"),
        b"\xc1 definitely not msgpack",
    )
    .unwrap();

    let mut agent = node.spawn(&coordinator.target, None, 2);
    let mut session = coordinator.session().await;
    let AgentMessage::Hello { held, .. } =
        next_matching(&mut session, WAIT, "Hello after restart", is_hello).await
    else {
        unreachable!()
    };
    assert_eq!(
        held,
        vec![HeldAttempt {
            attempt: 5,
            epoch: 1,
            running: false
        }]
    );
    let resent = next_matching(&mut session, WAIT, "the resent failure", |m| {
        matches!(m, AgentMessage::AttemptFailed { .. })
    })
    .await;
    assert_eq!(resent, good.to_message());
    assert_eq!(node.spool_files(), vec!["5-1.msgpack"]);
    let corrupt = files_in(&spool.dir().join("corrupt"));
    assert_eq!(corrupt, vec!["6-1.msgpack", "6-1.msgpack.reason"]);
    assert!(
        agent.log_text().contains("moved aside"),
        "log:\n{}",
        agent.log_text()
    );

    agent.terminate();
    // Holding a spooled outcome, it leaves no Goodbye: the coordinator still counts the
    // lease, so the agent timeout is what ends it.
    let rest = messages_until_closed(&mut session).await;
    assert!(!rest.contains(&AgentMessage::Goodbye), "{rest:?}");
    assert!(agent.wait_exit(WAIT).success());
    // Still there: only an Ack removes it.
    assert_eq!(node.spool_files(), vec!["5-1.msgpack"]);
}
