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
