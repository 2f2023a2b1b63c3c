//! A small JSON writer for the pair message, the one thing the worker encodes per pair.
//!
//! Bodies are the bulk of every message, and escaping them is the largest part of the worker's work
//! per pair. The output is the same as serde_json's: `"`, `\` and bytes below 0x20 are escaped,
//! everything else (UTF-8 included) is copied. Tests compare both.

// The shuffle escaper needs x86-64 (SSSE3 and AVX); elsewhere every string takes the SIMD kernel of
// json-escape-simd.
#[cfg(target_arch = "x86_64")]
mod dense;

/// Appends `text` as a JSON string literal, quotes included.
///
/// Three ways, by the text: short plain text (most header names and values) is copied as it is,
/// since checking it costs less than setting up anything else; text dense with quotes (JSON bodies)
/// goes through [`dense`]; the rest (prose, base64, long headers) through the SIMD kernel of
/// json-escape-simd (sonic-rs's), which skips ahead fastest when escapes are rare.
pub fn string(out: &mut Vec<u8>, text: &str) {
    if !quote_if_plain(out, text.as_bytes()) {
        escape(out, text);
    }
}

/// [`string`] for text known not to be short plain text.
fn escape(out: &mut Vec<u8>, text: &str) {
    #[cfg(target_arch = "x86_64")]
    if dense::worth_it(text.as_bytes()) {
        dense::string(out, text);
        return;
    }
    string_sparse(out, text);
}

/// The SIMD kernel of json-escape-simd.
fn string_sparse(out: &mut Vec<u8>, text: &str) {
    json_escape_simd::escape_into(text, out);
}

/// Appends bytes as a JSON string, replacing invalid UTF-8 (header values may carry any byte).
pub fn lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    if !quote_if_plain(out, bytes) {
        escape_lossy(out, bytes);
    }
}

/// [`lossy`] for bytes known not to be short plain text.
pub fn escape_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => escape(out, text),
        Err(_) => escape(out, &String::from_utf8_lossy(bytes)),
    }
}

/// Appends `text` in quotes as it is, for text that never needs escaping and is known to be ASCII:
/// HTTP tokens as httparse validated them (methods, header names), the contract's constants, digits
/// and hex. Skips the check [`string`] makes, a measurable share of the cost of a pair.
pub fn token(out: &mut Vec<u8>, text: &[u8]) {
    debug_assert!(is_token(text), "not a plain token: {text:?}");
    out.reserve(text.len() + 2);
    out.push(b'"');
    extend_short(out, text);
    out.push(b'"');
}

/// Whether `text` may be written by [`token`]: ASCII that JSON takes as it is, i.e. no control
/// character below 0x20, `"` or `\` (DEL, 0x7f, needs no escape: [`is_plain`] lets it through, as
/// serde_json does). For debug assertions; the hot paths know it from where the text comes from.
pub fn is_token(text: &[u8]) -> bool {
    text.iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

/// `out.extend_from_slice(bytes)` in a few fixed-size moves, for the short pieces a pair message
/// is made of (names, values, numbers): a call to `memcpy`, which a copy of unknown length becomes,
/// costs more than the copy itself there, dozens of times per pair. Up to 64 bytes, the bytes are
/// gathered on the stack in two overlapping moves, then appended whole and cut back: one capacity
/// check and one length update, not one per move.
#[inline]
pub fn extend_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    match len {
        0..=16 => append_cut(out, gather::<16>(bytes), len),
        17..=64 => append_cut(out, gather::<64>(bytes), len),
        _ => extend_words(out, bytes),
    }
}

/// `bytes` (at most `N`, which is 16 or more) at the start of an `N`-byte array: the first and the
/// last K bytes for the K (4, 8, 16 or 32) that covers them in two moves; under four bytes, the
/// first, middle and last bytes. No loop, which the compiler would turn back into a `memcpy` call.
#[inline(always)]
fn gather<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut buf = [0u8; N];
    match bytes.len() {
        0 => {}
        1..=3 => {
            let (len, mid) = (bytes.len(), bytes.len() / 2);
            buf[0] = bytes[0];
            buf[mid] = bytes[mid];
            buf[len - 1] = bytes[len - 1];
        }
        4..=8 => overlapping::<4, N>(&mut buf, bytes),
        9..=16 => overlapping::<8, N>(&mut buf, bytes),
        17..=32 => overlapping::<16, N>(&mut buf, bytes),
        _ => overlapping::<32, N>(&mut buf, bytes),
    }
    buf
}

/// Copies the first `K` and the last `K` of `bytes` (`K` to `2K` of them, at most `N`) to the same
/// places in `buf`.
#[inline(always)]
fn overlapping<const K: usize, const N: usize>(buf: &mut [u8; N], bytes: &[u8]) {
    let len = bytes.len();
    if let (Some(first), Some(last), Some(to_first)) = (
        bytes.first_chunk::<K>(),
        bytes.last_chunk::<K>(),
        buf.first_chunk_mut::<K>(),
    ) {
        *to_first = *first;
        if let Some(Ok(to_last)) = buf.get_mut(len - K..len).map(<&mut [u8; K]>::try_from) {
            *to_last = *last;
        }
    }
}

/// Appends the first `len` bytes of `buf`: all of it in one fixed-size copy, then cut back.
#[inline(always)]
fn append_cut<const N: usize>(out: &mut Vec<u8>, buf: [u8; N], len: usize) {
    out.extend_from_slice(&buf);
    out.truncate(out.len() - (N - len.min(N)));
}

/// [`extend_short`] past 64 bytes: eight at a time, then the last eight over some of those.
fn extend_words(out: &mut Vec<u8>, bytes: &[u8]) {
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        out.extend_from_slice(word);
    }
    if let (false, Some(last)) = (rest.is_empty(), bytes.last_chunk::<8>()) {
        out.truncate(out.len() - (8 - rest.len()));
        out.extend_from_slice(last);
    }
}

/// Longest text [`is_plain`] checks (a word at a time).
const PLAIN_MAX: usize = 64;

/// Appends `bytes` in quotes if they are short, ASCII and have nothing to escape; returns whether it
/// did. Such bytes are valid UTF-8 and their own JSON text.
fn quote_if_plain(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let plain = is_plain(bytes);
    if plain {
        token(out, bytes);
    }
    plain
}

/// Whether `bytes` are short (at most `PLAIN_MAX`), ASCII and have nothing to escape: then they are
/// their own JSON string, between quotes.
pub fn is_plain(bytes: &[u8]) -> bool {
    if bytes.len() > PLAIN_MAX {
        return false;
    }
    // A word (8 bytes) at a time, the last one over the end of the one before; or, under eight
    // bytes, one word padded with spaces.
    let (words, _) = bytes.as_chunks::<8>();
    let last = match bytes.last_chunk::<8>() {
        Some(last) => u64::from_le_bytes(*last),
        None => bytes
            .iter()
            .rev()
            .fold(u64::from_le_bytes([b' '; 8]), |word, &b| {
                (word << 8) | u64::from(b)
            }),
    };
    words.iter().fold(is_plain_word(last), |plain, word| {
        plain & is_plain_word(u64::from_le_bytes(*word))
    })
}

/// Whether every byte of `word` is plain ASCII text: not below 0x20, `"`, `\` or above 0x7f.
#[inline(always)]
fn is_plain_word(word: u64) -> bool {
    quote_or_backslash(word) | (word & HIGH_BITS) == 0 && !has_control(word)
}

// Word-wide bit tricks (8 bytes at a time), shared with the dense escaper.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is zero, and of no other (exact for every byte, unlike
/// the shorter borrow trick, since the shuffle uses every bit).
#[inline(always)]
fn zero_bytes(word: u64) -> u64 {
    !(((word & !HIGH_BITS).wrapping_add(!HIGH_BITS)) | word | !HIGH_BITS)
}

/// The high bit of each byte of `word` that is a quote or a backslash.
#[inline(always)]
fn quote_or_backslash(word: u64) -> u64 {
    zero_bytes(word ^ (ONES * u64::from(b'"'))) | zero_bytes(word ^ (ONES * u64::from(b'\\')))
}

/// Whether a byte of `word` is below 0x20 (a control character, escaped otherwise than by a
/// backslash before it).
#[inline(always)]
fn has_control(word: u64) -> bool {
    ((word & !HIGH_BITS).wrapping_add(ONES * (0x80 - 0x20)) | word) & HIGH_BITS != HIGH_BITS
}

/// A JSON object being written: `{`, then fields separated by commas, then `}`.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Writes the key of the next field and returns the buffer for its value. Keys are the
    /// contract's field names, written as they are (none has a character to escape).
    // Inlined so that each key's length is known where it is written (a few moves, not a memcpy).
    #[inline(always)]
    pub fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(
            !key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
            "key {key:?} needs escaping"
        );
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// Appends fields another object wrote (its text without the braces).
    pub fn fields(&mut self, fields: &[u8]) {
        if fields.is_empty() {
            return;
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(fields);
    }

    #[inline(always)]
    pub fn str(&mut self, key: &'static str, value: &str) {
        string(self.key(key), value);
    }

    #[inline(always)]
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.key(key).extend_from_slice(b"null"),
        }
    }

    #[inline(always)]
    pub fn num(&mut self, key: &'static str, value: impl itoa::Integer) {
        let mut buf = itoa::Buffer::new();
        let text = buf.format(value);
        extend_short(self.key(key), text.as_bytes());
    }

    #[inline(always)]
    pub fn bool(&mut self, key: &'static str, value: bool) {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.key(key).extend_from_slice(text);
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quoted(s: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn objects() {
        let mut out = Vec::new();
        let mut o = Object::new(&mut out);
        o.str("a", "x\"y");
        o.num("n", -5i64);
        o.bool("b", true);
        o.opt_str("none", None);
        o.end();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "x\"y", "n": -5, "b": true, "none": null})
        );
    }

    proptest! {
        /// The word-wide checks are exact for every byte (the plain check and the dense escaper's
        /// sampling rely on them).
        #[test]
        fn word_checks_are_exact_for_every_byte(word in any::<[u8; 8]>()) {
            let value = u64::from_le_bytes(word);
            let expected: u64 = word
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'"' || b == b'\\')
                .map(|(i, _)| 0x80 << (8 * i))
                .sum();
            prop_assert_eq!(quote_or_backslash(value), expected);
            prop_assert_eq!(has_control(value), word.iter().any(|&b| b < 0x20));
            let plain = word.iter().all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\');
            prop_assert_eq!(is_plain_word(value), plain);
        }
    }

    proptest! {
        /// The plain check is exact at every length up to its limit and past it, on bytes mostly
        /// plain with a few of every other kind.
        #[test]
        fn plain_is_exact(
            bytes in proptest::collection::vec(
                prop_oneof![
                    8 => 0x20u8..0x7f,
                    1 => any::<u8>(),
                    1 => prop_oneof![Just(b'"'), Just(b'\\'), Just(0x1fu8), Just(0x80u8)],
                ],
                0..80,
            )
        ) {
            let expected = bytes.len() <= PLAIN_MAX
                && bytes.iter().all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\');
            prop_assert_eq!(is_plain(&bytes), expected);
        }
    }

    #[test]
    fn short_extends_copy_exactly() {
        let source: Vec<u8> = (0..80).collect();
        for len in 0..source.len() {
            for prefix in [0, 3, 8] {
                let mut out = vec![0xaa; prefix];
                extend_short(&mut out, &source[..len]);
                let mut expected = vec![0xaa; prefix];
                expected.extend_from_slice(&source[..len]);
                assert_eq!(out, expected, "len {len}, prefix {prefix}");
            }
        }
    }

    #[test]
    fn same_as_serde_json() {
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "line\nbreak\r\ttab\u{0}\u{1f}\u{7f}",
            "ünïcødé ✓ and \"quotes\" after eight bytes",
            "0123456789abcdef\"0123456789abcdef",
        ] {
            assert_eq!(quoted(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn every_escape_at_every_position_of_a_word() {
        // Lengths around the 8-byte word, an escape at each position, one or several, short and long
        // forms (the long form grows the buffer).
        for len in 0..40 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é'] {
                    let mut s: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
                        .chars()
                        .take(len)
                        .collect();
                    s[at] = special;
                    let one: String = s.iter().collect();
                    assert_eq!(
                        quoted(&one),
                        serde_json::to_string(&one).unwrap(),
                        "{one:?}"
                    );
                    let many: String = s
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| {
                            if i >= at && (i - at) % 3 == 0 {
                                special
                            } else {
                                c
                            }
                        })
                        .collect();
                    assert_eq!(
                        quoted(&many),
                        serde_json::to_string(&many).unwrap(),
                        "{many:?}"
                    );
                }
            }
        }
        let controls: String = (0u8..0x20).map(char::from).cycle().take(300).collect();
        assert_eq!(quoted(&controls), serde_json::to_string(&controls).unwrap());
    }

    #[test]
    fn blocks_of_every_density_in_one_string() {
        let dense = r#"{"id":7,"name":"user-7","tags":["a","b"]},"#.repeat(10);
        let sparse = "The quick brown fox jumps over the lazy dog. ".repeat(10);
        let controls: String = (0u8..0x20).map(char::from).cycle().take(300).collect();
        for parts in [
            [&dense, &sparse, &controls],
            [&sparse, &dense, &controls],
            [&controls, &dense, &sparse],
            [&dense, &controls, &sparse],
        ] {
            let text = parts
                .iter()
                .copied()
                .cloned()
                .collect::<Vec<_>>()
                .join("\u{e9}\"");
            for cut in [0, 1, 7, 255, 256, 257, 600] {
                let s = &text[text.char_indices().nth(cut).map_or(0, |(i, _)| i)..];
                assert_eq!(quoted(s), serde_json::to_string(s).unwrap());
            }
        }
    }

    #[test]
    fn appends_after_what_is_there() {
        let mut out = b"[1,".to_vec();
        string(&mut out, "a\"\u{2}b");
        out.push(b']');
        assert_eq!(out, b"[1,\"a\\\"\\u0002b\"]");
    }

    proptest! {
        #[test]
        fn any_string_escapes_as_serde_json_does(s in any::<String>()) {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn long_text_with_specials(s in "[ -~\\n\\x01\"\\\\]{0,3000}") {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn ascii_with_specials(s in "[ -~\\n\\r\\t\\x00-\\x1f\"\\\\]{0,64}") {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }

        /// Any bytes, valid UTF-8 or not: written as serde_json writes their lossy text (invalid
        /// sequences replaced by U+FFFD). Bytes drawn mostly from quotes, backslashes, controls and
        /// bytes of broken UTF-8, so that every way (plain, dense, sparse) is taken.
        #[test]
        fn any_bytes_escape_as_serde_json_does_their_lossy_text(
            bytes in proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'"'),
                    Just(b'\\'),
                    Just(b'a'),
                    Just(b'\n'),
                    Just(0x01u8),
                    Just(0xc3u8),
                    Just(0xa9u8),
                    Just(0xffu8),
                ],
                0..600,
            )
        ) {
            let mut out = b"[".to_vec();
            lossy(&mut out, &bytes);
            let expected = serde_json::to_string(&String::from_utf8_lossy(&bytes)).unwrap();
            prop_assert_eq!(&out[1..], expected.as_bytes());
        }
    }
}
