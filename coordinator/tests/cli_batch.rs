//! `lem batch` end to end on the real SmolLM2 model: configs run in the order given, and
//! under `--parallel` experiments that meter one device (a fake RAPL package whose
//! counter a thread of this test advances at a known rate, and a simulated GPU from the
//! fake NVML at a constant power) never meter it at once, so what they are charged is
//! the device's counter movement counted once. Expected energies come from the test's
//! own counter and the scenario's power, not from lem. Skips without the model, except
//! under CI.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../tests/support.rs"]
mod support;
use support::{build_fake_nvml, repo_root};

const QUICK: &str = "configs/examples/quick.yaml";

/// The fake GPU's constant power and its counter step (the fake's default).
const GPU_POWER_W: f64 = 200.0;
const GPU_STEP_S: f64 = 0.1;
const GPU_UUID: &str = "GPU-00000000-0000-4000-8000-0000000000b1";

/// The fake RAPL package's power, as this test's writer thread advances its counter.
const PACKAGE_POWER_W: f64 = 40.0;
/// How often the writer thread updates the counter.
const WRITER_PERIOD: Duration = Duration::from_millis(2);

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!(
        "$ {cmd:?}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes `n` configs extending the quick example, named `<stem>-<i>`, into `dir`.
fn configs(dir: &Path, stems: &[&str], extra: &str) -> Vec<PathBuf> {
    stems
        .iter()
        .map(|stem| {
            let p = dir.join(format!("{stem}.yaml"));
            std::fs::write(
                &p,
                format!(
                    "_extends: {}\nconfig_name: batch-{stem}\n{extra}",
                    repo_root().join(QUICK).display()
                ),
            )
            .unwrap();
            p
        })
        .collect()
}

#[test]
fn batch_runs_configs_in_the_order_given_and_counts_up() {
    if support::model_path().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("powercap")).unwrap();
    let stems = ["c-first", "a-second", "b-third"];
    let paths = configs(dir.path(), &stems, "idle_baseline_s: 0\n");
    let out = run(Command::new(env!("CARGO_BIN_EXE_lem"))
        .env_remove("LEM_DATA_DIR")
        .env_remove("LEM_NVML_LIB")
        .env("HF_HUB_OFFLINE", "1")
        .env("LEM_POWERCAP_ROOT", dir.path().join("powercap"))
        .arg("--data-dir")
        .arg(dir.path().join("results"))
        .current_dir(repo_root())
        .arg("batch")
        .args(&paths)
        .args(["-n", "1", "--max-tokens", "2"]));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `[i/3] path` lines in the order given, counting up.
    let headers: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains(".yaml"))
        .collect();
    let expected: Vec<String> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}/3] {}", i + 1, p.display()))
        .collect();
    assert_eq!(headers, expected, "{stderr}");
    // The summaries follow the same order.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let positions: Vec<usize> = stems
        .iter()
        .map(|s| {
            stdout
                .find(&format!("(batch-{s})"))
                .unwrap_or_else(|| panic!("no summary of {s}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{stdout}");
}

/// Advances a fake `energy_uj` at `PACKAGE_POWER_W` from the moment it starts, replacing
/// the file in one step (as sysfs reads are atomic), until `stop`.
fn package_writer(
    counter: PathBuf,
    start_uj: u64,
    stop: Arc<AtomicBool>,
    last_uj: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let tmp = counter.with_extension("tmp");
        while !stop.load(Ordering::SeqCst) {
            let uj = start_uj + (PACKAGE_POWER_W * 1e6 * t0.elapsed().as_secs_f64()) as u64;
            std::fs::write(&tmp, format!("{uj}\n")).unwrap();
            std::fs::rename(&tmp, &counter).unwrap();
            last_uj.store(uj, Ordering::SeqCst);
            std::thread::sleep(WRITER_PERIOD);
        }
    })
}

/// The measured window of a raw result, as seconds since the Unix epoch: it ends when
/// the result was finished (`finished_at`, just after the meters stopped) and lasts
/// `wall_ns`.
fn window_s(raw: &Value) -> (f64, f64) {
    let end = chrono::DateTime::parse_from_rfc3339(raw["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    let len = raw["wall_ns"].as_f64().unwrap() / 1e9;
    (end - len, end)
}

fn reading<'a>(raw: &'a Value, id: &str) -> &'a Value {
    raw["energy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device_id"] == id)
        .unwrap_or_else(|| panic!("no reading of {id} in {}", raw["energy"]))
}

#[test]
fn parallel_experiments_on_one_package_and_gpu_are_charged_each_counter_once() {
    if support::model_path().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A fake RAPL package with a large range (no wrap here) advancing at a known power.
    let zone = dir.path().join("powercap/intel-rapl:0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("name"), "package-0\n").unwrap();
    std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let start_uj = 5_000_000;
    std::fs::write(zone.join("energy_uj"), format!("{start_uj}\n")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let last_uj = Arc::new(AtomicU64::new(start_uj));
    let writer = package_writer(
        zone.join("energy_uj"),
        start_uj,
        stop.clone(),
        last_uj.clone(),
    );
    // A simulated node: one GPU at a constant power.
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(build_fake_nvml(), &lib).unwrap();
    let scenario = dir.path().join("scenario.json");
    let s = json!({ "driver_version": "550.54.15",
        "gpus": [ { "name": "NVIDIA H100 80GB HBM3", "uuid": GPU_UUID,
                    "power": [[0.0, GPU_POWER_W]] } ] });
    std::fs::write(&scenario, s.to_string()).unwrap();

    let paths = configs(dir.path(), &["a", "b"], "idle_baseline_s: 0\n");
    let lem = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lem"));
        c.env_remove("LEM_DATA_DIR")
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env("HF_HUB_OFFLINE", "1")
            .env("LEM_POWERCAP_ROOT", dir.path().join("powercap"))
            .env("LEM_NVML_LIB", &lib)
            .env("FAKE_NVML_SCENARIO", &scenario)
            .arg("--data-dir")
            .arg(dir.path().join("results"))
            .current_dir(repo_root())
            .args(args);
        run(&mut c)
    };
    let mut args: Vec<String> = vec!["batch".into()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    args.extend(["--parallel", "2", "-n", "2", "--max-tokens", "8"].map(String::from));
    let out = lem(&args.iter().map(String::as_str).collect::<Vec<_>>());
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let moved_j = (last_uj.load(Ordering::SeqCst) - start_uj) as f64 / 1e6;
    assert!(out.status.success());

    let stderr = String::from_utf8_lossy(&out.stderr);
    // The second experiment waits for the first and says for which device.
    let root = dir.path().join("powercap").display().to_string();
    let waits = stderr
        .lines()
        .find(|l| l.starts_with("[2/2 b.yaml] waits for [1/2 a.yaml]"))
        .unwrap_or_else(|| panic!("no wait announced: {stderr}"));
    assert!(
        waits.contains(&format!("gpu:{GPU_UUID}"))
            || waits.contains(&format!("rapl:package-0@{root}")),
        "{waits}"
    );
    // Under --parallel every line of the run names its experiment.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("[1/2 a.yaml]")
                || line.starts_with("[2/2 b.yaml]")
                || line.starts_with("Batch done")
                || line.starts_with("warning:"),
            "a line without its experiment: {line:?}"
        );
    }

    let list = lem(&["results", "list", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let mut raws = Vec::new();
    for e in list.as_array().unwrap() {
        let shown = lem(&[
            "results",
            "show",
            e["id"].as_str().unwrap(),
            "--raw",
            "--json",
        ]);
        let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
        raws.push(shown[0].clone());
    }
    assert_eq!(raws.len(), 2);
    // The two windows do not overlap: one device, one reader at a time.
    let (a, b) = (window_s(&raws[0]), window_s(&raws[1]));
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    assert!(
        first.1 <= second.0 + 0.01,
        "windows overlap: {first:?} and {second:?}"
    );

    let mut package_total_j = 0.0;
    for raw in &raws {
        let window = raw["wall_ns"].as_f64().unwrap() / 1e9;
        // Each experiment is charged what the package drew over its own window...
        let pkg_j = reading(raw, "package-0")["energy_mj"]
            .as_f64()
            .expect("package measured")
            / 1000.0;
        let expected = PACKAGE_POWER_W * window;
        assert!(
            (pkg_j - expected).abs() <= 0.05 * expected + PACKAGE_POWER_W * 0.25,
            "package {pkg_j} J vs {expected} J over {window} s"
        );
        package_total_j += pkg_j;
        // ... and what the GPU drew over it.
        let gpu_j = reading(raw, GPU_UUID)["energy_mj"]
            .as_f64()
            .expect("GPU measured")
            / 1000.0;
        let expected = GPU_POWER_W * window;
        assert!(
            (gpu_j - expected).abs() <= 0.01 * expected + GPU_POWER_W * GPU_STEP_S,
            "GPU {gpu_j} J vs {expected} J over {window} s"
        );
    }
    // Together never more than the counter moved over the whole batch.
    assert!(
        package_total_j <= moved_j,
        "charged {package_total_j} J, the counter moved {moved_j} J"
    );
}
