//! `lem results table` at the command line: a pivot of a statistic over batch size and
//! precision from a store filled through the library (no model), with a gap, a
//! single-cycle cell, an unavailable statistic, `--json`, CSV and bad input.
//!
//! Expected means and CI half-widths are computed here from the cycles' wall times with
//! Student-t quantiles from a table (df 1: 12.706204736174705, df 2: 4.302652729911275).

use lem_coordinator::embedded::{self, StoreHandle};
use lem_coordinator::store::{ExperimentRecord, ExperimentStatus, Store};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
mod record_fixture;

const T_975: [f64; 3] = [f64::NAN, 12.706204736174705, 4.302652729911275];

/// (id, batch size, precision, cycle wall times in s). Batch 4 × float16 is not run.
const EXPERIMENTS: [(&str, u32, &str, &[f64]); 3] = [
    ("exp_b1_f32", 1, "float32", &[2.0, 2.2, 2.4]),
    ("exp_b4_f32", 4, "float32", &[1.0, 1.1]),
    ("exp_b1_f16", 1, "float16", &[1.5]),
];

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
}

fn record(id: &str, batch: u32, precision: &str, cycles: u32) -> ExperimentRecord {
    let mut resolved = fixtures::resolved_config("org/model");
    resolved.config.num_cycles = cycles;
    resolved.config.batching_options.batch_size = batch;
    let mut rec = record_fixture::experiment_record(&resolved, id, ExperimentStatus::Completed);
    // Named as `lem config generate-grid` names the points of a grid from `grid`.
    rec.config_name = format!("grid__{id}");
    rec.effective_config["fp_precision"] = precision.into();
    rec
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("results");
        let mut recs = Vec::new();
        {
            let store = Store::open(&data, Duration::from_secs(10)).unwrap();
            for (id, batch, precision, walls) in EXPERIMENTS {
                let rec = record(id, batch, precision, walls.len() as u32);
                store.create_experiment(&rec).unwrap();
                for (c, w) in walls.iter().enumerate() {
                    let raw = fixtures::raw_result(id, c as u32, 3, (w * 1e9).round() as u64);
                    store.put_raw(&raw).unwrap();
                }
                recs.push(rec);
            }
        }
        let handle = StoreHandle::new(&data);
        for rec in &recs {
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

    fn table(&self, args: &[&str]) -> (String, String) {
        let out = self.lem(&[&["results", "table"], args].concat());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "table {args:?} failed: {stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    }
}

/// Mean and Student-t 95% CI half-width of `xs`, computed here.
fn mean_ci(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, None);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(T_975[xs.len() - 1] * var.sqrt() / n.sqrt()))
}

const AXES: [&str; 6] = [
    "--rows",
    "batch_size",
    "--cols",
    "precision",
    "--metric",
    "wall_s",
];

#[test]
fn json_cells_are_the_mean_and_ci_of_each_combination_and_the_gap_is_null() {
    let fx = Fixture::new();
    let (out, _) = fx.table(&[&["--all", "--json"], &AXES[..]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["row_axis"], "batching_options.batch_size");
    assert_eq!(v["col_axis"], "fp_precision");
    assert_eq!(v["row_values"], serde_json::json!(["1", "4"]));
    assert_eq!(v["col_values"], serde_json::json!(["float16", "float32"]));
    let col = |p: &str| if p == "float16" { 0 } else { 1 };
    let row = |b: u32| if b == 1 { 0 } else { 1 };
    for (id, batch, precision, walls) in EXPERIMENTS {
        let cell = &v["cells"][row(batch)][col(precision)]["value"];
        assert_eq!(cell["experiment_id"], id);
        let (mean, hw) = mean_ci(walls);
        assert!(
            (cell["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{cell}"
        );
        match hw {
            Some(hw) => assert!(
                (cell["ci95_half_width"].as_f64().unwrap() - hw).abs() < 1e-9,
                "{cell}"
            ),
            None => assert!(cell["ci95_half_width"].is_null()),
        }
        assert_eq!(cell["n"], walls.len());
    }
    let gap = &v["cells"][row(4)][col("float16")];
    assert!(gap["value"].is_null(), "never 0");
    let note = gap["note"].as_u64().unwrap() as usize;
    assert!(v["notes"][note - 1]
        .as_str()
        .unwrap()
        .contains("batching_options.batch_size=4, fp_precision=float16: no selected experiment"));
}

#[test]
fn text_snapshot() {
    let fx = Fixture::new();
    let (out, _) = fx.table(&[&["--all"], &AXES[..]].concat());
    // 2.2 ± 4.3027·0.2/√3 = 0.4968; 1.05 ± 12.706·0.0707/√2 = 0.6353 (two digits).
    insta::assert_snapshot!(out, @r"
    wall_s: mean ± 95% CI half-width across cycles, by batching_options.batch_size (rows) and fp_precision (columns)

    batching_options.batch_size \ fp_precision      float16      float32
    1                                           1.500 (n=1)  2.20 ± 0.50
    4                                                 — [1]  1.05 ± 0.64

    [1] batching_options.batch_size=4, fp_precision=float16: no selected experiment has this combination
    ");
}

#[test]
fn markdown_and_csv_of_named_experiments() {
    let fx = Fixture::new();
    let two = ["exp_b1_f32", "exp_b4_f32"];
    let (md, _) = fx.table(&[&two[..], &AXES[..], &["--format", "markdown"]].concat());
    insta::assert_snapshot!(md, @r"
    wall_s: mean ± 95% CI half-width across cycles, by batching_options.batch_size (rows) and fp_precision (columns)

    | batching_options.batch_size \ fp_precision | float32 |
    |---|---:|
    | 1 | 2.20 ± 0.50 |
    | 4 | 1.05 ± 0.64 |
    ");
    let (csv, notes) = fx.table(&[&["--all"], &AXES[..], &["--format", "csv"]].concat());
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "batching_options.batch_size");
    assert_eq!(header[1], "fp_precision=float16_mean");
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    // Batch 4 × float16: three empty cells; its note went to stderr.
    assert!((1..4).all(|i| rows[1][i].is_empty()), "{:?}", rows[1]);
    let (mean, hw) = mean_ci(EXPERIMENTS[1].3);
    assert!((rows[1][4].parse::<f64>().unwrap() - mean).abs() < 1e-9);
    assert!((rows[1][5].parse::<f64>().unwrap() - hw.unwrap()).abs() < 1e-9);
    assert!(
        notes.contains("[1] batching_options.batch_size=4"),
        "{notes}"
    );
}

#[test]
fn an_unavailable_statistic_leaves_every_cell_empty_with_its_reason() {
    let fx = Fixture::new();
    let (out, _) = fx.table(&[
        "--all",
        "--rows",
        "batch_size",
        "--cols",
        "precision",
        "--metric",
        "j_per_output_token",
    ]);
    // The fixture's only energy reading is unavailable: no cell has a number.
    let body: Vec<&str> = out.lines().skip(3).take(2).collect();
    assert!(
        body.iter().all(|l| !l.contains('±') && !l.contains("(n=")),
        "{out}"
    );
    for id in ["exp_b1_f32", "exp_b4_f32", "exp_b1_f16"] {
        assert!(
            out.contains(&format!("experiment {id} has no j_per_output_token: ")),
            "{out}"
        );
    }
    assert_eq!(out.matches("— [").count(), 4, "{out}");
}

#[test]
fn sweep_takes_the_grid_points_and_leaves_other_experiments_out() {
    let fx = Fixture::new();
    // Outside the sweep: batch 4 × float16, the sweep's gap.
    let mut outsider = record("exp_other", 4, "float16", 1);
    outsider.config_name = "grid2__exp_other".into();
    {
        let store = Store::open(&fx.data, Duration::from_secs(10)).unwrap();
        store.create_experiment(&outsider).unwrap();
        let raw = fixtures::raw_result("exp_other", 0, 3, 1_000_000_000);
        store.put_raw(&raw).unwrap();
    }
    embedded::aggregate_and_store(&StoreHandle::new(&fx.data), &outsider).unwrap();
    let json = |sel: &[&str]| -> serde_json::Value {
        let (out, _) = fx.table(&[sel, &AXES[..], &["--json"]].concat());
        serde_json::from_str(&out).unwrap()
    };
    let sweep = json(&["--sweep", "grid"]);
    assert!(
        sweep["cells"][1][0]["value"].is_null(),
        "exp_other is not in it"
    );
    let all = json(&["--all"]);
    assert_eq!(all["cells"][1][0]["value"]["experiment_id"], "exp_other");
    // Export takes the same selection.
    let out = fx.lem(&[
        "results",
        "export",
        "--sweep",
        "grid",
        "--format",
        "csv",
        "--level",
        "experiment",
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1 + 3);
    // And so does the report: the grid's experiments, not the outsider.
    let html = fx.data.parent().unwrap().join("grid.html");
    let html_arg = html.display().to_string();
    let out = fx.lem(&["report", "--sweep", "grid", "--out", &html_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    for (id, ..) in EXPERIMENTS {
        assert!(page.contains(id), "{id} is in the sweep's report");
    }
    assert!(!page.contains("exp_other"), "exp_other is not in the sweep");
    let out = fx.lem(&[&["results", "table", "--sweep", "nope"][..], &AXES[..]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no experiment of sweep `nope`"), "{err}");
}

#[test]
fn bad_axes_and_metrics_are_refused_naming_what_would_work() {
    let fx = Fixture::new();
    let out = fx.lem(&[
        "results",
        "table",
        "--all",
        "--rows",
        "batch_sise",
        "--cols",
        "precision",
        "--metric",
        "wall_s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--rows batch_sise: no selected experiment has the config field"),
        "{err}"
    );
    assert!(
        err.contains("batching_options.batch_size") && err.contains("fp_precision"),
        "{err}"
    );
    let out = fx.lem(&[
        "results",
        "table",
        "--all",
        "--rows",
        "batch_size",
        "--cols",
        "precision",
        "--metric",
        "joules",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metric joules: not a statistic"));
}
