//! `lem-agent --metrics-listen`: the Prometheus text endpoint shows the simulated node's
//! GPUs as the fake NVML reports them (dcgm-exporter names) and the agent's state.

mod daemon_support;

use daemon_support::*;
use lem_common::wire::AgentMessage;
use std::io::{Read, Write};
use std::time::Duration;

fn get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The sample line of `family` for the GPU with `uuid`, as its value.
fn value(body: &str, family: &str, uuid: &str) -> String {
    let prefix = format!("{family}{{");
    let line = body
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(&format!("UUID=\"{uuid}\"")))
        .unwrap_or_else(|| panic!("no {family} for {uuid} in\n{body}"));
    line.rsplit_once(' ').unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_gpu_readings_and_agent_state() {
    let node = Node::new();
    let mut coordinator = Coordinator::start();
    let agent = node.spawn_with(
        &coordinator.target,
        Some(&coordinator.token()),
        1,
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let mut session = coordinator.session().await;
    next_matching(&mut session, WAIT, "Hello", |m| {
        matches!(m, AgentMessage::Hello { .. })
    })
    .await;
    let marker = "metrics listening on http://";
    eventually(WAIT, "the metrics address in the log", || {
        agent.log_text().contains(marker)
    })
    .await;
    let log = agent.log_text();
    let addr = log
        .split(marker)
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    // Connected is published once the session loop runs, and the fake's H100s report
    // power as NVML does on Hopper, a trailing 1 s mean: poll until both settle.
    let started = std::time::Instant::now();
    let settled = |body: &str| {
        body.lines().any(|l| l == "lem_agent_connected 1")
            && [GPU_A, GPU_B].iter().all(|uuid| {
                body.lines().any(|l| {
                    l.starts_with("DCGM_FI_DEV_POWER_USAGE{")
                        && l.contains(uuid)
                        && l.ends_with(&format!(" {GPU_POWER_W:.3}"))
                })
            })
    };
    let body = loop {
        let a = addr.clone();
        let response = tokio::task::spawn_blocking(move || get(&a, "/metrics"))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        if settled(&body) {
            break body;
        }
        assert!(started.elapsed() < WAIT, "never settled:\n{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for uuid in [GPU_A, GPU_B] {
        let power: f64 = value(&body, "DCGM_FI_DEV_POWER_USAGE", uuid)
            .parse()
            .unwrap();
        assert!((power - GPU_POWER_W).abs() < 1e-9, "{power}");
        let temperature: u32 = value(&body, "DCGM_FI_DEV_GPU_TEMP", uuid).parse().unwrap();
        assert_eq!(temperature, GPU_TEMPERATURE_C);
        // The counter starts at the scenario's value and grows at 200 W: within this
        // test's few minutes it is between the start and start + 200 W × WAIT·4.
        let energy_mj: u64 = value(&body, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", uuid)
            .parse()
            .unwrap();
        let ceiling_mj =
            GPU_ENERGY_START_MJ + (GPU_POWER_W * 1000.0 * 4.0 * WAIT.as_secs_f64()) as u64;
        assert!(
            (GPU_ENERGY_START_MJ..=ceiling_mj).contains(&energy_mj),
            "{energy_mj}"
        );
    }
    assert!(body.contains(&format!(
        "UUID=\"{GPU_B}\",modelName=\"{GPU_MODEL}\",Hostname=\"node-a\""
    )));
    for line in [
        "lem_agent_nvml_simulated 1",
        "lem_agent_jobs_running 0",
        "lem_agent_spool_entries 0",
        "lem_agent_draining 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }

    let a = addr.clone();
    let other = tokio::task::spawn_blocking(move || get(&a, "/other"))
        .await
        .unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}
