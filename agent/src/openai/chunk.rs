//! One event of a streamed `/completions` answer: the text it adds, why generation
//! stopped, and the `usage` block servers send last when asked
//! (`stream_options.include_usage`).

use serde::Deserialize;

/// Token counts as the server reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

/// What one `data:` event says.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A chunk: text (empty for the final usage-only chunk), finish reason, usage.
    Chunk {
        text: String,
        finish_reason: Option<String>,
        usage: Option<Usage>,
    },
    /// `data: [DONE]`: the stream is complete.
    Done,
}

#[derive(Deserialize)]
struct RawChunk {
    #[serde(default)]
    choices: Vec<RawChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawChoice {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// Parses one event's data; an error says why it is not a completions chunk (an error
/// object the server streamed, or something else).
pub fn parse_event(data: &str) -> Result<StreamEvent, String> {
    if data.trim() == "[DONE]" {
        return Ok(StreamEvent::Done);
    }
    let raw: RawChunk = serde_json::from_str(data)
        .map_err(|e| format!("not a completions chunk ({e}): {}", excerpt(data)))?;
    if let Some(err) = raw.error {
        return Err(format!(
            "the server streamed an error: {}",
            excerpt(&err.to_string())
        ));
    }
    let first = raw.choices.into_iter().next();
    let (text, finish_reason) = match first {
        Some(c) => (c.text.unwrap_or_default(), c.finish_reason),
        None => (String::new(), None),
    };
    Ok(StreamEvent::Chunk {
        text,
        finish_reason,
        usage: raw.usage,
    })
}

/// The start of `s`, for error messages (server bodies can be large).
pub fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut out: String = s.chars().take(MAX_CHARS).collect();
    if s.chars().count() > MAX_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_usage_chunks_and_done_parse() {
        let text = r#"{"id":"c","object":"text_completion","choices":[{"text":" Hi","index":0,"finish_reason":null}],"usage":null}"#;
        assert_eq!(
            parse_event(text).unwrap(),
            StreamEvent::Chunk {
                text: " Hi".into(),
                finish_reason: None,
                usage: None
            }
        );
        let usage =
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        assert_eq!(
            parse_event(usage).unwrap(),
            StreamEvent::Chunk {
                text: String::new(),
                finish_reason: None,
                usage: Some(Usage {
                    prompt_tokens: Some(7),
                    completion_tokens: Some(3)
                })
            }
        );
        assert_eq!(parse_event(" [DONE]").unwrap(), StreamEvent::Done);
    }

    #[test]
    fn errors_and_garbage_say_what_came() {
        let e = parse_event(r#"{"error":{"message":"boom"}}"#).unwrap_err();
        assert!(e.contains("streamed an error") && e.contains("boom"), "{e}");
        let e = parse_event("<html>").unwrap_err();
        assert!(
            e.contains("not a completions chunk") && e.contains("<html>"),
            "{e}"
        );
        assert_eq!(excerpt(&"x".repeat(300)).chars().count(), 201);
    }
}
