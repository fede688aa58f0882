//! Every wire message survives encode → frame → decode unchanged, whole or split at any
//! byte.

mod wire_strategies;

use lem_common::wire::*;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use wire_strategies::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Clone + Debug>(message: &T) {
    let frame = encode_frame(message, MAX_FRAME_BYTES).unwrap();
    let decoded = decode_frame::<T>(&frame, MAX_FRAME_BYTES).unwrap();
    assert_eq!(
        decoded,
        Decoded::Frame {
            message: message.clone(),
            frame_bytes: frame.len()
        }
    );
}

/// Feeds the frame in two parts split at `split`: nothing before the last byte, the
/// message after it; and the stateless decoder asks for exactly the missing bytes.
fn split_decodes_identically<T: Serialize + DeserializeOwned + PartialEq + Clone + Debug>(
    message: &T,
) {
    let frame = encode_frame(message, MAX_FRAME_BYTES).unwrap();
    for split in 0..frame.len() {
        let needed_bytes = if split < FRAME_HEADER_BYTES {
            FRAME_HEADER_BYTES - split
        } else {
            frame.len() - split
        };
        assert_eq!(
            decode_frame::<T>(&frame[..split], MAX_FRAME_BYTES),
            Ok(Decoded::Incomplete { needed_bytes }),
            "split at {split}"
        );
        let mut buffer = FrameBuffer::new(MAX_FRAME_BYTES);
        buffer.extend(&frame[..split]);
        assert_eq!(buffer.next_message::<T>(), Ok(None), "split at {split}");
        buffer.extend(&frame[split..]);
        assert_eq!(
            buffer.next_message::<T>().as_ref(),
            Ok(&Some(message.clone()))
        );
        assert_eq!(buffer.buffered_bytes(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn agent_messages_round_trip(message in agent_message()) {
        round_trip(&message);
    }

    #[test]
    fn raw_results_round_trip_with_optional_fields_present_or_absent(result in raw_result()) {
        round_trip(&AgentMessage::AttemptResult {
            attempt: AttemptRef { attempt: 1, epoch: 1 },
            result: Box::new(result),
        });
    }

    #[test]
    fn coordinator_messages_round_trip(message in coordinator_message()) {
        round_trip(&message);
    }

    #[test]
    fn handshakes_round_trip(hello in handshake(), reply in handshake_reply()) {
        round_trip(&hello);
        round_trip(&reply);
    }
}

proptest! {
    // Each case decodes its frame once per byte: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn agent_frames_split_anywhere_decode_identically(message in agent_message()) {
        split_decodes_identically(&message);
    }

    #[test]
    fn coordinator_frames_split_anywhere_decode_identically(message in coordinator_message()) {
        split_decodes_identically(&message);
    }
}
