//! `lem-agent`'s settings, as node services are configured: each one from a flag, else
//! an environment variable, else an optional config file (YAML; precedence flag > env >
//! file). A bad value is an error that names where it came from.

use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

/// The command line. Values stay text here so that a flag, a variable and a file entry
/// are checked by the same code, and errors name the one that was wrong.
#[derive(Debug, Parser, Default)]
#[command(
    name = "lem-agent",
    version,
    about = "lem's node agent: enrolls with a coordinator (`lem serve`), then runs the jobs it leases on this node's GPUs or CPU and sends back their measured results.",
    long_about = "lem's node agent: enrolls with a coordinator (`lem serve`) once, with a join token, keeping its key and certificate in --data-dir; then connects with its certificate, reconnecting with backoff and jitter forever, runs the jobs the coordinator leases on this node's GPUs (whole or MIG slices) or CPU, and sends back their measured results. Each result is written to <data-dir>/spool/ before it is sent and deleted only when the coordinator acknowledges it.\n\nEvery flag can also be given as an environment variable (named with each flag) or as a key in a YAML config file (--config; keys are the flag names with `_`, e.g. `heartbeat_interval_ms: 5000`). A flag wins over a variable, a variable over the file.\n\nSIGTERM or Ctrl+C: take no new lease, stop running jobs (the next start reports them as lost), and exit."
)]
pub struct Flags {
    /// The coordinator to dial, HOST:PORT (env LEM_COORDINATOR).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// Single-use join token from `lem token create`; needed only for the first start,
    /// until the agent is enrolled (env LEM_JOIN_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    pub join_token: Option<String>,
    /// Where the agent keeps its key, certificate, result spool and running markers
    /// (env LEM_AGENT_DATA_DIR, else LEM_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// The name this node enrolls under; default: the host name (env LEM_NODE_NAME).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// A YAML file with any of these settings (env LEM_AGENT_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// How often the agent tells the coordinator it is alive and renews its leases;
    /// it is also kept below a third of every lease's TTL. Default 5000
    /// (env LEM_HEARTBEAT_INTERVAL_MS).
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<String>,
    /// First delay before reconnecting after a lost connection; it doubles (with
    /// jitter) up to --reconnect-max-ms. Default 500 (env LEM_RECONNECT_INITIAL_MS).
    #[arg(long, value_name = "MS")]
    pub reconnect_initial_ms: Option<String>,
    /// Longest delay between reconnection attempts. Default 30000
    /// (env LEM_RECONNECT_MAX_MS).
    #[arg(long, value_name = "MS")]
    pub reconnect_max_ms: Option<String>,
    /// Give up after this many failed connection attempts in a row; 0 (the default)
    /// means never: a node agent keeps trying. For tests (env LEM_MAX_CONNECT_ATTEMPTS).
    #[arg(long, value_name = "N")]
    pub max_connect_attempts: Option<String>,
    /// The NVML library to load (a simulated node names the fake one); default: the
    /// system's (env LEM_NVML_LIB).
    #[arg(long, value_name = "FILE")]
    pub nvml_lib: Option<String>,
    /// The powercap tree RAPL energy is read from. Default /sys/class/powercap
    /// (env LEM_POWERCAP_ROOT).
    #[arg(long, value_name = "DIR")]
    pub powercap_root: Option<String>,
    /// Serve Prometheus metrics (GPU power, energy counter, temperature; job state) at
    /// http://ADDR/metrics, e.g. 127.0.0.1:9400; off by default
    /// (env LEM_AGENT_METRICS_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// One setting: its key in the config file (the flag is the key with `-`, e.g.
/// `--heartbeat-interval-ms`), the variables read for it (first set wins) and where
/// clap put its flag's text.
struct Setting {
    key: &'static str,
    envs: &'static [&'static str],
    flag_value: fn(&Flags) -> &Option<String>,
}

impl Setting {
    fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
}

const COORDINATOR: Setting = Setting {
    key: "coordinator",
    envs: &["LEM_COORDINATOR"],
    flag_value: |f| &f.coordinator,
};
const JOIN_TOKEN: Setting = Setting {
    key: "join_token",
    envs: &["LEM_JOIN_TOKEN"],
    flag_value: |f| &f.join_token,
};
const DATA_DIR: Setting = Setting {
    key: "data_dir",
    envs: &["LEM_AGENT_DATA_DIR", "LEM_DATA_DIR"],
    flag_value: |f| &f.data_dir,
};
const NODE_NAME: Setting = Setting {
    key: "node_name",
    envs: &["LEM_NODE_NAME"],
    flag_value: |f| &f.node_name,
};
const HEARTBEAT_INTERVAL_MS: Setting = Setting {
    key: "heartbeat_interval_ms",
    envs: &["LEM_HEARTBEAT_INTERVAL_MS"],
    flag_value: |f| &f.heartbeat_interval_ms,
};
const RECONNECT_INITIAL_MS: Setting = Setting {
    key: "reconnect_initial_ms",
    envs: &["LEM_RECONNECT_INITIAL_MS"],
    flag_value: |f| &f.reconnect_initial_ms,
};
const RECONNECT_MAX_MS: Setting = Setting {
    key: "reconnect_max_ms",
    envs: &["LEM_RECONNECT_MAX_MS"],
    flag_value: |f| &f.reconnect_max_ms,
};
const MAX_CONNECT_ATTEMPTS: Setting = Setting {
    key: "max_connect_attempts",
    envs: &["LEM_MAX_CONNECT_ATTEMPTS"],
    flag_value: |f| &f.max_connect_attempts,
};
const NVML_LIB: Setting = Setting {
    key: "nvml_lib",
    envs: &["LEM_NVML_LIB"],
    flag_value: |f| &f.nvml_lib,
};
const POWERCAP_ROOT: Setting = Setting {
    key: "powercap_root",
    envs: &["LEM_POWERCAP_ROOT"],
    flag_value: |f| &f.powercap_root,
};
const METRICS_LISTEN: Setting = Setting {
    key: "metrics_listen",
    envs: &["LEM_AGENT_METRICS_LISTEN"],
    flag_value: |f| &f.metrics_listen,
};

/// Every setting a flag, a variable or the config file can give (`--config` itself
/// aside); the config file's keys are theirs.
const SETTINGS: [&Setting; 11] = [
    &COORDINATOR,
    &JOIN_TOKEN,
    &DATA_DIR,
    &NODE_NAME,
    &HEARTBEAT_INTERVAL_MS,
    &RECONNECT_INITIAL_MS,
    &RECONNECT_MAX_MS,
    &MAX_CONNECT_ATTEMPTS,
    &NVML_LIB,
    &POWERCAP_ROOT,
    &METRICS_LISTEN,
];

/// The keys a config file may hold, for messages.
fn file_keys() -> String {
    SETTINGS.map(|s| s.key).join(", ")
}

/// The agent's settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub coordinator: String,
    pub join_token: Option<String>,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub heartbeat_interval: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// `None`: retry forever.
    pub max_connect_attempts: Option<u32>,
    pub nvml_lib: Option<PathBuf>,
    pub powercap_root: PathBuf,
    /// Where to serve `/metrics`; `None`: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("no {what} given: pass {flag}, set {envs}, or put `{key}:` in the config file")]
    Missing {
        what: &'static str,
        flag: String,
        envs: String,
        key: &'static str,
    },
    #[error("{place}: {value:?} is not {expected}")]
    Invalid {
        place: String,
        value: String,
        expected: String,
    },
    #[error("config file {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    ConfigParse { path: PathBuf, message: String },
    #[error("config file {}: unknown key `{key}` (known: {})", path.display(), file_keys())]
    UnknownKey { path: PathBuf, key: String },
}

/// Where one value came from, for errors.
fn place_of(setting: &Setting, origin: Origin<'_>) -> String {
    match origin {
        Origin::Flag => format!("flag {}", setting.flag()),
        Origin::Env(name) => format!("environment variable {name}"),
        Origin::File(path) => format!("config file {}: key `{}`", path.display(), setting.key),
    }
}

#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag,
    Env(&'a str),
    File(&'a Path),
}

/// The config file's entries, as text.
struct FileValues {
    path: PathBuf,
    values: BTreeMap<String, String>,
}

impl FileValues {
    fn read(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, SettingsError> {
        let parse_error = |message: String| SettingsError::ConfigParse {
            path: path.to_owned(),
            message,
        };
        let tree: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let mapping = match tree {
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            serde_yaml::Value::Mapping(m) => m,
            _ => return Err(parse_error("expected a mapping of settings".into())),
        };
        let mut values = BTreeMap::new();
        for (key, value) in mapping {
            let serde_yaml::Value::String(key) = key else {
                return Err(parse_error(format!("key {key:?} is not text")));
            };
            if !SETTINGS.iter().any(|s| s.key == key) {
                return Err(SettingsError::UnknownKey {
                    path: path.to_owned(),
                    key,
                });
            }
            let text = match value {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(parse_error(format!(
                        "key `{key}`: expected text or a number, got {other:?}"
                    )))
                }
            };
            values.insert(key, text);
        }
        Ok(Self {
            path: path.to_owned(),
            values,
        })
    }
}

/// Resolves settings from parsed flags, an environment reader and (when named) the
/// config file.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, SettingsError> {
    let config_path = flags
        .config
        .clone()
        .or_else(|| env("LEM_AGENT_CONFIG"))
        .filter(|p| !p.is_empty());
    let file = match config_path {
        Some(p) => Some(FileValues::read(Path::new(&p))?),
        None => None,
    };
    let layers = Layers {
        flags,
        env,
        file: file.as_ref(),
    };
    // Checked in this order, so the first problem reported stays the same.
    let coordinator = layers.required(&COORDINATOR, "coordinator address")?;
    let data_dir = layers.required(&DATA_DIR, "data directory")?;
    let node_name = match layers.text(&NODE_NAME) {
        Some((name, origin)) => {
            lem_net::identity::check_id(&name).map_err(|_| SettingsError::Invalid {
                place: place_of(&NODE_NAME, origin),
                value: name.clone(),
                expected: "a node name (letters, digits, `.`, `_`, `-`)".into(),
            })?;
            name
        }
        None => crate::sysinfo::hostname(),
    };
    let heartbeat_interval = layers.millis(&HEARTBEAT_INTERVAL_MS, 5_000)?;
    if heartbeat_interval.is_zero() {
        return Err(SettingsError::Invalid {
            place: "heartbeat interval".into(),
            value: "0".into(),
            expected: "a positive number of milliseconds".into(),
        });
    }
    Ok(Settings {
        coordinator,
        join_token: layers.optional(&JOIN_TOKEN),
        data_dir: PathBuf::from(data_dir),
        node_name,
        heartbeat_interval,
        reconnect_initial: layers.millis(&RECONNECT_INITIAL_MS, 500)?,
        reconnect_max: layers.millis(&RECONNECT_MAX_MS, 30_000)?,
        max_connect_attempts: layers
            .parsed::<u32>(&MAX_CONNECT_ATTEMPTS, "a whole number of attempts")?
            .filter(|&n| n > 0),
        nvml_lib: layers.optional(&NVML_LIB).map(PathBuf::from),
        powercap_root: layers
            .optional(&POWERCAP_ROOT)
            .map_or_else(|| PathBuf::from("/sys/class/powercap"), PathBuf::from),
        metrics_listen: layers.parsed(&METRICS_LISTEN, "an address to listen on, IP:PORT")?,
    })
}

/// The layers a setting is looked up in, and one function per way of reading one.
struct Layers<'a> {
    flags: &'a Flags,
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<&'a FileValues>,
}

impl<'a> Layers<'a> {
    /// The first non-empty value: flag, then each variable, then the file.
    fn text(&self, setting: &Setting) -> Option<(String, Origin<'a>)> {
        if let Some(v) = (setting.flag_value)(self.flags)
            .as_ref()
            .filter(|v| !v.is_empty())
        {
            return Some((v.clone(), Origin::Flag));
        }
        for name in setting.envs {
            if let Some(v) = (self.env)(name).filter(|v| !v.is_empty()) {
                return Some((v, Origin::Env(name)));
            }
        }
        let file = self.file?;
        file.values
            .get(setting.key)
            .filter(|v| !v.is_empty())
            .map(|v| (v.clone(), Origin::File(&file.path)))
    }

    /// The text, where a layer gives one.
    fn optional(&self, setting: &Setting) -> Option<String> {
        self.text(setting).map(|(text, _)| text)
    }

    /// The text, or an error that says every way to give it.
    fn required(&self, setting: &Setting, what: &'static str) -> Result<String, SettingsError> {
        self.optional(setting)
            .ok_or_else(|| SettingsError::Missing {
                what,
                flag: setting.flag(),
                envs: setting.envs.join(" or "),
                key: setting.key,
            })
    }

    /// The value parsed as `T`; text that does not parse is an error naming its place.
    fn parsed<T: FromStr>(
        &self,
        setting: &Setting,
        expected: &str,
    ) -> Result<Option<T>, SettingsError> {
        let Some((text, origin)) = self.text(setting) else {
            return Ok(None);
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| SettingsError::Invalid {
                place: place_of(setting, origin),
                value: text,
                expected: expected.into(),
            })
    }

    /// A whole number of milliseconds, `default_ms` where no layer gives one.
    fn millis(&self, setting: &Setting, default_ms: u64) -> Result<Duration, SettingsError> {
        let ms = self.parsed::<u64>(setting, "a whole number of milliseconds")?;
        Ok(Duration::from_millis(ms.unwrap_or(default_ms)))
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
