//! `lem results show` draws per-cycle sparklines only when stdout is a terminal: none
//! into a pipe, some under a pseudo-terminal (util-linux `script`), none with
//! `--no-plots`. The store is filled through the library (no model).

use lem_coordinator::embedded::{self, StoreHandle};
use lem_coordinator::store::{ExperimentStatus, Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
mod record_fixture;

const ID: &str = "exp_plots";
/// Cycle wall times (s): 6 output tokens each, so throughput 6, 3, 1.5 tok/s.
const WALL_S: [f64; 3] = [1.0, 2.0, 4.0];

fn store_with_three_cycles(data: &Path) {
    let mut resolved = fixtures::resolved_config("org/model");
    resolved.config.num_cycles = WALL_S.len() as u32;
    let mut rec = record_fixture::experiment_record(&resolved, ID, ExperimentStatus::Completed);
    rec.config_name = "plots".into();
    {
        let store = Store::open(data, Duration::from_secs(10)).unwrap();
        store.create_experiment(&rec).unwrap();
        for (c, w) in WALL_S.iter().enumerate() {
            let raw = fixtures::raw_result(ID, c as u32, 3, (w * 1e9) as u64);
            store.put_raw(&raw).unwrap();
        }
    }
    embedded::aggregate_and_store(&StoreHandle::new(data), &rec).unwrap();
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("results");
    store_with_three_cycles(&data);
    (dir, data)
}

/// `lem results show` run under a pseudo-terminal; `None` when `script` is missing
/// (outside CI only).
fn show_on_a_terminal(data: &Path, extra: &str) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "util-linux `script` is needed under CI"
        );
        eprintln!("skipped: no `script` (util-linux) to give lem a terminal");
        return None;
    }
    let cmd = format!(
        "{} --data-dir {} results show {ID} {extra}",
        env!("CARGO_BIN_EXE_lem"),
        data.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .env_remove("LEM_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sparklines_on_a_terminal_only() {
    let (_dir, data) = data_dir();
    let piped = Command::new(env!("CARGO_BIN_EXE_lem"))
        .arg("--data-dir")
        .arg(&data)
        .args(["results", "show", ID])
        .env_remove("LEM_DATA_DIR")
        .output()
        .unwrap();
    assert!(piped.status.success());
    let piped = String::from_utf8(piped.stdout).unwrap();
    assert!(piped.contains("throughput (output)"), "{piped}");
    assert!(!piped.contains("per cycle (cycle 1 first"), "{piped}");
    assert!(!piped.contains('▁') && !piped.contains('█'), "{piped}");

    let Some(tty) = show_on_a_terminal(&data, "") else {
        return;
    };
    // Throughput 6, 3, 1.5 tok/s: highest, (3 − 1.5) / 4.5 · 7 = 2.3 → ▃, lowest.
    assert!(tty.contains("per cycle (cycle 1 first"), "{tty}");
    assert!(tty.contains("█▃▁  1.5000 – 6.0000 tok/s"), "{tty}");
    let off = show_on_a_terminal(&data, "--no-plots").unwrap();
    assert!(!off.contains("per cycle (cycle 1 first"), "{off}");
}
