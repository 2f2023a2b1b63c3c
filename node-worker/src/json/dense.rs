//! Escaping text dense with quotes (JSON bodies), sixteen bytes at a time with two byte shuffles.
//!
//! For each pattern of quotes and backslashes in eight bytes, a table gives where each output byte
//! comes from: an input byte, or a backslash put before it. No branch depends on where the quotes
//! are, so a quote every few bytes costs no more than none; scanners that stop at each escape (such
//! as the SIMD kernel [`super::string`] uses for other text) are several times slower on such text.
//! Control characters with a short escape (the newlines and tabs of pretty-printed JSON) are
//! replaced by their letter and take the same path; sixteen bytes holding another (`\u00XX`) go byte
//! by byte.

use std::arch::x86_64::{
    __m128i, _mm_and_si128, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8,
    _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128, _mm_shuffle_epi8, _mm_unpackhi_epi64,
    _mm_unpacklo_epi64,
};

use bytemuck::cast;

use super::quote_or_backslash;

/// For each 8-bit pattern (bit i: byte i is escaped): the shuffle control (byte j says which input
/// lane output byte j takes: 0-7 the input bytes, 8 a backslash; 0x80 a zero) and the output length.
struct Expansions {
    control: [[u8; 16]; 256],
    len: [u8; 256],
}

const fn expansions() -> Expansions {
    let mut e = Expansions {
        control: [[0; 16]; 256],
        len: [0; 256],
    };
    let mut pattern = 0;
    while pattern < 256 {
        let mut lanes = [0x80u8; 16];
        let mut out = 0;
        let mut i = 0;
        while i < 8 {
            if pattern & (1 << i) != 0 {
                lanes[out] = 8;
                out += 1;
            }
            lanes[out] = i as u8;
            out += 1;
            i += 1;
        }
        e.control[pattern] = lanes;
        e.len[pattern] = out as u8;
        pattern += 1;
    }
    e
}

static EXPANSIONS: Expansions = expansions();

/// Text at least this long may take this escaper, judged on its first `SAMPLE` bytes (short JSON
/// request bodies included).
const MIN_LEN: usize = 32;
const SAMPLE: usize = 64;

/// Whether `text` is dense enough with quotes for this escaper to pay: at least one quote or
/// backslash per 16 bytes of its first 64 (JSON has one every few bytes; below that, the SIMD kernel
/// that skips ahead to each escape is faster); and the CPU has SSSE3 and AVX.
pub(super) fn worth_it(text: &[u8]) -> bool {
    if text.len() < MIN_LEN {
        return false;
    }
    let (words, _) = text[..text.len().min(SAMPLE)].as_chunks::<8>();
    let marks: u32 = words
        .iter()
        .map(|w| quote_or_backslash(u64::from_le_bytes(*w)).count_ones())
        .sum();
    marks as usize * 16 >= words.len() * 8 && supported()
}

/// SSSE3 for the shuffles; AVX so that they are encoded with three operands (VEX), which saves
/// the register copies the two-operand forms need: a tenth of the instructions per block. Every
/// x86-64 CPU since 2011 has both; one without AVX takes the generic escaper, same output.
fn supported() -> bool {
    std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("avx")
}

/// Appends `text` as a JSON string literal (through the generic escaper on a CPU without SSSE3 or
/// AVX).
// The one `unsafe` of the worker: calling a function compiled for instructions the CPU must have.
#[allow(unsafe_code)]
pub(super) fn string(out: &mut Vec<u8>, text: &str) {
    if supported() {
        // SAFETY: `escape_ssse3` needs SSSE3 and AVX, which the CPU was just found to have.
        unsafe { escape_ssse3(out, text.as_bytes()) };
        return;
    }
    super::string_sparse(out, text);
}

/// The escape letter of each control character with a short escape (`\b`, `\t`, `\n`, `\f`, `\r`),
/// by its value; zero for the others (written `\u00XX`).
const SHORT_LETTERS: [u8; 16] = [
    0, 0, 0, 0, 0, 0, 0, 0, b'b', b't', b'n', 0, b'f', b'r', 0, 0,
];

/// Blocks escaped into the stack buffer of [`escape_ssse3`] before it is appended to the output.
const CHUNK_BLOCKS: usize = 32;

/// The stack buffer: at most 32 bytes out per block, and 16 bytes more past the last block's, where
/// its second store may start at most 31 bytes in (see `escape_block`).
const STAGING: usize = 32 * CHUNK_BLOCKS + 16;
type Staging = [u8; STAGING];

#[target_feature(enable = "ssse3,avx")]
fn escape_ssse3(out: &mut Vec<u8>, bytes: &[u8]) {
    // Blocks are written in place in a buffer on the stack, with room for every block of the chunk
    // escaped in two, then appended in one copy. Writing in place in `out` instead would need its
    // room zeroed first (no uninitialised memory without `unsafe`): that cost as many instructions
    // as the escaping itself; appending block by block costs a capacity check and a length update
    // at every store.
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut staging: Staging = [0; STAGING];
    let (blocks, rest) = bytes.as_chunks::<16>();
    for chunk in blocks.chunks(CHUNK_BLOCKS) {
        let mut at = 0;
        for block in chunk {
            at = escape_block(out, &mut staging, at, block, 0);
        }
        out.extend_from_slice(&staging[..at]);
    }
    if !rest.is_empty() {
        // Padded with spaces, which are never escaped: they come last in the output, cut off.
        let mut padded = [b' '; 16];
        padded[..rest.len()].copy_from_slice(rest);
        let at = escape_block(out, &mut staging, 0, &padded, 16 - rest.len());
        out.extend_from_slice(&staging[..at]);
    }
    out.push(b'"');
}

/// Writes the escaped `block` at `at` of `staging` and returns where the next byte goes; `at` is at
/// most 32 bytes per block before it in the chunk, so `STAGING - 48` at most. `padding`: how many of the
/// block's last bytes are padding (none but in the last block), whose output (one byte each, written
/// last) does not count. A block with a long escape is appended to `out` directly, after what
/// `staging` holds (then 0 is returned).
#[target_feature(enable = "ssse3,avx")]
#[inline]
fn escape_block(
    out: &mut Vec<u8>,
    staging: &mut Staging,
    at: usize,
    block: &[u8; 16],
    padding: usize,
) -> usize {
    let backslashes = _mm_set1_epi8(b'\\' as i8);
    let mut v: __m128i = cast(*block);
    let mut marks = _mm_or_si128(
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
        _mm_cmpeq_epi8(v, backslashes),
    );
    let controls = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
    if _mm_movemask_epi8(controls) != 0 {
        // A control character with a short escape becomes its letter, after a backslash like a
        // quote; a block with any other (`\u00XX`, six bytes) goes byte by byte.
        let short = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x0f)), v);
        let letter = _mm_and_si128(_mm_shuffle_epi8(cast(SHORT_LETTERS), v), short);
        let long = _mm_and_si128(_mm_cmpeq_epi8(letter, _mm_setzero_si128()), controls);
        if _mm_movemask_epi8(long) != 0 {
            escape_bytes(out, &staging[..at], &block[..16 - padding]);
            return 0;
        }
        v = _mm_or_si128(_mm_andnot_si128(controls, v), letter);
        marks = _mm_or_si128(marks, controls);
    }
    let pattern = _mm_movemask_epi8(marks) as usize;
    // Room for two 16-byte stores, the second at most 31 bytes in; one bounds check for both.
    let dst: &mut [u8; 48] = match staging.get_mut(at..at + 48).map(<&mut [u8; 48]>::try_from) {
        Some(Ok(dst)) => dst,
        _ => unreachable!("a block's 48 bytes within the staging buffer"),
    };
    if pattern == 0 {
        dst[..16].copy_from_slice(&cast::<__m128i, [u8; 16]>(v));
        return at + 16 - padding;
    }
    // Each half next to eight backslashes, shuffled by its pattern's control.
    let (low, high) = (pattern & 0xff, pattern >> 8);
    let expanded = _mm_shuffle_epi8(
        _mm_unpacklo_epi64(v, backslashes),
        cast(EXPANSIONS.control[low]),
    );
    dst[..16].copy_from_slice(&cast::<__m128i, [u8; 16]>(expanded));
    // At most 16 (eight bytes each escaped); masked to five bits, which the compiler sees keeps the
    // second store within `dst` (no bounds check, no clamp).
    let first = usize::from(EXPANSIONS.len[low]) & 31;
    let expanded = _mm_shuffle_epi8(
        _mm_unpackhi_epi64(v, backslashes),
        cast(EXPANSIONS.control[high]),
    );
    dst[first..first + 16].copy_from_slice(&cast::<__m128i, [u8; 16]>(expanded));
    at + first + usize::from(EXPANSIONS.len[high]) - padding
}

/// How each byte is written inside a JSON string: the byte that follows a backslash for `"`, `\` and
/// the control characters with a short form (`\n`, ...) or the byte itself; whether a backslash comes
/// first; and whether it needs the long form `\u00XX` (the other control characters).
struct Escapes {
    chars: [u8; 256],
    backslash: [u8; 256],
    long: [bool; 256],
}

const fn escapes() -> Escapes {
    let mut e = Escapes {
        chars: [0; 256],
        backslash: [0; 256],
        long: [false; 256],
    };
    let mut b = 0;
    while b < 256 {
        e.chars[b] = b as u8;
        e.long[b] = b < 0x20;
        b += 1;
    }
    let short: [(u8, u8); 7] = [
        (b'"', b'"'),
        (b'\\', b'\\'),
        (b'\n', b'n'),
        (b'\r', b'r'),
        (b'\t', b't'),
        (0x08, b'b'),
        (0x0c, b'f'),
    ];
    let mut i = 0;
    while i < short.len() {
        let (from, to) = short[i];
        e.chars[from as usize] = to;
        e.backslash[from as usize] = 1;
        e.long[from as usize] = false;
        i += 1;
    }
    e
}

static ESCAPES: Escapes = escapes();

/// Appends byte `b`, escaped if need be.
#[inline(always)]
fn escape_byte(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let i = usize::from(b);
    if ESCAPES.long[i] {
        out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]]);
        return;
    }
    if ESCAPES.backslash[i] != 0 {
        out.push(b'\\');
    }
    out.push(ESCAPES.chars[i]);
}

/// Appends `staged` (the escaped blocks before), then `bytes` one by one (from [`escape_block`]),
/// out of line: rare, and the block loop stays small enough to be inlined.
#[cold]
#[inline(never)]
fn escape_bytes(out: &mut Vec<u8>, staged: &[u8], bytes: &[u8]) {
    out.extend_from_slice(staged);
    for &b in bytes {
        escape_byte(out, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dense(text: &str) -> String {
        let mut out = b"prefix".to_vec();
        string(&mut out, text);
        String::from_utf8(out[6..].to_vec()).unwrap()
    }

    proptest! {
        /// Any text, and JSON-like text with every escape (long forms included), as serde_json
        /// writes it.
        #[test]
        fn escapes_as_serde_json_does(text in any::<String>()) {
            prop_assert_eq!(dense(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn json_like_text(text in "([a-z0-9:,{}\\[\\] ]|\"|\\\\|\n|\t|\x01|\x1f|é|✓){0,400}") {
            prop_assert_eq!(dense(&text), serde_json::to_string(&text).unwrap());
        }

        /// Any bytes as the worker hands them over (invalid UTF-8 replaced first), dense with
        /// escapes of every kind, so that long escapes grow the output past what was reserved.
        #[test]
        fn any_bytes_as_their_lossy_text(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'"'), Just(b'\\'), Just(b'\n'), Just(0x1fu8)],
                0..400,
            )
        ) {
            let text = String::from_utf8_lossy(&bytes);
            prop_assert_eq!(dense(&text), serde_json::to_string(&text).unwrap());
        }
    }

    #[test]
    fn every_escape_at_every_position_of_a_block() {
        // Lengths around the 16-byte block (the last one padded), one escape or many at each
        // position: quotes, short and long control escapes, and the controls whose low four bits
        // alias a short escape's letter (0x1a and \n, 0x18 and \b, 0x1d and \r).
        let specials = [
            '"', '\\', '\n', '\t', '\r', '\u{8}', '\u{c}', '\u{1}', '\u{b}', '\u{1a}', '\u{18}',
            '\u{1d}', '\u{1f}', '\u{7f}', 'é',
        ];
        let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            .chars()
            .collect();
        for len in 0..50 {
            for at in 0..len {
                for special in specials {
                    let mut s = alphabet[..len].to_vec();
                    s[at] = special;
                    let one: String = s.iter().collect();
                    assert_eq!(dense(&one), serde_json::to_string(&one).unwrap(), "{one:?}");
                    for (i, c) in s.iter_mut().enumerate().skip(at) {
                        if (i - at) % 3 == 0 {
                            *c = special;
                        }
                    }
                    let many: String = s.iter().collect();
                    assert_eq!(
                        dense(&many),
                        serde_json::to_string(&many).unwrap(),
                        "{many:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunks_of_the_staging_buffer_join_up() {
        // Texts around one and two chunks long, every block escaped in full (the most a chunk
        // writes), with a long escape around the chunk's end (staged bytes appended before it).
        let chunk = 16 * CHUNK_BLOCKS;
        for len in [chunk - 1, chunk, chunk + 1, 2 * chunk + 17] {
            for special in ['"', '\u{1}'] {
                for at in [0, chunk - 17, chunk - 1, chunk, chunk + 1] {
                    let mut s: Vec<char> = std::iter::repeat_n('"', len).collect();
                    if let Some(c) = s.get_mut(at) {
                        *c = special;
                    }
                    let text: String = s.iter().collect();
                    assert_eq!(
                        dense(&text),
                        serde_json::to_string(&text).unwrap(),
                        "len {len}, {special:?} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn expansion_table() {
        let lanes = |pattern: usize| EXPANSIONS.control[pattern];
        assert_eq!(EXPANSIONS.len[0], 8);
        assert_eq!(&lanes(0)[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(EXPANSIONS.len[0b1000_0001], 10);
        assert_eq!(&lanes(0b1000_0001)[..10], &[8, 0, 1, 2, 3, 4, 5, 6, 8, 7]);
        assert_eq!(EXPANSIONS.len[255], 16);
    }
}
