//! Escaping text dense with quotes (JSON bodies), sixteen bytes at a time with two byte shuffles.
//!
//! For each pattern of quotes and backslashes in eight bytes, a table gives where each output byte
//! comes from: an input byte, or a backslash put before it. No branch depends on where the quotes
//! are, so a quote every few bytes costs no more than none; scanners that stop at each escape (such
//! as the SIMD kernel [`super::string`] uses for other text) are several times slower on such text.
//! Control characters with a short escape (the newlines and tabs of pretty-printed JSON) are
//! replaced by their letter and take the same path; sixteen bytes holding another (`\u00XX`) go byte
//! by byte.

use super::{escape_byte, quote_or_backslash, SLACK};

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

/// Whether text whose first bytes are `sample` is dense enough for this escaper to pay: at least one
/// quote or backslash per 16 bytes (JSON has one every few bytes; below that, the SIMD kernel that
/// skips ahead to each escape is faster).
pub(super) fn worth_it(sample: &[u8]) -> bool {
    let (words, _) = sample.as_chunks::<8>();
    let marks: u32 = words
        .iter()
        .map(|w| quote_or_backslash(u64::from_le_bytes(*w)).count_ones())
        .sum();
    words.len() >= 4 && marks as usize * 16 >= words.len() * 8 && supported()
}

#[cfg(target_arch = "x86_64")]
fn supported() -> bool {
    std::is_x86_feature_detected!("ssse3")
}

#[cfg(not(target_arch = "x86_64"))]
fn supported() -> bool {
    false
}

/// Appends `text` as a JSON string literal (through the generic escaper on a CPU without SSSE3).
// The one `unsafe` of the worker: calling a function compiled for instructions the CPU must have.
#[allow(unsafe_code)]
pub(super) fn string(out: &mut Vec<u8>, text: &str) {
    #[cfg(target_arch = "x86_64")]
    if supported() {
        // SAFETY: `escape_ssse3` needs SSSE3, which the CPU was just found to have.
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
fn escape_ssse3(out: &mut Vec<u8>, bytes: &[u8]) {
    // As in `super::escape_byte`: the output is written in place at `at`, with room for every byte
    // still to come escaped in two, plus SLACK (more than the 32 bytes a block may write).
    let start = out.len();
    out.resize(start + 1 + 2 * bytes.len() + SLACK, 0);
    out[start] = b'"';
    let mut at = start + 1;
    let (blocks, rest) = bytes.as_chunks::<16>();
    for (k, block) in blocks.iter().enumerate() {
        at = escape_block(out, at, block, bytes.len() - 16 * k);
    }
    if !rest.is_empty() {
        // Padded with spaces, which are never escaped: they come last in the output, cut off.
        let mut padded = [b' '; 16];
        padded[..rest.len()].copy_from_slice(rest);
        at = escape_block(out, at, &padded, rest.len()) - (16 - rest.len());
    }
    out[at] = b'"';
    out.truncate(at + 1);
}

/// Writes the escaped `block` at `at` and returns where the next byte goes. `left`: the input bytes
/// left, this block's included; under 16, the block is padded, and the padding's output (one byte
/// each) is written too unless the block goes byte by byte.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
fn escape_block(out: &mut Vec<u8>, at: usize, block: &[u8; 16], left: usize) -> usize {
    use bytemuck::cast;
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128, _mm_shuffle_epi8, _mm_unpackhi_epi64,
        _mm_unpacklo_epi64,
    };

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
            return escape_bytes(out, at, block, left) + 16usize.saturating_sub(left);
        }
        v = _mm_or_si128(_mm_andnot_si128(controls, v), letter);
        marks = _mm_or_si128(marks, controls);
    }
    let pattern = _mm_movemask_epi8(marks) as usize;
    // Room for two 16-byte stores (see SLACK); one bounds check for both.
    let dst: &mut [u8; 32] = match (&mut out[at..at + 32]).try_into() {
        Ok(dst) => dst,
        Err(_) => unreachable!("a 32-byte range"),
    };
    if pattern == 0 {
        dst[..16].copy_from_slice(&cast::<__m128i, [u8; 16]>(v));
        return at + 16;
    }
    // Each half next to eight backslashes, shuffled by its pattern's control.
    let (low, high) = (pattern & 0xff, pattern >> 8);
    let expanded = _mm_shuffle_epi8(
        _mm_unpacklo_epi64(v, backslashes),
        cast(EXPANSIONS.control[low]),
    );
    dst[..16].copy_from_slice(&cast::<__m128i, [u8; 16]>(expanded));
    let first = usize::from(EXPANSIONS.len[low]).min(16);
    let expanded = _mm_shuffle_epi8(
        _mm_unpackhi_epi64(v, backslashes),
        cast(EXPANSIONS.control[high]),
    );
    dst[first..first + 16].copy_from_slice(&cast::<__m128i, [u8; 16]>(expanded));
    at + first + usize::from(EXPANSIONS.len[high])
}

/// The bytes of a block one by one (from [`escape_ssse3`], same arguments), out of line: rare, and
/// the block loop stays small enough to be inlined.
#[cold]
#[inline(never)]
fn escape_bytes(out: &mut Vec<u8>, mut at: usize, block: &[u8; 16], left: usize) -> usize {
    for (i, &b) in block.iter().take(left).enumerate() {
        at = escape_byte(out, at, b, left - i);
    }
    at
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
    fn expansion_table() {
        let lanes = |pattern: usize| EXPANSIONS.control[pattern];
        assert_eq!(EXPANSIONS.len[0], 8);
        assert_eq!(&lanes(0)[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(EXPANSIONS.len[0b1000_0001], 10);
        assert_eq!(&lanes(0b1000_0001)[..10], &[8, 0, 1, 2, 3, 4, 5, 6, 8, 7]);
        assert_eq!(EXPANSIONS.len[255], 16);
    }
}
