//! `lem results list|show` and `lem aggregate`.

use super::{exit, AggregateArgs, ResultsCommand};
use crate::aggregate::{ExperimentAggregate, JobMetrics};
use crate::embedded::{self, StoreHandle};
use crate::store::{ExperimentRecord, ExperimentStatus};
use lem_common::stats::Summary;
use std::path::Path;

pub fn run(data_dir: &Path, cmd: ResultsCommand) -> i32 {
    let store = StoreHandle::new(data_dir);
    match cmd {
        ResultsCommand::List { all, json } => list(&store, all, json),
        ResultsCommand::Show { id, raw, json } => show(&store, &id, raw, json),
    }
}

fn list(store: &StoreHandle, all: bool, json: bool) -> i32 {
    // One store open for the whole listing.
    let listed = store.with(|s| {
        s.experiments()?
            .into_iter()
            .map(|r| Ok((s.raw_cycles(&r.id)?.len(), r)))
            .collect::<Result<Vec<_>, _>>()
    });
    let recs = match listed {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    let rows: Vec<(ExperimentRecord, usize, &'static str)> = recs
        .into_iter()
        .filter_map(|(done, r)| {
            let status = if embedded::is_dead_run(&r) {
                "killed"
            } else {
                r.status.as_str()
            };
            (all || r.status == ExperimentStatus::Completed).then_some((r, done, status))
        })
        .collect();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, done, status)| {
                serde_json::json!({
                    "id": r.id, "config_name": r.config_name, "model_name": r.model_name,
                    "status": status, "cycles_done": done, "num_cycles": r.num_cycles,
                    "created_at": r.created_at, "origin": r.origin,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return exit::OK;
    }
    if rows.is_empty() {
        println!(
            "No {}experiments in {}.",
            if all { "" } else { "completed " },
            store.data_dir.display()
        );
        if !all {
            println!("(`lem results list --all` includes incomplete ones)");
        }
        return exit::OK;
    }
    println!(
        "{:<30} {:<11} {:>6}  {:<24} MODEL",
        "ID", "STATUS", "CYCLES", "CONFIG"
    );
    for (r, done, status) in rows {
        println!(
            "{:<30} {:<11} {:>6}  {:<24} {}",
            r.id,
            status,
            format!("{done}/{}", r.num_cycles),
            r.config_name,
            r.model_name
        );
    }
    exit::OK
}

fn show(store: &StoreHandle, id: &str, raw: bool, json: bool) -> i32 {
    let rec = match store.with(|s| s.find_experiment(id)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if raw {
        let raws = match store.with(|s| s.raw_results(&rec.id)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILURE;
            }
        };
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&raws).expect("plain data")
            );
        } else {
            if raws.is_empty() {
                println!("Experiment {} has no raw results yet.", rec.id);
            }
            for r in &raws {
                print_job(&crate::aggregate::job_metrics(r));
                println!(
                    "    started {}  finished {}  attempt {}  job {}",
                    r.started_at, r.finished_at, r.attempt, r.job_key
                );
                for e in &r.energy {
                    match e.energy_mj {
                        Some(mj) => println!(
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
                        None => println!(
                            "    energy {:<16} unavailable: {}",
                            e.device_id,
                            e.unavailable_reason.as_deref().unwrap_or("?")
                        ),
                    }
                }
            }
        }
        return exit::OK;
    }
    let stored: Result<Option<ExperimentAggregate>, _> = store.with(|s| s.aggregate(&rec.id));
    match stored {
        Ok(Some(agg)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&agg).expect("plain data")
                );
            } else {
                print_aggregate(&agg, &rec);
            }
            exit::OK
        }
        Ok(None) => {
            eprintln!(
                "Experiment {} ({}) has no aggregate yet. Run `lem aggregate {}` (add --force for a partial one), or `lem results show {} --raw`.",
                rec.id,
                rec.status.as_str(),
                rec.id,
                rec.id
            );
            exit::PARTIAL
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

pub fn aggregate(data_dir: &Path, args: AggregateArgs) -> i32 {
    let store = StoreHandle::new(data_dir);
    let recs = if args.all {
        match store.with(|s| s.experiments()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILURE;
            }
        }
    } else {
        let id = args.id.as_deref().expect("clap requires id without --all");
        match store.with(|s| s.find_experiment(id)) {
            Ok(r) => vec![r],
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        }
    };
    let mut code = exit::OK;
    for rec in recs {
        let done = embedded::completed_cycles(&store, &rec.id)
            .map(|c| c.len())
            .unwrap_or(0);
        let has_agg = store
            .with(|s| s.aggregate::<ExperimentAggregate>(&rec.id))
            .map(|a| a.is_some())
            .unwrap_or(false);
        if done < rec.num_cycles as usize && !args.force {
            eprintln!(
                "{}: {done} of {} cycles have results; skipped (use --force for a partial aggregate)",
                rec.id, rec.num_cycles
            );
            code = exit::PARTIAL;
            continue;
        }
        if done == 0 {
            eprintln!("{}: no raw results; nothing to aggregate", rec.id);
            code = exit::PARTIAL;
            continue;
        }
        if has_agg && !args.force && args.all {
            eprintln!("{}: already aggregated (use --force to recompute)", rec.id);
            continue;
        }
        match embedded::aggregate_and_store(&store, &rec) {
            Ok(agg) => println!(
                "{}: aggregated {} cycle(s){}",
                rec.id,
                agg.cycles.len(),
                if agg.complete { "" } else { " (partial)" }
            ),
            Err(e) => {
                eprintln!("error: {}: {e}", rec.id);
                code = exit::FAILURE;
            }
        }
    }
    code
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

fn print_job(m: &JobMetrics) {
    println!(
        "  cycle {}: {} prompts, {} in / {} out tokens, {:.2} s, {} out tok/s",
        m.cycle + 1,
        m.num_requests,
        m.input_tokens,
        m.output_tokens,
        m.wall_s,
        m.output_tokens_per_s
            .map_or("—".into(), |r| format!("{r:.2}"))
    );
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
fn print_windows(agg: &ExperimentAggregate) {
    let Some(first) = agg.cycles.first() else {
        return;
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
        return;
    }
    let steady_span = steady
        .and_then(|w| Some((w.start_offset_ns?, w.end_offset_ns?)))
        .map(|(a, b)| format!("{:.2}–{:.2} s", a as f64 / 1e9, b as f64 / 1e9))
        .unwrap_or_default();
    println!(
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
            println!("    {label:<20} {} {}", cell(whole), cell(steady_name));
        }
    }
    // Say why a steady-state column is empty, unless it is the whole run's reason again.
    let Some(w) = steady else {
        return;
    };
    if let Some(why) = &w.unavailable_reason {
        println!("    {:<20} no steady state: {why}", "");
    } else if let Some(why) = &w.all_devices.unavailable_reason {
        if first.energy.total_unavailable_reason.as_ref() != Some(why) {
            println!("    {:<20} steady state, all devices: {why}", "");
        }
    }
}

/// The human summary printed after a run and by `results show`.
/// One device's gross energy, idle baseline and net energy, averaged over the cycles.
fn print_device_energy(agg: &ExperimentAggregate, d: &crate::aggregate::DeviceEnergy) {
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
    let mut line = format!(
        "    {:<20} {:.3} J gross ({})",
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
    println!("{line}");
    if let (Some(p), Some(dec)) = (
        mean(&|x| x.phases.as_ref().map(|p| p.prefill_mj / 1000.0)),
        mean(&|x| x.phases.as_ref().map(|p| p.decode_mj / 1000.0)),
    ) {
        let method = d.phases.as_ref().map_or("", |p| match p.method {
            lem_common::domain::PhaseSplitMethod::CounterAtBoundaries => "counter at boundaries",
            lem_common::domain::PhaseSplitMethod::TraceIntegral => "power trace",
        });
        println!(
            "    {:<20} prefill {p:.3} J, decode {dec:.3} J ({method})",
            ""
        );
    }
}

/// The latency block: how requests arrived, request throughput, and TTFT/TPOT/ITL/E2EL
/// (mean, median, p90, p99 as `vllm bench serve` reports them), each the mean over cycles.
fn print_latency(agg: &ExperimentAggregate) {
    let Some(first) = agg.cycles.first() else {
        return;
    };
    let n = agg.cycles.len();
    let stat = |name: &str| agg.stats.get(name).map(|s| s.mean);
    let scheduled = first.arrivals != "all at once";
    println!(
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
        println!("  request throughput     {rps:.2} req/s{achieved}");
    }
    println!(
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
        println!("    {label:<18} {}", cells.join(" "));
    }
    if n > 1 {
        for (label, name) in [
            ("TTFT median", "ttft_p50_ms"),
            ("E2EL median", "e2e_p50_ms"),
        ] {
            if let Some(s) = agg.stats.get(name) {
                println!("  {label:<22} {}", fmt_summary(s, "ms", 1));
            }
        }
    }
}

pub fn print_aggregate(agg: &ExperimentAggregate, rec: &ExperimentRecord) {
    println!();
    println!("Experiment {}  ({})", agg.experiment_id, rec.config_name);
    if agg.simulated {
        println!(
            "  SIMULATED  energy comes from a simulated device (fake NVML scenario), not hardware"
        );
    }
    println!("  model      {}", agg.model_name);
    if let Some(d) = &agg.compute_device {
        let simulated = agg
            .cycles
            .iter()
            .any(|c| c.energy.devices.iter().any(|e| e.simulated));
        println!(
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
            println!("             {note}");
        }
    }
    println!(
        "  cycles     {} of {}{}",
        agg.cycles.len(),
        agg.num_cycles_expected,
        if agg.complete { "" } else { " (partial)" }
    );
    let Some(first) = agg.cycles.first() else {
        println!("  no results");
        return;
    };
    let stat = |name: &str| agg.stats.get(name);
    let show = |label: &str, name: &str, unit: &str, prec: usize| {
        if let Some(s) = stat(name) {
            println!("  {label:<22} {}", fmt_summary(s, unit, prec));
        }
    };
    println!(
        "  tokens                 {} in / {} out per cycle ({} prompts)",
        first.input_tokens, first.output_tokens, first.num_requests
    );
    show("throughput (output)", "output_tokens_per_s", "tok/s", 2);
    show("throughput (total)", "total_tokens_per_s", "tok/s", 2);
    show("decode", "decode_tokens_per_s", "tok/s", 2);
    show("prefill", "prefill_tokens_per_s", "tok/s", 1);
    print_latency(agg);
    match stat("energy_total_j") {
        Some(s) => {
            println!(
                "  {:<22} {}{}",
                "energy",
                fmt_summary(s, "J", 3),
                cycles_used(agg, "energy_total_j")
            );
            show("energy / output token", "j_per_output_token", "J", 4);
            show("output tokens / J", "output_tokens_per_j", "tok/J", 3);
            show("energy (net of idle)", "energy_net_total_j", "J", 3);
            show("energy in prefill", "energy_prefill_j", "J", 3);
            show("energy in decode", "energy_decode_j", "J", 3);
        }
        None => {
            println!(
                "  energy                 no total (null, not zero): {}",
                first
                    .energy
                    .total_unavailable_reason
                    .as_deref()
                    .unwrap_or("no energy was measured")
            );
            if let Some(j) = first.energy.partial_total_j {
                println!(
                    "  {:<22} {j:.3} J over the devices read (cycle {}; not the job's total)",
                    "partial",
                    first.cycle + 1
                );
            }
            if let Some(s) = stat("gpu_energy_j") {
                println!(
                    "  {:<22} {}{}",
                    "GPU energy",
                    fmt_summary(s, "J", 3),
                    cycles_used(agg, "gpu_energy_j")
                );
            }
        }
    }
    for d in &first.energy.devices {
        print_device_energy(agg, d);
    }
    for m in &first.energy.missing {
        println!("  {:<22} not measured — {m}", "");
    }
    print_windows(agg);
    if let Some(c) = &first.carbon {
        match (stat("co2e_g"), &c.unavailable_reason) {
            (Some(s), _) => println!(
                "  {:<22} {}  (PUE {}{}, {} gCO2e/kWh)",
                "carbon",
                fmt_summary(s, "gCO2e", 4),
                c.pue,
                if c.pue_assumed { " assumed" } else { "" },
                c.grid_intensity_gco2e_per_kwh.unwrap_or(f64::NAN)
            ),
            (None, Some(why)) => println!("  carbon                 not computed — {why}"),
            (None, None) => {}
        }
    }
    println!(
        "  FLOPs                  {:.3e} per cycle ({:.3e} per output token, analytic)",
        first.flops_total,
        first.flops_per_output_token.unwrap_or(f64::NAN)
    );
    match first.peak_memory_bytes {
        Some(b) => println!(
            "  peak memory            {:.1} MiB (process RSS)",
            b as f64 / 1048576.0
        ),
        None => println!("  peak memory            unavailable"),
    }
    for w in &agg.warnings {
        println!("  warning: {w}");
    }
    println!("  details: lem results show {} --raw", agg.experiment_id);
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
