//! `lem serve --config FILE`: the settings a YAML file may hold, and how they merge with
//! flags and `LEM_*` variables (clap has already merged those two): flag > variable >
//! file > built-in default. The data dir is not in the file: it says where the file's
//! server keeps its state, so it comes from `--data-dir` / `LEM_DATA_DIR`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Keys a serve config file may hold, for messages.
pub const FILE_KEYS: [&str; 6] = [
    "listen",
    "metrics_listen",
    "server_names",
    "lease_ttl_ms",
    "agent_timeout_ms",
    "restart_grace_ms",
];

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub server_names: Option<Vec<String>>,
    pub lease_ttl_ms: Option<u64>,
    pub agent_timeout_ms: Option<u64>,
    pub restart_grace_ms: Option<u64>,
}

#[derive(Debug, Error)]
pub enum ServeConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: unknown key `{key}` (known: {})", path.display(), FILE_KEYS.join(", "))]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("config file {}: {key}: must be above 0 ms", path.display())]
    ZeroMs { path: PathBuf, key: &'static str },
}

/// The server's settings after merging; built-in defaults where nothing set one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    /// Prometheus endpoint; off when no layer sets it.
    pub metrics_listen: Option<SocketAddr>,
    pub server_names: Vec<String>,
    pub lease_ttl_ms: u64,
    pub agent_timeout_ms: u64,
    pub restart_grace_ms: u64,
}

/// What flags and variables set (clap's result; `None` / empty = not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GivenSettings {
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub server_names: Vec<String>,
    pub lease_ttl_ms: Option<u64>,
    pub agent_timeout_ms: Option<u64>,
    pub restart_grace_ms: Option<u64>,
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<ServeFile, ServeConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServeConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses `text` (the file at `path`, named in errors).
pub fn parse(path: &Path, text: &str) -> Result<ServeFile, ServeConfigError> {
    let invalid = |message: String| ServeConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    // Unknown keys first, by name, so the message names the key and nothing else.
    let tree: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    match &tree {
        serde_yaml::Value::Null => return Ok(ServeFile::default()),
        serde_yaml::Value::Mapping(map) => {
            for key in map.keys() {
                let name = match key {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                if !FILE_KEYS.contains(&name.as_str()) {
                    return Err(ServeConfigError::UnknownKey {
                        path: path.to_owned(),
                        key: name,
                    });
                }
            }
        }
        _ => return Err(invalid("expected a mapping of settings".into())),
    }
    let file: ServeFile = serde_yaml::from_value(tree).map_err(|e| invalid(e.to_string()))?;
    for (key, value) in [
        ("lease_ttl_ms", file.lease_ttl_ms),
        ("agent_timeout_ms", file.agent_timeout_ms),
        ("restart_grace_ms", file.restart_grace_ms),
    ] {
        if value == Some(0) {
            return Err(ServeConfigError::ZeroMs {
                path: path.to_owned(),
                key,
            });
        }
    }
    Ok(file)
}

/// Flag or variable, else the file, else the default.
pub fn merge(given: GivenSettings, file: ServeFile) -> ServeSettings {
    let server_names = if !given.server_names.is_empty() {
        given.server_names
    } else {
        // What a local CLI or agent dials; a cluster passes its host names.
        file.server_names
            .filter(|names| !names.is_empty())
            .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into()])
    };
    ServeSettings {
        listen: given
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7443))),
        metrics_listen: given.metrics_listen.or(file.metrics_listen),
        server_names,
        lease_ttl_ms: given.lease_ttl_ms.or(file.lease_ttl_ms).unwrap_or(30_000),
        agent_timeout_ms: given
            .agent_timeout_ms
            .or(file.agent_timeout_ms)
            .unwrap_or(20_000),
        restart_grace_ms: given
            .restart_grace_ms
            .or(file.restart_grace_ms)
            .unwrap_or(60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "listen: 127.0.0.1:9000\nserver_names: [head.example, 10.0.0.1]\n\
                        lease_ttl_ms: 45000\nrestart_grace_ms: 90000\n";

    #[test]
    fn a_flag_or_variable_beats_the_file_which_beats_the_default() {
        let file = parse(Path::new("serve.yaml"), FILE).unwrap();
        let given = GivenSettings {
            lease_ttl_ms: Some(12_000),
            ..GivenSettings::default()
        };
        let merged = merge(given, file);
        assert_eq!(merged.lease_ttl_ms, 12_000, "flag over file");
        assert_eq!(merged.restart_grace_ms, 90_000, "file over default");
        assert_eq!(
            merged.agent_timeout_ms, 20_000,
            "default where nothing set it"
        );
        assert_eq!(merged.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(merged.server_names, vec!["head.example", "10.0.0.1"]);

        let defaults = merge(GivenSettings::default(), ServeFile::default());
        assert_eq!(defaults.listen, "0.0.0.0:7443".parse().unwrap());
        assert_eq!(defaults.server_names, vec!["localhost", "127.0.0.1"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_naming_file_and_key() {
        let path = Path::new("/etc/lem/serve.yaml");
        let err = parse(path, "listen: 127.0.0.1:1\nlease_tll_ms: 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/lem/serve.yaml"), "{err}");
        assert!(err.contains("unknown key `lease_tll_ms`"), "{err}");

        let err = parse(path, "agent_timeout_ms: 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/lem/serve.yaml") && err.contains("agent_timeout_ms"),
            "{err}"
        );
        let err = parse(path, "listen: not-an-address\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/lem/serve.yaml"), "{err}");
        assert_eq!(parse(path, "").unwrap(), ServeFile::default());
    }
}
