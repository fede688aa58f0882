//! Key path -> line number, by scanning the text of a YAML or JSON config.
//!
//! `serde_yaml::Value` carries no positions, so validation errors get their lines from
//! here. Block mappings and sequences are followed by indentation; flow collections
//! (`{...}`, `[...]`, and whole JSON files) by a small bracket scanner. Anything this
//! does not understand just has no line; errors then name the nearest parent's line.

use super::tree::join;
use std::collections::{BTreeMap, HashMap};

/// 1-based line of every key path (and list item, by index) found in `text`.
pub(crate) fn line_index(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    if let Some(first) = first {
        if first.starts_with('{') || first.starts_with('[') {
            let start = text.find(first).unwrap_or(0);
            let line = text[..start].matches('\n').count();
            scan_flow(text, start, line, "", &mut out);
            return out;
        }
    }
    scan_block(text, &mut out);
    out
}

struct Entry {
    indent: usize,
    path: String,
    is_item: bool,
}

fn scan_block(text: &str, out: &mut BTreeMap<String, usize>) {
    let mut stack: Vec<Entry> = Vec::new();
    let mut counters: HashMap<String, usize> = HashMap::new();
    let mut skip_until = 0usize;
    let mut block_scalar_indent: Option<usize> = None;
    let mut off = 0usize;
    for (lineno, raw) in text.split_inclusive('\n').enumerate() {
        let line_start = off;
        off += raw.len();
        if line_start < skip_until {
            continue;
        }
        let line = raw.trim_end_matches(['\n', '\r']);
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = &line[indent..];
        if let Some(bi) = block_scalar_indent {
            if content.trim().is_empty() || indent > bi {
                continue;
            }
            block_scalar_indent = None;
        }
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if content.starts_with("---") {
            stack.clear();
            continue;
        }
        if content.starts_with("...") || content.starts_with('%') {
            continue;
        }
        let mut col = indent;
        let mut rest = content;
        // Sequence items, possibly nested on one line (`- - x`).
        while rest == "-" || rest.starts_with("- ") || rest.starts_with("-\t") {
            while stack
                .last()
                .is_some_and(|t| t.indent > col || (t.indent == col && t.is_item))
            {
                stack.pop();
            }
            let parent = stack.last().map(|t| t.path.clone()).unwrap_or_default();
            let idx = counters.entry(parent.clone()).or_insert(0);
            let path = join(&parent, &idx.to_string());
            *idx += 1;
            out.entry(path.clone()).or_insert(lineno + 1);
            stack.push(Entry {
                indent: col,
                path,
                is_item: true,
            });
            let after = &rest[1..];
            let trimmed = after.trim_start();
            col += 1 + (after.len() - trimmed.len());
            rest = trimmed;
        }
        if rest.is_empty() {
            continue;
        }
        if rest.starts_with('[') || rest.starts_with('{') {
            // A flow collection as a list item's value.
            let base = stack.last().map(|t| t.path.clone()).unwrap_or_default();
            skip_until = scan_flow(text, line_start + col, lineno, &base, out);
            continue;
        }
        let Some((key, value_off)) = split_key(rest) else {
            continue;
        };
        while stack.last().is_some_and(|t| t.indent >= col) {
            stack.pop();
        }
        let parent = stack.last().map(|t| t.path.clone()).unwrap_or_default();
        let path = join(&parent, &key);
        out.entry(path.clone()).or_insert(lineno + 1);
        counters.remove(&path);
        stack.push(Entry {
            indent: col,
            path: path.clone(),
            is_item: false,
        });
        let value = &rest[value_off..];
        let value_trimmed = value.trim_start();
        let value_col = col + value_off + (value.len() - value_trimmed.len());
        if value_trimmed.starts_with('|') || value_trimmed.starts_with('>') {
            block_scalar_indent = Some(col);
        } else if value_trimmed.starts_with('[') || value_trimmed.starts_with('{') {
            skip_until = scan_flow(text, line_start + value_col, lineno, &path, out);
        }
    }
}

/// `key: value` -> (key, byte offset of the value in `s`). Quoted keys are unquoted.
fn split_key(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let ends_key = |i: usize| i + 1 == b.len() || matches!(b[i + 1], b' ' | b'\t');
    if b[0] == b'"' || b[0] == b'\'' {
        let q = b[0];
        let mut i = 1;
        while i < b.len() {
            if q == b'"' && b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i] == q {
                if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                break;
            }
            i += 1;
        }
        let close = i.min(b.len());
        let after = close + 1;
        let ws = s.get(after..)?.len() - s.get(after..)?.trim_start().len();
        let colon = after + ws;
        if b.get(colon) == Some(&b':') && ends_key(colon) {
            let key = s[1..close].replace("\\\"", "\"").replace("''", "'");
            return Some((key, colon + 1));
        }
        return None;
    }
    if matches!(
        b[0],
        b'[' | b'{' | b'&' | b'*' | b'!' | b'|' | b'>' | b'#' | b'?'
    ) {
        return None;
    }
    for i in 0..b.len() {
        if b[i] == b'#' && i > 0 && matches!(b[i - 1], b' ' | b'\t') {
            return None;
        }
        if b[i] == b':' && ends_key(i) {
            let key = s[..i].trim_end();
            return (!key.is_empty()).then(|| (key.to_string(), i + 1));
        }
    }
    None
}

enum Frame {
    Obj {
        path: String,
        expect_key: bool,
        pending: Option<(String, usize)>,
        current: Option<String>,
    },
    Arr {
        path: String,
        index: usize,
        started: bool,
    },
}

/// Scans one flow collection starting at byte `start` (on 0-based line `line`), whose
/// own path is `base`. Returns the byte offset just after its closing bracket.
fn scan_flow(
    text: &str,
    start: usize,
    mut line: usize,
    base: &str,
    out: &mut BTreeMap<String, usize>,
) -> usize {
    let b = text.as_bytes();
    let mut frames: Vec<Frame> = Vec::new();
    let mut i = start;
    // Path a value starting now would have, recording array items as they start.
    let value_path =
        |frames: &mut Vec<Frame>, line: usize, out: &mut BTreeMap<String, usize>| match frames
            .last_mut()
        {
            None => Some(base.to_string()),
            Some(Frame::Obj { current, .. }) => current.clone(),
            Some(Frame::Arr {
                path,
                index,
                started,
            }) => {
                let p = join(path, &index.to_string());
                if !*started {
                    out.entry(p.clone()).or_insert(line + 1);
                    *started = true;
                }
                Some(p)
            }
        };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' if i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' | b'[' => {
                let path = value_path(&mut frames, line, out).unwrap_or_default();
                frames.push(if c == b'{' {
                    Frame::Obj {
                        path,
                        expect_key: true,
                        pending: None,
                        current: None,
                    }
                } else {
                    Frame::Arr {
                        path,
                        index: 0,
                        started: false,
                    }
                });
                i += 1;
            }
            b'}' | b']' => {
                frames.pop();
                i += 1;
                if frames.is_empty() {
                    return i;
                }
            }
            b',' => {
                match frames.last_mut() {
                    Some(Frame::Obj {
                        expect_key,
                        pending,
                        current,
                        ..
                    }) => {
                        *expect_key = true;
                        *pending = None;
                        *current = None;
                    }
                    Some(Frame::Arr { index, started, .. }) => {
                        *index += 1;
                        *started = false;
                    }
                    None => {}
                }
                i += 1;
            }
            b':' => {
                if let Some(Frame::Obj {
                    path,
                    expect_key,
                    pending,
                    current,
                }) = frames.last_mut()
                {
                    if let Some((key, key_line)) = pending.take() {
                        let p = join(path, &key);
                        out.entry(p.clone()).or_insert(key_line + 1);
                        *current = Some(p);
                        *expect_key = false;
                    }
                }
                i += 1;
            }
            _ => {
                let token_line = line;
                let token = if c == b'"' || c == b'\'' {
                    let (tok, next, newlines) = quoted(b, i);
                    line += newlines;
                    i = next;
                    tok
                } else {
                    let from = i;
                    while i < b.len() && !matches!(b[i], b',' | b'{' | b'}' | b'[' | b']' | b'\n') {
                        // A plain key ends at `:`; inside plain values `:` may appear.
                        if b[i] == b':'
                            && matches!(
                                frames.last(),
                                Some(Frame::Obj {
                                    expect_key: true,
                                    ..
                                })
                            )
                        {
                            break;
                        }
                        i += 1;
                    }
                    String::from_utf8_lossy(&b[from..i]).trim().to_string()
                };
                match frames.last_mut() {
                    Some(Frame::Obj {
                        expect_key: true,
                        pending,
                        ..
                    }) => *pending = Some((token, token_line)),
                    Some(Frame::Arr { .. }) => {
                        value_path(&mut frames, token_line, out);
                    }
                    _ => {}
                }
                if frames.is_empty() {
                    return i;
                }
            }
        }
    }
    b.len()
}

/// A quoted string at `i`: (contents, offset after the closing quote, newlines inside).
fn quoted(b: &[u8], i: usize) -> (String, usize, usize) {
    let q = b[i];
    let mut j = i + 1;
    let mut newlines = 0;
    let mut buf = Vec::new();
    while j < b.len() {
        match b[j] {
            b'\\' if q == b'"' && j + 1 < b.len() => {
                buf.push(b[j + 1]);
                j += 2;
                continue;
            }
            b'\'' if q == b'\'' && b.get(j + 1) == Some(&b'\'') => {
                buf.push(b'\'');
                j += 2;
                continue;
            }
            c if c == q => return (String::from_utf8_lossy(&buf).into_owned(), j + 1, newlines),
            b'\n' => newlines += 1,
            _ => {}
        }
        buf.push(b[j]);
        j += 1;
    }
    (String::from_utf8_lossy(&buf).into_owned(), j, newlines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(text: &str) -> Vec<(String, usize)> {
        line_index(text).into_iter().collect()
    }

    #[test]
    fn block_mappings_and_sequences() {
        let text = "\
# comment
config_name: a   # trailing
batching_options:
  batch_size: 4

  strategy: dynamic
gpu_list:
- 0
- 1
decoder_config:
    temperature: 0.5
    \"top_p\": 0.9
extra_metadata:
  notes: |
    not: a key
    more text
  owner: me
";
        let m = line_index(text);
        assert_eq!(m["config_name"], 2);
        assert_eq!(m["batching_options"], 3);
        assert_eq!(m["batching_options.batch_size"], 4);
        assert_eq!(m["batching_options.strategy"], 6);
        assert_eq!(m["gpu_list.0"], 8);
        assert_eq!(m["gpu_list.1"], 9);
        assert_eq!(m["decoder_config.temperature"], 11);
        assert_eq!(m["decoder_config.top_p"], 12);
        assert_eq!(m["extra_metadata.owner"], 17);
        assert!(!m.contains_key("extra_metadata.notes.not"));
        assert!(!m.contains_key("not"));
    }

    #[test]
    fn indented_sequences_of_mappings() {
        let text = "items:\n  - name: a\n    value: 1\n  - name: b\n    value: 2\nafter: 3\n";
        let m = line_index(text);
        assert_eq!(m["items.0"], 2);
        assert_eq!(m["items.0.value"], 3);
        assert_eq!(m["items.1.name"], 4);
        assert_eq!(m["items.1.value"], 5);
        assert_eq!(m["after"], 6);
    }

    #[test]
    fn flow_values_inside_block_style() {
        let text = "gpu_list: [0,\n  1, 2]\ndecoder_config: {temperature: 3, top_k: 5}\nnext: 1\n";
        let m = line_index(text);
        assert_eq!(m["gpu_list"], 1);
        assert_eq!(m["gpu_list.1"], 2);
        assert_eq!(m["gpu_list.2"], 2);
        assert_eq!(m["decoder_config.top_k"], 3);
        assert_eq!(m["next"], 4);
    }

    #[test]
    fn json_files() {
        let text = "{\n  \"config_name\": \"a\",\n  \"batching_options\": {\n    \"batch_sise\": 2\n  },\n  \"gpu_list\": [0, 1]\n}\n";
        assert_eq!(
            idx(text),
            vec![
                ("batching_options".into(), 3),
                ("batching_options.batch_sise".into(), 4),
                ("config_name".into(), 2),
                ("gpu_list".into(), 6),
                ("gpu_list.0".into(), 6),
                ("gpu_list.1".into(), 6),
            ]
        );
    }
}
