//! The real `lem-agent` and a coordinator that dies without a word (every packet dropped,
//! as after kill -9): the agent notices within the transport's idle timeout — well under
//! the coordinator's 60 s restart grace — and, once the coordinator answers again, says
//! Hello on a new connection.

mod daemon_support;
#[path = "../../common/net/tests/support/udp_relay.rs"]
mod udp_relay;

use daemon_support::*;
use lem_common::wire::AgentMessage;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn is_hello(m: &AgentMessage) -> bool {
    matches!(m, AgentMessage::Hello { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_notices_a_silent_coordinator_within_the_idle_timeout_and_returns() {
    let node = Node::new();
    let mut coordinator = Coordinator::start();
    let relay = udp_relay::Relay::start(coordinator.target.parse().unwrap());
    let agent = node.spawn(&relay.addr.to_string(), Some(&coordinator.token()), 1);
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", is_hello).await;

    // Silence: heartbeats and keep-alives go nowhere, nothing comes back, no close.
    relay.silent.store(true, Ordering::SeqCst);
    let silent_since = Instant::now();
    eventually(WAIT, "the agent gave up on the silent connection", || {
        agent.log_text().contains("session lost; reconnecting")
    })
    .await;
    let noticed_after = silent_since.elapsed();
    // The old 30 s idle timeout would fail this; the restart grace is 60 s.
    let bound = Duration::from_secs(25);
    assert!(
        noticed_after < bound,
        "noticed after {noticed_after:?}; bound {bound:?}\n{}",
        agent.log_text()
    );

    // The coordinator answers again: a new connection and a new Hello.
    relay.silent.store(false, Ordering::SeqCst);
    let mut again = coordinator.session().await;
    next_matching(&mut again, WAIT, "Hello after the silence", is_hello).await;
    drop(session);
}

/// A coordinator that drops every session right after its Hello: each reconnection waits
/// longer than the one before (the delay grows as after failed connects), so the agent
/// does not send a Hello every `--reconnect-initial-ms`. Only lower bounds on the gaps are
/// checked (a loaded machine can only make them longer); with the delay reset at every
/// connection, as before, each gap would be about the initial delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_dropped_at_once_meet_growing_reconnect_delays() {
    let node = Node::new();
    let mut coordinator = Coordinator::start();
    let (initial_ms, max_ms) = (400u64, 8_000u64);
    let agent = node.spawn_with(
        &coordinator.target,
        Some(&coordinator.token()),
        1,
        &[
            "--reconnect-initial-ms",
            &initial_ms.to_string(),
            "--reconnect-max-ms",
            &max_ms.to_string(),
        ],
    );
    let sessions = 6;
    let mut hello_at = Vec::new();
    for n in 0..sessions {
        let accepted = tokio::time::timeout(WAIT, coordinator.server.accept()).await;
        let Ok(Some(mut session)) = accepted else {
            panic!("session {n} never came\n{}", agent.log_text());
        };
        next_matching(&mut session, WAIT, "Hello", is_hello).await;
        hello_at.push(Instant::now());
        session
            .connection
            .close(lem_net::close_code::DONE, "dropped at once");
    }
    // After the k-th dropped session (k from 1) the delay is at least half its ceiling,
    // initial · 2^(k-1), capped at the maximum.
    for k in 1..sessions {
        let gap = hello_at[k] - hello_at[k - 1];
        let ceiling_ms = (initial_ms << (k - 1)).min(max_ms);
        let floor = Duration::from_millis(ceiling_ms / 2);
        assert!(
            gap >= floor,
            "gap {k}: {gap:?} < {floor:?}\n{}",
            agent.log_text()
        );
    }
}
