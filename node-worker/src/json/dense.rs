//! Escaping text dense with quotes (JSON bodies), eight bytes at a time with one byte shuffle.
//!
//! For each pattern of quotes and backslashes in eight bytes, a table gives where each output byte
//! comes from: an input byte, or a backslash put before it. No branch depends on where the quotes
//! are, so a quote every few bytes costs no more than none; scanners that stop at each escape (such
//! as the SIMD kernel [`super::string`] uses for other text) slow down threefold on such text.
//! Eight bytes holding a control character (rare in bodies: a newline of pretty-printed JSON) go
//! byte by byte.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_mm_cvtsi128_si64, _mm_extract_epi64, _mm_set_epi64x, _mm_shuffle_epi8};

use super::{escape_byte, has_control, quote_or_backslash, ONES, SLACK};

/// The high bits of a mark word gathered into eight bits (bit i: byte i).
#[inline(always)]
fn gather(marks: u64) -> usize {
    ((marks >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as usize
}

/// For each 8-bit pattern (bit i: byte i is a quote or a backslash): the shuffle control (byte j,
/// little-endian, says which input lane output byte j takes: 0-7 the input bytes, 8 a backslash;
/// 0x80 a zero) and the output length.
struct Expansions {
    control: [u128; 256],
    len: [u8; 256],
}

const fn expansions() -> Expansions {
    let mut e = Expansions {
        control: [0; 256],
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
        e.control[pattern] = u128::from_le_bytes(lanes);
        e.len[pattern] = out as u8;
        pattern += 1;
    }
    e
}

static EXPANSIONS: Expansions = expansions();

/// Whether text whose first bytes are `sample` is dense enough for this escaper to pay: at least one
/// quote or backslash per 32 bytes.
pub(super) fn worth_it(sample: &[u8]) -> bool {
    let (words, _) = sample.as_chunks::<8>();
    let marks: u32 = words
        .iter()
        .map(|w| quote_or_backslash(u64::from_le_bytes(*w)).count_ones())
        .sum();
    words.len() >= 4 && marks as usize * 32 >= words.len() * 8 && supported()
}

#[cfg(target_arch = "x86_64")]
fn supported() -> bool {
    std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("sse4.1")
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
        // SAFETY: `escape_ssse3` needs SSSE3 and SSE4.1, which the CPU was just found to have.
        unsafe { escape_ssse3(out, text.as_bytes()) };
        return;
    }
    super::string_sparse(out, text);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3,sse4.1")]
fn escape_ssse3(out: &mut Vec<u8>, bytes: &[u8]) {
    // As in `super::escape_byte`: the output is written in place at `at`, with room for every byte
    // still to come escaped in two, plus SLACK (more than the 16 bytes each step writes).
    let start = out.len();
    out.resize(start + 1 + 2 * bytes.len() + SLACK, 0);
    out[start] = b'"';
    let mut at = start + 1;
    let backslashes = (ONES * u64::from(b'\\')) as i64;
    let (words, rest) = bytes.as_chunks::<8>();
    for (k, word) in words.iter().enumerate() {
        let value = u64::from_le_bytes(*word);
        if has_control(value) {
            let left = bytes.len() - 8 * k;
            for (i, &b) in word.iter().enumerate() {
                at = escape_byte(out, at, b, left - i);
            }
            continue;
        }
        let pattern = gather(quote_or_backslash(value));
        let control = EXPANSIONS.control[pattern];
        let control = _mm_set_epi64x((control >> 64) as i64, control as i64);
        let expanded = _mm_shuffle_epi8(_mm_set_epi64x(backslashes, value as i64), control);
        let first = _mm_cvtsi128_si64(expanded) as u64;
        let second = _mm_extract_epi64::<1>(expanded) as u64;
        out[at..at + 8].copy_from_slice(&first.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&second.to_le_bytes());
        at += usize::from(EXPANSIONS.len[pattern]);
    }
    for (i, &b) in rest.iter().enumerate() {
        at = escape_byte(out, at, b, rest.len() - i);
    }
    out[at] = b'"';
    out.truncate(at + 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn marks_are_exact_for_every_byte(word in any::<[u8; 8]>()) {
            let value = u64::from_le_bytes(word);
            let expected: usize = word
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'"' || b == b'\\')
                .map(|(i, _)| 1 << i)
                .sum();
            prop_assert_eq!(gather(quote_or_backslash(value)), expected);
            prop_assert_eq!(has_control(value), word.iter().any(|&b| b < 0x20));
        }
    }

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
    fn expansion_table() {
        let lanes = |pattern: usize| EXPANSIONS.control[pattern].to_le_bytes();
        assert_eq!(EXPANSIONS.len[0], 8);
        assert_eq!(&lanes(0)[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(EXPANSIONS.len[0b1000_0001], 10);
        assert_eq!(&lanes(0b1000_0001)[..10], &[8, 0, 1, 2, 3, 4, 5, 6, 8, 7]);
        assert_eq!(EXPANSIONS.len[255], 16);
    }
}
