//! The experiment record integration tests write by hand into a store before they run
//! `lem` on it: one constructor, so a new record field is added in one place.

use lem_common::config::ResolvedConfig;
use lem_coordinator::embedded;
use lem_coordinator::store::{ExperimentRecord, ExperimentStatus};

/// A record as `create_experiment` writes one for `resolved`, with id `id` and
/// `status`: its config's name, model, fingerprint and cycles, dated 2026-01-01, from
/// this process on `test-host`, no error. Tests change the fields they vary.
pub fn experiment_record(
    resolved: &ResolvedConfig,
    id: &str,
    status: ExperimentStatus,
) -> ExperimentRecord {
    let cfg = &resolved.config;
    ExperimentRecord {
        id: id.to_string(),
        config_name: cfg.config_name.clone(),
        model_name: cfg.model_name.clone(),
        config_fingerprint: embedded::config_fingerprint(cfg),
        effective_config: cfg.to_json(),
        cli_overrides: resolved.cli_overrides.clone(),
        num_cycles: cfg.num_cycles,
        status,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        pid: std::process::id(),
        hostname: "test-host".into(),
        error: None,
        error_chain: Vec::new(),
        origin: "test".into(),
        until_ci: None,
    }
}
