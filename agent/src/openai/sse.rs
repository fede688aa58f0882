//! An incremental server-sent events parser: bytes in as they arrive, the `data` of each
//! complete event out. Events end at a blank line; `data:` lines of one event are joined
//! with `\n`; comments (`:`) and other fields (`event:`, `id:`, `retry:`) are skipped,
//! since the completions stream carries everything in `data`.

/// Collects bytes until events are complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being received (no newline yet).
    line: Vec<u8>,
    /// `data` lines of the event being received.
    data: Vec<String>,
    /// The previous byte was `\r`: a following `\n` belongs to the same line ending.
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; returns the data of every event they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(&mut events);
                }
                _ => self.line.push(b),
            }
        }
        events
    }

    /// Whether bytes of an unfinished event are buffered (a stream that ends here was cut).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty()
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(std::mem::take(&mut self.data).join("\n"));
            }
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        if field == "data" {
            self.data.push(value.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_feeds_come_out_whole_and_in_order() {
        let stream = "data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        // Every split point gives the same events.
        for cut in 0..stream.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&stream.as_bytes()[..cut]);
            got.extend(p.feed(&stream.as_bytes()[cut..]));
            assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "[DONE]"], "cut at {cut}");
            assert!(!p.has_partial_event());
        }
    }

    #[test]
    fn multi_line_data_joins_and_other_fields_are_skipped() {
        let mut p = SseParser::new();
        let got = p.feed(b"event: message\nid: 7\ndata: line1\ndata:line2\nretry: 10\n\n");
        assert_eq!(got, ["line1\nline2"]);
    }

    #[test]
    fn an_unfinished_event_is_reported_as_partial() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: {\"a\":1}\n").is_empty());
        assert!(p.has_partial_event());
        let mut p = SseParser::new();
        p.feed(b"data: {\"a\"");
        assert!(p.has_partial_event());
    }
}
