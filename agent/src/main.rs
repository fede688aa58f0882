//! `lem-agent`: the node daemon. Everything is in `lem_agent::daemon`; this maps its
//! outcome to an exit status.

use clap::Parser;
use lem_agent::daemon::{self, error::DaemonError, settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(DaemonError::Usage(e)) => {
            let _ = e.print();
            ExitCode::from(DaemonError::Usage(e).exit_code())
        }
        Err(e) => {
            eprintln!("lem-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run() -> Result<ExitCode, DaemonError> {
    let flags = match settings::Flags::try_parse() {
        Ok(flags) => flags,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(DaemonError::Usage(e)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = settings::resolve(&flags, &|name| std::env::var(name).ok())?;
    // CPU threads are fixed once, before any job: candle's default (physical cores),
    // recorded with each result.
    lem_agent::threads::init(None);
    daemon::run(settings)?;
    Ok(ExitCode::SUCCESS)
}
