//! `lem results compare` at the command line (issue 11): text and `--json` output, the
//! too-few-cycles case, null metrics and bad input. Stores are filled through the library
//! with fixture results, so no model is needed.
//!
//! Expected statistics come from `scripts/reference/welch.py` (scipy 1.17.1,
//! `scipy.stats.ttest_ind(b, a, equal_var=False)`), pair "clear", not from lem's code.

use lem_coordinator::embedded::{self, StoreHandle};
use lem_coordinator::store::{ExperimentRecord, ExperimentStatus, Store};
use snapbox::cmd::Command;
use snapbox::{str, Assert, Redactions};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
mod record_fixture;

/// Per-cycle wall times (s) of the two experiments: the "clear" pair of the script.
const A_WALL_S: [f64; 5] = [10.1, 9.8, 10.4, 10.0, 9.9];
const B_WALL_S: [f64; 4] = [10.9, 11.3, 10.7, 11.1];
/// scipy's values for B − A on those samples: difference, t, df, p, CI low, CI high.
const SCIPY_CLEAR: [f64; 6] = [
    0.9600000000000026,
    5.8137346862791315,
    6.1605497125916395,
    0.0010361495966115988,
    0.5584895109364123,
    1.361510489063593,
];

const A: &str = "exp_20260101_000000_aaaaaa";
const B: &str = "exp_20260101_000001_bbbbbb";
const ONE: &str = "exp_20260101_000002_cccccc";

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A data dir with A and B (aggregated) and a one-cycle experiment ONE.
    fn new() -> Self {
        let sb = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let store = Store::open(&sb.results(), Duration::from_secs(10)).unwrap();
        let recs = [
            experiment(&store, A, "base", &A_WALL_S),
            experiment(&store, B, "candidate", &B_WALL_S),
            experiment(&store, ONE, "single", &[12.0]),
        ];
        drop(store);
        let handle = StoreHandle::new(&sb.results());
        for rec in &recs {
            embedded::aggregate_and_store(&handle, rec).unwrap();
        }
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn results(&self) -> PathBuf {
        self.path().join("results")
    }

    fn lem(&self) -> Command {
        let mut redactions = Redactions::new();
        redactions
            .insert("[TMP]", self.path().to_path_buf())
            .unwrap();
        Command::new(snapbox::cmd::cargo_bin("lem"))
            .with_assert(
                Assert::new()
                    .action_env(snapbox::assert::DEFAULT_ACTION_ENV)
                    .redact_with(redactions),
            )
            .env_remove("LEM_DATA_DIR")
            .env_remove("LEM_COORDINATOR")
            .env("NO_COLOR", "1")
            .current_dir(self.path())
            .timeout(Duration::from_secs(120))
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.lem().args(args).assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    }
}

/// A completed experiment whose cycle `i` took `wall_s[i]` seconds (no energy readings).
fn experiment(store: &Store, id: &str, config_name: &str, wall_s: &[f64]) -> ExperimentRecord {
    let mut resolved = fixtures::resolved_config("org/model");
    resolved.config.config_name = config_name.to_string();
    resolved.config.num_cycles = wall_s.len() as u32;
    let rec = record_fixture::experiment_record(&resolved, id, ExperimentStatus::Completed);
    store.create_experiment(&rec).unwrap();
    for (cycle, s) in wall_s.iter().enumerate() {
        let wall_ns = (s * 1e9).round() as u64;
        store
            .put_raw(&fixtures::raw_result(id, cycle as u32, 4, wall_ns))
            .unwrap();
    }
    rec
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

#[test]
fn json_gives_welchs_test_as_scipy_computes_it() {
    let sb = Sandbox::new();
    let v = sb.json(&["results", "compare", A, B, "--metric", "wall_s", "--json"]);
    assert_eq!(v["a"]["id"], A);
    assert_eq!(v["b"]["id"], B);
    assert_eq!(v["a"]["cycles"], 5);
    assert_eq!(v["b"]["cycles"], 4);
    let rows = v["metrics"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let row = &rows[0];
    assert_eq!(row["metric"], "wall_s");
    assert_eq!(row["a"]["n"], 5);
    assert_eq!(row["b"]["n"], 4);
    let f = |x: &serde_json::Value| x.as_f64().unwrap_or_else(|| panic!("number: {row}"));
    assert!(close(f(&row["a"]["mean"]), mean(&A_WALL_S), 1e-12));
    assert!(close(f(&row["b"]["mean"]), mean(&B_WALL_S), 1e-12));
    let [diff, t, df, p, lo, hi] = SCIPY_CLEAR;
    assert!(close(f(&row["difference"]), diff, 1e-9), "{row}");
    assert!(close(
        f(&row["relative_difference"]),
        diff / mean(&A_WALL_S),
        1e-9
    ));
    let w = &row["welch"];
    assert!(close(f(&w["t"]), t, 1e-8), "{w}");
    assert!(close(f(&w["df"]), df, 1e-8), "{w}");
    assert!(close(f(&w["p_value"]), p, 1e-7), "{w}");
    assert!(close(f(&w["ci95_low"]), lo, 1e-8), "{w}");
    assert!(close(f(&w["ci95_high"]), hi, 1e-8), "{w}");
    assert_eq!(w["significant"], true);
    assert!(row["no_verdict_reason"].is_null());
    // Swapping the sides flips the sign of the difference and the interval.
    let back = sb.json(&["results", "compare", B, A, "--metric", "wall_s", "--json"]);
    let w = &back["metrics"][0]["welch"];
    assert!(close(f(&back["metrics"][0]["difference"]), -diff, 1e-9));
    assert!(close(f(&w["ci95_low"]), -hi, 1e-8), "{w}");
    assert!(close(f(&w["t"]), -t, 1e-8), "{w}");
}

#[test]
fn null_metrics_stay_null_with_their_reason() {
    let sb = Sandbox::new();
    let v = sb.json(&[
        "results",
        "compare",
        A,
        B,
        "--metric",
        "energy_total_j",
        "--metric",
        "output_tokens_per_s",
        "--json",
    ]);
    let energy = &v["metrics"][0];
    assert_eq!(energy["metric"], "energy_total_j");
    for key in ["a", "b", "difference", "relative_difference", "welch"] {
        assert!(energy[key].is_null(), "{key}: {energy}");
    }
    // The fixture's reading is unavailable with this reason.
    for key in ["a_unavailable_reason", "b_unavailable_reason"] {
        let why = energy[key].as_str().unwrap();
        assert!(
            why.contains("no RAPL under the test's powercap root"),
            "{why}"
        );
    }
    assert_eq!(energy["no_verdict_reason"], "no value on side A and B");
    // Without --metric, every metric either side has: energy is not among them.
    let all = sb.json(&["results", "compare", A, B, "--json"]);
    let names: Vec<&str> = all["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"wall_s") && names.contains(&"output_tokens_per_s"));
    assert!(!names.contains(&"energy_total_j"), "{names:?}");
    // Throughput: 2 requests × 4 tokens per cycle over its wall time.
    let tput = &v["metrics"][1];
    let per_cycle = |w: &[f64]| w.iter().map(|s| 8.0 / s).collect::<Vec<_>>();
    let got = tput["a"]["mean"].as_f64().unwrap();
    assert!(close(got, mean(&per_cycle(&A_WALL_S)), 1e-9), "{tput}");
    let got = tput["b"]["mean"].as_f64().unwrap();
    assert!(close(got, mean(&per_cycle(&B_WALL_S)), 1e-9), "{tput}");
}

#[test]
fn too_few_cycles_gives_means_and_no_verdict() {
    let sb = Sandbox::new();
    let v = sb.json(&["results", "compare", ONE, B, "--metric", "wall_s", "--json"]);
    let row = &v["metrics"][0];
    assert_eq!(row["a"]["n"], 1);
    assert_eq!(row["a"]["mean"], 12.0);
    let diff = row["difference"].as_f64().unwrap();
    assert!(close(diff, mean(&B_WALL_S) - 12.0, 1e-12));
    assert!(row["welch"].is_null());
    assert_eq!(
        row["no_verdict_reason"],
        "too few cycles for a verdict (A 1, B 4; need 2 on each side)"
    );
    sb.lem()
        .args(["results", "compare", ONE, B, "--metric", "wall_s"])
        .assert()
        .success()
        .stdout_eq(str![[r#"
A: exp_20260101_000002_cccccc  (single, org/model, 1 cycle(s))
B: exp_20260101_000001_bbbbbb  (candidate, org/model, 4 cycle(s))

METRIC      A      B           B − A  95% CI OF B − A  VERDICT
wall_s  12.00  11.00  -1.000 (-8.3%)  —                too few cycles for a verdict (A 1, B 4; need 2 on each side)

Significant: Welch's t-test on per-cycle values, two-sided p < 0.05 (the 95% CI of B − A excludes 0).

"#]]);
}

#[test]
fn text_output_is_a_table_with_nulls_explained() {
    // The figures are the JSON test's, rounded: means 50.2 / 5 and 44 / 4, and scipy's
    // difference, CI and p for the "clear" pair.
    let sb = Sandbox::new();
    sb.lem()
        .args([
            "results",
            "compare",
            A,
            B,
            "--metric",
            "wall_s",
            "--metric",
            "energy_total_j",
        ])
        .assert()
        .success()
        .stdout_eq(str![[r#"
A: exp_20260101_000000_aaaaaa  (base, org/model, 5 cycle(s))
B: exp_20260101_000001_bbbbbb  (candidate, org/model, 4 cycle(s))

METRIC              A      B            B − A  95% CI OF B − A  VERDICT
wall_s          10.04  11.00  +0.9600 (+9.6%)  0.5585 to 1.362  significant (p = 0.001036)
energy_total_j   null   null             null  —                no value on side A and B

null (no value, not zero):
  energy_total_j on A: 1 of 1 devices not read (package-0: no RAPL under the test's powercap root)
  energy_total_j on B: 1 of 1 devices not read (package-0: no RAPL under the test's powercap root)

Significant: Welch's t-test on per-cycle values, two-sided p < 0.05 (the 95% CI of B − A excludes 0).

"#]]);
}

#[test]
fn bad_input_is_a_usage_error_naming_the_problem() {
    let sb = Sandbox::new();
    sb.lem()
        .args(["results", "compare", A, "exp_nope"])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: no experiment `exp_nope` in the result store at [TMP]/results/lem.sled

"#]]);
    let out = sb
        .lem()
        .args(["results", "compare", A, B, "--metric", "joules"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("--metric joules: not a metric"), "{err}");
    assert!(err.contains("wall_s"), "{err}");
    // An experiment without an aggregate: says so and how to make one.
    let unaggregated = "exp_20260101_000003_dddddd";
    {
        let store = Store::open(&sb.results(), Duration::from_secs(10)).unwrap();
        experiment(&store, unaggregated, "fresh", &[1.0, 2.0]);
    }
    sb.lem()
        .args(["results", "compare", A, unaggregated])
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
error: experiment exp_20260101_000003_dddddd (completed) in the result store at [TMP]/results/lem.sled has no aggregate to compare; make one with `lem --data-dir results aggregate exp_20260101_000003_dddddd`

"#]]);
}

#[test]
fn several_metrics_get_holm_adjusted_verdicts() {
    let sb = Sandbox::new();
    let v = sb.json(&[
        "results",
        "compare",
        A,
        B,
        "--metric",
        "wall_s",
        "--metric",
        "output_tokens_per_s",
        "--json",
    ]);
    let rows = v["metrics"].as_array().unwrap();
    let p: Vec<f64> = rows
        .iter()
        .map(|r| r["welch"]["p_value"].as_f64().unwrap())
        .collect();
    // Holm over two tests, by hand: the smaller p doubled (capped at 1); the larger
    // p itself, but never below the first's adjusted value.
    let (lo, hi) = if p[0] <= p[1] { (0, 1) } else { (1, 0) };
    let mut want = [0.0; 2];
    want[lo] = (2.0 * p[lo]).min(1.0);
    want[hi] = p[hi].max(want[lo]);
    for (r, w) in rows.iter().zip(want) {
        let got = r["holm_p_value"].as_f64().unwrap();
        assert!(close(got, w, 1e-12), "{r}");
        assert_eq!(r["holm_significant"], w < 0.05);
    }
    // wall_s alone is its own family: no correction.
    let one = sb.json(&["results", "compare", A, B, "--metric", "wall_s", "--json"]);
    assert!(one["metrics"][0]["holm_p_value"].is_null());
    let text = sb
        .lem()
        .args([
            "results",
            "compare",
            A,
            B,
            "--metric",
            "wall_s",
            "--metric",
            "output_tokens_per_s",
        ])
        .assert()
        .success();
    let out = String::from_utf8_lossy(&text.get_output().stdout).to_string();
    assert!(out.contains(", Holm p = "), "{out}");
    assert!(
        out.contains("2 metrics tested at once: the verdict uses Holm-adjusted p < 0.05"),
        "{out}"
    );
}
