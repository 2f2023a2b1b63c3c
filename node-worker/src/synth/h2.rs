//! HTTP/2 on the wire, for synthetic conversations: the client preface, frames, and HPACK literals
//! without Huffman coding (what the tests' header blocks are made of).

/// The client connection preface, as the decoder knows it.
pub use crate::http2::frame::PREFACE;

/// A frame: its 9-byte header (length, type, flags, stream) and `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK literal field with a literal name, never Huffman-coded: added to the dynamic table
/// (`index`) or not. Names and values are shorter than 127 bytes (a one-byte length).
pub fn literal(name: &str, value: &str, index: bool) -> Vec<u8> {
    let mut out = vec![if index { 0x40 } else { 0x00 }];
    for s in [name, value] {
        assert!(
            s.len() < 127,
            "a literal of 127 bytes or more needs a longer length"
        );
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    out
}
