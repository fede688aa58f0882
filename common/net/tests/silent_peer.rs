//! A coordinator killed with -9 sends no close: its agents learn it is gone only when the
//! connection falls silent for the idle timeout. Through a loopback UDP relay that stops
//! forwarding (the peer "dies"), the client's connection must close within the default
//! timers' bound — well under the 30 s it once took, and under the coordinator's 60 s
//! restart grace, so a restarted coordinator's agents return before their leases requeue.

#[path = "support/udp_relay.rs"]
mod udp_relay;

use lem_common::wire::AgentMessage;
use lem_net::pki::{ClusterCa, LEAF_VALIDITY};
use lem_net::token::InMemoryTokenBook;
use lem_net::{
    connect, Alpn, ClientOptions, EnrollmentDesk, PeerIdentity, Role, ServerEndpoint,
    ServerOptions, Timers,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_coordinator_is_noticed_within_the_idle_timeout() {
    let timers = Timers::default();
    // The bound this test holds the default to; the restart grace (60 s) must exceed it.
    let bound = Duration::from_secs(20);
    assert!(timers.idle_timeout < bound);

    let ca = Arc::new(ClusterCa::generate().unwrap());
    let desk = EnrollmentDesk {
        ca: ca.clone(),
        tokens: Arc::new(InMemoryTokenBook::default()),
        clock: Arc::new(|| 1_000_000),
        agent_validity: LEAF_VALIDITY,
    };
    let mut server = ServerEndpoint::bind(
        desk,
        ServerOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            vec!["localhost".into(), "127.0.0.1".into()],
        ),
    )
    .unwrap();
    let relay = udp_relay::Relay::start(server.local_addr().unwrap());
    let credential = ca
        .issue_client_credential(
            &PeerIdentity::new(Role::Agent, "node-s").unwrap(),
            LEAF_VALIDITY,
        )
        .unwrap();
    let target = relay.addr.to_string();
    let connecting = tokio::spawn(async move {
        connect(&target, &credential, Alpn::Agent, &ClientOptions::default()).await
    });
    let mut session = tokio::time::timeout(Duration::from_secs(60), server.accept())
        .await
        .expect("a session within a minute")
        .expect("the endpoint is open");
    let mut client = connecting.await.unwrap().unwrap();
    // Alive through the relay: a message arrives.
    client
        .send
        .send(&AgentMessage::Heartbeat { held: vec![] })
        .await
        .unwrap();
    let got: AgentMessage = session.recv.expect("a heartbeat").await.unwrap();
    assert_eq!(got, AgentMessage::Heartbeat { held: vec![] });

    // The coordinator "dies": no packet in either direction, no close frame.
    relay.silent.store(true, Ordering::SeqCst);
    let silent_since = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(120), client.connection.closed())
        .await
        .expect("the client noticed the silence within two minutes");
    let noticed_after = silent_since.elapsed();
    assert!(
        noticed_after < bound,
        "noticed after {noticed_after:?} ({closed}); the bound is {bound:?}"
    );
    // It is the idle timeout that closed it, not something sooner.
    assert!(
        noticed_after >= timers.idle_timeout / 2,
        "closed after only {noticed_after:?}: {closed}"
    );
    drop(session);
}
