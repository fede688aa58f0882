//! The HTTP side of a Prometheus endpoint, shared by `lem-agent --metrics-listen` and
//! `lem serve --metrics-listen`: the least that Prometheus needs — one `GET /metrics`
//! per connection, the request head bounded in size and time. What the text says is the
//! caller's: each binary passes a scrape function that renders its own families.

use lem_common::prometheus::CONTENT_TYPE;
use std::future::Future;
use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// The longest request head read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// Binds `listen` and serves scrapes until the runtime stops; returns the bound address.
/// `scrape` gives the exposition text, or why there is none (answered 503 with it).
pub async fn serve<F, Fut>(listen: SocketAddr, scrape: F) -> std::io::Result<SocketAddr>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let scrape = Arc::new(scrape);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let scrape = scrape.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, REQUEST_TIMEOUT, || scrape()).await {
                    tracing::debug!(%error, "metrics request failed");
                }
            });
        }
    });
    Ok(bound)
}

/// Answers one request on `stream`: its head read within `request_timeout`, then
/// `GET /metrics` → 200 with the scrape (503 with the reason when it has none), another
/// path → 404, another method → 405. A head over [`MAX_REQUEST_BYTES`] is an error and
/// no answer.
pub async fn answer<S, F, Fut>(
    mut stream: S,
    request_timeout: Duration,
    scrape: F,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let head = tokio::time::timeout(request_timeout, read_head(&mut stream))
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "request head"))??;
    let (method, path) = request_target(&head);
    let (status, body) = match (method, path) {
        ("GET", METRICS_PATH) => match scrape().await {
            Ok(text) => ("200 OK", text),
            Err(why) => ("503 Service Unavailable", format!("{why}\n")),
        },
        ("GET", _) => ("404 Not Found", "only /metrics is served\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET is served\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The method and path of the request line (empty where missing).
fn request_target(head: &str) -> (&str, &str) {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

/// The request head, up to its blank line; at most [`MAX_REQUEST_BYTES`].
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_BYTES {
            return Err(Error::new(ErrorKind::InvalidData, "request head too long"));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
#[path = "metrics_http_tests.rs"]
mod tests;
