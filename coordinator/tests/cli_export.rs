//! `lem results export` at the command line: rows, columns and nulls of each level and
//! format over a store filled through the library (no model), its errors, and a check
//! that pandas and pyarrow load every format with the values `lem results show --json`
//! prints.

use lem_common::domain::{DeviceKind, EnergyReading, EnergySource, PowerSample, PowerTrace};
use lem_coordinator::embedded::{self, StoreHandle};
use lem_coordinator::store::{ExperimentRecord, ExperimentStatus, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

#[path = "../../tests/support.rs"]
mod support;

#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
mod record_fixture;

/// Simulated GPU energy of exp_a's cycles (mJ) and their wall times (ns).
const GPU_MJ: [f64; 2] = [40_000.0, 46_000.0];
const WALL_NS: [u64; 2] = [2_000_000_000, 3_000_000_000];

/// Power (W) of the trace samples of exp_a's GPU, one every TRACE_PERIOD_MS; the cycle's
/// number is added so the cycles' traces differ.
const TRACE_W: [f64; 3] = [310.0, 325.5, 298.25];
const TRACE_PERIOD_MS: f64 = 100.0;

/// A data dir with: `exp_a` (2 cycles, simulated GPU energy with a power trace), `exp_b`
/// (1 cycle, energy unavailable), both aggregated; `exp_c` failed before any result.
struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
}

fn record(id: &str, cycles: u32, status: ExperimentStatus) -> ExperimentRecord {
    let mut resolved = fixtures::resolved_config("org/model");
    resolved.config.num_cycles = cycles;
    let mut rec = record_fixture::experiment_record(&resolved, id, status);
    rec.config_name = format!("cfg-{id}");
    rec.error = (status == ExperimentStatus::Failed).then(|| "cycle 1: no prompts".into());
    rec
}

fn simulated_gpu(energy_mj: f64, window_ns: u64, cycle: u32) -> EnergyReading {
    let mut r = EnergyReading::unavailable(DeviceKind::Gpu, "GPU-fake-0", "", window_ns);
    r.source = EnergySource::NvmlCounter;
    r.energy_mj = Some(energy_mj);
    r.unavailable_reason = None;
    r.simulated = true;
    let samples = TRACE_W
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut s = PowerSample::power_usage_only(
                (i as f64 * TRACE_PERIOD_MS * 1e6) as u64,
                w + cycle as f64,
            );
            s.temperature_c = (i == 0).then_some(61);
            s
        })
        .collect();
    r.trace = Some(PowerTrace {
        period_ms: TRACE_PERIOD_MS,
        samples,
        unavailable: Default::default(),
    });
    r
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("results");
        let recs = [
            record("exp_a", 2, ExperimentStatus::Completed),
            record("exp_b", 1, ExperimentStatus::Completed),
            record("exp_c", 1, ExperimentStatus::Failed),
        ];
        {
            let store = Store::open(&data, Duration::from_secs(10)).unwrap();
            for rec in &recs {
                store.create_experiment(rec).unwrap();
            }
            for cycle in 0..2 {
                let mut raw = fixtures::raw_result("exp_a", cycle, 4, WALL_NS[cycle as usize]);
                raw.energy = vec![simulated_gpu(
                    GPU_MJ[cycle as usize],
                    WALL_NS[cycle as usize],
                    cycle,
                )];
                store.put_raw(&raw).unwrap();
            }
            store
                .put_raw(&fixtures::raw_result("exp_b", 0, 1, 1_000_000_000))
                .unwrap();
        } // closed: the aggregation below opens it again
        let handle = StoreHandle::new(&data);
        for rec in &recs[..2] {
            embedded::aggregate_and_store(&handle, rec).unwrap();
        }
        Self { _dir: dir, data }
    }

    fn lem(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lem"))
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .env_remove("LEM_DATA_DIR")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    /// `lem results export ARGS`, which must succeed; its stdout.
    fn export(&self, args: &[&str]) -> String {
        let out = self.lem(&[&["results", "export"], args].concat());
        assert!(
            out.status.success(),
            "export {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// CSV text as rows of column → cell.
fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            assert_eq!(rec.len(), header.len(), "a row as wide as the header");
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn jsonl_rows(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .map(|l| match serde_json::from_str(l).unwrap() {
            serde_json::Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn cycle_csv_has_one_row_per_cycle_with_energy_or_an_empty_cell() {
    let fx = Fixture::new();
    let rows = csv_rows(&fx.export(&["exp_a", "exp_b", "--format", "csv", "--level", "cycle"]));
    assert_eq!(rows.len(), 3, "2 cycles of exp_a + 1 of exp_b");
    for (i, row) in rows[..2].iter().enumerate() {
        assert_eq!(row["experiment_id"], "exp_a");
        assert_eq!(row["cycle"], i.to_string());
        assert_eq!(row["simulated"], "true");
        assert_eq!(row["energy_method"], "nvml-counter");
        let energy_j: f64 = row["energy_total_j"].parse().unwrap();
        assert!(close(energy_j, GPU_MJ[i] / 1000.0), "{energy_j}");
        let wall_s: f64 = row["wall_s"].parse().unwrap();
        assert!(close(wall_s, WALL_NS[i] as f64 / 1e9), "{wall_s}");
        // 2 requests × 4 output tokens per cycle (the fixture).
        let per_token: f64 = row["j_per_output_token"].parse().unwrap();
        assert!(close(per_token, GPU_MJ[i] / 1000.0 / 8.0), "{per_token}");
        assert_eq!(row["energy_unavailable_reason"], "");
    }
    let b = &rows[2];
    assert_eq!(b["experiment_id"], "exp_b");
    assert_eq!(b["simulated"], "false");
    for column in [
        "energy_total_j",
        "energy_gpu_j",
        "j_per_output_token",
        "energy_method",
        "tpot_mean_ms",
        "peak_memory_bytes",
    ] {
        assert_eq!(b[column], "", "{column} is null, not zero");
    }
    assert!(!b["energy_unavailable_reason"].is_empty());
}

#[test]
fn request_jsonl_has_one_object_per_request_with_nulls() {
    let fx = Fixture::new();
    let rows =
        jsonl_rows(&fx.export(&["exp_a", "exp_b", "--format", "jsonl", "--level", "request"]));
    // Two requests per cycle, three cycles.
    assert_eq!(rows.len(), 6);
    let raw = fixtures::raw_result("exp_a", 0, 4, WALL_NS[0]);
    let first = &rows[0];
    assert_eq!(first["experiment_id"], "exp_a");
    assert_eq!(first["request_index"], 0);
    assert_eq!(first["output_tokens"], 4);
    assert_eq!(first["stop_reason"], "max_tokens");
    assert!(close(
        first["ttft_ms"].as_f64().unwrap(),
        raw.requests[0].ttft_ns as f64 / 1e6
    ));
    assert!(close(
        first["e2e_ms"].as_f64().unwrap(),
        raw.requests[0].e2e_ns as f64 / 1e6
    ));
    assert!(first["arrival_offset_ms"].is_null());
    // exp_b's requests have one token: no gap between tokens, no TPOT.
    let b = &rows[5];
    assert_eq!(b["experiment_id"], "exp_b");
    assert!(b["itl_mean_ms"].is_null() && b["tpot_ms"].is_null());
    // Every object has the same keys in the same order.
    let keys =
        |m: &serde_json::Map<String, serde_json::Value>| m.keys().cloned().collect::<Vec<_>>();
    assert!(rows.iter().all(|r| keys(r) == keys(first)));
}

#[test]
fn trace_csv_has_one_row_per_sample_and_only_devices_with_a_trace() {
    let fx = Fixture::new();
    let rows = csv_rows(&fx.export(&["exp_a", "exp_b", "--format", "csv", "--level", "trace"]));
    // exp_a: 2 cycles × one GPU with a trace; exp_b's CPU reading has none.
    assert_eq!(rows.len(), 2 * TRACE_W.len());
    for (i, row) in rows.iter().enumerate() {
        let (cycle, sample) = (i / TRACE_W.len(), i % TRACE_W.len());
        assert_eq!(row["experiment_id"], "exp_a");
        assert_eq!(row["cycle"], cycle.to_string());
        assert_eq!(row["device_kind"], "gpu");
        assert_eq!(row["device_id"], "GPU-fake-0");
        assert_eq!(row["simulated"], "true");
        assert_eq!(row["sample_index"], sample.to_string());
        let t_ms: f64 = row["t_ms"].parse().unwrap();
        assert!(close(t_ms, sample as f64 * TRACE_PERIOD_MS), "{t_ms}");
        let w: f64 = row["power_avg_w"].parse().unwrap();
        assert!(close(w, TRACE_W[sample] + cycle as f64), "{w}");
        let temperature = if sample == 0 { "61" } else { "" };
        assert_eq!(row["temperature_c"], temperature, "null, not zero");
        assert_eq!(row["power_instant_w"], "");
    }
    // Only exp_b: nothing has a trace, which is said rather than an empty file.
    let out = fx.lem(&[
        "results", "export", "exp_b", "--format", "csv", "--level", "trace",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing to export at --level trace"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn parquet_export_starts_and_ends_with_the_magic_bytes() {
    let fx = Fixture::new();
    let out_path = fx.data.parent().unwrap().join("cycles.parquet");
    let out = fx.lem(&[
        "results",
        "export",
        "--all",
        "--format",
        "parquet",
        "--level",
        "cycle",
        "--out",
        &out_path.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&out_path).unwrap();
    assert!(bytes.len() > 8);
    assert_eq!(&bytes[..4], b"PAR1");
    assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
}

#[test]
fn experiment_export_of_all_writes_the_file_and_names_what_it_skipped() {
    let fx = Fixture::new();
    let out_path = fx.data.parent().unwrap().join("exp.csv");
    std::fs::write(&out_path, "an older export\n").unwrap();
    let out_arg = out_path.display().to_string();
    let out = fx.lem(&[
        "results",
        "export",
        "--all",
        "--format",
        "csv",
        "--level",
        "experiment",
        "--out",
        &out_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the table went to the file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipped exp_c (failed): no aggregate"),
        "{stderr}"
    );
    let rows = csv_rows(&std::fs::read_to_string(&out_path).unwrap());
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!(a["experiment_id"], "exp_a");
    assert_eq!(a["config_name"], "cfg-exp_a");
    assert_eq!(a["num_cycles"], "2");
    let mean_j: f64 = a["energy_total_j_mean"].parse().unwrap();
    assert!(close(mean_j, (GPU_MJ[0] + GPU_MJ[1]) / 2000.0), "{mean_j}");
    assert_eq!(a["energy_total_j_n"], "2");
    // Sample std of two values: |a − b| / √2.
    let std_j: f64 = a["energy_total_j_std"].parse().unwrap();
    assert!(close(
        std_j,
        (GPU_MJ[1] - GPU_MJ[0]).abs() / 1000.0 / 2f64.sqrt()
    ));
    let b = &rows[1];
    assert_eq!(b["experiment_id"], "exp_b");
    assert_eq!(b["energy_total_j_mean"], "");
    assert_eq!(b["energy_total_j_n"], "");
    // One cycle: a mean but no spread.
    assert!(!b["wall_s_mean"].is_empty());
    assert_eq!(b["wall_s_ci95_half_width"], "");
    // No temporary file is left beside the output.
    let left: Vec<_> = std::fs::read_dir(out_path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lem-export"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_requests_are_refused_naming_what_is_wrong() {
    let fx = Fixture::new();
    let failed = fx.lem(&[
        "results", "export", "exp_c", "--format", "csv", "--level", "cycle",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("experiment exp_c (failed) has no aggregate"),
        "{err}"
    );
    assert!(err.contains("aggregate exp_c"), "{err}");
    assert!(failed.stdout.is_empty());

    let unknown = fx.lem(&[
        "results", "export", "exp_z", "--format", "csv", "--level", "cycle",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no experiment `exp_z`"));

    let no_ids = fx.lem(&["results", "export", "--format", "csv", "--level", "cycle"]);
    assert_eq!(no_ids.status.code(), Some(2));
    let bad_level = fx.lem(&[
        "results", "export", "--all", "--format", "csv", "--level", "job",
    ]);
    assert_eq!(bad_level.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_level.stderr).contains("job"));

    // Read-only: a data dir that does not exist is named, not created.
    let missing = fx.data.parent().unwrap().join("nowhere");
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .arg("--data-dir")
        .arg(&missing)
        .args([
            "results", "export", "--all", "--format", "csv", "--level", "cycle",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no result store"));
    assert!(!missing.exists());
}

/// The interpreter of the pandas and pyarrow environment (`scripts/test-python.sh` creates it).
/// Without one the test fails: under CI always; elsewhere only LEM_SKIP_PANDAS=1 skips.
fn pandas_python() -> Option<PathBuf> {
    let script = support::repo_root().join("scripts/test-python.sh");
    let out = Command::new(&script).output().unwrap();
    if out.status.success() {
        let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
        return Some(PathBuf::from(path));
    }
    let why = String::from_utf8_lossy(&out.stderr).into_owned();
    if std::env::var_os("LEM_SKIP_PANDAS").is_some() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: no pandas environment ({why})");
        return None;
    }
    panic!(
        "{} failed (set up pandas or, outside CI, LEM_SKIP_PANDAS=1): {why}",
        script.display()
    );
}

#[test]
fn pandas_loads_every_format_with_the_values_results_show_prints() {
    let Some(python) = pandas_python() else {
        return;
    };
    let fx = Fixture::new();
    let check = support::repo_root().join("tests/export_pandas.py");
    let out = Command::new(python)
        .arg(&check)
        .arg(env!("CARGO_BIN_EXE_lem"))
        .arg(&fx.data)
        .args(["exp_a", "exp_b"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The script reports each comparison it made; it must have made some of each level.
    let said = String::from_utf8_lossy(&out.stdout);
    for level in ["request", "cycle", "experiment", "trace"] {
        assert!(said.contains(&format!("{level}: ")), "{said}");
    }
}

#[test]
fn aggregate_all_json_says_what_happened_to_each_experiment() {
    let fx = Fixture::new();
    let entries = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = fx.lem(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON array")
    };
    let summary = |e: &serde_json::Value| {
        (
            e["id"].as_str().unwrap().to_string(),
            e["action"].as_str().unwrap().to_string(),
            e["cycles_with_results"].as_u64().unwrap(),
            e["complete"].as_bool(),
        )
    };
    let first = entries(&["aggregate", "--all", "--json"]);
    let mut got: Vec<_> = first.iter().map(summary).collect();
    got.sort();
    let s = |v: &str| v.to_string();
    assert_eq!(
        got,
        [
            (s("exp_a"), s("already_aggregated"), 2, None),
            (s("exp_b"), s("already_aggregated"), 1, None),
            (s("exp_c"), s("skipped_no_cycles"), 0, None),
        ]
    );
    let c = first.iter().find(|e| e["id"] == "exp_c").unwrap();
    assert_eq!(c["reason"], "failed before any cycle finished");

    let mut forced: Vec<_> = entries(&["aggregate", "--all", "--force", "--json"])
        .iter()
        .map(summary)
        .collect();
    forced.sort();
    assert_eq!(
        forced,
        [
            (s("exp_a"), s("aggregated"), 2, Some(true)),
            (s("exp_b"), s("aggregated"), 1, Some(true)),
            (s("exp_c"), s("skipped_no_cycles"), 0, None),
        ]
    );
}
