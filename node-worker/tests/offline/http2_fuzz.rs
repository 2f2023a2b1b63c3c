//! The `http2_decoders` fuzz target's body (`testkit::fuzz::http2`) run on stable: random
//! bytes, and valid HTTP/2 streams with bytes flipped, cut and repeated, so that the decoders' invariants
//! are checked in `make test` too, not only under `cargo fuzz`.

use node_worker::synth::h2::{frame, PREFACE};
use proptest::prelude::*;
use testkit::fuzz::http2::http2_decoders;

/// A valid client stream: preface, SETTINGS, requests whose blocks index, reference and resize.
fn valid_stream() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
    // RFC 7541 C.4's three requests (Huffman), the second split into a CONTINUATION.
    let blocks: [&[u8]; 3] = [
        b"\x82\x86\x84\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff",
        b"\x82\x86\x84\xbe\x58\x86\xa8\xeb\x10\x64\x9c\xbf",
        b"\x82\x87\x85\xbf\x40\x88\x25\xa8\x49\xe9\x5b\xa9\x7d\x7f\x89\x25\xa8\x49\xe9\x5b\xb8\xe8\xb4\xbf",
    ];
    out.extend(frame(1, 0x5, 1, blocks[0]));
    out.extend(frame(1, 0x0, 3, &blocks[1][..5]));
    out.extend(frame(9, 0x4, 3, &blocks[1][5..]));
    out.extend(frame(
        1,
        0x4 | 0x8 | 0x20,
        5,
        &[[2u8, 0, 0, 0, 3, 7].as_slice(), blocks[2], &[0, 0]].concat(),
    ));
    out.extend(frame(0, 0x1 | 0x8, 5, b"\x04body\0\0\0\0"));
    out.extend(frame(1, 0x5, 7, b"\x3f\xe1\x1f\x82\x84\x86"));
    out.extend(frame(3, 0, 7, &[0, 0, 0, 8]));
    out.extend(frame(7, 0, 0, &[0, 0, 0, 7, 0, 0, 0, 0, b'x']));
    out
}

#[test]
fn valid_streams_with_every_selector() {
    let stream = valid_stream();
    for selector in 0..=255u8 {
        let mut data = vec![selector];
        data.extend_from_slice(&stream);
        http2_decoders(&data);
    }
}

#[test]
fn mutated_valid_streams() {
    let stream = valid_stream();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut data = vec![next() as u8];
        data.extend_from_slice(&stream);
        for _ in 0..(next() % 4 + 1) {
            let at = 1 + (next() as usize) % (data.len() - 1);
            match next() % 4 {
                0 => data[at] ^= 1 << (next() % 8),
                1 => data[at] = next() as u8,
                2 => data.truncate(at),
                _ => {
                    let piece = data[at..].iter().take(12).copied().collect::<Vec<_>>();
                    data.splice(at..at, piece);
                }
            }
            if data.len() < 2 {
                break;
            }
        }
        http2_decoders(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        http2_decoders(&data);
    }
}
