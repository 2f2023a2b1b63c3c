//! A small JSON writer for the pair message, the one thing the worker encodes per pair.
//!
//! Bodies are the bulk of every message and mostly need no escaping; serde_json escapes byte by byte,
//! while this skips eight bytes at a time (a word-at-a-time test for `"`, `\\` and control bytes) and
//! copies clean runs whole. The output is the same as serde_json's: `"`, `\\` and bytes below 0x20 are
//! escaped, everything else (UTF-8 included) is copied. Tests compare both.

const LOW_BYTES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is below 0x20, or is `"` or `\`.
#[inline]
fn needs_escape(word: u64) -> bool {
    let below_space = word.wrapping_sub(LOW_BYTES * 0x20) & !word;
    let quote = word ^ (LOW_BYTES * u64::from(b'"'));
    let backslash = word ^ (LOW_BYTES * u64::from(b'\\'));
    let has_zero = |x: u64| x.wrapping_sub(LOW_BYTES) & !x;
    (below_space | has_zero(quote) | has_zero(backslash)) & HIGH_BITS != 0
}

fn escape_byte(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
}

/// Appends `text` as a JSON string literal, quotes included.
pub fn string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if b < 0x20 || b == b'"' || b == b'\\' {
            out.extend_from_slice(&bytes[run_start..i]);
            escape_byte(out, b);
            run_start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Appends bytes as a JSON string, replacing invalid UTF-8 (header values may carry any byte).
pub fn lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    string(out, &String::from_utf8_lossy(bytes));
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

    /// Writes the key of the next field and returns the buffer for its value.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) {
        string(self.key(key), value);
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.key(key).extend_from_slice(b"null"),
        }
    }

    pub fn num(&mut self, key: &str, value: impl itoa::Integer) {
        let mut buf = itoa::Buffer::new();
        let text = buf.format(value);
        self.key(key).extend_from_slice(text.as_bytes());
    }

    pub fn bool(&mut self, key: &str, value: bool) {
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

    proptest! {
        #[test]
        fn any_string_escapes_as_serde_json_does(s in any::<String>()) {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn ascii_with_specials(s in "[ -~\\n\\r\\t\\x00-\\x1f\"\\\\]{0,64}") {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
