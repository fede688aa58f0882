//! What the config tests share: a YAML text loaded as `configs/a.yaml`, and what
//! validating or resolving it says.

use super::*;

/// The smallest config that validates.
pub const MIN: &str = "config_name: t\nmodel_name: m\n";

/// `t` loaded as configs/a.yaml.
pub fn text(t: &str) -> LoadedConfig {
    parse_config_str("configs/a.yaml", t).unwrap()
}

/// `t` resolved with no preset and no CLI overrides.
pub fn resolve_text(t: &str) -> Result<ResolvedConfig, ConfigError> {
    resolve(None, Some(&text(t)), &CliOverrides::default())
}

/// The resolved config of `t`, which must resolve.
pub fn resolved(t: &str) -> ExperimentConfig {
    resolve_text(t).unwrap().config
}

/// Error lines of validating `t`.
pub fn errors(t: &str) -> Vec<String> {
    lines(&validate(&text(t)).errors)
}

/// Warning lines of validating `t`.
pub fn warnings(t: &str) -> Vec<String> {
    lines(&validate(&text(t)).warnings)
}

fn lines<T: std::fmt::Display>(problems: &[T]) -> Vec<String> {
    problems.iter().map(|p| p.to_string()).collect()
}
