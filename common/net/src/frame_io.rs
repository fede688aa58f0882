//! `common::wire` frames over byte streams: one frame at a time, the length checked
//! against the limit from the header alone, the body buffered only as bytes arrive (a
//! peer announcing 128 MiB and sending nothing costs nothing). Generic over tokio's
//! async IO, so the same reader runs on QUIC streams and on test buffers.

use lem_common::wire::{decode_frame, encode_frame, Decoded, FrameError, FRAME_HEADER_BYTES};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, Error)]
pub enum FrameReadError {
    #[error("stream read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream ended inside a frame ({received_bytes} of {expected_bytes} bytes)")]
    Truncated {
        received_bytes: usize,
        expected_bytes: usize,
    },
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl FrameReadError {
    /// Whether the peer sent bytes that are not a frame (as opposed to the stream
    /// failing under it).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::Truncated { .. } | Self::Frame(_))
    }
}

/// The next message on `reader`, or `None` when the stream ends cleanly between frames.
pub async fn read_frame<T, R>(
    reader: &mut R,
    max_frame_bytes: u32,
) -> Result<Option<T>, FrameReadError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FrameReadError::Truncated {
                received_bytes: filled,
                expected_bytes: FRAME_HEADER_BYTES,
            });
        }
        filled += n;
    }
    let length_bytes = u32::from_be_bytes(header);
    if length_bytes > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length_bytes: u64::from(length_bytes),
            max_frame_bytes,
        }
        .into());
    }
    let expected_bytes = FRAME_HEADER_BYTES + length_bytes as usize;
    let mut frame = header.to_vec();
    (&mut *reader)
        .take(u64::from(length_bytes))
        .read_to_end(&mut frame)
        .await?;
    if frame.len() < expected_bytes {
        return Err(FrameReadError::Truncated {
            received_bytes: frame.len(),
            expected_bytes,
        });
    }
    match decode_frame(&frame, max_frame_bytes)? {
        Decoded::Frame { message, .. } => Ok(Some(message)),
        // The whole frame is in hand, so the decoder cannot want more.
        Decoded::Incomplete { needed_bytes } => Err(FrameReadError::Truncated {
            received_bytes: frame.len(),
            expected_bytes: frame.len() + needed_bytes,
        }),
    }
}

#[derive(Debug, Error)]
pub enum FrameWriteError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes one message as a frame.
pub async fn write_frame<T, W>(
    writer: &mut W,
    message: &T,
    max_frame_bytes: u32,
) -> Result<(), FrameWriteError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let frame = encode_frame(message, max_frame_bytes)?;
    writer.write_all(&frame).await?;
    Ok(())
}
