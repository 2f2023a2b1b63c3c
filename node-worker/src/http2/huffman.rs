//! The Huffman code of HPACK string literals (RFC 7541 section 5.2 and Appendix B).
//!
//! The code is canonical (within one length, codes count up in symbol order). Codes of up to
//! [`FAST_BITS`] bits (every letter, digit and common punctuation) are decoded with one lookup in a
//! 16 KiB table indexed by the next bits, which also gives the symbol after it when both codes fit
//! (two letters or digits, five to six bits each: most of a path or a date); the longer ones (rare
//! bytes) by comparing the code read so far with the first code of each length. The bit-by-bit walk alone cost a tenth of the worker's CPU under
//! an HTTP/2 load (`make bench`, h2load), where every request's `:path` is a Huffman literal.

use std::sync::OnceLock;

use super::huffman_table::CODES;

/// The end-of-string symbol: never valid inside a string.
const EOS: u16 = 256;
/// The longest code.
const MAX_LEN: u32 = 30;
/// Codes this long or shorter are found with one table lookup.
const FAST_BITS: u32 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("a Huffman code that is not in the table, or the EOS symbol")]
    BadCode,
    #[error("Huffman padding longer than 7 bits or not the EOS code's prefix")]
    BadPadding,
    #[error("Huffman-decoded string longer than allowed")]
    TooLong,
}

/// For each code length: the first code of that length, how many codes have it, and where its
/// symbols start in the symbols sorted by (length, symbol). And the fast table: for each value of the
/// next [`FAST_BITS`] bits, the symbol whose code they start with (`symbol | length << 9`, or 0), and
/// when the following symbol's code fits in them too, that symbol and both codes' length
/// (`| second << 14 | total << 22`).
struct Canonical {
    first_code: [u32; MAX_LEN as usize + 1],
    count: [u32; MAX_LEN as usize + 1],
    start: [u16; MAX_LEN as usize + 1],
    symbols: [u16; 257],
    fast: [u32; 1 << FAST_BITS],
}

fn canonical() -> &'static Canonical {
    static TABLE: OnceLock<Canonical> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut c = Canonical {
            first_code: [0; MAX_LEN as usize + 1],
            count: [0; MAX_LEN as usize + 1],
            start: [0; MAX_LEN as usize + 1],
            symbols: [0; 257],
            fast: [0; 1 << FAST_BITS],
        };
        let mut order: Vec<u16> = (0..257).collect();
        order.sort_by_key(|&s| (CODES[usize::from(s)].1, s));
        for (i, &s) in order.iter().enumerate() {
            let (code, len) = CODES[usize::from(s)];
            let len_bits = u32::from(len);
            let len = usize::from(len);
            if c.count[len] == 0 {
                c.first_code[len] = code;
                c.start[len] = i as u16;
            }
            c.count[len] += 1;
            c.symbols[i] = s;
            if len_bits <= FAST_BITS {
                // Every value of the next FAST_BITS bits that starts with this code.
                let first = (code << (FAST_BITS - len_bits)) as usize;
                let entry = u32::from(s) | len_bits << 9;
                c.fast[first..first + (1 << (FAST_BITS - len_bits))].fill(entry);
            }
        }
        for i in 0..c.fast.len() {
            let len = (c.fast[i] >> 9) & 0x1f;
            if len == 0 || len >= FAST_BITS {
                continue;
            }
            // The bits after the first code, at the top of an index (zeros after them): a code that
            // fits in them is the one its entry names.
            let after = (i << len) & ((1 << FAST_BITS) - 1);
            let next = c.fast[after];
            let next_len = (next >> 9) & 0x1f;
            if next_len != 0 && len + next_len <= FAST_BITS {
                c.fast[i] |= (next & 0xff) << 14 | (len + next_len) << 22;
            }
        }
        c
    })
}

impl Canonical {
    /// The symbol whose code starts `bits` (most significant first, `available` of them valid, the rest
    /// zero) and the code's length; `None` when no code fits within the valid bits.
    fn next_symbol(&self, bits: u64, available: u32) -> Option<(u16, u32)> {
        let entry = self.fast[(bits >> (64 - FAST_BITS)) as usize];
        let len = (entry >> 9) & 0x1f;
        if len != 0 {
            // A code longer than what is left starts with what is left: no shorter code can (the code
            // is prefix-free).
            return (len <= available).then_some(((entry & 0x1ff) as u16, len));
        }
        for len in FAST_BITS + 1..=MAX_LEN.min(available) {
            let code = (bits >> (64 - len)) as u32;
            let l = len as usize;
            let offset = code.wrapping_sub(self.first_code[l]);
            if self.count[l] > 0 && code >= self.first_code[l] && offset < self.count[l] {
                return Some((
                    self.symbols[usize::from(self.start[l]) + offset as usize],
                    len,
                ));
            }
        }
        None
    }
}

/// Decodes `input`, appending at most `max_len` bytes to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>, max_len: usize) -> Result<(), HuffmanError> {
    let table = canonical();
    let limit = out.len().saturating_add(max_len);
    // The next bits of the input, most significant first; `available` of them are valid.
    // The bits past `available` are zero.
    let (mut bits, mut available) = (0u64, 0u32);
    let mut rest = input;
    loop {
        if available <= 56 {
            (bits, available, rest) = refill(bits, available, rest);
        }
        if available == 0 {
            return Ok(());
        }
        // Two symbols at once when both codes are short and within the valid bits.
        let entry = table.fast[(bits >> (64 - FAST_BITS)) as usize];
        let total = entry >> 22;
        if total != 0 && total <= available && out.len() + 2 <= limit {
            out.extend_from_slice(&[entry as u8, (entry >> 14) as u8]);
            bits <<= total;
            available -= total;
            continue;
        }
        match table.next_symbol(bits, available) {
            Some((EOS, _)) => return Err(HuffmanError::BadCode),
            Some((symbol, len)) => {
                if out.len() >= limit {
                    return Err(HuffmanError::TooLong);
                }
                out.push(symbol as u8);
                bits <<= len;
                available -= len;
            }
            // More than 56 bits are left unless the input is used up: no code is that long.
            None if available > MAX_LEN => return Err(HuffmanError::BadCode),
            // What is left is padding: at most 7 bits, all ones (the most significant bits of EOS).
            None if available > 7 || bits >> (64 - available) != (1u64 << available) - 1 => {
                return Err(HuffmanError::BadPadding)
            }
            None => return Ok(()),
        }
    }
}

/// Tops `bits` (`available` of them valid, the rest zero) up with whole bytes of `rest`: as many as
/// fit, at least one while any is left. Eight bytes at a time while eight are left, one load instead
/// of a loop per byte (which was half the decoder's instructions under h2load).
#[inline]
fn refill(mut bits: u64, mut available: u32, rest: &[u8]) -> (u64, u32, &[u8]) {
    let room = ((64 - available) / 8) as usize;
    if let Some((word, _)) = rest.split_first_chunk::<8>() {
        let filled = available + 8 * room as u32;
        // The next `room` bytes below the valid bits; what follows them in the word cleared.
        bits |= u64::from_be_bytes(*word) >> available;
        bits &= !u64::MAX.checked_shr(filled).unwrap_or(0);
        return (bits, filled, &rest[room..]);
    }
    let mut rest = rest;
    while available <= 56 {
        let Some((&byte, tail)) = rest.split_first() else {
            break;
        };
        bits |= u64::from(byte) << (56 - available);
        available += 8;
        rest = tail;
    }
    (bits, available, rest)
}

/// `input` Huffman-coded (what an encoder sends; for synthetic traffic and the tests).
pub(crate) fn encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in input {
        let (code, len) = CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn dec(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out, 1 << 20).map(|()| out)
    }

    #[test]
    fn rfc7541_appendix_c4_and_c6_strings() {
        for (encoded, text) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("640e ff", "307"),
            ("9bd9 ab", "gzip"),
        ] {
            assert_eq!(dec(&hex(encoded)).unwrap(), text.as_bytes(), "{text}");
            assert_eq!(encode(text.as_bytes()), hex(encoded), "{text}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(dec(&encode(&all)).unwrap(), all);
        assert_eq!(dec(&[]).unwrap(), b"");
    }

    #[test]
    fn bad_padding_eos_and_length() {
        // 'a' (00011) then padding 000: not ones.
        assert_eq!(dec(&[0b0001_1000]), Err(HuffmanError::BadPadding));
        // A whole byte of ones is padding longer than 7 bits.
        assert_eq!(dec(&[0b0001_1111, 0xff]), Err(HuffmanError::BadPadding));
        // EOS (30 ones) inside a string.
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xfc]), Err(HuffmanError::BadCode));
        let mut out = Vec::new();
        assert_eq!(
            decode(&encode(b"abcdef"), &mut out, 3),
            Err(HuffmanError::TooLong)
        );
    }

    /// Strings of short codes (decoded two at a time) and long ones, cut by the length limit at
    /// every point: the limit holds exactly, wherever it falls in a pair.
    #[test]
    fn pairs_of_short_codes_and_the_limit() {
        let text = b"/api/v2/items/1234?sort=asc&page=7 Tue, 14 Nov 2023 22:13:20 GMT \x00\xff{}";
        let coded = encode(text);
        assert_eq!(dec(&coded).unwrap(), text);
        for max in 0..text.len() {
            let mut out = Vec::new();
            assert_eq!(
                decode(&coded, &mut out, max),
                Err(HuffmanError::TooLong),
                "{max}"
            );
            assert!(out.len() <= max);
        }
        let mut out = Vec::new();
        assert_eq!(decode(&coded, &mut out, text.len()), Ok(()));
        // Every pair of bytes, then its padding.
        for a in 0..=255u8 {
            let two: Vec<u8> = (0..=255u8).flat_map(|b| [a, b]).collect();
            assert_eq!(dec(&encode(&two)).unwrap(), two, "{a}");
        }
    }

    /// The plain reading of the RFC, bit by bit: what [`decode`] must agree with on any input.
    fn decode_bitwise(input: &[u8], max_len: usize) -> Result<Vec<u8>, HuffmanError> {
        let table = canonical();
        let mut out = Vec::new();
        let (mut code, mut len) = (0u32, 0usize);
        for &byte in input {
            for bit in (0..8).rev() {
                code = (code << 1) | u32::from((byte >> bit) & 1);
                len += 1;
                if len > MAX_LEN as usize {
                    return Err(HuffmanError::BadCode);
                }
                let offset = code.wrapping_sub(table.first_code[len]);
                if table.count[len] > 0
                    && code >= table.first_code[len]
                    && offset < table.count[len]
                {
                    let symbol = table.symbols[usize::from(table.start[len]) + offset as usize];
                    if symbol == EOS {
                        return Err(HuffmanError::BadCode);
                    }
                    if out.len() >= max_len {
                        return Err(HuffmanError::TooLong);
                    }
                    out.push(symbol as u8);
                    code = 0;
                    len = 0;
                }
            }
        }
        if len > 7 || code != (1u32 << len) - 1 {
            return Err(HuffmanError::BadPadding);
        }
        Ok(out)
    }

    proptest::proptest! {
        #[test]
        fn same_as_bit_by_bit(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
                              text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
                              max_len in 0usize..64) {
            // Random bytes (mostly bad codes and padding) and real codes with random bytes after them.
            let mut coded = encode(&text);
            coded.extend_from_slice(&bytes[..bytes.len().min(3)]);
            for input in [&bytes, &coded] {
                let mut out = Vec::new();
                let fast = decode(input, &mut out, max_len).map(|()| out);
                proptest::prop_assert_eq!(fast, decode_bitwise(input, max_len));
            }
        }

        #[test]
        fn no_panic_and_bounded(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            let _ = decode(&bytes, &mut out, 10);
            proptest::prop_assert!(out.len() <= 10);
        }

        #[test]
        fn round_trip(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(dec(&encode(&bytes)).unwrap(), bytes);
        }
    }
}
