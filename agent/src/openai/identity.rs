//! What the server says it is: `GET <endpoint>/models` at preflight (also the check that
//! it is up) and the response headers that identify the software.

use super::chunk::excerpt;
use super::endpoint::Endpoint;
use super::http::{self, SendError};
use super::OpenAiError;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `/models` body is small; a bigger one is cut here.
const MODELS_BODY_BYTES: usize = 256 * 1024;

/// The server's self-description.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerIdentity {
    pub models_response: Option<serde_json::Value>,
    /// Why `models_response` is `None` (HTTP status, not JSON).
    pub models_unavailable_reason: Option<String>,
    /// Identifying response headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The `id`s in the answer's `data` list.
    pub model_ids: Vec<String>,
}

/// Whether a response header says something about the server software.
fn identifies_server(name: &str) -> bool {
    matches!(name, "server" | "x-powered-by" | "via") || name.contains("version")
}

/// Asks the server for its models. A server that cannot be reached is an error naming
/// the endpoint; one that answers, even with an error status, is up and its answer is
/// recorded.
pub async fn probe(
    endpoint: &Endpoint,
    api_key: Option<&str>,
    timeout: Duration,
) -> Result<ServerIdentity, OpenAiError> {
    let unreachable = |message: String| OpenAiError::Unreachable {
        endpoint: endpoint.url.clone(),
        message,
    };
    let resp = tokio::time::timeout(
        timeout,
        http::send(endpoint, "models", None, api_key, timeout),
    )
    .await
    .map_err(|_| {
        unreachable(format!(
            "no answer to GET {} within {} s",
            endpoint.path("models"),
            timeout.as_secs_f64()
        ))
    })?
    .map_err(|e| match e {
        SendError::Connect(m) | SendError::Exchange(m) => unreachable(m),
    })?;
    let status = resp.status();
    let headers: BTreeMap<String, String> = resp
        .headers()
        .iter()
        .filter(|(name, _)| identifies_server(name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = http::read_body(resp, MODELS_BODY_BYTES, timeout).await;
    let (models_response, why) = match (status.is_success(), body) {
        (_, Err(e)) => (
            None,
            Some(format!(
                "GET {} body unreadable: {e}",
                endpoint.path("models")
            )),
        ),
        (false, Ok(b)) => (
            None,
            Some(format!(
                "GET {} answered HTTP {status}: {}",
                endpoint.path("models"),
                excerpt(&String::from_utf8_lossy(&b))
            )),
        ),
        (true, Ok(b)) => match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(v) => (Some(v), None),
            Err(e) => (
                None,
                Some(format!(
                    "GET {} answered non-JSON ({e})",
                    endpoint.path("models")
                )),
            ),
        },
    };
    let model_ids = models_response
        .as_ref()
        .and_then(|v| v.get("data"))
        .and_then(|d| d.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|m| m.get("id").and_then(|id| id.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(ServerIdentity {
        models_response,
        models_unavailable_reason: why,
        headers,
        model_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifying_headers_are_kept_and_others_not() {
        for h in ["server", "x-powered-by", "via", "x-vllm-version"] {
            assert!(identifies_server(h), "{h}");
        }
        for h in ["date", "content-type", "set-cookie", "authorization"] {
            assert!(!identifies_server(h), "{h}");
        }
    }
}
