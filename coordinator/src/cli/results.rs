//! `lem results list|show` and `lem aggregate` (`results compare` is in `compare.rs`,
//! `results export` in `export_cmd.rs`, `results table` in `pivot_cmd.rs`).

use super::error::outln;
use super::{AggregateArgs, CliError, Outcome, ResultsCommand};
use crate::aggregate::{ExperimentAggregate, JobMetrics};
use crate::embedded::{self, StoreHandle};
use crate::store::{ExperimentRecord, ExperimentStatus, StoreError};
use lem_common::domain::ModelInfo;
use lem_common::stats::Summary;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

pub fn run(data_dir: &Path, cmd: ResultsCommand) -> Result<Outcome, CliError> {
    run_on(&StoreHandle::new(data_dir), cmd)
}

/// `cmd` on `store` (a data dir's, or a private copy of a coordinator's records).
pub fn run_on(store: &StoreHandle, cmd: ResultsCommand) -> Result<Outcome, CliError> {
    let store = store.clone();
    match cmd {
        ResultsCommand::List { all, json, .. } => list(&store, all, json),
        ResultsCommand::Show {
            id,
            raw,
            json,
            no_plots,
            ..
        } => {
            // Plots only for a person at a terminal, never into a pipe or file.
            use std::io::IsTerminal;
            let plots = !no_plots && std::io::stdout().is_terminal();
            show(&store, &id, raw, json, plots)
        }
        ResultsCommand::Compare {
            a,
            b,
            metrics,
            json,
            ..
        } => super::compare::compare(&store, &a, &b, &metrics, json),
        ResultsCommand::Export(args) => super::export_cmd::export(&store, args),
        ResultsCommand::Table(args) => super::pivot_cmd::table(&store, args),
    }
}

/// One row of `lem results list`.
pub(super) struct ListRow {
    rec: ExperimentRecord,
    cycles_done: usize,
    /// `killed` for a running record whose process is gone, else the stored status.
    status: &'static str,
}

impl ListRow {
    /// `rec` of `store` with `cycles_done` cycles that have results.
    pub(super) fn new(store: &StoreHandle, rec: ExperimentRecord, cycles_done: usize) -> Self {
        // A coordinator's running experiment runs on its agents, not in a process here.
        let killed = store.coordinator.is_none() && embedded::is_dead_run(&rec);
        Self {
            status: if killed {
                "killed"
            } else {
                rec.status.as_str()
            },
            rec,
            cycles_done,
        }
    }
}

fn list(store: &StoreHandle, all: bool, json: bool) -> Result<Outcome, CliError> {
    // One store open for the whole listing; none at all when there is no store yet.
    let listed = store.read(|s| {
        s.experiments()?
            .into_iter()
            .map(|r| Ok((s.raw_cycles(&r.id)?.len(), r)))
            .collect::<Result<Vec<_>, _>>()
    });
    let (recs, no_store) = match listed {
        Ok(r) => (r, None),
        Err(e @ StoreError::NoStore { .. }) => (Vec::new(), Some(e)),
        Err(e) => return Err(e.into()),
    };
    let rows = recs
        .into_iter()
        .map(|(cycles_done, rec)| ListRow::new(store, rec, cycles_done))
        .collect();
    print_list(store, rows, no_store, all, json)
}

/// `lem results list`'s output for `rows` of `store` (a data dir's, or a coordinator's):
/// the finished ones (every one with `all`) as a table or JSON, and a line counting the
/// others by status.
pub(super) fn print_list(
    store: &StoreHandle,
    rows: Vec<ListRow>,
    no_store: Option<StoreError>,
    all: bool,
    json: bool,
) -> Result<Outcome, CliError> {
    let (rows, hidden): (Vec<ListRow>, Vec<ListRow>) = rows
        .into_iter()
        .partition(|row| all || row.rec.status.is_finished());
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                let r = &row.rec;
                serde_json::json!({
                    "id": r.id, "config_name": r.config_name, "model_name": r.model_name,
                    "status": row.status, "cycles_done": row.cycles_done,
                    "num_cycles": r.num_cycles, "created_at": r.created_at,
                    "origin": r.origin, "error": r.error,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return Ok(Outcome::Success);
    }
    if let Some(no_store) = no_store {
        // Same words as `results show`: where lem looked, and how to point it elsewhere.
        outln!("No experiments: {no_store}");
    } else if rows.is_empty() {
        let place = match &store.coordinator {
            Some(addr) => format!("on the coordinator at {addr}"),
            None => format!("in {}", store.data_dir.display()),
        };
        outln!(
            "No {}experiments {place}.",
            if all { "" } else { "completed " }
        );
    } else {
        print_rows(&rows)?;
    }
    if !hidden.is_empty() {
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for row in &hidden {
            *by_status.entry(row.status).or_default() += 1;
        }
        let counts: Vec<String> = by_status
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        outln!(
            "({} more not shown: {}; `{}` lists them)",
            hidden.len(),
            counts.join(", "),
            super::store_hint(store, "results list --all")
        );
    }
    Ok(Outcome::Success)
}

/// The table, each column as wide as its longest cell.
fn print_rows(rows: &[ListRow]) -> std::io::Result<()> {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            [
                row.rec.id.clone(),
                row.status.to_string(),
                format!("{}/{}", row.cycles_done, row.rec.num_cycles),
                row.rec.config_name.clone(),
                row.rec.model_name.clone(),
            ]
        })
        .collect();
    let header = ["ID", "STATUS", "CYCLES", "CONFIG", "MODEL"].map(String::from);
    let [w0, w1, w2, w3, _] = super::table::column_widths(&header, &cells);
    for r in [&header].into_iter().chain(&cells) {
        outln!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4]
        );
    }
    Ok(())
}

fn show(
    store: &StoreHandle,
    id: &str,
    raw: bool,
    json: bool,
    plots: bool,
) -> Result<Outcome, CliError> {
    let rec = store.read(|s| s.find_experiment(id))?;
    if raw {
        let raws = store.read(|s| s.raw_results(&rec.id))?;
        if json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&raws).expect("plain data")
            );
            return Ok(Outcome::Success);
        }
        print_failure(&rec)?;
        if raws.is_empty() {
            outln!("Experiment {} has no raw results.", rec.id);
        }
        for r in &raws {
            print_raw(r)?;
        }
        return Ok(Outcome::Success);
    }
    let stored: Option<ExperimentAggregate> = store.read(|s| s.aggregate(&rec.id))?;
    match stored {
        Some(agg) => {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&agg).expect("plain data")
                );
            } else {
                print_failure(&rec)?;
                print_summary(store, &agg, &rec)?;
                if plots {
                    for line in super::plots::plot_lines(&agg) {
                        outln!("{line}");
                    }
                }
            }
            Ok(Outcome::Success)
        }
        None if json => {
            // Nothing to print as JSON; say why where a script's log will show it.
            eprintln!(
                "experiment {} ({}) has no aggregate{}",
                rec.id,
                rec.status.as_str(),
                rec.error
                    .as_deref()
                    .map(|e| format!("; it failed: {e}"))
                    .unwrap_or_default()
            );
            Ok(Outcome::Partial)
        }
        None => {
            let done = store.read(|s| s.raw_cycles(&rec.id))?.len();
            print_failure(&rec)?;
            outln!(
                "Experiment {} ({}, {} of {} cycles have results) has no aggregate.",
                rec.id,
                rec.status.as_str(),
                done,
                rec.num_cycles
            );
            if done > 0 {
                let force = if done < rec.num_cycles as usize {
                    " --force"
                } else {
                    ""
                };
                outln!(
                    "  aggregate it: {}",
                    super::store_hint(store, &format!("aggregate {}{force}", rec.id))
                );
                outln!(
                    "  per cycle:    {}",
                    super::store_hint(store, &format!("results show {} --raw", rec.id))
                );
            }
            if embedded::is_resumable(&rec) {
                outln!(
                    "  resume it:    {}",
                    super::store_hint(store, &format!("experiment --resume {}", rec.id))
                );
            }
            Ok(Outcome::Partial)
        }
    }
}

/// Why a failed experiment failed: its stored error and the causes under it.
fn print_failure(rec: &ExperimentRecord) -> std::io::Result<()> {
    if rec.status != ExperimentStatus::Failed {
        return Ok(());
    }
    outln!(
        "Experiment {} failed: {}",
        rec.id,
        rec.error.as_deref().unwrap_or("(no reason was stored)")
    );
    for cause in &rec.error_chain {
        outln!("  caused by: {cause}");
    }
    Ok(())
}

fn print_raw(r: &lem_common::domain::RawResult) -> std::io::Result<()> {
    print_job(&crate::aggregate::job_metrics(r))?;
    outln!(
        "    started {}  finished {}  attempt {}  job {}",
        r.started_at,
        r.finished_at,
        r.attempt,
        r.job_key
    );
    for e in &r.energy {
        match e.energy_mj {
            Some(mj) => outln!(
                "    energy {:<16} {:>10.3} J  ({:?}){}{}",
                e.device_id,
                mj / 1000.0,
                e.source,
                match (e.baseline_power_w, e.net_energy_mj) {
                    (Some(w), Some(net)) =>
                        format!("  baseline {w:.2} W, net {:.3} J", net / 1000.0),
                    _ => String::new(),
                },
                if e.simulated { "  simulated" } else { "" }
            ),
            None => outln!(
                "    energy {:<16} unavailable: {}",
                e.device_id,
                e.unavailable_reason.as_deref().unwrap_or("?")
            ),
        }
    }
    Ok(())
}

/// What `lem aggregate` did with one experiment (`--json` prints a list of these).
#[derive(Debug, Serialize)]
struct AggregateEntry {
    id: String,
    /// `aggregated`, `already_aggregated`, `skipped_incomplete` or `skipped_no_cycles`.
    action: &'static str,
    cycles_with_results: usize,
    cycles_planned: u32,
    /// Whether the stored aggregate covers every planned cycle (null when none was made).
    complete: Option<bool>,
    reason: Option<String>,
}

/// One experiment `lem aggregate` looks at: its record, how many of its cycles have
/// results and whether an aggregate of it is stored.
pub(super) struct AggregateCandidate {
    pub rec: ExperimentRecord,
    pub cycles_with_results: usize,
    pub has_aggregate: bool,
}

/// What aggregating (and storing) one experiment made.
pub(super) struct AggregateMade {
    pub cycles: usize,
    /// Whether it covers every planned cycle.
    pub complete: bool,
}

/// `lem aggregate [ID] [--all] [--force] [--json]` on a data dir.
pub fn aggregate(data_dir: &Path, args: AggregateArgs) -> Result<Outcome, CliError> {
    let store = StoreHandle::new(data_dir);
    let recs = if args.all {
        store.read(|s| s.experiments())?
    } else {
        let id = args.id.as_deref().expect("clap requires id without --all");
        vec![store.read(|s| s.find_experiment(id))?]
    };
    let mut candidates = Vec::with_capacity(recs.len());
    for rec in recs {
        let cycles_with_results = embedded::completed_cycles(&store, &rec.id)?.len();
        let has_aggregate = store
            .read(|s| s.aggregate::<ExperimentAggregate>(&rec.id))?
            .is_some();
        candidates.push(AggregateCandidate {
            rec,
            cycles_with_results,
            has_aggregate,
        });
    }
    aggregate_each(candidates, &args, |rec| {
        let agg = embedded::aggregate_and_store(&store, rec)?;
        Ok(AggregateMade {
            cycles: agg.cycles.len(),
            complete: agg.complete,
        })
    })
}

/// Decides for each candidate whether to aggregate it (`aggregate_one` does it and
/// stores the result), and prints what happened as `lem aggregate` does: embedded and
/// `lem --coordinator X aggregate` share it, so they print the same lines and JSON.
pub(super) fn aggregate_each(
    candidates: Vec<AggregateCandidate>,
    args: &AggregateArgs,
    mut aggregate_one: impl FnMut(&ExperimentRecord) -> Result<AggregateMade, CliError>,
) -> Result<Outcome, CliError> {
    let mut outcome = Outcome::Success;
    let mut skipped: Vec<String> = Vec::new();
    let mut entries: Vec<AggregateEntry> = Vec::new();
    for candidate in candidates {
        let rec = &candidate.rec;
        let done = candidate.cycles_with_results;
        let entry = |action, complete, reason: Option<String>| AggregateEntry {
            id: rec.id.clone(),
            action,
            cycles_with_results: done,
            cycles_planned: rec.num_cycles,
            complete,
            reason,
        };
        if done == 0 {
            // Nothing to aggregate (failed before its first cycle, or just started):
            // under --all that is not a failure of this command, only a skip to report.
            let why = match rec.status {
                ExperimentStatus::Failed => "failed before any cycle finished",
                _ => "no cycle has finished",
            };
            if args.all {
                skipped.push(format!("{} ({why})", rec.id));
                entries.push(entry("skipped_no_cycles", None, Some(why.to_string())));
                continue;
            }
            return Err(CliError::failure(format!(
                "{}: nothing to aggregate: {why}{}",
                rec.id,
                rec.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        }
        if done < rec.num_cycles as usize && !args.force {
            let why = format!(
                "{done} of {} cycles have results (--force makes a partial aggregate)",
                rec.num_cycles
            );
            eprintln!(
                "{}: {done} of {} cycles have results; skipped (add --force for a partial aggregate)",
                rec.id, rec.num_cycles
            );
            entries.push(entry("skipped_incomplete", None, Some(why)));
            outcome = Outcome::Partial;
            continue;
        }
        if candidate.has_aggregate && !args.force && args.all {
            if !args.json {
                outln!("{}: already aggregated (--force recomputes)", rec.id);
            }
            entries.push(entry("already_aggregated", None, None));
            continue;
        }
        let made = aggregate_one(rec)?;
        if !args.json {
            outln!(
                "{}: aggregated {} cycle(s){}",
                rec.id,
                made.cycles,
                if made.complete { "" } else { " (partial)" }
            );
        }
        entries.push(entry("aggregated", Some(made.complete), None));
    }
    if !skipped.is_empty() {
        eprintln!(
            "skipped {} experiment(s) with nothing to aggregate: {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("plain data")
        );
    }
    Ok(outcome)
}

fn fmt_summary(s: &Summary, unit: &str, prec: usize) -> String {
    match (s.std, s.ci95_low, s.ci95_high, s.cv) {
        (Some(std), Some(lo), Some(hi), cv) => format!(
            "{:.p$} ± {:.p$} {unit}  (95% CI {:.p$}–{:.p$}{})",
            s.mean,
            std,
            lo,
            hi,
            cv.map(|c| format!(", CV {:.1}%", c * 100.0))
                .unwrap_or_default(),
            p = prec
        ),
        _ => format!("{:.p$} {unit}", s.mean, p = prec),
    }
}

/// `, 3 failed` after the count of successful requests, when an external server failed
/// some (`engine: openai`; the result's `server.failed_requests` says why).
pub(crate) fn failed_note(failed_requests: u64) -> String {
    if failed_requests == 0 {
        String::new()
    } else {
        format!(", {failed_requests} failed")
    }
}

fn print_job(m: &JobMetrics) -> std::io::Result<()> {
    outln!(
        "  cycle {}: {} prompts{}, {} in / {} out tokens, {:.2} s, {} out tok/s",
        m.cycle + 1,
        m.num_requests,
        failed_note(m.failed_requests),
        m.input_tokens,
        m.output_tokens,
        m.wall_s,
        m.output_tokens_per_s
            .map_or("—".into(), |r| format!("{r:.2}"))
    );
    Ok(())
}

/// " (over n of N cycles; cycle 2 left out: reason)" when a statistic leaves cycles out.
fn cycles_used(agg: &ExperimentAggregate, name: &str) -> String {
    match (agg.energy_cycles_left_out.get(name), agg.stats.get(name)) {
        (Some(out), Some(s)) => {
            let list: Vec<String> = out
                .iter()
                .map(|c| format!("cycle {}: {}", c.cycle, c.reason))
                .collect();
            format!(
                "  (over {} of {} cycles; left out {})",
                s.n,
                agg.cycles.len(),
                list.join("; ")
            )
        }
        _ => String::new(),
    }
}

/// Energy per output token, per request and per 1,000 queries over the whole window and
/// the steady-state window, for every device and for the GPUs (means over cycles).
fn print_windows(agg: &ExperimentAggregate) -> std::io::Result<()> {
    let Some(first) = agg.cycles.first() else {
        return Ok(());
    };
    let steady = first.steady_state.as_ref();
    let has_gpu = first.whole_window.as_ref().is_some_and(|w| w.gpu.is_some());
    let rows: [(&str, &str, &str, bool); 4] = [
        (
            "J / output token",
            "j_per_output_token",
            "steady_state_j_per_output_token",
            true,
        ),
        (
            "Wh / 1000 queries",
            "wh_per_1000_queries",
            "steady_state_wh_per_1000_queries",
            true,
        ),
        (
            "GPU J / output token",
            "gpu_j_per_output_token",
            "steady_state_gpu_j_per_output_token",
            has_gpu,
        ),
        (
            "GPU Wh / 1000 queries",
            "gpu_wh_per_1000_queries",
            "steady_state_gpu_wh_per_1000_queries",
            has_gpu,
        ),
    ];
    let cell = |name: &str| match agg.stats.get(name) {
        Some(s) => format!("{:>14.4}", s.mean),
        None => format!("{:>14}", "—"),
    };
    if rows
        .iter()
        .all(|r| !agg.stats.contains_key(r.1) && !agg.stats.contains_key(r.2))
    {
        return Ok(());
    }
    let steady_span = steady
        .and_then(|w| Some((w.start_offset_ns?, w.end_offset_ns?)))
        .map(|(a, b)| format!("{:.2}–{:.2} s", a as f64 / 1e9, b as f64 / 1e9))
        .unwrap_or_default();
    outln!(
        "  {:<22} {:>14} {:>14}  {}",
        "energy by window",
        "whole run",
        "steady state",
        if steady_span.is_empty() {
            String::new()
        } else {
            format!("(cycle {}: steady {steady_span})", first.cycle + 1)
        }
    );
    for (label, whole, steady_name, shown) in rows {
        if shown {
            outln!("    {label:<20} {} {}", cell(whole), cell(steady_name));
        }
    }
    // Say why a steady-state column is empty, unless it is the whole run's reason again.
    let Some(w) = steady else {
        return Ok(());
    };
    if let Some(why) = &w.unavailable_reason {
        outln!("    {:<20} no steady state: {why}", "");
    } else if let Some(why) = &w.all_devices.unavailable_reason {
        if first.energy.total_unavailable_reason.as_ref() != Some(why) {
            outln!("    {:<20} steady state, all devices: {why}", "");
        }
    }
    Ok(())
}

/// One device's gross energy, idle baseline and net energy, averaged over the cycles.
fn print_device_energy(
    agg: &ExperimentAggregate,
    d: &crate::aggregate::DeviceEnergy,
) -> std::io::Result<()> {
    let same: Vec<_> = agg
        .cycles
        .iter()
        .filter_map(|c| {
            c.energy
                .devices
                .iter()
                .find(|x| x.device_id == d.device_id && x.device_kind == d.device_kind)
        })
        .collect();
    let mean = |f: &dyn Fn(&crate::aggregate::DeviceEnergy) -> Option<f64>| {
        let v: Option<Vec<f64>> = same.iter().map(|x| f(x)).collect();
        v.filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let plus_minus = mean(&|x| x.uncertainty_j)
        .map(|u| format!(" ± {u:.3}"))
        .unwrap_or_default();
    let mut line = format!(
        "    {:<20} {:.3}{plus_minus} J gross ({})",
        d.device_name,
        mean(&|x| Some(x.gross_j)).unwrap_or(f64::NAN),
        d.source
    );
    if let (Some(base), Some(net)) = (mean(&|x| x.baseline_power_w), mean(&|x| x.net_j)) {
        line.push_str(&format!(", baseline {base:.2} W, net {net:.3} J"));
    }
    if let Some(mode) = d.mig_mode {
        line.push_str(match mode {
            lem_common::mig::MigMode::Exclusive => "  MIG exclusive (whole GPU)",
            lem_common::mig::MigMode::Shared => "  MIG slice (attributed share)",
        });
    }
    if d.simulated {
        line.push_str("  simulated");
    }
    outln!("{line}");
    if let (Some(p), Some(dec)) = (
        mean(&|x| x.phases.as_ref().map(|p| p.prefill_mj / 1000.0)),
        mean(&|x| x.phases.as_ref().map(|p| p.decode_mj / 1000.0)),
    ) {
        let method = d.phases.as_ref().map_or("", |p| match p.method {
            lem_common::domain::PhaseSplitMethod::CounterAtBoundaries => "counter at boundaries",
            lem_common::domain::PhaseSplitMethod::TraceIntegral => "power trace",
            lem_common::domain::PhaseSplitMethod::TimeApportioned => {
                "time-apportioned: the trace cannot resolve the phases"
            }
        });
        outln!(
            "    {:<20} prefill {p:.3} J, decode {dec:.3} J ({method})",
            ""
        );
    }
    Ok(())
}

/// The latency block: how requests arrived, request throughput, and TTFT/TPOT/ITL/E2EL
/// (mean, median, p90, p99 as `vllm bench serve` reports them), each the mean over cycles.
fn print_latency(agg: &ExperimentAggregate) -> std::io::Result<()> {
    let Some(first) = agg.cycles.first() else {
        return Ok(());
    };
    let n = agg.cycles.len();
    let stat = |name: &str| agg.stats.get(name).map(|s| s.mean);
    let scheduled = first.arrivals != "all at once";
    outln!(
        "  arrivals               {}",
        if scheduled {
            format!(
                "{}; batch-at-a-time serving, latencies from arrival",
                first.arrivals
            )
        } else {
            "all at once; latencies from each batch's start".into()
        }
    );
    if let Some(rps) = stat("request_throughput_per_s") {
        let achieved = stat("achieved_arrival_rate_per_s")
            .map(|r| format!("  (achieved arrival rate {r:.2} req/s)"))
            .unwrap_or_default();
        outln!("  request throughput     {rps:.2} req/s{achieved}");
    }
    outln!(
        "  {:<20} {:>9} {:>9} {:>9} {:>9}{}",
        "latency (ms)",
        "mean",
        "median",
        "p90",
        "p99",
        if n > 1 {
            format!("  (mean of {n} cycles)")
        } else {
            String::new()
        }
    );
    for (label, metric) in [
        ("TTFT", "ttft"),
        ("TPOT", "tpot"),
        ("ITL", "itl"),
        ("E2EL", "e2e"),
    ] {
        // A metric that cannot be computed (e.g. TPOT with one token per request) is "—".
        let cells: Vec<String> = ["mean", "p50", "p90", "p99"]
            .iter()
            .map(|s| match stat(&format!("{metric}_{s}_ms")) {
                Some(v) => format!("{v:>9.2}"),
                None => format!("{:>9}", "—"),
            })
            .collect();
        outln!("    {label:<18} {}", cells.join(" "));
    }
    if n > 1 {
        for (label, name) in [
            ("TTFT median", "ttft_p50_ms"),
            ("E2EL median", "e2e_p50_ms"),
        ] {
            if let Some(s) = agg.stats.get(name) {
                outln!("  {label:<22} {}", fmt_summary(s, "ms", 1));
            }
        }
    }
    Ok(())
}

/// The summary of `agg`, with the model line read from the experiment's first stored
/// raw result (which weights and compute dtypes were actually used).
pub fn print_summary(
    store: &StoreHandle,
    agg: &ExperimentAggregate,
    rec: &ExperimentRecord,
) -> Result<(), CliError> {
    let model = store
        .read(|s| s.raw_results(&rec.id))?
        .into_iter()
        .next()
        .map(|r| r.model);
    print_aggregate(agg, &rec.config_name, model.as_ref())?;
    outln!(
        "  details: {}",
        super::store_hint(store, &format!("results show {} --raw", agg.experiment_id))
    );
    Ok(())
}

/// `SmolLM2 (gguf; weights Q8_0 (requantised from Q4_1), compute f32)`: what ran, not
/// only what was asked for.
fn model_line(name: &str, model: Option<&ModelInfo>) -> String {
    match model {
        Some(m) => format!(
            "{name} ({}; weights {}, compute {})",
            m.format, m.weight_dtype, m.compute_dtype
        ),
        None => name.to_string(),
    }
}

/// The human summary printed after a run and by `results show` (embedded, or through a
/// coordinator).
pub(super) fn print_aggregate(
    agg: &ExperimentAggregate,
    config_name: &str,
    model: Option<&ModelInfo>,
) -> std::io::Result<()> {
    outln!();
    outln!("Experiment {}  ({})", agg.experiment_id, config_name);
    if agg.simulated {
        outln!(
            "  SIMULATED  energy comes from a simulated device (fake NVML scenario), not hardware"
        );
    }
    outln!("  model      {}", model_line(&agg.model_name, model));
    if let Some(d) = &agg.compute_device {
        let simulated = agg
            .cycles
            .iter()
            .any(|c| c.energy.devices.iter().any(|e| e.simulated));
        outln!(
            "  device     {} — {}{}",
            d.kind,
            d.name,
            if simulated {
                " (simulated GPU node for energy)"
            } else {
                ""
            }
        );
        if let Some(note) = &d.note {
            outln!("             {note}");
        }
    }
    outln!(
        "  cycles     {} of {}{}",
        agg.cycles.len(),
        agg.num_cycles_expected,
        if agg.complete { "" } else { " (partial)" }
    );
    if let Some(u) = &agg.until_ci {
        outln!("  until-ci   {}", super::until_ci_run::describe(u));
    }
    let Some(first) = agg.cycles.first() else {
        outln!("  no results");
        return Ok(());
    };
    let stat = |name: &str| agg.stats.get(name);
    let show = |label: &str, name: &str, unit: &str, prec: usize| -> std::io::Result<()> {
        if let Some(s) = stat(name) {
            outln!("  {label:<22} {}", fmt_summary(s, unit, prec));
        }
        Ok(())
    };
    outln!(
        "  tokens                 {} in / {} out per cycle ({} prompts)",
        first.input_tokens,
        first.output_tokens,
        first.num_requests
    );
    show("throughput (output)", "output_tokens_per_s", "tok/s", 2)?;
    show("throughput (total)", "total_tokens_per_s", "tok/s", 2)?;
    show("decode", "decode_tokens_per_s", "tok/s", 2)?;
    show("prefill", "prefill_tokens_per_s", "tok/s", 1)?;
    print_latency(agg)?;
    match stat("energy_total_j") {
        Some(s) => {
            outln!(
                "  {:<22} {}{}",
                "energy",
                fmt_summary(s, "J", 3),
                cycles_used(agg, "energy_total_j")
            );
            show("energy / output token", "j_per_output_token", "J", 4)?;
            show("output tokens / J", "output_tokens_per_j", "tok/J", 3)?;
            show("energy (net of idle)", "energy_net_total_j", "J", 3)?;
            show("energy in prefill", "energy_prefill_j", "J", 3)?;
            show("energy in decode", "energy_decode_j", "J", 3)?;
        }
        None => {
            let e = &first.energy;
            if e.missing.is_empty() {
                outln!(
                    "  energy                 no total (null, not zero): {}",
                    e.total_unavailable_reason
                        .as_deref()
                        .unwrap_or("no energy was measured")
                );
            } else if e.devices.is_empty() {
                outln!("  energy                 unavailable (null, not zero):");
                for m in missing_by_reason(&e.missing) {
                    outln!("                         {m}");
                }
            } else {
                outln!(
                    "  energy                 no total (null, not zero): {} of {} devices not read",
                    e.missing.len(),
                    e.missing.len() + e.devices.len()
                );
            }
            if let Some(j) = first.energy.partial_total_j {
                outln!(
                    "  {:<22} {j:.3} J over the devices read (cycle {}; not the job's total)",
                    "partial",
                    first.cycle + 1
                );
            }
            if let Some(s) = stat("gpu_energy_j") {
                outln!(
                    "  {:<22} {}{}",
                    "GPU energy",
                    fmt_summary(s, "J", 3),
                    cycles_used(agg, "gpu_energy_j")
                );
            }
        }
    }
    for d in &first.energy.devices {
        print_device_energy(agg, d)?;
    }
    // Listed under the energy line already when nothing at all was read.
    if !first.energy.devices.is_empty() {
        for m in missing_by_reason(&first.energy.missing) {
            outln!("  {:<22} not measured — {m}", "");
        }
    }
    print_windows(agg)?;
    if let Some(c) = &first.carbon {
        match (stat("co2e_g"), &c.unavailable_reason) {
            (Some(s), _) => outln!(
                "  {:<22} {}  (PUE {}{}, {} gCO2e/kWh)",
                "carbon",
                fmt_summary(s, "gCO2e", 4),
                c.pue,
                if c.pue_assumed { " assumed" } else { "" },
                c.grid_intensity_gco2e_per_kwh.unwrap_or(f64::NAN)
            ),
            (None, Some(why)) => outln!("  carbon                 not computed — {why}"),
            (None, None) => {}
        }
    }
    outln!(
        "  FLOPs                  {:.3e} per cycle ({:.3e} per output token, analytic)",
        first.flops_total,
        first.flops_per_output_token.unwrap_or(f64::NAN)
    );
    match first.peak_memory_bytes {
        Some(b) => outln!(
            "  peak memory            {:.1} MiB (process RSS)",
            b as f64 / 1048576.0
        ),
        None => outln!("  peak memory            unavailable"),
    }
    for w in &agg.warnings {
        outln!("  warning: {w}");
    }
    Ok(())
}

/// `device: reason` lines with one line per reason: `package-0, package-0/dram: no
/// RAPL` rather than the same reason twice.
fn missing_by_reason(missing: &[String]) -> Vec<String> {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for m in missing {
        let (device, reason) = m.split_once(": ").unwrap_or(("", m.as_str()));
        match grouped.iter_mut().find(|(r, _)| r == reason) {
            Some((_, devices)) => devices.push(device.to_string()),
            None => grouped.push((reason.to_string(), vec![device.to_string()])),
        }
    }
    grouped
        .into_iter()
        .map(|(reason, devices)| {
            let devices: Vec<String> = devices.into_iter().filter(|d| !d.is_empty()).collect();
            if devices.is_empty() {
                reason
            } else {
                format!("{}: {reason}", devices.join(", "))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{aggregate_experiment, tests::two_gpus};

    #[test]
    fn an_energy_statistic_over_fewer_cycles_says_which_were_left_out() {
        let raws = [
            two_gpus(0, [Some(100.0), Some(200.0)]),
            two_gpus(1, [Some(900.0), None]),
            two_gpus(2, [Some(150.0), Some(250.0)]),
        ];
        let agg = aggregate_experiment("exp", "c", "m", 3, &raws);
        let note = cycles_used(&agg, "energy_total_j");
        assert!(note.contains("over 2 of 3 cycles"), "{note}");
        assert!(
            note.contains("cycle 2: 1 of 2 devices not read (gpu-1"),
            "{note}"
        );
        // Every cycle complete: no note.
        let agg = aggregate_experiment("exp", "c", "m", 1, &raws[..1]);
        assert_eq!(cycles_used(&agg, "energy_total_j"), "");
    }
}
