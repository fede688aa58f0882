//! The HTTP side of `lem serve --metrics-listen`: one `GET /metrics` per connection,
//! the request head bounded in size and time, the text asked of the driver thread
//! (which owns the scheduler and the ingest tally).

use super::driver_thread::DriverInput;
use lem_common::prometheus::CONTENT_TYPE;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the driver thread (busy with a large ingest batch).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `listen` and serves scrapes until the runtime stops. Returns the bound address.
pub async fn serve(listen: SocketAddr, driver: Sender<DriverInput>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let driver = driver.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, driver).await {
                    tracing::debug!(%error, "metrics request failed");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, driver: Sender<DriverInput>) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => match scrape(&driver).await {
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

async fn scrape(driver: &Sender<DriverInput>) -> Result<String, &'static str> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    driver
        .send(DriverInput::Metrics { reply })
        .map_err(|_| "the driver thread has stopped")?;
    match tokio::time::timeout(DRIVER_TIMEOUT, answer).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(_)) => Err("the driver thread has stopped"),
        Err(_) => Err("the driver thread did not answer within 10 s"),
    }
}

/// The request head, up to its blank line; at most [`MAX_REQUEST_BYTES`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
