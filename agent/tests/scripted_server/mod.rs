//! A loopback HTTP server for tests of `engine: openai`, scripted by the first word of
//! each prompt: `stream` (three text chunks, then a usage chunk and `[DONE]`), `nousage`
//! (the chunks and `[DONE]`, no usage), `fail500` (HTTP 500), `cut` (one chunk, then the
//! connection closes mid-stream), `slow` (headers, then silence past the client's
//! timeout). `GET /v1/models` lists `MODEL_ID` with a `server` header. It counts the
//! completions in flight so tests can check the client's concurrency bound.

#![allow(dead_code)] // each test binary uses a subset

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const MODEL_ID: &str = "scripted-model";
pub const SERVER_HEADER: &str = "lem-scripted/1.0";
/// Text chunks of a streamed answer, and the wait before each.
pub const CHUNKS: [&str; 3] = [" one", " two", " three"];
pub const FIRST_CHUNK_DELAY: Duration = Duration::from_millis(100);
pub const CHUNK_GAP: Duration = Duration::from_millis(30);
/// The usage a `stream` answer reports: deliberately not the chunk count, so a test can
/// tell the server's count from lem's.
pub const USAGE_COMPLETION_TOKENS: u32 = 7;
/// `prompt_tokens` in usage: this plus the prompt's length in bytes.
pub const USAGE_PROMPT_TOKENS_BASE: u32 = 1000;
/// How long `slow` stays silent (the client must time out first).
pub const SLOW_SILENCE: Duration = Duration::from_secs(5);
pub const ERROR_BODY: &str = "{\"error\":\"scripted failure\"}";

#[derive(Default)]
pub struct Stats {
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub completions: AtomicUsize,
}

/// The server, on its own thread and runtime until dropped.
pub struct ScriptedServer {
    pub port: u16,
    pub stats: Arc<Stats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedServer {
    pub fn start() -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread_stats = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            tokio::spawn(serve(socket, thread_stats.clone()));
                        }
                    }
                }
            });
        });
        Self {
            port,
            stats,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Reads one request: (request line, body).
async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let content_length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < content_length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head.lines().next().unwrap_or("").to_string(), body))
}

async fn write_chunk(socket: &mut TcpStream, data: &str) -> std::io::Result<()> {
    socket
        .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    socket.flush().await
}

fn text_event(text: &str) -> String {
    let chunk = serde_json::json!({
        "id": "cmpl-1", "object": "text_completion", "model": MODEL_ID,
        "choices": [{"text": text, "index": 0, "finish_reason": null}],
    });
    format!("data: {chunk}\n\n")
}

async fn serve(mut socket: TcpStream, stats: Arc<Stats>) {
    let Some((line, body)) = read_request(&mut socket).await else {
        return;
    };
    if line.starts_with("GET /v1/models") {
        let body = format!(
            "{{\"object\":\"list\",\"data\":[{{\"id\":\"{MODEL_ID}\",\"object\":\"model\"}}]}}"
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nserver: {SERVER_HEADER}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(resp.as_bytes()).await;
        return;
    }
    if !line.starts_with("POST /v1/completions") {
        let _ = socket
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    stats.completions.fetch_add(1, Ordering::SeqCst);
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let prompt = request["prompt"].as_str().unwrap_or("").to_string();
    let _ = answer(&mut socket, &prompt).await;
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
}

async fn answer(socket: &mut TcpStream, prompt: &str) -> std::io::Result<()> {
    let keyword = prompt.split_whitespace().next().unwrap_or("");
    if keyword == "fail500" {
        let resp = format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ERROR_BODY}",
            ERROR_BODY.len()
        );
        return socket.write_all(resp.as_bytes()).await;
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await?;
    socket.flush().await?;
    match keyword {
        "slow" => {
            tokio::time::sleep(SLOW_SILENCE).await;
            Ok(())
        }
        "cut" => {
            tokio::time::sleep(FIRST_CHUNK_DELAY).await;
            write_chunk(socket, &text_event(CHUNKS[0])).await?;
            // Closed without the terminating chunk: the stream is cut mid-way.
            socket.shutdown().await
        }
        _ => {
            for (i, text) in CHUNKS.iter().enumerate() {
                tokio::time::sleep(if i == 0 { FIRST_CHUNK_DELAY } else { CHUNK_GAP }).await;
                write_chunk(socket, &text_event(text)).await?;
            }
            if keyword == "stream" {
                let usage = serde_json::json!({
                    "id": "cmpl-1", "object": "text_completion", "choices": [],
                    "usage": {
                        "prompt_tokens": USAGE_PROMPT_TOKENS_BASE + prompt.len() as u32,
                        "completion_tokens": USAGE_COMPLETION_TOKENS,
                        "total_tokens": 0,
                    },
                });
                write_chunk(socket, &format!("data: {usage}\n\n")).await?;
            }
            write_chunk(socket, "data: [DONE]\n\n").await?;
            socket.write_all(b"0\r\n\r\n").await?;
            socket.flush().await
        }
    }
}
