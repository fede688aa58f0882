//! The frame decoder under arbitrary and mutated bytes: it never panics, every outcome
//! is a frame, `Incomplete` or a typed error, and the memory it allocates grows at most
//! linearly with the bytes it was given (no declared length is trusted).

mod wire_strategies;

use lem_common::wire::*;
use proptest::collection::vec;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use wire_strategies::*;

/// Counts this thread's live heap bytes and their peak, so each test measures only its
/// own decoding while others run in parallel.
struct CountingAlloc;

thread_local! {
    static LIVE_BYTES: Cell<usize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(bytes: usize) {
    let live = LIVE_BYTES.with(|l| {
        let live = l.get().saturating_add(bytes);
        l.set(live);
        live
    });
    PEAK_BYTES.with(|p| p.set(p.get().max(live)));
}

fn note_dealloc(bytes: usize) {
    LIVE_BYTES.with(|l| l.set(l.get().saturating_sub(bytes)));
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_dealloc(layout.size());
        note_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Heap bytes a decode may use beyond what it started with: a fixed allowance (error
/// messages, small buffers) plus 1 KiB per input byte — serde may reserve a collection's
/// declared length, which the structure check keeps at or below the bytes left, and no
/// element type of the protocol is larger than 1 KiB.
fn allowed_peak_bytes(input_bytes: usize) -> usize {
    64 * 1024 + 1024 * input_bytes
}

/// Decodes `bytes` as a `T`, returning the outcome as text and the peak heap growth.
fn decode_measured<T: DeserializeOwned + std::fmt::Debug>(bytes: &[u8]) -> (String, usize) {
    let before = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|p| p.set(before));
    let outcome = match decode_frame::<T>(bytes, MAX_FRAME_BYTES) {
        Ok(Decoded::Frame { frame_bytes, .. }) => {
            assert!(frame_bytes <= bytes.len());
            "frame".to_string()
        }
        Ok(Decoded::Incomplete { needed_bytes }) => {
            assert!(needed_bytes > 0);
            "incomplete".to_string()
        }
        Err(e) => {
            // Every error says what was wrong in words.
            assert!(!e.to_string().is_empty());
            "error".to_string()
        }
    };
    let peak = PEAK_BYTES.with(Cell::get) - before;
    (outcome, peak)
}

fn decode_every_message_type(bytes: &[u8]) {
    for (name, (_, peak)) in [
        ("agent", decode_measured::<AgentMessage>(bytes)),
        ("coordinator", decode_measured::<CoordinatorMessage>(bytes)),
        ("handshake", decode_measured::<Handshake>(bytes)),
        ("reply", decode_measured::<HandshakeReply>(bytes)),
    ] {
        assert!(
            peak <= allowed_peak_bytes(bytes.len()),
            "{name}: {peak} bytes allocated decoding {} bytes",
            bytes.len()
        );
    }
}

/// A frame header announcing `body.len()` bytes, then `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        decode_every_message_type(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(body in vec(any::<u8>(), 0..512)) {
        decode_every_message_type(&framed(&body));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Valid frames with a few bytes overwritten reach deep into the message parsers.
    #[test]
    fn mutated_frames_never_panic(
        message in agent_message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut frame = encode_frame(&message, MAX_FRAME_BYTES).unwrap();
        for (index, byte) in edits {
            // Keep the header so the body is parsed.
            let body_bytes = frame.len() - FRAME_HEADER_BYTES;
            frame[FRAME_HEADER_BYTES + index.index(body_bytes)] = byte;
        }
        decode_every_message_type(&frame);
    }
}

#[test]
fn no_element_type_of_the_protocol_exceeds_the_per_byte_allowance() {
    use lem_common::domain::{EnergyReading, PowerSample, RequestRecord};
    use lem_common::mig::{SliceInput, SliceShare};
    let sizes = [
        ("EnergyReading", std::mem::size_of::<EnergyReading>()),
        ("PowerSample", std::mem::size_of::<PowerSample>()),
        ("RequestRecord", std::mem::size_of::<RequestRecord>()),
        ("SliceInput", std::mem::size_of::<SliceInput>()),
        ("SliceShare", std::mem::size_of::<SliceShare>()),
        (
            "serde_json::Value",
            std::mem::size_of::<serde_json::Value>(),
        ),
        ("Gpu", std::mem::size_of::<Gpu>()),
        ("HeldAttempt", std::mem::size_of::<HeldAttempt>()),
        ("DeviceClaim", std::mem::size_of::<DeviceClaim>()),
    ];
    for (name, bytes) in sizes {
        assert!(bytes <= 1024, "{name} is {bytes} bytes");
    }
}

#[test]
fn nested_collections_declaring_huge_lengths_are_refused_unallocated() {
    // 200 nested array32 headers each declaring 2^32 - 1 elements: unchecked, serde would
    // reserve up to 1 MiB at every level.
    let body: Vec<u8> = std::iter::repeat_n([0xdd, 0xff, 0xff, 0xff, 0xff], 200)
        .flatten()
        .collect();
    let frame = framed(&body);
    assert_eq!(
        decode_frame::<CoordinatorMessage>(&frame, MAX_FRAME_BYTES),
        Err(FrameError::Malformed(MalformedReason::LengthBeyondFrame {
            offset: 0,
            declared: u64::from(u32::MAX),
            left_bytes: body.len() - 5,
        }))
    );
    let (outcome, peak) = decode_measured::<CoordinatorMessage>(&frame);
    assert_eq!(outcome, "error");
    assert!(peak <= allowed_peak_bytes(frame.len()), "{peak} bytes");
}

#[test]
fn a_length_prefix_of_4_gib_is_refused_from_the_header() {
    let (outcome, peak) = decode_measured::<AgentMessage>(&u32::MAX.to_be_bytes());
    assert_eq!(outcome, "error");
    assert!(peak <= allowed_peak_bytes(4), "{peak} bytes");
}
