//! A coordinator killed with -9 sends no close: its agents learn it is gone only when the
//! connection falls silent for the idle timeout. Through a loopback UDP relay that stops
//! forwarding (the peer "dies"), the client's connection must close within the default
//! timers' bound — well under the 30 s it once took, and under the coordinator's 60 s
//! restart grace, so a restarted coordinator's agents return before their leases requeue.

use lem_common::wire::AgentMessage;
use lem_net::pki::{ClusterCa, LEAF_VALIDITY};
use lem_net::token::InMemoryTokenBook;
use lem_net::{
    connect, Alpn, ClientOptions, EnrollmentDesk, PeerIdentity, Role, ServerEndpoint,
    ServerOptions, Timers,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Forwards datagrams between one client and `upstream` until `silent` is set; then drops
/// everything, as a dead host would. Threads end when `stop` is set.
struct Relay {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(upstream).unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        let addr = front.local_addr().unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (front2, back2) = (front.try_clone().unwrap(), back.try_clone().unwrap());
        let (silent2, stop2, client2) = (silent.clone(), stop.clone(), client.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok((n, from)) = front2.recv_from(&mut buf) {
                    *client2.lock().unwrap() = Some(from);
                    if !silent2.load(Ordering::SeqCst) {
                        let _ = back2.send(&buf[..n]);
                    }
                }
            }
        });
        let (silent3, stop3) = (silent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop3.load(Ordering::SeqCst) {
                if let Ok(n) = back.recv(&mut buf) {
                    let to = *client.lock().unwrap();
                    if let (Some(to), false) = (to, silent3.load(Ordering::SeqCst)) {
                        let _ = front.send_to(&buf[..n], to);
                    }
                }
            }
        });
        Relay { addr, silent, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

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
    let relay = Relay::start(server.local_addr().unwrap());
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
