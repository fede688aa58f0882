//! `lem --coordinator X status` and `agent list|drain`: what the coordinator's scheduler
//! sees — agents and their devices, live leases, the queue, each sweep's progress.

use super::error::outln;
use super::remote::{unexpected, Remote};
use super::{AgentCommand, CliError, Outcome};
use lem_common::wire::cli::{AgentSummary, CliReply, CliRequest, StatusSnapshot, SweepProgress};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often `status --watch` asks again.
const WATCH_PERIOD: Duration = Duration::from_secs(2);

pub fn status(remote: &Remote, json: bool, watch: bool) -> Result<Outcome, CliError> {
    let mut first_seen: BTreeMap<u64, (Instant, u64)> = BTreeMap::new();
    loop {
        let snapshot = match remote.request(&CliRequest::Status)? {
            CliReply::Status(snapshot) => snapshot,
            other => return Err(unexpected("status", &other)),
        };
        let now = Instant::now();
        for sweep in &snapshot.sweeps {
            first_seen
                .entry(sweep.sweep)
                .or_insert((now, done_jobs(&sweep.progress)));
        }
        if json {
            let text = if watch {
                serde_json::to_string(&snapshot)
            } else {
                serde_json::to_string_pretty(&snapshot)
            };
            outln!("{}", text.expect("plain data"));
        } else {
            print_status(&snapshot)?;
            if watch {
                for sweep in &snapshot.sweeps {
                    let (since, done_then) = first_seen[&sweep.sweep];
                    let eta = eta_text(&sweep.progress, done_then, now.duration_since(since));
                    outln!("  sweep-{} {eta}", sweep.sweep);
                }
                outln!();
            }
        }
        let open = snapshot
            .sweeps
            .iter()
            .any(|s| s.progress.pending + s.progress.leased > 0);
        // Bounded: a watch ends when nothing is left to run (or on Ctrl+C).
        if !watch || !open {
            return Ok(Outcome::Success);
        }
        std::thread::sleep(WATCH_PERIOD);
    }
}

fn done_jobs(p: &SweepProgress) -> u64 {
    p.accepted + p.failed + p.cancelled
}

/// The time left at the rate jobs finished while watching — an estimate, and unknown
/// (not zero) before any job finished in view.
fn eta_text(p: &SweepProgress, done_at_start: u64, watched: Duration) -> String {
    let open = p.pending + p.leased;
    if open == 0 {
        return "finished".into();
    }
    let finished_in_view = done_jobs(p).saturating_sub(done_at_start);
    if finished_in_view == 0 || watched.is_zero() {
        return format!("{open} job(s) open; ETA unknown (no job finished while watching yet)");
    }
    let per_job_s = watched.as_secs_f64() / finished_in_view as f64;
    format!(
        "{open} job(s) open; ETA ~{:.0} s (estimate from {finished_in_view} job(s) finished in \
         the last {:.0} s)",
        per_job_s * open as f64,
        watched.as_secs_f64()
    )
}

pub fn agent(remote: &Remote, cmd: AgentCommand) -> Result<Outcome, CliError> {
    match cmd {
        AgentCommand::List { json } => match remote.request(&CliRequest::ListAgents)? {
            CliReply::Agents(agents) => {
                if json {
                    outln!(
                        "{}",
                        serde_json::to_string_pretty(&agents).expect("plain data")
                    );
                } else {
                    print_agents(&agents)?;
                }
                Ok(Outcome::Success)
            }
            other => Err(unexpected("agent list", &other)),
        },
        AgentCommand::Drain { id } => {
            match remote.request(&CliRequest::DrainAgent { agent: id })? {
                CliReply::AgentDraining { agent } => {
                    outln!("{agent}: draining (finishes what it holds, takes no new jobs)");
                    Ok(Outcome::Success)
                }
                other => Err(unexpected("agent drain", &other)),
            }
        }
    }
}

fn print_status(s: &StatusSnapshot) -> std::io::Result<()> {
    print_agents(&s.agents)?;
    outln!();
    outln!(
        "Leases: {}   queued jobs: {}",
        s.leases.len(),
        s.queued_jobs
    );
    for l in &s.leases {
        outln!(
            "  attempt-{} job-{} on {} [{}]{}",
            l.attempt,
            l.job,
            l.agent,
            l.devices.join(", "),
            if l.reclaimed {
                ""
            } else {
                "  (waiting for its agent after a restart)"
            }
        );
    }
    outln!();
    if s.sweeps.is_empty() {
        outln!("No sweeps.");
    }
    for sweep in &s.sweeps {
        let p = sweep.progress;
        let total = p.pending + p.leased + p.accepted + p.failed + p.cancelled;
        outln!(
            "sweep-{} {}: {}/{} accepted, {} leased, {} pending, {} failed, {} cancelled",
            sweep.sweep,
            sweep.name,
            p.accepted,
            total,
            p.leased,
            p.pending,
            p.failed,
            p.cancelled
        );
    }
    if !s.waiting.is_empty() {
        outln!();
        outln!("Waiting:");
        for line in &s.waiting {
            outln!("  {line}");
        }
    }
    Ok(())
}

fn print_agents(agents: &[AgentSummary]) -> std::io::Result<()> {
    outln!("Agents: {}", agents.len());
    for a in agents {
        let state = match (a.alive, a.draining) {
            (true, false) => "alive",
            (true, true) => "alive, draining",
            (false, _) => "lost",
        };
        outln!("  {} ({state})", a.id);
        for gpu in &a.gpus {
            outln!("    {} {}", gpu.key, gpu.model);
            for slice in &gpu.mig_slices {
                outln!("      {slice}");
            }
        }
        for package in &a.cpu_packages {
            outln!("    {package}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(pending: u64, leased: u64, accepted: u64) -> SweepProgress {
        SweepProgress {
            pending,
            leased,
            accepted,
            failed: 0,
            cancelled: 0,
        }
    }

    #[test]
    fn the_eta_is_the_watched_rate_times_the_open_jobs_and_unknown_without_a_rate() {
        // 4 jobs finished in 20 s → 5 s each; 6 open → ~30 s.
        let text = eta_text(&progress(4, 2, 6), 2, Duration::from_secs(20));
        assert!(text.contains("ETA ~30 s"), "{text}");
        let unknown = eta_text(&progress(4, 2, 2), 2, Duration::from_secs(20));
        assert!(unknown.contains("ETA unknown"), "{unknown}");
        assert_eq!(eta_text(&progress(0, 0, 5), 0, Duration::ZERO), "finished");
    }
}
