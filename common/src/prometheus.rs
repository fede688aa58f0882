//! The Prometheus text exposition format (version 0.0.4), as far as lem's two endpoints
//! (`lem-agent --metrics-listen`, `lem serve --metrics-listen`) need it: family headers,
//! labelled samples, and comment lines that say why a value is left out. Pure text, no
//! IO: each endpoint does its own HTTP.

use std::fmt::Write as _;

/// The `Content-Type` a scrape answer carries.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// `# HELP` and `# TYPE` lines for `name`.
pub fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let _ = writeln!(
        out,
        "# HELP {name} {}\n# TYPE {name} {}",
        one_line(help),
        kind.as_str()
    );
}

/// One sample line: `name{k="v",...} value` (no braces without labels).
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(val));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A family with one unlabelled sample.
pub fn single(out: &mut String, name: &str, help: &str, kind: Kind, value: &str) {
    header(out, name, help, kind);
    sample(out, name, &[], value);
}

/// A `# lem: ...` comment line: why something is not shown (never a zero instead).
pub fn note(out: &mut String, text: &str) {
    let _ = writeln!(out, "# lem: {}", one_line(text));
}

/// A label value as the text format requires (backslash, quote, newline escaped).
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Text that must stay on one line (a comment or a HELP text).
pub fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_label_values_and_omit_empty_braces() {
        let mut out = String::new();
        header(&mut out, "x_total", "Things\nseen.", Kind::Counter);
        sample(&mut out, "x_total", &[("a", "q\"b\\c\nd"), ("b", "2")], "7");
        sample(&mut out, "x_total", &[], "8");
        note(&mut out, "gone\nbecause");
        assert_eq!(
            out,
            "# HELP x_total Things seen.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"b\\\\c\\nd\",b=\"2\"} 7\nx_total 8\n# lem: gone because\n"
        );
    }
}
