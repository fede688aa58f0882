//! Config errors, validation problems, and where each field came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// One thing wrong (or worth a warning) in a config, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or `command line (--flag)`, `preset `x``) that set the field.
    pub file: Option<String>,
    /// 1-based line in `file`, when known.
    pub line: Option<usize>,
    /// Dotted path, e.g. `batching_options.batch_size`; list items by index (`gpu_list.1`).
    pub field: String,
    pub message: String,
    /// A replacement the user probably meant (a key, a value, a dataset alias).
    pub suggestion: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, _) => {}
        }
        write!(f, "{}: {}", self.field, self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean `{s}`?")?;
        }
        Ok(())
    }
}

/// Where a value was set: a file and line, or a layer such as the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: Option<usize>,
}

/// Field path -> origin. Lookups fall back to the nearest ancestor that has one, so a
/// missing field is reported against the section (or file) that should have held it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    map: BTreeMap<String, Origin>,
}

impl Origins {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, origin: Origin) {
        self.map.insert(path.into(), origin);
    }

    /// The origin of `path`, or of its nearest ancestor (`""` is the root).
    pub fn lookup(&self, path: &str) -> Option<&Origin> {
        let mut p = path;
        loop {
            if let Some(o) = self.map.get(p) {
                return Some(o);
            }
            if p.is_empty() {
                return None;
            }
            p = match p.rfind('.') {
                Some(i) => &p[..i],
                None => "",
            };
        }
    }

    /// Replaces everything at and below `path` with one origin (a whole value was set).
    pub fn set_subtree(&mut self, path: &str, origin: Origin) {
        self.remove_below(path);
        self.map.insert(path.to_string(), origin);
    }

    /// Lays `upper` over `self`: paths `upper` sets win; where `upper` set a non-mapping
    /// value, the old origins below it are dropped (that value was replaced whole).
    pub fn overlay(&mut self, upper: &Origins, upper_tree: &serde_yaml::Value) {
        for (path, origin) in &upper.map {
            let replaced_whole = !matches!(
                super::tree::get_path(upper_tree, path),
                Some(serde_yaml::Value::Mapping(_))
            );
            if replaced_whole {
                self.remove_below(path);
            }
            self.map.insert(path.clone(), origin.clone());
        }
    }

    fn remove_below(&mut self, path: &str) {
        if path.is_empty() {
            self.map.clear();
            return;
        }
        let prefix = format!("{path}.");
        self.map.retain(|k, _| !k.starts_with(&prefix));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Origin)> {
        self.map.iter()
    }
}

/// Why a config could not be loaded, resolved or expanded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", read_message(path, extended_from.as_ref(), source))]
    Read {
        path: PathBuf,
        /// The file whose `_extends` named `path`, if any.
        extended_from: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    /// Not well-formed YAML/JSON, or not a mapping at the top.
    #[error("{}{message}", location(file, *line))]
    Parse {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{}_extends: {message}", location(file, *line))]
    Extends {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("_extends cycle: {}", chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> "))]
    ExtendsCycle { chain: Vec<PathBuf> },
    #[error("unknown preset `{name}` (available: {available}){}", did_you_mean(suggestion.as_deref()))]
    UnknownPreset {
        name: String,
        available: String,
        suggestion: Option<String>,
    },
    /// One problem per line.
    #[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
    /// A `--vary` spec that cannot be used. `spec` is not repeated in the message: the
    /// CLI prints it.
    #[error("{message}{}", did_you_mean(suggestion.as_deref()))]
    BadVary {
        spec: String,
        message: String,
        suggestion: Option<String>,
    },
}

impl ConfigError {
    /// The validation problems, when that is what this error is.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

fn location(file: &str, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{file}:{l}: "),
        None => format!("{file}: "),
    }
}

fn did_you_mean(s: Option<&str>) -> String {
    s.map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

fn read_message(
    path: &std::path::Path,
    extended_from: Option<&PathBuf>,
    source: &std::io::Error,
) -> String {
    match extended_from {
        Some(from) => format!(
            "{}: _extends: cannot read {}: {source}",
            from.display(),
            path.display()
        ),
        None => format!("{}: cannot read: {source}", path.display()),
    }
}
