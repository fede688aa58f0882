//! `lem serve`: flags (each also from a `LEM_*` variable, and from `--config FILE`) to
//! the server's options.

use super::serve_config::{self, GivenSettings, ServeFile};
use super::{CliError, Outcome, ServeArgs};
use crate::scheduler::SchedulerConfig;
use crate::server::{serve, ServeOptions};

pub fn run(data_dir: std::path::PathBuf, args: ServeArgs) -> Result<Outcome, CliError> {
    let file = match &args.config {
        Some(path) => serve_config::load(path).map_err(|e| CliError::usage(e.to_string()))?,
        None => ServeFile::default(),
    };
    let settings = serve_config::merge(
        GivenSettings {
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            server_names: args.server_names,
            lease_ttl_ms: args.lease_ttl_ms,
            agent_timeout_ms: args.agent_timeout_ms,
            restart_grace_ms: args.restart_grace_ms,
        },
        file,
    );
    let options = ServeOptions {
        data_dir,
        listen: settings.listen,
        server_names: settings.server_names,
        scheduler: SchedulerConfig {
            lease_ttl_ms: settings.lease_ttl_ms,
            agent_timeout_ms: settings.agent_timeout_ms,
            restart_grace_ms: settings.restart_grace_ms,
            ..SchedulerConfig::default()
        },
        metrics_listen: settings.metrics_listen,
    };
    if options.scheduler.agent_timeout_ms >= options.scheduler.lease_ttl_ms {
        tracing::warn!(
            "agent timeout is not below the lease TTL: a lost agent's jobs wait for their \
             leases to expire"
        );
    }
    serve(options).map_err(|e| CliError::failure(format!("lem serve: {e}")))?;
    Ok(Outcome::Success)
}
