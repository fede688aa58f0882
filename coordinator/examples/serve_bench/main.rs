//! Benchmarks of the real coordinator (`lem serve`, driver + sled store, fsync'd) over
//! loopback QUIC, with in-process benchmark agents speaking the agent protocol:
//!
//! ```text
//! cargo build --release -p lem-coordinator --bin lem --example serve_bench
//! target/release/examples/serve_bench ingest [--agents 8] [--gpus 2] [--configs 20]
//!     [--cycles 5] [--trace-points 5000] [--runs 3]
//! target/release/examples/serve_bench restart [--configs 200] [--cycles 10] [--runs 3]
//! ```
//!
//! `ingest`: every agent answers each lease at once with a raw result carrying one power
//! trace of `--trace-points` samples per leased GPU; the rate is trace samples acked per
//! second between the first lease and the last ack (each ack follows the store's flush).
//! `restart`: a sweep of `configs × cycles` jobs, half of them accepted, then kill -9 of
//! `lem serve`; the time from spawning the new process to the first lease an agent gets.
//! The agents keep their unacknowledged results (a spool) across the kill, announce them
//! in Hello and resend them, as lem-agent does: their acceptance frees the devices that
//! the recovered leases hold, and the next lease follows. The agents dial as soon as the
//! new `serve.addr` appears (no backoff), so the figure is the coordinator's own time.

#[path = "../../src/test_fixtures.rs"]
#[allow(dead_code)]
mod test_fixtures;

mod agent;
mod server;

use agent::{Plan, Shared, Spool};
use server::{join_tokens, lem_binary, write_configs, Server, WAIT};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    mode: String,
    agents: usize,
    gpus: usize,
    configs: usize,
    cycles: u32,
    trace_points: usize,
    runs: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_default();
    anyhow::ensure!(
        mode == "ingest" || mode == "restart",
        "usage: serve_bench ingest|restart [--agents N] [--gpus N] [--configs N] [--cycles N] [--trace-points N] [--runs N]"
    );
    let restart = mode == "restart";
    let mut args = Args {
        mode,
        agents: if restart { 2 } else { 8 },
        gpus: if restart { 4 } else { 2 },
        configs: if restart { 200 } else { 20 },
        cycles: if restart { 10 } else { 5 },
        trace_points: if restart { 100 } else { 5_000 },
        runs: 3,
    };
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|e| anyhow::anyhow!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--agents" => args.agents = n,
            "--gpus" => args.gpus = n,
            "--configs" => args.configs = n,
            "--cycles" => args.cycles = u32::try_from(n)?,
            "--trace-points" => args.trace_points = n,
            "--runs" => args.runs = n,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        args.agents > 0 && args.gpus > 0 && args.configs > 0 && args.runs > 0,
        "counts must be positive"
    );
    Ok(args)
}

/// The agents of one run, on the benchmark's runtime.
struct Fleet {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    fn spawn(
        rt: &tokio::runtime::Runtime,
        data_dir: &Path,
        work: &Path,
        tokens: &[String],
        spools: &[Spool],
        args: &Args,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let tasks = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let plan = Plan {
                    node_name: format!("bench-{i}"),
                    gpus: args.gpus,
                    trace_points: args.trace_points,
                };
                rt.spawn(agent::run(
                    data_dir.to_owned(),
                    work.join(format!("agent-{i}")),
                    token.clone(),
                    plan,
                    spools[i].clone(),
                    shared.clone(),
                ))
            })
            .collect();
        Self { shared, tasks }
    }

    fn wait(&self, what: &str, done: impl Fn(&Shared) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !done(&self.shared) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last agent error: {:?}",
                self.shared.error.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.abort();
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let bin = lem_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = Vec::new();
    for run in 1..=args.runs {
        let work = tempfile::tempdir()?;
        let figure = if args.mode == "ingest" {
            ingest(&rt, &bin, work.path(), &args)?
        } else {
            restart(&rt, &bin, work.path(), &args)?
        };
        println!("run {run}: {figure:.1}");
        figures.push(figure);
    }
    figures.sort_by(f64::total_cmp);
    let unit = if args.mode == "ingest" {
        "trace samples/s"
    } else {
        "ms restart to first lease"
    };
    println!(
        "median of {}: {:.1} {unit}",
        figures.len(),
        figures[figures.len() / 2]
    );
    Ok(())
}

type Setup = (PathBuf, Vec<String>, Vec<Spool>, Vec<PathBuf>);

fn setup(bin: &Path, work: &Path, args: &Args) -> anyhow::Result<Setup> {
    let data_dir = work.join("coord");
    std::fs::create_dir_all(&data_dir)?;
    let tokens = join_tokens(bin, &data_dir, args.agents)?;
    let configs = write_configs(work, args.configs)?;
    let spools = (0..args.agents).map(|_| Spool::default()).collect();
    Ok((data_dir, tokens, spools, configs))
}

/// Trace samples per second acked, first lease to last ack.
fn ingest(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    work: &Path,
    args: &Args,
) -> anyhow::Result<f64> {
    let (data_dir, tokens, spools, configs) = setup(bin, work, args)?;
    let server = Server::start(bin, &data_dir)?;
    let fleet = Fleet::spawn(rt, &data_dir, work, &tokens, &spools, args);
    let agents = args.agents as u64;
    fleet.wait("every agent's Hello", |s| {
        s.sessions.load(Ordering::SeqCst) >= agents
    })?;
    let jobs = (args.configs as u64) * u64::from(args.cycles);
    server.submit(bin, &data_dir, &configs, args.cycles)?;
    fleet.wait("every result acked", |s| {
        s.acks.load(Ordering::SeqCst) >= jobs
    })?;
    let ended = Instant::now();
    let started = fleet
        .shared
        .first_lease
        .lock()
        .unwrap()
        .expect("a lease came");
    let samples = fleet.shared.samples_acked.load(Ordering::SeqCst);
    let secs = (ended - started).as_secs_f64();
    eprintln!(
        "  {jobs} results, {samples} trace samples in {secs:.2} s ({:.1} results/s)",
        jobs as f64 / secs
    );
    fleet.stop();
    drop(server);
    Ok(samples as f64 / secs)
}

/// Milliseconds from spawning the restarted `lem serve` to the first lease granted.
fn restart(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    work: &Path,
    args: &Args,
) -> anyhow::Result<f64> {
    let (data_dir, tokens, spools, configs) = setup(bin, work, args)?;
    let server = Server::start(bin, &data_dir)?;
    let fleet = Fleet::spawn(rt, &data_dir, work, &tokens, &spools, args);
    let jobs = (args.configs as u64) * u64::from(args.cycles);
    server.submit(bin, &data_dir, &configs, args.cycles)?;
    fleet.wait("half the sweep acked", |s| {
        s.acks.load(Ordering::SeqCst) >= jobs / 2
    })?;
    let acked = fleet.shared.acks.load(Ordering::SeqCst);
    server.kill9()?;
    fleet.stop();
    let _ = std::fs::remove_file(data_dir.join("serve.addr"));
    let fleet = Fleet::spawn(rt, &data_dir, work, &tokens, &spools, args);
    let spawned = Instant::now();
    let server = Server::start(bin, &data_dir)?;
    let listening = spawned.elapsed();
    fleet.wait("a lease after the restart", |s| {
        s.first_lease.lock().unwrap().is_some()
    })?;
    let first_lease = fleet
        .shared
        .first_lease
        .lock()
        .unwrap()
        .expect("a lease came")
        - spawned;
    eprintln!(
        "  {jobs} jobs, {acked} acked before kill -9; listening after {:.0} ms, first lease after {:.0} ms",
        listening.as_secs_f64() * 1e3,
        first_lease.as_secs_f64() * 1e3
    );
    fleet.stop();
    drop(server);
    Ok(first_lease.as_secs_f64() * 1e3)
}
