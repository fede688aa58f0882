//! Helpers on raw `serde_yaml::Value` trees: dotted paths, deep merge, decoder presets.
//!
//! Configs are merged as raw trees (layers: preset < file(s) < CLI) and only then
//! deserialised, so "which fields were set explicitly" stays visible during merging.

use super::schema::DecoderPreset;
use serde_yaml::{Mapping, Value};

/// A mapping key as it appears in a dotted path.
pub(crate) fn key_str(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_string(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

pub(crate) fn join(base: &str, seg: &str) -> String {
    if base.is_empty() {
        seg.to_string()
    } else {
        format!("{base}.{seg}")
    }
}

fn map_get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(key)
        .or_else(|| m.iter().find(|(k, _)| key_str(k) == key).map(|(_, v)| v))
}

/// The value at a dotted path (`""` is the root); list items are addressed by index.
pub(crate) fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    let mut cur = v;
    for seg in path.split('.') {
        cur = match cur {
            Value::Mapping(m) => map_get(m, seg)?,
            Value::Sequence(s) => s.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Sets the value at a dotted path of mapping keys, creating (or replacing non-mapping
/// values with) mappings on the way.
pub(crate) fn set_path(root: &mut Value, path: &str, new: Value) {
    if path.is_empty() {
        *root = new;
        return;
    }
    let mut cur = root;
    let segs: Vec<&str> = path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(m) = cur else {
            unreachable!("made a mapping above")
        };
        let key = Value::String((*seg).to_string());
        if i + 1 == segs.len() {
            m.insert(key, new);
            return;
        }
        if !m.contains_key(&key) {
            m.insert(key.clone(), Value::Mapping(Mapping::new()));
        }
        cur = m.get_mut(&key).expect("inserted above");
    }
}

/// Deep merge: mappings merge key by key with `upper` winning; anything else in `upper`
/// (scalars, lists, explicit nulls) replaces the base value whole.
pub(crate) fn deep_merge(base: Value, upper: Value) -> Value {
    match (base, upper) {
        (Value::Mapping(mut b), Value::Mapping(u)) => {
            // In place, so merged keys keep the base's order (errors and generated
            // files then read in the order of the files).
            for (k, uv) in u {
                match b.get_mut(&k) {
                    Some(bv) => {
                        let old = std::mem::take(bv);
                        *bv = deep_merge(old, uv);
                    }
                    None => {
                        b.insert(k, uv);
                    }
                }
            }
            Value::Mapping(b)
        }
        (_, u) => u,
    }
}

/// Calls `f` on every node (root first, path `""`), depth first.
pub(crate) fn walk(v: &Value, prefix: &str, f: &mut dyn FnMut(&str, &Value)) {
    f(prefix, v);
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                walk(child, &join(prefix, &key_str(k)), f);
            }
        }
        Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                walk(child, &join(prefix, &i.to_string()), f);
            }
        }
        _ => {}
    }
}

/// Fills in the values of `decoder_config.preset` for the fields this layer does not
/// set itself. Applied per layer before merging, so a preset chosen in a later layer
/// overrides explicit values of an earlier one, while explicit fields next to the
/// preset in the same layer win over it. Unknown presets are left for validation.
pub(crate) fn expand_decoder_preset(layer: &mut Value) {
    let Some(Value::Mapping(dec)) = layer
        .as_mapping_mut()
        .and_then(|m| m.get_mut("decoder_config"))
    else {
        return;
    };
    let Some(name) = dec.get("preset").and_then(Value::as_str) else {
        return;
    };
    let Some(preset) = DecoderPreset::from_name(name) else {
        return;
    };
    // Later values win on insertion; the preset fills gaps only.
    for (k, v) in preset.settings() {
        let key = Value::String(k.to_string());
        if !dec.contains_key(&key) {
            dec.insert(key, v);
        }
    }
}

/// Empty sections written as `decoder_config:` (all keys commented out) parse as null;
/// treat them as empty mappings, as a reader of the file would.
pub(crate) fn normalise_null_sections(root: &mut Value, sections: &[&str]) {
    if let Value::Mapping(m) = root {
        for s in sections {
            if let Some(v) = m.get_mut(*s) {
                if v.is_null() {
                    *v = Value::Mapping(Mapping::new());
                }
            }
        }
    }
}

pub(crate) fn to_json(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A short description of a value's kind for type errors.
pub(crate) fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) if n.is_f64() => format!("a number ({n})"),
        Value::Number(n) => format!("an integer ({n})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a tagged value ({})", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn deep_merge_merges_maps_and_replaces_the_rest() {
        let base = y("a: 1\nb: {x: 1, y: 2}\nl: [1, 2, 3]\n");
        let upper = y("b: {y: 3, z: 4}\nl: [9]\nc: null\n");
        let m = deep_merge(base, upper);
        assert_eq!(m, y("a: 1\nb: {x: 1, y: 3, z: 4}\nl: [9]\nc: null\n"));
        let keys: Vec<String> = m.as_mapping().unwrap().keys().map(key_str).collect();
        assert_eq!(keys, ["a", "b", "l", "c"]);
    }

    #[test]
    fn paths_get_and_set() {
        let mut v = y("a: {b: [10, 20]}\nn: 5\n");
        assert_eq!(get_path(&v, "a.b.1"), Some(&Value::from(20)));
        assert_eq!(get_path(&v, "a.c"), None);
        set_path(&mut v, "n.deep", Value::from(1));
        set_path(&mut v, "a.new", Value::from("x"));
        assert_eq!(v, y("a: {b: [10, 20], new: x}\nn: {deep: 1}\n"));
    }

    #[test]
    fn decoder_preset_fills_only_missing_fields() {
        let mut v = y("decoder_config: {preset: creative, temperature: 0.5}");
        expand_decoder_preset(&mut v);
        let d = get_path(&v, "decoder_config").unwrap();
        assert_eq!(get_path(d, "temperature"), Some(&Value::from(0.5)));
        assert_eq!(get_path(d, "top_p"), Some(&Value::from(0.9)));
        assert_eq!(get_path(d, "repetition_penalty"), Some(&Value::from(1.1)));
        assert_eq!(get_path(d, "do_sample"), Some(&Value::from(true)));
        let mut unknown = y("decoder_config: {preset: wild}");
        let before = unknown.clone();
        expand_decoder_preset(&mut unknown);
        assert_eq!(unknown, before);
    }
}
