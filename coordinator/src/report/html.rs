//! The page: the vendored uPlot (script, stylesheet, licence), the report's own script
//! and stylesheet, and the data as JSON, all inlined so the file opens offline.

use super::{ReportData, ReportError};

const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../assets/uplot/LICENSE");
const REPORT_JS: &str = include_str!("../../assets/report/report.js");
const REPORT_CSS: &str = include_str!("../../assets/report/report.css");

/// The whole HTML document for `data`.
pub fn render(data: &ReportData) -> Result<String, ReportError> {
    let json = script_safe_json(&serde_json::to_string(data)?);
    let title = match data.experiments.as_slice() {
        [one] => format!("lem report: {}", one.config_name),
        many => format!("lem report: {} experiments", many.len()),
    };
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{title}</title>\n<style>\n{UPLOT_CSS}\n</style>\n<style>\n{REPORT_CSS}\n</style>\n</head>\n\
<body data-status=\"loading\">\n\
<div id=\"report-errors\" role=\"alert\"></div>\n<main id=\"report\"></main>\n\
<!-- uPlot, inlined unchanged. Its licence:\n{license}\n-->\n\
<script>\n{UPLOT_JS}\n</script>\n\
<script type=\"application/json\" id=\"report-data\">{json}</script>\n\
<script>\n{REPORT_JS}\n</script>\n</body>\n</html>\n",
        title = html_escape(&title),
        license = UPLOT_LICENSE.replace("--", "- -"),
    ))
}

/// JSON that cannot end its `<script>` element early or open a comment: every `<`, `>`
/// and `&` becomes a `\u` escape, which JSON.parse reads back as the same character.
pub fn script_safe_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_in_a_script_element_cannot_close_it() {
        let raw = serde_json::to_string(&serde_json::json!({
            "name": "</script><script>alert(1)</script> & <!--"
        }))
        .unwrap();
        let safe = script_safe_json(&raw);
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'));
        // JSON reads the escapes back as the original text.
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["name"], "</script><script>alert(1)</script> & <!--");
    }
}
