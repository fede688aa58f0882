//! The frame reader under arbitrary bytes, in arbitrary chunks: it never panics, and
//! whatever it returns agrees with what the bytes are.

use lem_common::wire::{encode_frame, AgentMessage, HeldAttempt, FRAME_HEADER_BYTES};
use lem_net::frame_io::{read_frame, FrameReadError};
use proptest::prelude::*;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Hands out `bytes` in the given chunk sizes, as a network stream would.
struct Chunked {
    bytes: Vec<u8>,
    position: usize,
    chunks: Vec<usize>,
    next_chunk: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let chunk = self
            .chunks
            .get(self.next_chunk)
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        self.next_chunk += 1;
        let left = self.bytes.len() - self.position;
        let n = chunk.min(left).min(buf.remaining());
        let start = self.position;
        buf.put_slice(&self.bytes[start..start + n]);
        self.position += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Reads every frame until the end or an error; bounded by the input's length.
fn read_all(
    bytes: Vec<u8>,
    chunks: Vec<usize>,
    max_frame_bytes: u32,
) -> (Vec<AgentMessage>, Option<FrameReadError>) {
    let limit = bytes.len() + 1;
    let mut reader = Chunked {
        bytes,
        position: 0,
        chunks,
        next_chunk: 0,
    };
    runtime().block_on(async {
        let mut messages = Vec::new();
        for _ in 0..limit {
            match read_frame::<AgentMessage, _>(&mut reader, max_frame_bytes).await {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => return (messages, None),
                Err(error) => return (messages, Some(error)),
            }
        }
        panic!("more frames than bytes");
    })
}

fn heartbeat(attempt: u64) -> AgentMessage {
    AgentMessage::Heartbeat {
        held: vec![HeldAttempt {
            attempt,
            epoch: 1,
            running: false,
        }],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        chunks in proptest::collection::vec(1usize..64, 0..32),
        max_frame_bytes in prop_oneof![Just(64u32), Just(1024u32), Just(u32::MAX)],
    ) {
        let (_, error) = read_all(bytes.clone(), chunks, max_frame_bytes);
        if bytes.is_empty() {
            prop_assert!(error.is_none());
        }
        if let Some(error) = error {
            // Every failure here is the peer's bytes, never the reader's IO.
            prop_assert!(error.is_malformed(), "{error}");
        }
    }

    #[test]
    fn valid_frames_then_garbage_yield_the_frames_then_an_error(
        attempts in proptest::collection::vec(any::<u64>(), 1..5),
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
        chunks in proptest::collection::vec(1usize..16, 0..64),
    ) {
        let sent: Vec<AgentMessage> = attempts.iter().map(|a| heartbeat(*a)).collect();
        let mut bytes = Vec::new();
        for message in &sent {
            bytes.extend(encode_frame(message, 1024).unwrap());
        }
        bytes.extend(&garbage);
        let (received, error) = read_all(bytes, chunks, 1024);
        prop_assert_eq!(&received[..sent.len()], &sent[..]);
        // The garbage is at most one more (accidentally valid) frame and then an error
        // or a clean end; fewer than a header's bytes is always truncation.
        if garbage.len() < FRAME_HEADER_BYTES {
            prop_assert!(matches!(error, Some(FrameReadError::Truncated { .. })), "{:?}", error);
        }
    }
}

#[test]
fn a_declared_length_over_the_limit_is_refused_from_the_header() {
    let (messages, error) = read_all(vec![0xff, 0xff, 0xff, 0xff], vec![], 1024);
    assert!(messages.is_empty());
    match error {
        Some(FrameReadError::Frame(lem_common::wire::FrameError::TooLarge {
            length_bytes,
            max_frame_bytes,
        })) => {
            assert_eq!(length_bytes, u64::from(u32::MAX));
            assert_eq!(max_frame_bytes, 1024);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_stream_ending_inside_a_body_is_truncation_with_counts() {
    let frame = encode_frame(&heartbeat(5), 1024).unwrap();
    let cut = frame.len() - 3;
    let (_, error) = read_all(frame[..cut].to_vec(), vec![2], 1024);
    match error {
        Some(FrameReadError::Truncated {
            received_bytes,
            expected_bytes,
        }) => {
            assert_eq!((received_bytes, expected_bytes), (cut, frame.len()));
        }
        other => panic!("expected truncation, got {other:?}"),
    }
}
