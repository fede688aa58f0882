//! `lem serve --metrics-listen`: a real server scraped over loopback HTTP while a test
//! agent takes a sweep; the text counts what the test made happen (agents, accepted
//! results, an empty queue) and leaves out the device the results had no energy for.

mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use serve_support::agent::{AgentPlan, TestAgent};
use serve_support::{join_token, write_configs, Server, WAIT};
use std::io::{Read, Write};
use std::time::Instant;

fn scrape(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn value(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

#[test]
fn metrics_count_agents_and_accepted_results_and_leave_unknown_energy_out() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let token = join_token(&data_dir);
    let server = Server::start(&data_dir, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics_addr = std::fs::read_to_string(data_dir.join("metrics.addr"))
        .expect("metrics.addr written before serve.addr")
        .trim()
        .to_owned();

    let before = scrape(&metrics_addr, "/metrics");
    assert!(before.starts_with("HTTP/1.1 200 OK"), "{before}");
    assert!(before.contains("Content-Type: text/plain; version=0.0.4"));
    assert_eq!(
        value(&before, "lem_coordinator_agents").as_deref(),
        Some("0")
    );
    assert_eq!(
        value(&before, "lem_coordinator_results_accepted_total").as_deref(),
        Some("0")
    );

    let _agent = TestAgent::spawn(
        data_dir.clone(),
        dir.path().join("agent"),
        token,
        AgentPlan {
            node_name: "node-m".into(),
            gpus: 2,
            answer_first: None,
            resend_first_acked: false,
            fail_first: 0,
        },
    );
    let cycles = 3u64;
    let configs = write_configs(dir.path());
    server.cli_ok(&[
        "sweep",
        "submit",
        configs[0].to_str().unwrap(),
        "--cycles",
        &cycles.to_string(),
    ]);
    server.wait_status("the sweep accepted", |s| {
        s["sweeps"][0]["progress"]["accepted"].as_u64() == Some(cycles)
    });

    // Acks go out after the driver counted the result: the next scrape sees them all.
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = scrape(&metrics_addr, "/metrics");
        if value(&text, "lem_coordinator_results_accepted_total") == Some(cycles.to_string())
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for (name, expected) in [
        ("lem_coordinator_results_accepted_total", cycles),
        ("lem_coordinator_agents", 1),
        ("lem_coordinator_agents_connected", 1),
        ("lem_coordinator_agents_draining", 0),
        ("lem_coordinator_jobs_queued", 0),
        ("lem_coordinator_leases", 0),
        // The test agent's results carry no power trace.
        ("lem_coordinator_trace_samples_accepted_total", 0),
    ] {
        assert_eq!(
            value(&text, name),
            Some(expected.to_string()),
            "{name} in\n{text}"
        );
    }
    // The test agent's results have no energy for package-0: a reason, no sample.
    assert!(
        text.contains(
            "# lem: lem_device_result_power_watts unavailable for package-0 on test-host: \
             no RAPL under the test's powercap root"
        ),
        "{text}"
    );
    assert!(!text
        .lines()
        .any(|l| l.starts_with("lem_device_result_energy_joules_total")));

    let missing = scrape(&metrics_addr, "/other");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
