//! One HTTP/1.1 exchange with the server over its own loopback-or-LAN TCP connection
//! (hyper's connection-level client; no pool, no TLS). The connection is driven by a
//! task on the same runtime: no thread per request.

use super::endpoint::Endpoint;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No TCP connection (refused, unreachable, connect timeout).
    Connect(String),
    /// Connected, but the exchange failed before a response head arrived.
    Exchange(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(m) => write!(f, "cannot connect: {m}"),
            SendError::Exchange(m) => write!(f, "no response: {m}"),
        }
    }
}

/// Sends one request to `route` under the endpoint's prefix and returns the response
/// head with its body still streaming. `json_body`: a POST with that body, else a GET.
pub async fn send(
    endpoint: &Endpoint,
    route: &str,
    json_body: Option<Vec<u8>>,
    api_key: Option<&str>,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, SendError> {
    let stream =
        match tokio::time::timeout(connect_timeout, TcpStream::connect(&endpoint.connect_addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(SendError::Connect(format!(
                    "{}: {e}",
                    endpoint.connect_addr
                )))
            }
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "{}: no connection within {} s",
                    endpoint.connect_addr,
                    connect_timeout.as_secs_f64()
                )))
            }
        };
    // Small requests and streamed tokens: send each write at once.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Exchange(e.to_string()))?;
    tokio::spawn(async move {
        // Its errors reach the response or body the request reads.
        let _ = conn.await;
    });
    let method = if json_body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let mut req = Request::builder()
        .method(method)
        .uri(endpoint.path(route))
        .header(hyper::header::HOST, &endpoint.host_header)
        .header(hyper::header::ACCEPT, "application/json, text/event-stream")
        .header(
            hyper::header::USER_AGENT,
            concat!("lem/", env!("CARGO_PKG_VERSION")),
        );
    if json_body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    if let Some(key) = api_key {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = req
        .body(Full::new(Bytes::from(json_body.unwrap_or_default())))
        .map_err(|e| SendError::Exchange(format!("request not built: {e}")))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| SendError::Exchange(e.to_string()))
}

/// Reads a (short) body whole, at most `limit_bytes`, within `timeout`; for error
/// answers and `/models`.
pub async fn read_body(
    resp: Response<Incoming>,
    limit_bytes: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let mut out = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                let room = limit_bytes.saturating_sub(out.len());
                out.extend_from_slice(&data[..data.len().min(room)]);
                if out.len() >= limit_bytes {
                    break;
                }
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r.map(|()| out),
        Err(_) => Err(format!("body not read within {} s", timeout.as_secs_f64())),
    }
}
