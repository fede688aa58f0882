//! Length-prefixed frames: a 4-byte big-endian body length, then the message as msgpack
//! with named fields. Decoding checks before it parses: the length against the limit
//! (before a byte of the body is buffered), then the body's structure, then the message.

use super::check::{check_msgpack, MalformedReason};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Largest frame body accepted or sent. A raw result with a 10 ms power trace of eight
/// GPUs over ten minutes is about 70 MiB of msgpack; longer traces need a larger limit.
pub const MAX_FRAME_BYTES: u32 = 128 * 1024 * 1024;

/// Deepest nesting of collections a body may have. lem's messages nest about ten deep
/// (a result's readings' traces' samples) plus the experiment config.
pub const MAX_NESTING_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {length_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")]
    TooLarge {
        length_bytes: u64,
        max_frame_bytes: u32,
    },
    #[error("malformed msgpack in frame body: {0}")]
    Malformed(MalformedReason),
    #[error("frame body is not a {expected}: {detail}")]
    NotAMessage {
        expected: &'static str,
        detail: String,
    },
    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
}

/// The result of looking for one frame at the start of a buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    /// A whole frame: the message and how many bytes of the buffer it took.
    Frame { message: T, frame_bytes: usize },
    /// Not a whole frame yet; at least `needed_bytes` more are needed.
    Incomplete { needed_bytes: usize },
}

/// One message as a frame: length prefix and msgpack body with named fields.
pub fn encode_frame<T: Serialize>(
    message: &T,
    max_frame_bytes: u32,
) -> Result<Vec<u8>, FrameError> {
    let what = std::any::type_name::<T>();
    let body = rmp_serde::to_vec_named(message).map_err(|e| FrameError::Encode {
        what,
        detail: e.to_string(),
    })?;
    let length_bytes = body.len() as u64;
    if length_bytes > u64::from(max_frame_bytes) {
        return Err(FrameError::TooLarge {
            length_bytes,
            max_frame_bytes,
        });
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    frame.extend((length_bytes as u32).to_be_bytes());
    frame.extend(body);
    Ok(frame)
}

/// Decodes the frame at the start of `buf`, if it is all there. An incomplete buffer is
/// `Incomplete`, not an error; a length over `max_frame_bytes` is refused from the
/// header alone.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max_frame_bytes: u32,
) -> Result<Decoded<T>, FrameError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(Decoded::Incomplete {
            needed_bytes: FRAME_HEADER_BYTES - buf.len(),
        });
    };
    let length_bytes = u32::from_be_bytes(*header);
    if length_bytes > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length_bytes: u64::from(length_bytes),
            max_frame_bytes,
        });
    }
    let frame_bytes = FRAME_HEADER_BYTES + length_bytes as usize;
    let Some(frame) = buf.get(..frame_bytes) else {
        return Ok(Decoded::Incomplete {
            needed_bytes: frame_bytes - buf.len(),
        });
    };
    let body = &frame[FRAME_HEADER_BYTES..];
    check_msgpack(body, MAX_NESTING_DEPTH).map_err(FrameError::Malformed)?;
    let message = rmp_serde::from_slice(body).map_err(|e| FrameError::NotAMessage {
        expected: std::any::type_name::<T>(),
        detail: e.to_string(),
    })?;
    Ok(Decoded::Frame {
        message,
        frame_bytes,
    })
}

/// Bytes received on one connection, cut into messages as frames complete. After an
/// error the connection is to be closed: the buffer does not resynchronise.
#[derive(Debug)]
pub struct FrameBuffer {
    buffered: Vec<u8>,
    max_frame_bytes: u32,
}

impl FrameBuffer {
    pub fn new(max_frame_bytes: u32) -> Self {
        Self {
            buffered: Vec::new(),
            max_frame_bytes,
        }
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffered.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet part of a decoded message.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.len()
    }

    /// The next whole message, or `None` until more bytes arrive.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match decode_frame(&self.buffered, self.max_frame_bytes)? {
            Decoded::Frame {
                message,
                frame_bytes,
            } => {
                self.buffered.drain(..frame_bytes);
                Ok(Some(message))
            }
            Decoded::Incomplete { .. } => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AckVerdict, AttemptRef, CoordinatorMessage};

    fn ack() -> CoordinatorMessage {
        CoordinatorMessage::Ack {
            attempt: AttemptRef {
                attempt: 7,
                epoch: 3,
            },
            verdict: AckVerdict::Superseded,
        }
    }

    #[test]
    fn header_over_the_limit_is_refused_before_the_body_arrives() {
        let header = 1001u32.to_be_bytes();
        assert_eq!(
            decode_frame::<CoordinatorMessage>(&header, 1000),
            Err(FrameError::TooLarge {
                length_bytes: 1001,
                max_frame_bytes: 1000
            })
        );
        let header = 1000u32.to_be_bytes();
        assert_eq!(
            decode_frame::<CoordinatorMessage>(&header, 1000),
            Ok(Decoded::Incomplete { needed_bytes: 1000 })
        );
    }

    #[test]
    fn encoding_over_the_limit_is_refused() {
        let body_bytes = rmp_serde::to_vec_named(&ack()).unwrap().len() as u64;
        let limit = body_bytes as u32 - 1;
        assert_eq!(
            encode_frame(&ack(), limit),
            Err(FrameError::TooLarge {
                length_bytes: body_bytes,
                max_frame_bytes: limit
            })
        );
        let frame = encode_frame(&ack(), body_bytes as u32).unwrap();
        assert_eq!(frame.len() as u64, FRAME_HEADER_BYTES as u64 + body_bytes);
        assert_eq!(frame[..4], (body_bytes as u32).to_be_bytes());
    }

    #[test]
    fn body_fields_are_named() {
        let frame = encode_frame(&ack(), MAX_FRAME_BYTES).unwrap();
        let text = String::from_utf8_lossy(&frame);
        for name in ["Ack", "attempt", "epoch", "verdict", "superseded"] {
            assert!(text.contains(name), "{name} missing from {text:?}");
        }
    }

    #[test]
    fn well_formed_msgpack_of_the_wrong_shape_names_the_expected_type() {
        // The msgpack string "Ack" alone: a unit variant that does not exist.
        let mut frame = 4u32.to_be_bytes().to_vec();
        frame.extend([0xa3, b'A', b'c', b'k']);
        match decode_frame::<CoordinatorMessage>(&frame, MAX_FRAME_BYTES) {
            Err(FrameError::NotAMessage { expected, .. }) => {
                assert!(expected.ends_with("CoordinatorMessage"), "{expected}")
            }
            other => panic!("expected NotAMessage, got {other:?}"),
        }
    }

    #[test]
    fn malformed_body_is_a_typed_error() {
        let mut frame = 2u32.to_be_bytes().to_vec();
        frame.extend([0x91, 0xc1]);
        assert_eq!(
            decode_frame::<CoordinatorMessage>(&frame, MAX_FRAME_BYTES),
            Err(FrameError::Malformed(MalformedReason::ReservedMarker {
                offset: 1
            }))
        );
    }

    #[test]
    fn the_limit_holds_a_ten_minute_10_ms_trace_of_eight_gpus() {
        use crate::domain::{PowerSample, PowerTrace};
        // Every sensor present, values of realistic width (an H100 near 700 W).
        let samples_per_gpu = 10 * 60 * 100;
        let sample = |i: u64| PowerSample {
            t_ns: i * 10_000_000,
            power_avg_w: Some(612.25 + i as f64 * 1e-3),
            power_instant_w: Some(640.5 + i as f64 * 1e-3),
            energy_counter_mj: Some(81_234_567_890 + i * 6_400),
            temperature_c: Some(71),
            sm_clock_mhz: Some(1_980),
            throttle_reasons: Some(4),
        };
        // Encode 1,000 samples and scale: a whole trace would take long in a debug build.
        let probe = PowerTrace {
            period_ms: 10.0,
            samples: (0..1_000).map(sample).collect(),
            unavailable: Default::default(),
        };
        let probe_bytes = rmp_serde::to_vec_named(&probe).unwrap().len() as u64;
        let eight_gpus_bytes = 8 * probe_bytes * samples_per_gpu / 1_000;
        assert!(
            eight_gpus_bytes < u64::from(MAX_FRAME_BYTES),
            "{eight_gpus_bytes} bytes"
        );
        // The figure docs/protocol.md gives (about 70 MiB).
        let mib = eight_gpus_bytes as f64 / (1024.0 * 1024.0);
        assert!((60.0..80.0).contains(&mib), "{mib:.1} MiB");
    }

    #[test]
    fn buffer_yields_back_to_back_frames_in_order() {
        let drain = CoordinatorMessage::Drain;
        let mut bytes = encode_frame(&ack(), MAX_FRAME_BYTES).unwrap();
        bytes.extend(encode_frame(&drain, MAX_FRAME_BYTES).unwrap());
        let mut buffer = FrameBuffer::new(MAX_FRAME_BYTES);
        buffer.extend(&bytes[..bytes.len() - 1]);
        assert_eq!(buffer.next_message(), Ok(Some(ack())));
        assert_eq!(buffer.next_message::<CoordinatorMessage>(), Ok(None));
        buffer.extend(&bytes[bytes.len() - 1..]);
        assert_eq!(buffer.next_message(), Ok(Some(drain)));
        assert_eq!(buffer.buffered_bytes(), 0);
    }
}
