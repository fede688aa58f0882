//! `lem serve --config FILE` with the real binary: the file's `listen` is used when no
//! flag or variable sets one; a file with an unknown key is refused before anything
//! starts, naming the file and the key.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use serve_support::{lem, WAIT};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn the_file_sets_what_no_flag_sets_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();

    // An unknown key: refused at once, naming file and key; no data dir is made.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:0\nlease_tll_ms: 5000\n").unwrap();
    let bad_data = dir.path().join("bad-data");
    let out = lem()
        .args(["serve", "--config"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(&bad_data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(bad.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("unknown key `lease_tll_ms`"), "{stderr}");
    assert!(!bad_data.join("serve.addr").exists());

    // The file's loopback address with port 0: the default (0.0.0.0:7443) would show.
    let good = dir.path().join("serve.yaml");
    std::fs::write(
        &good,
        "listen: 127.0.0.1:0\nserver_names: [localhost, 127.0.0.1]\nlease_ttl_ms: 45000\n",
    )
    .unwrap();
    let data_dir = dir.path().join("coord");
    let mut child = lem()
        .args(["serve", "--config"])
        .arg(&good)
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr_file = data_dir.join("serve.addr");
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if text.ends_with('\n') {
                break text.trim().to_owned();
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lem serve exited {status} before writing its address");
        }
        assert!(Instant::now() < deadline, "lem serve wrote no address");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let bound: std::net::SocketAddr = addr.parse().unwrap();
    assert!(bound.ip().is_loopback(), "{addr}");
    assert_ne!(
        bound.port(),
        7443,
        "{addr}: the default port, not the file's 0"
    );
}
