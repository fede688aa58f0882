//! The check before the parse: walks a frame body's msgpack structure without building
//! anything, so that malformed bytes get a precise error and no declared length can make
//! the parser reserve memory the body does not back (serde reserves a collection's
//! declared length up front; here every declared element must fit in the bytes left).

use thiserror::Error;

/// What is wrong with a frame body's msgpack, and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MalformedReason {
    #[error("byte {offset}: the frame body is empty")]
    Empty { offset: usize },
    #[error("byte {offset}: marker 0xc1 is reserved in msgpack")]
    ReservedMarker { offset: usize },
    #[error(
        "byte {offset}: msgpack extension type (0x{marker:02x}) is not used by lem's protocol"
    )]
    ExtensionType { offset: usize, marker: u8 },
    #[error(
        "byte {offset}: the value needs {needed_bytes} bytes but the frame has {left_bytes} left"
    )]
    Truncated {
        offset: usize,
        needed_bytes: u64,
        left_bytes: usize,
    },
    #[error("byte {offset}: a collection declares {declared} elements but only {left_bytes} bytes are left")]
    LengthBeyondFrame {
        offset: usize,
        declared: u64,
        left_bytes: usize,
    },
    #[error("byte {offset}: nesting deeper than {max_depth} levels")]
    TooDeep { offset: usize, max_depth: usize },
    #[error("byte {offset}: {trailing_bytes} bytes after the message's end")]
    TrailingBytes {
        offset: usize,
        trailing_bytes: usize,
    },
}

/// Checks that `body` is exactly one well-formed msgpack value, nested at most
/// `max_depth` collections deep, with every declared length backed by bytes.
pub(crate) fn check_msgpack(body: &[u8], max_depth: usize) -> Result<(), MalformedReason> {
    if body.is_empty() {
        return Err(MalformedReason::Empty { offset: 0 });
    }
    let mut pos = 0usize;
    // Values still expected in each open collection (a map counts keys and values);
    // bounded by `max_depth` + 1 entries.
    let mut open: Vec<u64> = vec![1];
    while let Some(expected) = open.last_mut() {
        if *expected == 0 {
            open.pop();
            continue;
        }
        *expected -= 1;
        let at = pos;
        let children = read_header(body, &mut pos)?;
        if children > 0 {
            let left_bytes = body.len() - pos;
            // Every element takes at least one byte.
            if children > left_bytes as u64 {
                return Err(MalformedReason::LengthBeyondFrame {
                    offset: at,
                    declared: children,
                    left_bytes,
                });
            }
            if open.len() > max_depth {
                return Err(MalformedReason::TooDeep {
                    offset: at,
                    max_depth,
                });
            }
            open.push(children);
        }
    }
    if pos != body.len() {
        return Err(MalformedReason::TrailingBytes {
            offset: pos,
            trailing_bytes: body.len() - pos,
        });
    }
    Ok(())
}

/// Reads one value's header at `pos`, skips its scalar payload, and returns how many
/// nested values follow (array length, or twice a map's length).
fn read_header(body: &[u8], pos: &mut usize) -> Result<u64, MalformedReason> {
    let at = *pos;
    // An enclosing collection may still expect values after the body ends.
    let Some(&marker) = body.get(at) else {
        return Err(MalformedReason::Truncated {
            offset: at,
            needed_bytes: 1,
            left_bytes: 0,
        });
    };
    *pos += 1;
    let (payload_bytes, children) = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
        0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
        0x90..=0x9f => (0, u64::from(marker & 0x0f)),
        0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
        0xc1 => return Err(MalformedReason::ReservedMarker { offset: at }),
        0xc4 | 0xd9 => (read_len(body, pos, 1, at)?, 0),
        0xc5 | 0xda => (read_len(body, pos, 2, at)?, 0),
        0xc6 | 0xdb => (read_len(body, pos, 4, at)?, 0),
        0xc7..=0xc9 | 0xd4..=0xd8 => {
            return Err(MalformedReason::ExtensionType { offset: at, marker })
        }
        0xcc | 0xd0 => (1, 0),
        0xcd | 0xd1 => (2, 0),
        0xca | 0xce | 0xd2 => (4, 0),
        0xcb | 0xcf | 0xd3 => (8, 0),
        0xdc => (0, read_len(body, pos, 2, at)?),
        0xdd => (0, read_len(body, pos, 4, at)?),
        0xde => (0, 2 * read_len(body, pos, 2, at)?),
        0xdf => (0, 2 * read_len(body, pos, 4, at)?),
    };
    skip(body, pos, payload_bytes, at)?;
    Ok(children)
}

/// Reads a big-endian length of `width` bytes.
fn read_len(body: &[u8], pos: &mut usize, width: usize, at: usize) -> Result<u64, MalformedReason> {
    let start = *pos;
    skip(body, pos, width as u64, at)?;
    Ok(body[start..*pos]
        .iter()
        .fold(0u64, |len, &byte| (len << 8) | u64::from(byte)))
}

fn skip(body: &[u8], pos: &mut usize, bytes: u64, at: usize) -> Result<(), MalformedReason> {
    let left_bytes = body.len() - *pos;
    if bytes > left_bytes as u64 {
        return Err(MalformedReason::Truncated {
            offset: at,
            needed_bytes: bytes,
            left_bytes,
        });
    }
    *pos += bytes as usize;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_values_pass() {
        // {"a": [1, -1, "xy", nil, 1.5f64]}
        let mut body = vec![
            0x81, 0xa1, b'a', 0x95, 0x01, 0xff, 0xa2, b'x', b'y', 0xc0, 0xcb,
        ];
        body.extend(1.5f64.to_be_bytes());
        assert_eq!(check_msgpack(&body, 4), Ok(()));
    }

    #[test]
    fn each_defect_is_named_with_its_offset() {
        assert_eq!(
            check_msgpack(&[], 4),
            Err(MalformedReason::Empty { offset: 0 })
        );
        assert_eq!(
            check_msgpack(&[0x91, 0xc1], 4),
            Err(MalformedReason::ReservedMarker { offset: 1 })
        );
        assert_eq!(
            check_msgpack(&[0xd4, 0x01, 0x00], 4),
            Err(MalformedReason::ExtensionType {
                offset: 0,
                marker: 0xd4
            })
        );
        // str8 of 5 bytes with 2 present.
        assert_eq!(
            check_msgpack(&[0xd9, 0x05, b'a', b'b'], 4),
            Err(MalformedReason::Truncated {
                offset: 0,
                needed_bytes: 5,
                left_bytes: 2
            })
        );
        // array32 declaring 2^32 - 1 elements, backed by one byte.
        assert_eq!(
            check_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01], 4),
            Err(MalformedReason::LengthBeyondFrame {
                offset: 0,
                declared: u64::from(u32::MAX),
                left_bytes: 1
            })
        );
        assert_eq!(
            check_msgpack(&[0x01, 0x02], 4),
            Err(MalformedReason::TrailingBytes {
                offset: 1,
                trailing_bytes: 1
            })
        );
    }

    #[test]
    fn a_collection_missing_values_at_the_end_is_truncated() {
        // [[1], <missing>]: each declared length fits the bytes left when read.
        assert_eq!(
            check_msgpack(&[0x92, 0x91, 0x01], 4),
            Err(MalformedReason::Truncated {
                offset: 3,
                needed_bytes: 1,
                left_bytes: 0
            })
        );
    }

    #[test]
    fn nesting_is_bounded() {
        // [[[...[1]...]]] with `levels` arrays.
        let nested = |levels: usize| {
            let mut body = vec![0x91; levels];
            body.push(0x01);
            body
        };
        assert_eq!(check_msgpack(&nested(3), 3), Ok(()));
        assert_eq!(
            check_msgpack(&nested(4), 3),
            Err(MalformedReason::TooDeep {
                offset: 3,
                max_depth: 3
            })
        );
    }
}
