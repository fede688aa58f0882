//! `lem --coordinator X status` and `agent list|drain`: what the coordinator's scheduler
//! sees — agents and their devices, live leases, the queue, each sweep's progress.

use super::error::outln;
use super::remote::{unexpected, Remote};
use super::{AgentCommand, CliError, Outcome};
use lem_common::wire::cli::{AgentSummary, CliReply, CliRequest, StatusSnapshot};

pub fn status(remote: &Remote, json: bool) -> Result<Outcome, CliError> {
    match remote.request(&CliRequest::Status)? {
        CliReply::Status(snapshot) => {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&snapshot).expect("plain data")
                );
            } else {
                print_status(&snapshot)?;
            }
            Ok(Outcome::Success)
        }
        other => Err(unexpected("status", &other)),
    }
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
