use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::duplex;

/// What the client side read back after sending `request`, the responder's own result,
/// and how many times the scrape ran.
async fn exchange(
    request: &[u8],
    scrape_result: Result<String, String>,
) -> (String, std::io::Result<()>, usize) {
    // Large enough that an oversize request is written whole before the responder reads.
    let (mut client, server) = duplex(4 * MAX_REQUEST_BYTES);
    client.write_all(request).await.unwrap();
    let scrapes = AtomicUsize::new(0);
    let result = answer(server, REQUEST_TIMEOUT, || {
        scrapes.fetch_add(1, Ordering::Relaxed);
        async { scrape_result }
    })
    .await;
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    (
        String::from_utf8(reply).unwrap(),
        result,
        scrapes.load(Ordering::Relaxed),
    )
}

fn expected_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn get_metrics_answers_the_scrape_text_with_its_length() {
    let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n".to_owned();
    let (reply, result, scrapes) = exchange(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        Ok(text.clone()),
    )
    .await;
    result.unwrap();
    assert_eq!(scrapes, 1);
    assert_eq!(reply, expected_response("200 OK", &text));
}

#[tokio::test]
async fn a_scrape_without_text_is_503_with_its_reason() {
    let (reply, result, _) = exchange(
        b"GET /metrics HTTP/1.1\r\n\r\n",
        Err("the driver thread has stopped".into()),
    )
    .await;
    result.unwrap();
    assert_eq!(
        reply,
        expected_response("503 Service Unavailable", "the driver thread has stopped\n")
    );
}

#[tokio::test]
async fn an_unknown_path_is_404_and_not_scraped() {
    let (reply, result, scrapes) =
        exchange(b"GET /metric HTTP/1.1\r\n\r\n", Ok("unused".into())).await;
    result.unwrap();
    assert_eq!(scrapes, 0);
    assert_eq!(
        reply,
        expected_response("404 Not Found", "only /metrics is served\n")
    );
}

#[tokio::test]
async fn another_method_is_refused_with_405() {
    for method in ["POST", "HEAD", "get"] {
        let request = format!("{method} /metrics HTTP/1.1\r\n\r\n");
        let (reply, result, scrapes) = exchange(request.as_bytes(), Ok("unused".into())).await;
        result.unwrap();
        assert_eq!(scrapes, 0, "{method}");
        assert_eq!(
            reply,
            expected_response("405 Method Not Allowed", "only GET is served\n"),
            "{method}"
        );
    }
}

#[tokio::test]
async fn a_head_over_the_limit_is_refused_without_an_answer() {
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    request.resize(MAX_REQUEST_BYTES + 1, b'a');
    let (reply, result, scrapes) = exchange(&request, Ok("unused".into())).await;
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    assert_eq!(scrapes, 0);
    assert_eq!(reply, "");
}

#[tokio::test]
async fn a_head_at_the_limit_is_still_read() {
    let start = b"GET /metrics HTTP/1.1\r\nX-Pad: ";
    let mut request = start.to_vec();
    request.resize(MAX_REQUEST_BYTES - 4, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    assert_eq!(request.len(), MAX_REQUEST_BYTES);
    let (reply, result, scrapes) = exchange(&request, Ok("x 1\n".into())).await;
    result.unwrap();
    assert_eq!(scrapes, 1);
    assert_eq!(reply, expected_response("200 OK", "x 1\n"));
}

#[tokio::test]
async fn a_client_that_sends_no_head_in_time_gets_no_answer() {
    let (mut client, server) = duplex(1024);
    client.write_all(b"GET /metr").await.unwrap();
    let error = answer(server, Duration::from_millis(50), || async {
        Ok::<_, String>("unused".into())
    })
    .await
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    drop(client);
}
