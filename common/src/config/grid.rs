//! Parameter grids: `--vary path=v1,v2` axes expanded into the cartesian product of
//! complete configs, each validated. Writing files is the CLI's job.

use super::error::{ConfigError, Problem};
use super::load::{parse_config_str, LoadedConfig};
use super::spec::{all_paths, nearest, path_exists};
use super::tree::{deep_merge, expand_decoder_preset, get_path, set_path, to_json};
use super::validate::validate;
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

/// One `--vary` axis: a full dotted path and its values in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct VaryAxis {
    pub path: String,
    pub values: Vec<Value>,
}

/// One combination of axis values.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPoint {
    /// Stable and unique, e.g. `base__batch_size-4__fp_precision-float16.yaml`.
    pub file_name: String,
    /// The complete config (`_extends` merged), with a comment saying where it came from.
    pub yaml: String,
    /// Validation errors (located in `yaml`); empty = valid.
    pub problems: Vec<Problem>,
    /// The base config's name plus the same suffix as the file name.
    pub config_name: String,
}

/// Short names accepted by `--vary` for nested fields, as in the seed's examples.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("batch_size", "batching_options.batch_size"),
    ("strategy", "batching_options.strategy"),
    (
        "max_tokens_per_batch",
        "batching_options.max_tokens_per_batch",
    ),
    ("temperature", "decoder_config.temperature"),
    ("top_p", "decoder_config.top_p"),
    ("top_k", "decoder_config.top_k"),
    ("min_p", "decoder_config.min_p"),
    ("do_sample", "decoder_config.do_sample"),
    ("repetition_penalty", "decoder_config.repetition_penalty"),
    ("quantization", "quantization_config.quantization"),
    ("load_in_4bit", "quantization_config.load_in_4bit"),
    ("load_in_8bit", "quantization_config.load_in_8bit"),
];

/// Parses `key=v1,v2,...`. Values are YAML scalars (or flow collections: commas inside
/// `[...]`/`{...}` and quotes do not split).
pub fn parse_vary(spec: &str) -> Result<VaryAxis, ConfigError> {
    let bad = |message: String, suggestion: Option<String>| ConfigError::BadVary {
        spec: spec.to_string(),
        message,
        suggestion,
    };
    let Some((key, values)) = spec.split_once('=') else {
        return Err(bad("expected `field=value1,value2,...`".into(), None));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(bad("missing the field name before `=`".into(), None));
    }
    let path = SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == key)
        .map(|(_, full)| full.to_string())
        .unwrap_or_else(|| key.to_string());
    if path == "config_name" || path == "_extends" {
        return Err(bad(
            format!("`{path}` cannot be varied (grid points get their own names)"),
            None,
        ));
    }
    if !path_exists(&path) {
        let paths = all_paths();
        let candidates = SHORT_NAMES
            .iter()
            .map(|(s, _)| *s)
            .chain(paths.iter().map(String::as_str));
        return Err(bad(
            format!("unknown field `{key}`"),
            nearest(key, candidates),
        ));
    }
    let mut parsed = Vec::new();
    for item in split_values(values) {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad("empty value in the list".into(), None));
        }
        let v: Value = serde_yaml::from_str(item)
            .map_err(|e| bad(format!("value `{item}` is not valid YAML: {e}"), None))?;
        parsed.push(v);
    }
    Ok(VaryAxis {
        path,
        values: parsed,
    })
}

/// Splits at commas that are outside brackets, braces and quotes.
fn split_values(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth <= 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Every combination of the axes' values, first axis slowest. Each point is the base
/// config with the point's values laid over it as one more layer.
pub fn expand_grid(base: &LoadedConfig, axes: &[VaryAxis]) -> Vec<GridPoint> {
    let stem = base
        .path
        .file_stem()
        .map(|s| sanitise(&s.to_string_lossy()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "grid".to_string());
    let base_name = get_path(&base.raw, "config_name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| stem.clone());
    let labels: Vec<Vec<String>> = axes.iter().map(axis_labels).collect();
    let total: usize = axes.iter().map(|a| a.values.len()).product();

    let mut points = Vec::with_capacity(total);
    let mut idx = vec![0usize; axes.len()];
    for n in 0..total {
        if n > 0 {
            // Odometer: the last axis turns fastest.
            for a in (0..axes.len()).rev() {
                idx[a] += 1;
                if idx[a] < axes[a].values.len() {
                    break;
                }
                idx[a] = 0;
            }
        }
        let mut layer = Value::Mapping(Mapping::new());
        let mut assigned = Vec::new();
        let mut suffix = String::new();
        for (a, axis) in axes.iter().enumerate() {
            let v = &axis.values[idx[a]];
            set_path(&mut layer, &axis.path, v.clone());
            assigned.push(format!("{}={}", axis.path, to_json(v)));
            suffix.push_str("__");
            suffix.push_str(&labels[a][idx[a]]);
        }
        expand_decoder_preset(&mut layer);
        let mut tree = deep_merge(base.raw.clone(), layer);
        let config_name = format!("{base_name}{suffix}");
        set_path(&mut tree, "config_name", Value::from(config_name.as_str()));

        let file_name = file_name(&stem, &suffix);
        let header = format!(
            "# Generated by `lem config generate-grid` from {}{}{}\n",
            base.path.display(),
            if assigned.is_empty() { "" } else { ": " },
            assigned.join(", ")
        );
        let yaml = header + &serde_yaml::to_string(&tree).expect("config trees serialise");
        let problems = match parse_config_str(&file_name, &yaml) {
            Ok(loaded) => validate(&loaded).errors,
            Err(e) => vec![Problem {
                file: Some(file_name.clone()),
                line: None,
                field: "(config)".into(),
                message: e.to_string(),
                suggestion: None,
            }],
        };
        points.push(GridPoint {
            file_name,
            yaml,
            problems,
            config_name,
        });
    }
    points
}

/// `key-value` labels for an axis, unique within it (colliding ones get `_2`, `_3`...).
fn axis_labels(axis: &VaryAxis) -> Vec<String> {
    let key = SHORT_NAMES
        .iter()
        .find(|(_, full)| *full == axis.path)
        .map(|(short, _)| short.to_string())
        .unwrap_or_else(|| sanitise(&axis.path));
    let mut used: Vec<String> = Vec::new();
    for v in &axis.values {
        let text = match v {
            Value::String(s) => s.clone(),
            other => to_json(other).to_string(),
        };
        let mut value = sanitise(&text);
        value.truncate(48);
        let value = value.trim_end_matches('_').to_string();
        let label = format!("{key}-{value}");
        let mut candidate = label.clone();
        let mut n = 2;
        while used.contains(&candidate) {
            candidate = format!("{label}_{n}");
            n += 1;
        }
        used.push(candidate);
    }
    used
}

/// File-name safe: `[A-Za-z0-9.+-]` kept, anything else one `_`; never `__` (the
/// separator between labels), never a leading or trailing `_`.
fn sanitise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-') {
            c
        } else {
            '_'
        };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end_matches('_').to_string()
}

/// Keeps names under common file-system limits; long suffixes end in a hash of the
/// whole suffix so that they stay unique.
fn file_name(stem: &str, suffix: &str) -> String {
    const MAX: usize = 200;
    if stem.len() + suffix.len() + 5 <= MAX {
        return format!("{stem}{suffix}.yaml");
    }
    let digest = Sha256::digest(suffix.as_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let keep = MAX
        .saturating_sub(stem.len() + hash.len() + 8)
        .min(suffix.len());
    let mut cut = keep;
    while !suffix.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = suffix[..cut].trim_end_matches(['_', '-']);
    format!("{stem}{head}__{hash}.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const BASE: &str =
        "config_name: base-exp\nmodel_name: m\ngpu_list: [0]\nbatching_options:\n  batch_size: 1\n";

    fn base() -> LoadedConfig {
        parse_config_str("configs/base.yaml", BASE).unwrap()
    }

    #[test]
    fn vary_specs_parse_with_short_names_and_yaml_values() {
        let a = parse_vary("batch_size=1,2,4,8").unwrap();
        assert_eq!(a.path, "batching_options.batch_size");
        assert_eq!(a.values, [1, 2, 4, 8].map(Value::from));
        let a = parse_vary("fp_precision=float16,float32").unwrap();
        assert_eq!(a.path, "fp_precision");
        assert_eq!(a.values, ["float16", "float32"].map(Value::from));
        let a = parse_vary("decoder_config.temperature=0,0.7").unwrap();
        assert_eq!(a.values, [Value::from(0), Value::from(0.7)]);
        let a = parse_vary("gpu_list=[0],[0, 1]").unwrap();
        assert_eq!(a.values.len(), 2);
        assert_eq!(
            a.values[1],
            serde_yaml::from_str::<Value>("[0, 1]").unwrap()
        );
        let a = parse_vary("quantization=true,false").unwrap();
        assert_eq!(a.path, "quantization_config.quantization");
        assert_eq!(a.values, [true, false].map(Value::from));
        assert!(parse_vary("extra_metadata.run=a,b").is_ok());
    }

    #[test]
    fn bad_vary_specs_are_refused_with_suggestions() {
        let e = parse_vary("batch_sise=1,2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown field `batch_sise`; did you mean `batch_size`?"
        );
        let e = parse_vary("decoder_config.temprature=1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown field `decoder_config.temprature`; did you mean `decoder_config.temperature`?"
        );
        assert!(parse_vary("batch_size").is_err());
        assert!(parse_vary("batch_size=1,,2").is_err());
        assert!(parse_vary("config_name=a,b").is_err());
    }

    #[test]
    fn points_follow_cartesian_order_with_stable_names() {
        let axes = [
            parse_vary("batch_size=1,4").unwrap(),
            parse_vary("fp_precision=float16,float32").unwrap(),
        ];
        let points = expand_grid(&base(), &axes);
        let names: Vec<&str> = points.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "base__batch_size-1__fp_precision-float16.yaml",
                "base__batch_size-1__fp_precision-float32.yaml",
                "base__batch_size-4__fp_precision-float16.yaml",
                "base__batch_size-4__fp_precision-float32.yaml",
            ]
        );
        assert_eq!(
            points[2].config_name,
            "base-exp__batch_size-4__fp_precision-float16"
        );
        assert!(points.iter().all(|p| p.problems.is_empty()), "{points:#?}");
        // The yaml is a complete config that loads back to the point's values.
        let back = parse_config_str("p.yaml", &points[2].yaml).unwrap();
        assert_eq!(
            back.get("batching_options.batch_size"),
            Some(&Value::from(4))
        );
        assert_eq!(back.get("fp_precision"), Some(&Value::from("float16")));
        assert_eq!(back.get("model_name"), Some(&Value::from("m")));
        assert_eq!(
            back.get("config_name"),
            Some(&Value::from("base-exp__batch_size-4__fp_precision-float16"))
        );
        assert!(points[2].yaml.starts_with("# Generated by `lem config generate-grid` from configs/base.yaml: batching_options.batch_size=4, fp_precision=\"float16\"\n"));
        // Same input, same output.
        assert_eq!(points, expand_grid(&base(), &axes));
    }

    #[test]
    fn invalid_points_are_reported_with_their_lines() {
        let axes = [
            parse_vary("num_processes=1,2").unwrap(),
            parse_vary("temperature=0.5,3").unwrap(),
        ];
        let points = expand_grid(&base(), &axes);
        assert_eq!(points.len(), 4);
        assert!(points[0].problems.is_empty());
        let bad: Vec<String> = points[3].problems.iter().map(|p| p.to_string()).collect();
        let text = &points[3].yaml;
        let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        assert_eq!(
            bad,
            vec![
                format!(
                    "{}:{}: decoder_config.temperature: must be between 0 and 2 (found 3)",
                    points[3].file_name,
                    line_of("temperature:")
                ),
                format!(
                    "{}:{}: num_processes: 2 processes need at least 2 GPUs, but gpu_list has 1",
                    points[3].file_name,
                    line_of("num_processes:")
                ),
            ]
        );
        assert_eq!(points[1].problems.len(), 1);
        assert_eq!(points[2].problems.len(), 1);
    }

    #[test]
    fn varying_a_decoder_preset_applies_it_over_the_base() {
        let base = parse_config_str(
            "b.yaml",
            "config_name: b\nmodel_name: m\ndecoder_config:\n  preset: deterministic\n",
        )
        .unwrap();
        let points = expand_grid(
            &base,
            &[parse_vary("decoder_config.preset=creative").unwrap()],
        );
        let back = parse_config_str("p.yaml", &points[0].yaml).unwrap();
        assert_eq!(
            back.get("decoder_config.temperature"),
            Some(&Value::from(0.8))
        );
        assert_eq!(
            back.get("decoder_config.do_sample"),
            Some(&Value::from(true))
        );
    }

    #[test]
    fn no_axes_is_the_base_itself_and_colliding_labels_stay_unique() {
        let points = expand_grid(&base(), &[]);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].file_name, "base.yaml");
        let axis = VaryAxis {
            path: "extra_metadata.tag".into(),
            values: vec![
                "a/b".into(),
                "a_b".into(),
                "a b".into(),
                1.into(),
                "1".into(),
            ],
        };
        let names: Vec<String> = expand_grid(&base(), &[axis])
            .into_iter()
            .map(|p| p.file_name)
            .collect();
        assert_eq!(
            names,
            [
                "base__extra_metadata.tag-a_b.yaml",
                "base__extra_metadata.tag-a_b_2.yaml",
                "base__extra_metadata.tag-a_b_3.yaml",
                "base__extra_metadata.tag-1.yaml",
                "base__extra_metadata.tag-1_2.yaml",
            ]
        );
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0u32..20).prop_map(Value::from),
            "[a-z_/ .-]{0,6}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            (0.0f64..2.0).prop_map(Value::from),
        ]
    }

    fn axes_strategy() -> impl Strategy<Value = Vec<VaryAxis>> {
        let paths = prop_oneof![
            Just("batching_options.batch_size".to_string()),
            Just("decoder_config.temperature".to_string()),
            Just("fp_precision".to_string()),
            Just("extra_metadata.x".to_string()),
            Just("extra_metadata.x".to_string()),
        ];
        proptest::collection::vec(
            (paths, proptest::collection::vec(value_strategy(), 0..4))
                .prop_map(|(path, values)| VaryAxis { path, values }),
            0..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn grid_size_is_the_product_and_names_are_unique(axes in axes_strategy()) {
            let points = expand_grid(&base(), &axes);
            let expected: usize = axes.iter().map(|a| a.values.len()).product();
            prop_assert_eq!(points.len(), expected);
            let files: HashSet<&str> = points.iter().map(|p| p.file_name.as_str()).collect();
            let names: HashSet<&str> = points.iter().map(|p| p.config_name.as_str()).collect();
            prop_assert_eq!(files.len(), expected);
            prop_assert_eq!(names.len(), expected);
            for p in &points {
                prop_assert!(p.file_name.ends_with(".yaml"));
                prop_assert!(!p.file_name.contains('/'));
                prop_assert!(p.file_name.len() <= 200);
            }
        }
    }

    #[test]
    fn long_names_are_shortened_with_a_hash() {
        let axes: Vec<VaryAxis> = (0..6)
            .map(|i| VaryAxis {
                path: format!("extra_metadata.key_number_{i}"),
                values: vec![Value::from("x".repeat(60)), Value::from("y".repeat(60))],
            })
            .collect();
        let points = expand_grid(&base(), &axes);
        let files: HashSet<&str> = points.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(files.len(), 64);
        assert!(points.iter().all(|p| p.file_name.len() <= 200));
    }
}
