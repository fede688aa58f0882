//! `lem report` in a real browser: stores made by real `lem experiment` runs (the
//! SmolLM2 model on the CPU) — three on a simulated GPU node (the fake NVML, batch size
//! and max output tokens varied, two cycles each) and one with no energy at all — are
//! reported, and headless Chromium loads each report from disk. The page must record no
//! error, every plot must be drawn with as many points as the stored results hold
//! (counted here from `lem results show --json`), missing energy must be a gap with its
//! reason (never a plotted zero), and a screenshot is written for a person to look at.
//! Without Chromium the tests skip with the reason, except under CI (env `CI` set),
//! where they fail (`scripts/setup-chromium.sh` installs it).

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../tests/support.rs"]
mod support;
use support::{build_fake_nvml, repo_root};

/// The statistics the report draws per cycle, with where each cycle's value sits in an
/// aggregate's cycle (as `lem results show --json` prints it).
const CYCLE_METRICS: [(&str, &[&str]); 7] = [
    ("output_tokens_per_s", &["output_tokens_per_s"]),
    ("ttft_p50_ms", &["ttft_ms", "p50"]),
    ("e2e_p90_ms", &["e2e_ms", "p90"]),
    ("energy_total_j", &["energy", "total_j"]),
    ("j_per_output_token", &["j_per_output_token"]),
    ("gpu_energy_j", &["whole_window", "gpu", "energy_j"]),
    (
        "gpu_j_per_output_token",
        &["whole_window", "gpu", "j_per_output_token"],
    ),
];

/// The Chromium binary, or `None` (with the reason printed) when it is not installed.
/// Under CI a missing browser fails the test.
fn chromium() -> Option<PathBuf> {
    let names = ["chromium", "chromium-browser", "google-chrome"];
    let found = std::env::var_os("LEM_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        let why =
            "no Chromium (chromium, chromium-browser, google-chrome on PATH, or LEM_CHROMIUM); \
                   install it with scripts/setup-chromium.sh";
        if std::env::var_os("CI").is_some() {
            panic!("the browser test needs Chromium under CI: {why}");
        }
        eprintln!("skipped: {why}");
    }
    found
}

fn lem(data_dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lem"));
    cmd.env_remove("LEM_DATA_DIR")
        .env_remove("LEM_NVML_LIB")
        .env("HF_HUB_OFFLINE", "1")
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(repo_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().expect("run lem");
    if !out.status.success() {
        panic!(
            "lem {args:?} failed ({})\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// What Chromium made of the page: the DOM after scripts ran, and its log.
struct Page {
    dom: String,
    log: String,
}

fn load(chrome: &Path, html: &Path, profile: &Path) -> Page {
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium --dump-dom: {}", out.status);
    Page {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn screenshot(chrome: &Path, html: &Path, profile: &Path, png: &Path, height: u32) {
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--window-size=1280,{height}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium --screenshot: {}",
        out.status
    );
    let bytes = std::fs::read(png).expect("the screenshot was written");
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());
}

/// Attributes of every opening tag `<tag ` in `dom` (Chromium's serialisation: double
/// quotes, `&quot;` inside values).
fn tags(dom: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let end = after.find('>').expect("a closed tag");
        let mut attrs = BTreeMap::new();
        let mut s = &after[..end];
        while let Some(eq) = s.find("=\"") {
            let name = s[..eq].trim().to_string();
            let value_end = s[eq + 2..].find('"').expect("a closed attribute");
            attrs.insert(name, s[eq + 2..eq + 2 + value_end].to_string());
            s = &s[eq + 2 + value_end + 1..];
        }
        out.push(attrs);
        rest = &after[end..];
    }
    out
}

/// The text of each `<div class="gap" data-gap="kind">`, tags removed.
fn gaps(dom: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = dom;
    let open = "<div class=\"gap\" data-gap=\"";
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len()..];
        let kind_end = after.find('"').unwrap();
        let body_start = after.find('>').unwrap() + 1;
        let body_end = after[body_start..].find("</div>").unwrap() + body_start;
        let mut text = String::new();
        let mut in_tag = false;
        for c in after[body_start..body_end].chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        out.push((after[..kind_end].to_string(), text));
        rest = &after[body_end..];
    }
    out
}

/// Checks what every page must satisfy: the script finished without an error, no
/// uncaught exception or console message in Chromium's log, every plot drawn.
fn assert_page_ok(page: &Page) -> Vec<BTreeMap<String, String>> {
    let body = tags(&page.dom, "body").into_iter().next().expect("a body");
    let errors_start = page.dom.find("<div id=\"report-errors\"").unwrap();
    let errors_end = page.dom[errors_start..].find("</div>").unwrap() + errors_start;
    assert_eq!(
        body.get("data-status").map(String::as_str),
        Some("ok"),
        "page errors: {}",
        &page.dom[errors_start..errors_end]
    );
    assert!(
        page.dom[errors_start..errors_end].ends_with("role=\"alert\">"),
        "errors recorded: {}",
        &page.dom[errors_start..errors_end]
    );
    for line in page.log.lines() {
        assert!(
            !line.contains("Uncaught") && !line.contains(":CONSOLE"),
            "browser log: {line}"
        );
    }
    let figures: Vec<_> = tags(&page.dom, "figure")
        .into_iter()
        .filter(|f| f.get("class").map(String::as_str) == Some("plot"))
        .collect();
    for f in &figures {
        assert_eq!(f.get("data-drawn").map(String::as_str), Some("1"), "{f:?}");
        let inked: u64 = f["data-series-pixels"].parse().unwrap();
        assert!(
            inked > 0,
            "plot {} drew nothing of its data",
            f["data-plot"]
        );
    }
    assert_eq!(
        body.get("data-plots").map(String::as_str),
        Some(figures.len().to_string().as_str())
    );
    figures
}

/// The value at `path` in `v`, `None` when absent or null.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut v = v;
    for key in path {
        v = v.get(key)?;
    }
    (!v.is_null()).then_some(v)
}

/// The plots an experiment's section must have, id → number of points, counted from
/// what `lem results show` prints, and the kinds of gap it must show.
fn expected_section(id: &str, agg: &Value, raws: &Value) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut plots = BTreeMap::new();
    let mut gaps = Vec::new();
    let raws = raws.as_array().unwrap();
    let first = &raws[0];
    for (i, reading) in first["energy"].as_array().unwrap().iter().enumerate() {
        let samples = reading["trace"]["samples"].as_array();
        let count =
            |field: &str| samples.map_or(0, |s| s.iter().filter(|x| !x[field].is_null()).count());
        let points = count("power_avg_w").max(count("power_instant_w"));
        if points > 0 {
            plots.insert(format!("{id}-power-{i}"), points);
        } else {
            gaps.push("power".to_string());
        }
        let split_cycles = raws
            .iter()
            .filter(|r| {
                r["energy"].as_array().unwrap().iter().any(|e| {
                    e["device_id"] == reading["device_id"]
                        && !e["phases"].is_null()
                        && !e["energy_mj"].is_null()
                })
            })
            .count();
        if split_cycles > 0 {
            plots.insert(format!("{id}-phases-{i}"), 3 * split_cycles);
        } else {
            gaps.push("phase-energy".to_string());
        }
    }
    let requests: usize = raws
        .iter()
        .map(|r| r["requests"].as_array().unwrap().len())
        .sum();
    let itl: usize = raws
        .iter()
        .flat_map(|r| r["requests"].as_array().unwrap())
        .map(|q| q["itl_ns"].as_array().unwrap().len())
        .sum();
    plots.insert(format!("{id}-latency-ttft"), requests);
    plots.insert(format!("{id}-latency-e2el"), requests);
    plots.insert(format!("{id}-latency-itl"), itl);
    for (name, path) in CYCLE_METRICS {
        let with_value = agg["cycles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| at(c, path).is_some())
            .count();
        if with_value > 0 {
            plots.insert(format!("{id}-cycle-{name}"), with_value);
        } else {
            gaps.push("cycle-metric".to_string());
        }
    }
    (plots, gaps)
}

fn embedded_data(html: &str) -> Value {
    let start = html.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
    let end = html[start..].find("</script>").unwrap() + start;
    serde_json::from_str(&html[start..end]).expect("the embedded data is JSON")
}

#[test]
fn report_of_simulated_gpu_runs_draws_every_plot_with_the_stored_points() {
    let Some(chrome) = chromium() else { return };
    support::model();
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(build_fake_nvml(), &lib).unwrap();
    // Idle at 70 W for 2 s, then a load that steps between four levels every 150 ms.
    let mut power = vec![json!([0.0, 70.0])];
    for i in 0..800 {
        let watts = [380.0, 520.0, 450.0, 610.0][i % 4];
        power.push(json!([2.0 + 0.15 * i as f64, watts]));
    }
    let scenario = dir.path().join("scenario.json");
    let s = json!({ "driver_version": "550.54.15",
        "gpus": [ { "name": "NVIDIA H100 80GB HBM3",
                    "uuid": "GPU-00000000-0000-4000-8000-000000000311", "power": power } ] });
    std::fs::write(&scenario, s.to_string()).unwrap();
    let config = dir.path().join("sim.yaml");
    std::fs::write(
        &config,
        format!(
            "_extends: {}\nidle_baseline_s: 0.5\n",
            repo_root().join("configs/examples/quick.yaml").display()
        ),
    )
    .unwrap();
    let powercap = dir.path().join("powercap");
    std::fs::create_dir_all(&powercap).unwrap();
    let store = dir.path().join("results");
    let env = [
        ("LEM_POWERCAP_ROOT", powercap.as_path()),
        ("LEM_NVML_LIB", lib.as_path()),
        ("FAKE_NVML_SCENARIO", scenario.as_path()),
    ];
    // Batch size × max output tokens, one corner left out: a 2 × 2 heatmap with a hole.
    let grid = [("1", "4"), ("2", "4"), ("1", "6")];
    let mut ids = Vec::new();
    for (batch, max_tokens) in grid {
        let out = lem(
            &store,
            &env,
            &[
                "experiment",
                config.to_str().unwrap(),
                "-n",
                "2",
                "-c",
                "2",
                "-b",
                batch,
                "--max-tokens",
                max_tokens,
                "--json",
            ],
        );
        ids.push(json_of(&out)["experiment_id"].as_str().unwrap().to_string());
    }

    let html = dir.path().join("report.html");
    lem(
        &store,
        &[],
        &["report", "--all", "--out", html.to_str().unwrap()],
    );
    let page = load(&chrome, &html, &dir.path().join("profile"));
    let figures = assert_page_ok(&page);
    let drawn: BTreeMap<String, usize> = figures
        .iter()
        .map(|f| (f["data-plot"].clone(), f["data-points"].parse().unwrap()))
        .collect();

    let mut expected = BTreeMap::new();
    let mut expected_gaps = Vec::new();
    let mut aggs = Vec::new();
    for id in &ids {
        let agg = json_of(&lem(&store, &[], &["results", "show", id, "--json"]));
        let raws = json_of(&lem(
            &store,
            &[],
            &["results", "show", id, "--raw", "--json"],
        ));
        let (plots, gaps) = expected_section(id, &agg, &raws);
        expected.extend(plots);
        expected_gaps.extend(gaps);
        aggs.push(agg);
    }
    // Across experiments: batch size (axis 0) and max output tokens (axis 1) differ.
    let has = |a: &Value, name: &str| a["stats"].get(name).is_some();
    let count = |name: &str| aggs.iter().filter(|a| has(a, name)).count();
    let energy_points = count("j_per_output_token") + count("gpu_j_per_output_token");
    assert!(
        energy_points > 0,
        "the simulated GPU gives energy per token"
    );
    for axis in 0..2 {
        expected.insert(format!("axis-{axis}-energy"), energy_points);
        expected.insert(
            format!("axis-{axis}-throughput"),
            count("output_tokens_per_s"),
        );
    }
    // The CPU package is not readable here, so tokens per joule are the GPUs'.
    let pareto = aggs
        .iter()
        .filter(|a| has(a, "gpu_j_per_output_token") && has(a, "e2e_p90_ms"))
        .count();
    expected.insert("pareto".into(), pareto);
    assert_eq!(drawn, expected, "plots drawn (id → points) vs the store");

    // Missing energy is shown as a gap with its reason: the CPU package of each run.
    let found_gaps = gaps(&page.dom);
    for kind in ["power", "phase-energy", "cycle-metric"] {
        let want = expected_gaps.iter().filter(|g| *g == kind).count();
        let got: Vec<_> = found_gaps.iter().filter(|(k, _)| k == kind).collect();
        assert_eq!(got.len(), want, "{kind} gaps: {got:?}");
    }
    let why = aggs[0]["cycles"][0]["energy"]["total_unavailable_reason"]
        .as_str()
        .unwrap();
    assert!(
        found_gaps
            .iter()
            .any(|(k, text)| k == "cycle-metric" && text.contains(why)),
        "the energy total's gap gives its reason ({why})"
    );

    // The heatmap: 2 × 2 cells, one without an experiment.
    let table = tags(&page.dom, "table")
        .into_iter()
        .find(|t| t.get("class").map(String::as_str) == Some("heatmap"))
        .expect("a heatmap");
    assert_eq!(table["data-cells"], "3");
    assert_eq!(page.dom.matches(">no experiment<").count(), 1);
    // Simulated readings are labelled in the provenance table.
    assert!(page.dom.contains(">SIMULATED<"));

    // The embedded data agrees with the store: the GPU's energy in each cycle.
    let data = embedded_data(&std::fs::read_to_string(&html).unwrap());
    for (exp, agg) in data["experiments"].as_array().unwrap().iter().zip(&aggs) {
        let metric = exp["cycle_metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "gpu_energy_j")
            .unwrap();
        let stored: Vec<Value> = agg["cycles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["whole_window"]["gpu"]["energy_j"].clone())
            .collect();
        assert_eq!(metric["values"], Value::Array(stored));
    }

    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-simulated.html");
    std::fs::copy(&html, &kept).unwrap();
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-simulated.png");
    screenshot(&chrome, &html, &dir.path().join("profile"), &png, 4200);
}

#[test]
fn report_without_energy_shows_each_gap_and_its_reason_never_a_zero_line() {
    let Some(chrome) = chromium() else { return };
    support::model();
    let dir = tempfile::tempdir().unwrap();
    // No NVML library and an empty powercap tree: nothing can be metered.
    let powercap = dir.path().join("powercap");
    std::fs::create_dir_all(&powercap).unwrap();
    let store = dir.path().join("results");
    let config = repo_root().join("configs/examples/quick.yaml");
    let env = [("LEM_POWERCAP_ROOT", powercap.as_path())];
    let out = lem(
        &store,
        &env,
        &[
            "experiment",
            config.to_str().unwrap(),
            "-n",
            "2",
            "-c",
            "2",
            "--max-tokens",
            "4",
            "--json",
        ],
    );
    let agg = json_of(&out);
    let id = agg["experiment_id"].as_str().unwrap().to_string();
    let raws = json_of(&lem(
        &store,
        &[],
        &["results", "show", &id, "--raw", "--json"],
    ));

    let html = dir.path().join("report.html");
    lem(
        &store,
        &[],
        &["report", &id, "--out", html.to_str().unwrap()],
    );
    let page = load(&chrome, &html, &dir.path().join("profile"));
    let figures = assert_page_ok(&page);
    let drawn: BTreeMap<String, usize> = figures
        .iter()
        .map(|f| (f["data-plot"].clone(), f["data-points"].parse().unwrap()))
        .collect();
    let (expected, expected_gaps) = expected_section(&id, &agg, &raws);
    assert_eq!(drawn, expected, "plots drawn (id → points) vs the store");
    let kinds: BTreeSet<&str> = figures.iter().map(|f| f["data-kind"].as_str()).collect();
    assert!(
        !kinds.contains("power") && !kinds.contains("phase-energy"),
        "no power or phase plot without energy: {kinds:?}"
    );

    // Each energy statistic is a gap that says why, never a plot.
    let found = gaps(&page.dom);
    let why = agg["cycles"][0]["energy"]["total_unavailable_reason"]
        .as_str()
        .expect("the aggregate says why there is no energy");
    let metric_gaps: Vec<_> = found.iter().filter(|(k, _)| k == "cycle-metric").collect();
    assert_eq!(
        metric_gaps.len(),
        expected_gaps
            .iter()
            .filter(|g| *g == "cycle-metric")
            .count(),
        "{found:?}"
    );
    assert!(
        metric_gaps.iter().any(|(_, t)| t.contains(why)),
        "the energy total's gap gives its reason ({why}): {metric_gaps:?}"
    );
    assert!(found.iter().any(|(k, _)| k == "power"), "{found:?}");
    assert!(found.iter().any(|(k, _)| k == "comparison"), "{found:?}");

    // In the data, missing energy is null with a reason, not 0.
    let data = embedded_data(&std::fs::read_to_string(&html).unwrap());
    let total = data["experiments"][0]["cycle_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "energy_total_j")
        .unwrap();
    assert_eq!(total["values"], json!([null, null]));
    assert!(total["summary"].is_null());
    assert!(total["unavailable_reason"].as_str().unwrap().contains(why));

    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-no-energy.html");
    std::fs::copy(&html, &kept).unwrap();
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-no-energy.png");
    screenshot(&chrome, &html, &dir.path().join("profile"), &png, 2600);
}

#[test]
fn report_without_a_store_fails_naming_the_data_dir_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("no-results-here");
    let html = dir.path().join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .env_remove("LEM_DATA_DIR")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["report", "exp_missing", "--out"])
        .arg(&html)
        .output()
        .unwrap();
    // A data dir without a store is bad usage (exit 2), as for every reading command.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-results-here"), "{stderr}");
    assert!(!html.exists() && !data_dir.exists());
}
