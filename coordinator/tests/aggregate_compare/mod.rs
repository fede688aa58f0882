//! "The cluster's aggregates equal the same sweep embedded", one definition for every
//! real-process cluster test (loopback, network namespaces). What is deterministic —
//! config, model, cycles, requests, failures, input and output tokens, FLOPs, window
//! token counts, statistic sample counts — must be equal exactly; every other field
//! (energy, latency, throughput: wall-time dependent) must be present or null in the
//! same places, its value not compared; identities (experiment id, attempt, job key,
//! device) name where a run happened and are left out.

#![allow(dead_code)] // each test uses a subset

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Experiments per sweep: `LEM_CLUSTER_EXPERIMENTS` (the documented full run uses 50),
/// else `default` (small, so CI stays short).
pub fn experiments_from_env(default: usize) -> usize {
    match std::env::var("LEM_CLUSTER_EXPERIMENTS") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            panic!("LEM_CLUSTER_EXPERIMENTS={text:?}: expected a whole number of experiments")
        }),
        Err(_) => default,
    }
}

/// The same configs through `lem batch --cycles N` in `data_dir`, on the simulated
/// devices `node_env` points a command at; each experiment's `results show --json`, by
/// config name. `lem` makes a plain `lem` command.
pub fn embedded_aggregates(
    lem: impl Fn() -> Command,
    node_env: impl FnOnce(&mut Command),
    data_dir: &Path,
    configs: &[PathBuf],
    cycles: usize,
) -> BTreeMap<String, Value> {
    let mut batch = lem();
    node_env(&mut batch);
    let out = batch
        .arg("--data-dir")
        .arg(data_dir)
        .args(["batch", "--cycles", &cycles.to_string()])
        .args(configs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lem batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = |args: &[&str]| -> Value {
        let out = lem()
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    local(&["results", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let id = row["id"].as_str().unwrap();
            let shown = local(&["results", "show", id, "--json"]);
            (row["config_name"].as_str().unwrap().to_owned(), shown)
        })
        .collect()
}

/// Both sides hold the same experiments, each with equal deterministic fields and the
/// same present/null pattern; energy was measured on both (never claimed equal).
pub fn assert_same_aggregates(
    cluster: &BTreeMap<String, Value>,
    embedded: &BTreeMap<String, Value>,
) {
    assert_eq!(
        embedded.keys().collect::<Vec<_>>(),
        cluster.keys().collect::<Vec<_>>()
    );
    for (name, cluster_aggregate) in cluster {
        let embedded = &embedded[name];
        assert_eq!(
            deterministic(cluster_aggregate),
            deterministic(embedded),
            "{name}: deterministic fields"
        );
        let (cluster_nulls, embedded_nulls) = (pattern_of(cluster_aggregate), pattern_of(embedded));
        let differing: Vec<_> = cluster_nulls
            .iter()
            .filter(|(path, null)| embedded_nulls.get(*path) != Some(*null))
            .chain(
                embedded_nulls
                    .iter()
                    .filter(|(path, _)| !cluster_nulls.contains_key(*path)),
            )
            .collect();
        assert!(
            differing.is_empty(),
            "{name}: present/null differs at {differing:?}"
        );
        assert!(cluster_aggregate["cycles"][0]["energy"]["gpu_j"].is_number());
        assert!(embedded["cycles"][0]["energy"]["gpu_j"].is_number());
    }
}

/// Per-cycle fields that do not depend on wall time or placement.
const CYCLE_EXACT: [&str; 6] = [
    "num_requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "flops_total",
    "flops_per_output_token",
];

/// The deterministic part of an aggregate, cycles in cycle order.
pub fn deterministic(aggregate: &Value) -> Value {
    let mut cycles: Vec<&Value> = aggregate["cycles"].as_array().unwrap().iter().collect();
    cycles.sort_by_key(|c| c["cycle"].as_u64());
    let cycles: Vec<Value> = cycles
        .iter()
        .map(|c| {
            let mut row = serde_json::Map::new();
            row.insert("cycle".into(), c["cycle"].clone());
            for field in CYCLE_EXACT {
                row.insert(field.into(), c[field].clone());
            }
            row.insert(
                "whole_window.output_tokens".into(),
                c["whole_window"]["output_tokens"].clone(),
            );
            row.insert(
                "whole_window.request_equivalents".into(),
                c["whole_window"]["request_equivalents"].clone(),
            );
            Value::Object(row)
        })
        .collect();
    let stat_counts: BTreeMap<String, Value> = aggregate["stats"]
        .as_object()
        .map(|stats| {
            stats
                .iter()
                .map(|(k, v)| (k.clone(), v["n"].clone()))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "config_name": aggregate["config_name"],
        "model_name": aggregate["model_name"],
        "num_cycles_expected": aggregate["num_cycles_expected"],
        "complete": aggregate["complete"],
        "simulated": aggregate["simulated"],
        "cycles": cycles,
        "stat_counts": stat_counts,
    })
}

/// Fields that name where or when a run happened: identities, not measurements.
fn is_identity(path: &str) -> bool {
    [
        "experiment_id",
        "attempt",
        "job_key",
        "created_at",
        "device_id",
        "device_name",
    ]
    .iter()
    .any(|f| path.ends_with(&format!(".{f}")))
        || path.contains("compute_device")
        || path.starts_with(".warnings")
}

/// Every leaf path of `value` (cycles by cycle number) with whether it is null.
fn null_pattern(value: &Value, path: String, out: &mut BTreeMap<String, bool>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                null_pattern(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let key = v["cycle"].as_u64().map_or(i as u64, |c| c);
                null_pattern(v, format!("{path}[{key}]"), out);
            }
        }
        leaf => {
            if !is_identity(&path) {
                out.insert(path, leaf.is_null());
            }
        }
    }
}

fn pattern_of(aggregate: &Value) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    null_pattern(aggregate, String::new(), &mut out);
    out
}
