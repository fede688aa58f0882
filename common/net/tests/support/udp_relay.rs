//! A loopback UDP relay for tests: forwards datagrams between one client and an upstream
//! server until told to fall silent, then drops everything in both directions, as a
//! killed host would (no close frame reaches anyone). Shared by lem-net's and
//! lem-agent's tests.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards datagrams between one client and `upstream` until `silent` is set; then drops
/// everything, as a dead host would. Threads end when `stop` is set.
pub struct Relay {
    pub addr: SocketAddr,
    /// Set: drop every datagram; clear: forward again (to the latest client address).
    pub silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(upstream: SocketAddr) -> Relay {
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
