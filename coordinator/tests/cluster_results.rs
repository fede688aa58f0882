//! The results commands through a coordinator print what the embedded commands print.
//!
//! A real `lem serve` and one real `lem-agent` (a simulated GPU node: the fake NVML) run
//! a small sweep on the real SmolLM2 with one or two output tokens; a second sweep no
//! node can place is cancelled (an interrupted experiment, hidden from a plain `results
//! list`). Then, with a VIEWER credential, `results list` (`--all`, `--json`), `results
//! show` (summary, `--json`, `--raw`), `results compare`, `results export` (CSV, JSON
//! Lines, Parquet; cycle, request and trace levels), `results table` and `report` go
//! through `--coordinator`; each fetches only the records it selects (counted from the
//! CLI's log). After the coordinator stops, this test writes an embedded
//! data dir of its own from the stopped store — an experiment record per sweep
//! experiment (fields derived here: id `sweep-N/name`, the submitted config, the job
//! count, the first accepted cycle's start), the accepted results (read through the
//! store's `accepted` tree) and the stored aggregates — and runs the same commands there
//! with `--data-dir`. Both outputs must be equal, byte for byte (the report apart from
//! the second it was generated, a hint apart from the place it names). `aggregate` (by
//! id, `--all`, `--force`, `--json`) writes, so an operator runs it through the
//! coordinator before it stops, and a viewer is refused; it must print what the same
//! command prints embedded.

mod cluster_support;
mod serve_support;
#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

use cluster_support::{start_coordinator, whole_gpu, write_configs};
use lem_coordinator::scheduler::{Record, SweepCreated};
use lem_coordinator::store::{ExperimentRecord, ExperimentStatus, Store};
use serve_support::node::SimNode as Node;
use serve_support::{join_token, lem};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const CYCLES: usize = 3;
const EXPERIMENTS: usize = 3;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn results_through_a_coordinator_print_what_embedded_prints() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(
        dir.path(),
        "node-r",
        vec![whole_gpu(
            "NVIDIA H100 80GB HBM3",
            "GPU-0000e000-0000-4000-8000-000000000001",
        )],
    );
    let data_dir = dir.path().join("coordinator");
    let token = join_token(&data_dir);
    let viewer = dir.path().join("viewer");
    let added = lem()
        .args(["user", "add", "reader", "--role", "viewer", "--out"])
        .arg(&viewer)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(added.status.success(), "{:?}", text(&added));
    let addr = format!("127.0.0.1:{}", cluster_support::free_udp_port());
    let coordinator = start_coordinator(&data_dir, &addr, &[]);
    let _agent = node.spawn(&addr, &token, 0);
    coordinator.wait_status("the agent", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 1)
    });

    let configs = write_configs(&dir.path().join("configs"), EXPERIMENTS, None);
    let mut submit = vec!["sweep", "submit", "--cycles", "3", "--name", "results"];
    submit.extend(configs.iter().map(|p| p.to_str().unwrap()));
    coordinator.cli_ok(&submit);
    let jobs = (EXPERIMENTS * CYCLES) as u64;
    let status = coordinator.wait_status("every job accepted", |s| {
        s["sweeps"][0]["progress"]["accepted"].as_u64() == Some(jobs)
    });
    assert_eq!(status["sweeps"][0]["progress"]["failed"].as_u64(), Some(0));
    // sweep-1: one experiment no node can place (a MIG profile nobody has). Pending, it
    // is running on the coordinator; cancelled, it is interrupted and `results list`
    // counts it among the hidden rows.
    let out = coordinator.cli_ok(&[
        "sweep",
        "submit",
        configs[0].to_str().unwrap(),
        "--mig-profile",
        "7g.40gb",
        "--name",
        "unplaced",
    ]);
    assert!(
        out.contains("sweep-1: submitted 1 experiment(s), 1 job(s)"),
        "{out}"
    );

    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let parquet = |side: &str| out_dir.join(format!("{side}.parquet"));
    let html = |side: &str| out_dir.join(format!("{side}.html"));
    // Each command, with a placeholder for the side's output file.
    let commands: Vec<Vec<String>> = [
        "results list",
        "results list --all",
        "results list --json",
        "results list --all --json",
        "results show sweep-0/c002",
        "results show sweep-0/c002 --json",
        "results show sweep-0/c000 --raw",
        "results show sweep-0/c001 --raw --json",
        "results compare sweep-0/c000 sweep-0/c001",
        "results compare sweep-0/c000 sweep-0/c002 --json",
        "results export --all --format csv --level cycle",
        "results export sweep-0/c001 --format jsonl --level request",
        "results export --sweep c001 --format csv --level experiment",
        "results export --all --format jsonl --level trace",
        "results export --all --format parquet --level request --out {parquet}",
        "results table --all --rows max_output_tokens --cols random_seed --metric output_tokens_per_s",
        "results table --all --rows max_output_tokens --cols random_seed --metric output_tokens_per_s --json",
        "results table sweep-0/c000 sweep-0/c001 --rows max_output_tokens --cols random_seed --metric output_tokens_per_s --format markdown",
        "results export --sweep c000 --format csv --level cycle",
        "report --all --out {html}",
    ]
    .iter()
    .map(|c| c.split(' ').map(str::to_owned).collect())
    .collect();
    let fill = |cmd: &[String], side: &str| -> Vec<String> {
        cmd.iter()
            .map(|a| match a.as_str() {
                "{parquet}" => parquet(side).display().to_string(),
                "{html}" => html(side).display().to_string(),
                _ => a.clone(),
            })
            .collect()
    };
    let remote = |args: &[String]| -> Output {
        lem()
            .args(["--coordinator", &addr, "--credential"])
            .arg(&viewer)
            .args(args)
            .output()
            .unwrap()
    };
    // Running on the coordinator, not "killed": no process of this machine runs it.
    let listed: serde_json::Value = serde_json::from_slice(
        &remote(&["results", "list", "--all", "--json"].map(String::from)).stdout,
    )
    .unwrap();
    let unplaced = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "sweep-1/c000")
        .unwrap_or_else(|| panic!("sweep-1/c000 listed: {listed:#}"));
    assert_eq!(unplaced["status"], "running", "{unplaced}");
    assert_eq!(unplaced["cycles_done"], 0, "{unplaced}");
    coordinator.cli_ok(&["sweep", "cancel", "1"]);

    let remote_outputs: Vec<Output> = commands
        .iter()
        .map(|c| remote(&fill(c, "remote")))
        .collect();
    // The coordinator sends only the records a command selects: one of the four for a
    // named experiment, all four under --all (counted as the CLI logs them).
    let experiments_there = EXPERIMENTS + 1;
    let fetched = |args: &[&str]| -> Output {
        lem()
            .env("LEM_LOG", "lem_coordinator::cli::remote_store=info")
            .args(["--coordinator", &addr, "--credential"])
            .arg(&viewer)
            .args(args)
            .output()
            .unwrap()
    };
    for (args, records) in [
        (
            &[
                "results",
                "export",
                "sweep-0/c001",
                "--format",
                "csv",
                "--level",
                "cycle",
            ][..],
            1,
        ),
        (&["results", "show", "sweep-0/c002", "--raw"], 1),
        (&["results", "compare", "sweep-0/c000", "sweep-0/c002"], 2),
        // A prefix takes every id it starts, so an ambiguous one can be told.
        (
            &[
                "results",
                "export",
                "sweep-0/c00",
                "--format",
                "csv",
                "--level",
                "cycle",
            ],
            EXPERIMENTS,
        ),
        (
            &[
                "results", "export", "--sweep", "c001", "--format", "csv", "--level", "cycle",
            ],
            1,
        ),
        (
            &[
                "results", "export", "--all", "--format", "csv", "--level", "cycle",
            ],
            experiments_there,
        ),
        (&["results", "list", "--all"], experiments_there),
    ] {
        let out = fetched(args);
        // The ambiguous prefix is refused as embedded refuses it (usage, exit 2).
        let code = if args.contains(&"sweep-0/c00") { 2 } else { 0 };
        assert_eq!(out.status.code(), Some(code), "{args:?}: {:?}", text(&out));
        let log = text(&out).1;
        let said = format!("fetched {records} experiment record(s)");
        assert!(log.contains(&said), "{args:?}: expected `{said}` in {log}");
    }
    // Bad selections, through the coordinator.
    let missing = remote(&["results", "compare", "sweep-0/nope", "sweep-0/c000"].map(String::from));
    let ambiguous = remote(&["results", "show", "sweep-0/c00", "--raw"].map(String::from));
    // A viewer may not change anything.
    let refused = remote(&["sweep", "cancel", "0"].map(String::from));
    assert!(!refused.status.success(), "a viewer cancelled a sweep");
    let viewer_aggregate = remote(&["aggregate", "sweep-0/c000"].map(String::from));
    assert!(
        !viewer_aggregate.status.success(),
        "a viewer aggregated: {:?}",
        text(&viewer_aggregate)
    );
    assert!(
        text(&viewer_aggregate).1.contains("results aggregate"),
        "{:?}",
        text(&viewer_aggregate)
    );
    // `aggregate` writes: an operator runs it (the coordinator's own credential). The
    // cancelled sweep-1/c000 has no cycle: skipped under --all, refused by id.
    let aggregate_commands: Vec<Vec<String>> = [
        "aggregate sweep-0/c000",
        "aggregate sweep-0/c001 --json",
        "aggregate --all",
        "aggregate --all --json",
        "aggregate --all --force",
        "aggregate sweep-1/c000",
    ]
    .iter()
    .map(|c| c.split(' ').map(str::to_owned).collect())
    .collect();
    let aggregated_through: Vec<Output> = aggregate_commands
        .iter()
        .map(|c| {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            coordinator.cli(&args)
        })
        .collect();
    coordinator.stop();

    let local_dir = dir.path().join("local");
    let expected_jobs = embedded_copy(&data_dir, &local_dir);
    assert_eq!(
        expected_jobs, jobs as usize,
        "accepted results in the store"
    );
    let local = |args: &[String]| -> Output {
        lem()
            .arg("--data-dir")
            .arg(&local_dir)
            .args(args)
            .output()
            .unwrap()
    };
    for (cmd, through) in commands.iter().zip(&remote_outputs) {
        let here = local(&fill(cmd, "local"));
        let name = cmd.join(" ");
        assert!(
            through.status.success(),
            "{name} via the coordinator: {:?}",
            text(through)
        );
        assert!(here.status.success(), "{name} locally: {:?}", text(&here));
        // A hint names where the results are: the coordinator, or the data dir.
        let through_hinted = text(through).0.replace(
            &format!("lem --coordinator {addr} "),
            &format!("lem --data-dir {} ", local_dir.display()),
        );
        assert_eq!(
            through_hinted,
            text(&here).0,
            "`lem {name}`: stdout through the coordinator and embedded differ"
        );
        let shown = text(through).0;
        assert!(
            !shown.is_empty() || name.contains("--out"),
            "{name}: no output"
        );
        println!(
            "lem {name}: {} lines, {} bytes, equal; first: {:?}",
            shown.lines().count(),
            shown.len(),
            shown.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
        );
    }
    for (cmd, through) in aggregate_commands.iter().zip(&aggregated_through) {
        let here = local(cmd);
        let name = cmd.join(" ");
        // Only the cancelled experiment is refused ("nothing to aggregate", exit 1).
        let code = if name.contains("sweep-1/") { 1 } else { 0 };
        assert_eq!(
            through.status.code(),
            Some(code),
            "{name}: {:?}",
            text(through)
        );
        assert_eq!(here.status.code(), Some(code), "{name}: {:?}", text(&here));
        assert_eq!(
            text(through),
            text(&here),
            "`lem {name}`: output through the coordinator and embedded differ"
        );
        println!("lem {name}: equal: {:?}", text(through));
    }
    let (all_json, _) = text(&aggregated_through[3]);
    let entries: serde_json::Value = serde_json::from_str(&all_json).unwrap();
    let actions: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("sweep-0/c000", "already_aggregated"),
            ("sweep-0/c001", "already_aggregated"),
            ("sweep-0/c002", "already_aggregated"),
            ("sweep-1/c000", "skipped_no_cycles"),
        ],
        "{all_json}"
    );
    assert!(
        text(&aggregated_through[0])
            .0
            .contains("sweep-0/c000: aggregated 3 cycle(s)\n"),
        "{:?}",
        text(&aggregated_through[0])
    );
    assert_eq!(
        std::fs::read(parquet("remote")).unwrap(),
        std::fs::read(parquet("local")).unwrap(),
        "the Parquet exports differ"
    );
    let report = |side: &str| normalise_times(&std::fs::read_to_string(html(side)).unwrap());
    assert_eq!(report("remote"), report("local"), "the reports differ");

    // The same refusal words and exit codes as embedded (the place named differs: the
    // coordinator, not a store folder).
    let missing_here =
        local(&["results", "compare", "sweep-0/nope", "sweep-0/c000"].map(String::from));
    assert_eq!(missing.status.code(), Some(2), "{:?}", text(&missing));
    assert_eq!(missing_here.status.code(), Some(2));
    assert!(
        text(&missing)
            .1
            .contains("no experiment `sweep-0/nope` on the coordinator at"),
        "{:?}",
        text(&missing)
    );
    assert!(text(&missing_here)
        .1
        .contains("no experiment `sweep-0/nope` in the result store at"));
    let ambiguous_here = local(&["results", "show", "sweep-0/c00", "--raw"].map(String::from));
    assert_eq!(ambiguous.status.code(), Some(2), "{:?}", text(&ambiguous));
    assert_eq!(text(&ambiguous).1, text(&ambiguous_here).1);
    assert!(
        text(&ambiguous).1.contains("is ambiguous"),
        "{:?}",
        text(&ambiguous)
    );
}

/// Writes an embedded data dir at `to` from the stopped coordinator's store at `from`:
/// per sweep experiment a record, its accepted results (as `sweep-N/name`'s) and its
/// stored aggregate. Returns how many accepted results it copied.
fn embedded_copy(from: &Path, to: &Path) -> usize {
    let wait = Duration::from_secs(30);
    let source = Store::open(from, wait).unwrap();
    let target = Store::open(to, wait).unwrap();
    let created: BTreeMap<u64, SweepCreated> = source
        .records()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::SweepCreated(c) => Some((c.sweep.0, c)),
            _ => None,
        })
        .collect();
    let mut copied = 0;
    for row in source.sweeps().unwrap() {
        let sweep = &created[&row.sweep.0];
        let jobs = source.jobs_of_sweep(&row).unwrap();
        let accepted = source.accepted_results(&row).unwrap();
        for (index, experiment) in sweep.experiments.iter().enumerate() {
            let id = format!("sweep-{}/{}", row.sweep.0, experiment.name);
            let planned = jobs
                .iter()
                .filter(|j| j.experiment as usize == index)
                .count();
            let mut mine: Vec<_> = accepted
                .iter()
                .filter(|a| a.job.experiment as usize == index)
                .collect();
            mine.sort_by_key(|a| a.job.cycle);
            // Sweep 1 was cancelled before its one job could be placed.
            let status = if row.sweep.0 == 1 {
                assert!(mine.is_empty(), "{id}: the unplaced job ran");
                ExperimentStatus::Interrupted
            } else {
                assert_eq!(mine.len(), planned, "{id}: every cycle accepted");
                ExperimentStatus::Completed
            };
            let created_at = mine
                .first()
                .map(|a| a.raw.started_at.clone())
                .unwrap_or_default();
            target
                .create_experiment(&ExperimentRecord {
                    id: id.clone(),
                    config_name: experiment.name.clone(),
                    model_name: experiment.config["model_name"].as_str().unwrap().to_owned(),
                    config_fingerprint: String::new(),
                    effective_config: experiment.config.clone(),
                    cli_overrides: BTreeMap::new(),
                    num_cycles: planned as u32,
                    status,
                    created_at: created_at.clone(),
                    updated_at: created_at,
                    pid: 0,
                    hostname: String::new(),
                    error: None,
                    error_chain: Vec::new(),
                    origin: format!("sweep `{}` ({})", row.name, row.sweep),
                    until_ci: None,
                })
                .unwrap();
            for a in mine {
                let mut raw = a.raw.clone();
                raw.experiment_id = id.clone();
                target.put_raw(&raw).unwrap();
                copied += 1;
            }
            // The ended sweep's aggregate (the cancelled one's has no cycles).
            let aggregate: Option<serde_json::Value> = source.aggregate(&id).unwrap();
            assert!(
                aggregate.is_some() || status != ExperimentStatus::Completed,
                "{id}: no stored aggregate"
            );
            if let Some(aggregate) = aggregate {
                target.put_aggregate(&id, &aggregate).unwrap();
            }
        }
    }
    copied
}

/// `text` with every whole-second UTC time (`2026-01-02T03:04:05Z`, how a report stamps
/// when it was generated) replaced by `<time>`.
fn normalise_times(text: &str) -> String {
    let bytes = text.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:ddZ";
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let fits = bytes.len() - i >= shape.len()
            && shape.iter().zip(&bytes[i..]).all(|(s, b)| match s {
                b'd' => b.is_ascii_digit(),
                other => other == b,
            });
        if fits {
            out.push_str("<time>");
            i += shape.len();
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}
