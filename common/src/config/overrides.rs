//! Resolving the effective config from its layers: defaults < preset < config file <
//! CLI flags. Each CLI flag that is given is recorded as {original, new}.
//!
//! CLI rules beyond "set the field":
//! - `--dataset X`: an alias or `org/name` id -> a `huggingface` source; a string ending
//!   `.txt/.jsonl/.json/.csv` or starting with `/`, `./`, `../`, `~` -> a `file` source;
//!   `synthetic` -> a synthetic source. The file's `sample_size`/`shuffle`/`seed` stay.
//! - `-n N`: `num_input_prompts` and, when there is a prompt source, its `sample_size`.
//! - `--temperature 0` turns sampling off (greedy); `--temperature T > 0` turns it on,
//!   since a temperature only acts when sampling.
//! - `--quantization` without a bit mode in the config picks `load_in_4bit` and says so
//!   (a config file with `quantization: true` and no bit mode stays an error);
//!   `--no-quantization` also clears the bit modes.

use super::error::{ConfigError, Origin, Origins, Problem};
use super::load::LoadedConfig;
use super::presets::{preset as find_preset, presets};
use super::schema::ExperimentConfig;
use super::spec::{nearest, SECTIONS};
use super::tree::{
    deep_merge, expand_decoder_preset, get_path, normalise_null_sections, set_path, to_json, walk,
};
use super::validate::validate_tree;
use crate::domain::OverrideRecord;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

/// The seed's experiment CLI flags that override config fields.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub model: Option<String>,
    pub dataset: Option<String>,
    pub num_prompts: Option<u32>,
    pub batch_size: Option<u32>,
    pub precision: Option<String>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
    pub num_processes: Option<u32>,
    pub gpu_list: Option<Vec<u32>>,
    pub temperature: Option<f64>,
    pub quantization: Option<bool>,
    pub cycles: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub config: ExperimentConfig,
    /// Field path -> {original, new} for every field a CLI flag set.
    pub cli_overrides: BTreeMap<String, OverrideRecord>,
    /// Validation warnings and notes on what the CLI flags implied.
    pub warnings: Vec<String>,
    pub preset: Option<String>,
}

/// Merges the layers, validates the result (every problem at once) and deserialises it.
/// `unsupported()` is not applied here: the caller decides whether to refuse.
pub fn resolve(
    preset: Option<&str>,
    file: Option<&LoadedConfig>,
    cli: &CliOverrides,
) -> Result<ResolvedConfig, ConfigError> {
    let preset = match preset {
        None => None,
        Some(name) => Some(find_preset(name).ok_or_else(|| {
            ConfigError::UnknownPreset {
                name: name.to_string(),
                available: presets()
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                suggestion: nearest(name, presets().iter().map(|p| p.name)),
            }
        })?),
    };

    let mut tree = Value::Mapping(Mapping::new());
    let mut origins = Origins::new();
    if let Some(p) = preset {
        let mut layer = p.layer();
        expand_decoder_preset(&mut layer);
        walk(&layer, "", &mut |path, _| {
            origins.insert(
                path,
                Origin {
                    file: format!("preset `{}`", p.name),
                    line: None,
                },
            )
        });
        tree = deep_merge(tree, layer);
    }
    if let Some(f) = file {
        origins.overlay(&f.origins, &f.raw);
        tree = deep_merge(tree, f.raw.clone());
    }

    let before_cli = tree.clone();
    let mut applied = Applied::default();
    apply_cli(&mut tree, cli, &mut applied);
    for (path, flag) in &applied.paths {
        origins.set_subtree(
            path,
            Origin {
                file: format!("command line ({flag})"),
                line: None,
            },
        );
    }

    if file.is_none() && get_path(&tree, "config_name").is_none() {
        if let Some(model) = get_path(&tree, "model_name").and_then(Value::as_str) {
            let short = model
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(model);
            let name = match preset {
                Some(p) => format!("{}-{short}", p.name),
                None => short.to_string(),
            };
            set_path(&mut tree, "config_name", Value::from(name));
        }
    }

    normalise_null_sections(&mut tree, SECTIONS);
    let mut validation = validate_tree(&tree, &origins);
    if file.is_none() {
        // Without a file the name derives from the model: report only the model.
        if get_path(&tree, "model_name").is_none() {
            validation.errors.retain(|p| p.field != "config_name");
        }
        for p in &mut validation.errors {
            if p.field == "model_name" && p.message == "missing required field" {
                p.message = "missing: give --model (or a config file that sets model_name)".into();
                p.file = None;
            }
        }
    }
    let warnings_problems = validation.into_result()?;

    let config: ExperimentConfig =
        serde_yaml::from_value(tree).map_err(|e| ConfigError::Invalid {
            problems: vec![Problem {
                file: file.map(|f| f.path.display().to_string()),
                line: None,
                field: "(config)".into(),
                message: e.to_string(),
                suggestion: None,
            }],
        })?;

    let effective = config.to_json();
    let defaults = {
        let mut d = ExperimentConfig::default_for("", "").to_json();
        if let Some(o) = d.as_object_mut() {
            o.remove("config_name");
            o.remove("model_name");
        }
        d
    };
    let mut cli_overrides = BTreeMap::new();
    for (path, _) in &applied.paths {
        let original = get_path(&before_cli, path)
            .map(to_json)
            .or_else(|| json_at(&defaults, path).cloned())
            .unwrap_or(serde_json::Value::Null);
        let new = json_at(&effective, path)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        cli_overrides.insert(path.clone(), OverrideRecord { original, new });
    }

    let mut warnings: Vec<String> = warnings_problems.iter().map(|p| p.to_string()).collect();
    warnings.extend(applied.notes);
    Ok(ResolvedConfig {
        config,
        cli_overrides,
        warnings,
        preset: preset.map(|p| p.name.to_string()),
    })
}

fn json_at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |cur, seg| cur.get(seg))
}

#[derive(Default)]
struct Applied {
    /// (field path, flag) in the order applied.
    paths: Vec<(String, &'static str)>,
    notes: Vec<String>,
}

impl Applied {
    fn set(&mut self, tree: &mut Value, path: &str, flag: &'static str, v: Value) {
        set_path(tree, path, v);
        self.paths.retain(|(p, _)| p != path);
        self.paths.push((path.to_string(), flag));
    }
}

fn apply_cli(tree: &mut Value, cli: &CliOverrides, a: &mut Applied) {
    if let Some(m) = &cli.model {
        a.set(tree, "model_name", "--model", Value::from(m.as_str()));
    }
    if let Some(d) = &cli.dataset {
        let kept: Vec<(&str, Value)> = ["sample_size", "shuffle", "seed"]
            .into_iter()
            .filter_map(|k| get_path(tree, &format!("prompt_source.{k}")).map(|v| (k, v.clone())))
            .collect();
        let mut src = prompt_source_for(d);
        for (k, v) in kept {
            src.insert(k.into(), v);
        }
        a.set(tree, "prompt_source", "--dataset", Value::Mapping(src));
    }
    if let Some(n) = cli.num_prompts {
        a.set(tree, "num_input_prompts", "-n", Value::from(n));
        if matches!(get_path(tree, "prompt_source"), Some(Value::Mapping(_))) {
            a.set(tree, "prompt_source.sample_size", "-n", Value::from(n));
        }
    }
    if let Some(b) = cli.batch_size {
        a.set(
            tree,
            "batching_options.batch_size",
            "--batch-size",
            Value::from(b),
        );
    }
    if let Some(p) = &cli.precision {
        a.set(tree, "fp_precision", "--precision", Value::from(p.as_str()));
    }
    if let Some(m) = cli.max_tokens {
        a.set(tree, "max_output_tokens", "--max-tokens", Value::from(m));
    }
    if let Some(s) = cli.seed {
        a.set(tree, "random_seed", "--seed", Value::from(s));
    }
    if let Some(n) = cli.num_processes {
        a.set(tree, "num_processes", "--num-processes", Value::from(n));
    }
    if let Some(g) = &cli.gpu_list {
        let list = Value::Sequence(g.iter().map(|i| Value::from(*i)).collect());
        a.set(tree, "gpu_list", "--gpu-list", list);
    }
    if let Some(t) = cli.temperature {
        a.set(
            tree,
            "decoder_config.temperature",
            "--temperature",
            Value::from(t),
        );
        a.set(
            tree,
            "decoder_config.do_sample",
            "--temperature",
            Value::from(t > 0.0),
        );
    }
    match cli.quantization {
        Some(true) => {
            a.set(
                tree,
                "quantization_config.quantization",
                "--quantization",
                Value::from(true),
            );
            let on = |k: &str| {
                get_path(tree, &format!("quantization_config.{k}")).and_then(Value::as_bool)
                    == Some(true)
            };
            if !on("load_in_4bit") && !on("load_in_8bit") {
                a.set(
                    tree,
                    "quantization_config.load_in_4bit",
                    "--quantization",
                    Value::from(true),
                );
                a.notes
                    .push("--quantization: the config sets no bit mode; using load_in_4bit".into());
            }
        }
        Some(false) => {
            a.set(
                tree,
                "quantization_config.quantization",
                "--no-quantization",
                Value::from(false),
            );
            for k in ["load_in_4bit", "load_in_8bit"] {
                let path = format!("quantization_config.{k}");
                if get_path(tree, &path).and_then(Value::as_bool) == Some(true) {
                    a.set(tree, &path, "--no-quantization", Value::from(false));
                }
            }
        }
        None => {}
    }
    if let Some(c) = cli.cycles {
        a.set(tree, "num_cycles", "--cycles", Value::from(c));
    }
}

/// The prompt source a `--dataset` string names (decided by the string alone, no IO).
fn prompt_source_for(d: &str) -> Mapping {
    let mut m = Mapping::new();
    let lower = d.to_ascii_lowercase();
    let is_file = [".txt", ".jsonl", ".json", ".csv"]
        .iter()
        .any(|ext| lower.ends_with(ext))
        || ["/", "./", "../", "~"].iter().any(|p| d.starts_with(p));
    if d == "synthetic" {
        m.insert("type".into(), "synthetic".into());
    } else if is_file {
        m.insert("type".into(), "file".into());
        m.insert("path".into(), d.into());
    } else {
        // Aliases, `org/name` ids, and unknown names (validation then suggests an alias).
        m.insert("type".into(), "huggingface".into());
        m.insert("dataset".into(), d.into());
    }
    m
}
