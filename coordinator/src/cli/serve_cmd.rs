//! `lem serve`: flags (each also from a `LEM_*` variable) to the server's options.

use super::{CliError, Outcome, ServeArgs};
use crate::scheduler::SchedulerConfig;
use crate::server::{serve, ServeOptions};

pub fn run(data_dir: std::path::PathBuf, args: ServeArgs) -> Result<Outcome, CliError> {
    let defaults = SchedulerConfig::default();
    let server_names = if args.server_names.is_empty() {
        // What a local CLI or agent dials; a cluster passes its host names.
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        args.server_names
    };
    let options = ServeOptions {
        data_dir,
        listen: args.listen,
        server_names,
        scheduler: SchedulerConfig {
            lease_ttl_ms: args.lease_ttl_ms,
            agent_timeout_ms: args.agent_timeout_ms,
            restart_grace_ms: args.restart_grace_ms,
            ..defaults
        },
        metrics_listen: args.metrics_listen,
    };
    if options.scheduler.agent_timeout_ms >= options.scheduler.lease_ttl_ms {
        tracing::warn!(
            "--agent-timeout-ms is not below --lease-ttl-ms: a lost agent's jobs wait for \
             their leases to expire"
        );
    }
    serve(options).map_err(|e| CliError::failure(format!("lem serve: {e}")))?;
    Ok(Outcome::Success)
}
