//! Device needs through `lem --coordinator … sweep submit`, with real processes on
//! loopback: one `lem serve` and three `lem-agent`s on simulated nodes (the fake NVML):
//! an A100 in MIG mode with two 1g.5gb slices, a whole H100, a whole L4.
//!
//! - A base config whose `devices` section asks a 1g.5gb slice with its parent to itself,
//!   expanded with `--vary`: every job runs on a 1g.5gb slice (the stored attempt names
//!   the slice and claims its parent exclusively) and no two of them ever ran at once on
//!   the one parent, although two slices were free.
//! - `--gpu-model "NVIDIA L4"`: every job lands on the one node with an L4.
//! - `--mig-profile 7g.40gb`, which no node has: the jobs stay pending and `sweep show`
//!   and `status` say why.

mod cluster_support;
mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use chrono::{DateTime, Utc};
use cluster_support::{start_coordinator, write_configs};
use lem_coordinator::scheduler::{ClaimMode, JobId};
use lem_coordinator::store::{Disposition, Store};
use serde_json::Value;
use serve_support::node::SimNode as Node;
use serve_support::{join_token, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const A100_UUID: &str = "GPU-a1000000-0000-4000-8000-0000000000d1";
const SLICE_UUIDS: [&str; 2] = [
    "MIG-a1000000-1g05-4000-8000-0000000000d1",
    "MIG-a1000000-1g05-4000-8000-0000000000d2",
];
const L4: &str = "NVIDIA L4";
const NODES: [&str; 3] = ["mig-node", "h100-node", "l4-node"];

/// An A100 in MIG mode with two allocated 1g.5gb instances.
fn a100_with_two_small_slices() -> Value {
    let slice = |uuid: &str, gi: u32| {
        serde_json::json!({ "profile": "1g.5gb", "uuid": uuid, "gpu_instance_id": gi,
            "compute_instance_id": 0, "slices": 1, "sm_count": 14,
            "memory_total_bytes": 5_368_709_120u64, "allocated": true })
    };
    serde_json::json!({ "name": "NVIDIA A100-SXM4-40GB", "uuid": A100_UUID,
        "memory_total_bytes": 42_949_672_960u64, "power_limit_mw": 400_000, "mig_mode": 1,
        "sm_count": 108, "mig_total_slices": 7, "energy_start_mj": 500_000_000u64,
        "power": [[0.0, 150.0]],
        "mig_instances": [slice(SLICE_UUIDS[0], 7), slice(SLICE_UUIDS[1], 8)] })
}

fn nodes(dir: &Path) -> Vec<Node> {
    vec![
        Node::new(dir, NODES[0], vec![a100_with_two_small_slices()]),
        Node::new(
            dir,
            NODES[1],
            vec![cluster_support::whole_gpu(
                "NVIDIA H100 80GB HBM3",
                "GPU-0000e000-0000-4000-8000-000000000001",
            )],
        ),
        Node::new(
            dir,
            NODES[2],
            vec![cluster_support::whole_gpu(
                L4,
                "GPU-0000f000-0000-4000-8000-000000000001",
            )],
        ),
    ]
}

/// `configs/c000.yaml` with `extra` appended (a `devices` section).
fn config_with(dir: &Path, extra: &str) -> PathBuf {
    let path = write_configs(dir, 1, Some(1)).remove(0);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    path
}

fn submit(coordinator: &Server, args: &[&str]) -> String {
    let mut all = vec!["sweep", "submit"];
    all.extend(args);
    coordinator.cli_ok(&all)
}

fn progress(status: &Value, sweep: u64) -> Value {
    status["sweeps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sweep"] == sweep))
        .map(|s| s["progress"].clone())
        .unwrap_or(Value::Null)
}

/// What the store says about each accepted job of `sweep`: its placement and when its
/// run started and finished.
struct AcceptedRun {
    agent: String,
    devices: Vec<String>,
    parent_claim: Option<ClaimMode>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
}

fn accepted_runs(data_dir: &Path, sweep: u64) -> Vec<AcceptedRun> {
    let store = Store::open(data_dir, Duration::from_secs(30)).unwrap();
    let row = store
        .sweeps()
        .unwrap()
        .into_iter()
        .find(|s| s.sweep.0 == sweep)
        .expect("the sweep is stored");
    let time = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    };
    (row.first_job.0..row.first_job.0 + row.job_count)
        .map(|job| {
            let attempt = store
                .accepted_attempt(JobId(job))
                .unwrap()
                .unwrap_or_else(|| panic!("job {job} has no accepted attempt"));
            let placement = store.attempt(attempt).unwrap().unwrap().placement;
            let result = store.result(attempt).unwrap().unwrap();
            assert_eq!(result.disposition, Disposition::Accepted);
            AcceptedRun {
                agent: placement.agent.0.clone(),
                devices: placement.devices.iter().map(|d| d.0.clone()).collect(),
                parent_claim: placement
                    .claims
                    .iter()
                    .find(|c| c.key.0 == format!("gpu:{A100_UUID}"))
                    .map(|c| c.mode),
                started: time(&result.raw.started_at),
                finished: time(&result.raw.finished_at),
            }
        })
        .collect()
}

#[test]
fn mig_profiles_gpu_models_and_unplaceable_needs_through_sweep_submit() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path());
    let data_dir = dir.path().join("coordinator");
    let tokens: Vec<String> = nodes.iter().map(|_| join_token(&data_dir)).collect();
    let addr = format!("127.0.0.1:{}", cluster_support::free_udp_port());
    let coordinator = start_coordinator(&data_dir, &addr, &[]);
    let agents: Vec<_> = nodes
        .iter()
        .zip(&tokens)
        .map(|(node, token)| node.spawn(&addr, token, 0))
        .collect();
    coordinator.wait_status("three agents", |s| {
        s["agents"]
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|a| a["alive"] == true))
    });

    // sweep-0: a 1g.5gb slice with its parent to itself, grid of 2 seeds x 2 cycles.
    let mig_base = config_with(
        &dir.path().join("mig"),
        "devices:\n  mig_profile: 1g.5gb\n  exclusive_parent: true\n",
    );
    let out = submit(
        &coordinator,
        &[
            mig_base.to_str().unwrap(),
            "--vary",
            "random_seed=11,12",
            "--cycles",
            "2",
        ],
    );
    assert!(
        out.contains("sweep-0: submitted 2 experiment(s), 4 job(s)"),
        "{out}"
    );
    // sweep-1: two cycles that only the L4 node can take.
    let plain = write_configs(&dir.path().join("plain"), 1, Some(1)).remove(0);
    let out = submit(
        &coordinator,
        &[plain.to_str().unwrap(), "--gpu-model", L4, "--cycles", "2"],
    );
    assert!(
        out.contains("sweep-1: submitted 1 experiment(s), 2 job(s)"),
        "{out}"
    );
    // sweep-2: a profile no node has.
    let out = submit(
        &coordinator,
        &[
            plain.to_str().unwrap(),
            "--mig-profile",
            "7g.40gb",
            "--name",
            "nowhere",
        ],
    );
    assert!(
        out.contains("sweep-2: submitted 1 experiment(s), 1 job(s)"),
        "{out}"
    );

    let status = coordinator.wait_status("sweeps 0 and 1 accepted", |s| {
        progress(s, 0)["accepted"] == 4 && progress(s, 1)["accepted"] == 2
    });
    // The unplaceable job is still pending, and both views say why.
    let why = "no connected agent has a MIG slice of profile 7g.40gb";
    assert_eq!(progress(&status, 2)["pending"], 1, "{status:#}");
    assert_eq!(
        status["waiting"],
        serde_json::json!([format!("sweep-2: 1 job(s): {why}")]),
        "{status:#}"
    );
    let shown = coordinator.cli_ok(&["sweep", "show", "2"]);
    assert!(shown.contains(why), "{shown}");
    let shown: Value =
        serde_json::from_str(&coordinator.cli_ok(&["sweep", "show", "2", "--json"])).unwrap();
    assert_eq!(shown["jobs"][0]["pending_reason"], why, "{shown:#}");
    let text_status = coordinator.cli_ok(&["status"]);
    assert!(text_status.contains(why), "{text_status}");
    // The grid's experiments are named as `config generate-grid` names its files.
    let shown: Value =
        serde_json::from_str(&coordinator.cli_ok(&["sweep", "show", "0", "--json"])).unwrap();
    let mut names: Vec<&str> = shown["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["experiment_name"].as_str().unwrap())
        .collect();
    names.dedup();
    assert_eq!(names, ["c000__random_seed-11", "c000__random_seed-12"]);
    coordinator.cli_ok(&["sweep", "cancel", "2"]);
    drop(agents);
    coordinator.stop();

    let mig_runs = accepted_runs(&data_dir, 0);
    assert_eq!(mig_runs.len(), 4);
    let slices: Vec<String> = SLICE_UUIDS.iter().map(|u| format!("mig:{u}")).collect();
    for run in &mig_runs {
        assert!(run.agent.starts_with("mig-node-"), "{}", run.agent);
        assert_eq!(run.devices.len(), 1);
        assert!(slices.contains(&run.devices[0]), "{:?}", run.devices);
        assert_eq!(run.parent_claim, Some(ClaimMode::Exclusive));
    }
    // Exclusive parent: the four runs on the one A100 never overlapped in time.
    let mut windows: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        mig_runs.iter().map(|r| (r.started, r.finished)).collect();
    windows.sort();
    for pair in windows.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two exclusive-parent runs overlapped on one parent: {pair:?}"
        );
    }

    let l4_runs = accepted_runs(&data_dir, 1);
    let per_node: BTreeMap<&str, usize> = NODES
        .iter()
        .map(|n| {
            let prefix = format!("{n}-");
            (
                *n,
                l4_runs
                    .iter()
                    .filter(|r| r.agent.starts_with(&prefix))
                    .count(),
            )
        })
        .collect();
    assert_eq!(
        per_node,
        BTreeMap::from([("mig-node", 0), ("h100-node", 0), ("l4-node", 2)])
    );
    assert!(l4_runs
        .iter()
        .all(|r| r.devices == ["gpu:GPU-0000f000-0000-4000-8000-000000000001"]));
}
