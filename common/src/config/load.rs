//! Reading config files: YAML or JSON, `_extends` inheritance (deep merge, child wins),
//! with the origin (file, line) of every field kept for error messages.
//!
//! No IO here: the caller passes the function that reads a file.

use super::error::{ConfigError, Origin, Origins};
use super::lines::line_index;
use super::tree::{deep_merge, expand_decoder_preset, get_path, walk};
use serde_yaml::{Mapping, Value};
use std::path::{Component, Path, PathBuf};

/// A config file with its `_extends` chain merged.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// The file that was asked for.
    pub path: PathBuf,
    /// The merged tree, `_extends` removed, decoder presets expanded per file.
    pub raw: Value,
    /// Every file read, most basic first; the last is `path`.
    pub sources: Vec<PathBuf>,
    /// Which file and line set each field (for inherited fields: the file defining it).
    pub origins: Origins,
}

pub type Reader<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// Loads `path`, following `_extends` (relative to the extending file) recursively.
pub fn load_config(path: &Path, read: Reader<'_>) -> Result<LoadedConfig, ConfigError> {
    let mut chain = Vec::new();
    let layer = load_layer(path, None, read, &mut chain)?;
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        raw: layer.tree,
        sources: layer.sources,
        origins: layer.origins,
    })
}

/// Parses config text that did not come from a file (`name_for_errors` labels its
/// problems). `_extends` cannot be followed here and is an error.
pub fn parse_config_str(name_for_errors: &str, text: &str) -> Result<LoadedConfig, ConfigError> {
    let path = PathBuf::from(name_for_errors);
    let (tree, extends, origins) = parse_layer(&path, text)?;
    if let Some((_, line)) = extends {
        return Err(ConfigError::Extends {
            file: name_for_errors.to_string(),
            line,
            message: "cannot be followed for a config given as text; load it from a file".into(),
        });
    }
    Ok(LoadedConfig {
        path: path.clone(),
        raw: tree,
        sources: vec![path],
        origins,
    })
}

struct Layer {
    tree: Value,
    sources: Vec<PathBuf>,
    origins: Origins,
}

fn load_layer(
    path: &Path,
    extended_from: Option<&Path>,
    read: Reader<'_>,
    chain: &mut Vec<PathBuf>,
) -> Result<Layer, ConfigError> {
    let key = normalise(path);
    if chain.contains(&key) {
        let mut cycle = chain.clone();
        cycle.push(key);
        return Err(ConfigError::ExtendsCycle { chain: cycle });
    }
    let text = read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        extended_from: extended_from.map(Path::to_path_buf),
        source,
    })?;
    let (tree, extends, origins) = parse_layer(path, &text)?;
    let Some((base_rel, _)) = extends else {
        return Ok(Layer {
            tree,
            sources: vec![path.to_path_buf()],
            origins,
        });
    };
    let base_path = match path.parent() {
        Some(dir) => dir.join(&base_rel),
        None => PathBuf::from(&base_rel),
    };
    chain.push(key);
    let base = load_layer(&base_path, Some(path), read, chain)?;
    chain.pop();
    let mut merged_origins = base.origins;
    merged_origins.overlay(&origins, &tree);
    let mut sources = base.sources;
    sources.push(path.to_path_buf());
    Ok(Layer {
        tree: deep_merge(base.tree, tree),
        sources,
        origins: merged_origins,
    })
}

/// Parses one file's text: (tree without `_extends`, the `_extends` value and its line,
/// origins of this file's fields).
type Parsed = (Value, Option<(String, Option<usize>)>, Origins);

fn parse_layer(path: &Path, text: &str) -> Result<Parsed, ConfigError> {
    let file = path.display().to_string();
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut tree: Value = if is_json {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse {
                file: file.clone(),
                line: Some(e.line()),
                message: format!("invalid JSON: {e}"),
            })?;
        serde_yaml::to_value(json).expect("JSON values are YAML values")
    } else {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            line: e.location().map(|l| l.line()),
            message: format!("invalid YAML: {e}"),
        })?
    };
    // YAML merge keys (`<<: *base`) are applied as a reader of YAML expects.
    tree.apply_merge().map_err(|e| ConfigError::Parse {
        file: file.clone(),
        line: e.location().map(|l| l.line()),
        message: format!("invalid YAML merge key: {e}"),
    })?;
    if tree.is_null() {
        tree = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(map) = &mut tree else {
        return Err(ConfigError::Parse {
            file,
            line: None,
            message: "the top level must be a mapping of config fields".into(),
        });
    };
    let lines = line_index(text);
    let extends = match map.remove("_extends") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some((s, lines.get("_extends").copied())),
        Some(other) => {
            return Err(ConfigError::Extends {
                file,
                line: lines.get("_extends").copied(),
                message: format!(
                    "expected the path of a config file, found {}",
                    super::tree::kind(&other)
                ),
            })
        }
    };
    expand_decoder_preset(&mut tree);
    let origins = file_origins(&file, &lines, &tree);
    Ok((tree, extends, origins))
}

/// Origins of every node of one file's tree: its own line, else its nearest ancestor's.
fn file_origins(
    file: &str,
    lines: &std::collections::BTreeMap<String, usize>,
    tree: &Value,
) -> Origins {
    let mut origins = Origins::new();
    walk(tree, "", &mut |path, _| {
        let mut p = path;
        let line = loop {
            if let Some(l) = lines.get(p) {
                break Some(*l);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None if !p.is_empty() => p = "",
                None => break None,
            }
        };
        origins.insert(
            path,
            Origin {
                file: file.to_string(),
                line: if path.is_empty() { None } else { line },
            },
        );
    });
    origins
}

/// Lexical normalisation (`.` and `..` removed) so the same file reached by two
/// spellings is recognised in a cycle, without touching the file system.
pub(crate) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

impl LoadedConfig {
    /// The raw value at a dotted path of the merged tree.
    pub fn get(&self, path: &str) -> Option<&Value> {
        get_path(&self.raw, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn reader(files: &[(&str, &str)]) -> impl Fn(&Path) -> std::io::Result<String> {
        let map: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (normalise(Path::new(p)), t.to_string()))
            .collect();
        move |p: &Path| {
            map.get(&normalise(p)).cloned().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
            })
        }
    }

    #[test]
    fn extends_deep_merges_with_the_child_winning_and_relative_paths() {
        let read = reader(&[
            (
                "configs/base/common.yaml",
                "model_name: base-model\nmax_input_tokens: 256\nbatching_options:\n  batch_size: 2\n  strategy: dynamic\ngpu_list: [0, 1, 2]\nextra_metadata: {team: a, run: 1}\n",
            ),
            (
                "configs/mid.yaml",
                "_extends: base/common.yaml\nbatching_options:\n  batch_size: 4\ngpu_list: [3]\n",
            ),
            (
                "configs/exp/child.yaml",
                "_extends: ../mid.yaml\nconfig_name: child\nextra_metadata:\n  run: 2\n",
            ),
        ]);
        let l = load_config(Path::new("configs/exp/child.yaml"), &read).unwrap();
        assert_eq!(l.get("model_name"), Some(&Value::from("base-model")));
        assert_eq!(l.get("max_input_tokens"), Some(&Value::from(256)));
        assert_eq!(l.get("batching_options.batch_size"), Some(&Value::from(4)));
        assert_eq!(
            l.get("batching_options.strategy"),
            Some(&Value::from("dynamic"))
        );
        // Lists are replaced, not concatenated.
        assert_eq!(l.get("gpu_list.0"), Some(&Value::from(3)));
        assert_eq!(l.get("gpu_list.1"), None);
        assert_eq!(l.get("extra_metadata.team"), Some(&Value::from("a")));
        assert_eq!(l.get("extra_metadata.run"), Some(&Value::from(2)));
        assert_eq!(l.get("_extends"), None);
        assert_eq!(
            l.sources,
            vec![
                PathBuf::from("configs/exp/../base/common.yaml"),
                PathBuf::from("configs/exp/../mid.yaml"),
                PathBuf::from("configs/exp/child.yaml"),
            ]
        );
        // Origins name the file that defined each field.
        let o = l.origins.lookup("batching_options.strategy").unwrap();
        assert!(o.file.ends_with("common.yaml"), "{o:?}");
        assert_eq!(o.line, Some(5));
        let o = l.origins.lookup("batching_options.batch_size").unwrap();
        assert!(o.file.ends_with("mid.yaml"), "{o:?}");
        assert_eq!(o.line, Some(3));
        // The replaced list's old items are gone from the origins.
        let o = l.origins.lookup("gpu_list.2").unwrap();
        assert!(o.file.ends_with("mid.yaml"), "{o:?}");
    }

    #[test]
    fn extends_cycle_is_detected() {
        let read = reader(&[
            ("a.yaml", "_extends: b.yaml\nconfig_name: a\n"),
            ("b.yaml", "_extends: ./a.yaml\nmodel_name: m\n"),
        ]);
        let err = load_config(Path::new("a.yaml"), &read).unwrap_err();
        assert!(matches!(err, ConfigError::ExtendsCycle { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "_extends cycle: a.yaml -> b.yaml -> a.yaml"
        );
        let read = reader(&[("self.yaml", "_extends: self.yaml\n")]);
        let err = load_config(Path::new("self.yaml"), &read).unwrap_err();
        assert_eq!(err.to_string(), "_extends cycle: self.yaml -> self.yaml");
    }

    #[test]
    fn missing_base_names_the_extending_file() {
        let read = reader(&[("dir/a.yaml", "_extends: gone.yaml\n")]);
        let err = load_config(Path::new("dir/a.yaml"), &read).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dir/a.yaml: _extends: cannot read dir/gone.yaml: No such file or directory"
        );
    }

    #[test]
    fn json_files_and_parse_errors() {
        let read = reader(&[
            (
                "c.json",
                "{\"_extends\": \"b.yaml\", \"config_name\": \"j\", \"decoder_config\": {\"preset\": \"deterministic\"}}",
            ),
            ("b.yaml", "model_name: m\ndecoder_config:\n  top_k: 7\n"),
            ("bad.yaml", "a: 1\n  b: [\n"),
            ("bad.json", "{\n\"a\": 1,\n}"),
            ("list.yaml", "- 1\n- 2\n"),
        ]);
        let l = load_config(Path::new("c.json"), &read).unwrap();
        assert_eq!(l.get("config_name"), Some(&Value::from("j")));
        assert_eq!(l.get("decoder_config.top_k"), Some(&Value::from(7)));
        assert_eq!(l.get("decoder_config.temperature"), Some(&Value::from(0.0)));
        let err = load_config(Path::new("bad.yaml"), &read).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { line: Some(_), .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("bad.yaml:"), "{err}");
        let err = load_config(Path::new("bad.json"), &read).unwrap_err();
        assert!(
            err.to_string().starts_with("bad.json:3: invalid JSON"),
            "{err}"
        );
        let err = load_config(Path::new("list.yaml"), &read).unwrap_err();
        assert_eq!(
            err.to_string(),
            "list.yaml: the top level must be a mapping of config fields"
        );
    }

    #[test]
    fn text_configs_refuse_extends_and_accept_merge_keys() {
        let err = parse_config_str("<text>", "_extends: base.yaml\n").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("<text>:1: _extends: cannot be followed"));
        let l = parse_config_str(
            "t.yaml",
            "defaults: &d\n  batch_size: 3\nbatching_options:\n  <<: *d\n  strategy: dynamic\n",
        )
        .unwrap();
        assert_eq!(l.get("batching_options.batch_size"), Some(&Value::from(3)));
        let empty = parse_config_str("e.yaml", "# nothing\n").unwrap();
        assert_eq!(empty.raw, Value::Mapping(Mapping::new()));
    }
}
