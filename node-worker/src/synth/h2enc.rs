//! HPACK encoding as real peers do it, for synthetic HTTP/2 traffic: a client's encoder in the way
//! of nghttp2 (h2load, curl, nghttp: fields go into the dynamic table and are referenced after,
//! except `:path`, `content-length` and a few others that change every time), and a server's in the
//! way of nginx (no dynamic table: literals without indexing, names from the static table). Values
//! are Huffman-coded when that is shorter, as both do.

use std::collections::VecDeque;

use crate::http2::hpack::{DEFAULT_TABLE_SIZE, STATIC};
use crate::http2::huffman;

/// RFC 7541 section 4.1.
const ENTRY_OVERHEAD: usize = 32;

/// Names nghttp2 never indexes (`hd_deflate_should_indexing`): their values change every time.
const NOT_INDEXED: [&str; 8] = [
    ":path",
    "age",
    "content-length",
    "etag",
    "if-modified-since",
    "if-none-match",
    "location",
    "set-cookie",
];

/// One direction's encoder.
#[derive(Debug)]
pub struct Encoder {
    /// Entries, newest first.
    entries: VecDeque<(String, String)>,
    size: usize,
    /// Whether the dynamic table is used at all (nghttp2) or not (nginx).
    indexing: bool,
}

impl Encoder {
    /// A client's encoder, nghttp2's way.
    pub fn nghttp2() -> Encoder {
        Encoder {
            entries: VecDeque::new(),
            size: 0,
            indexing: true,
        }
    }

    /// A server's encoder, nginx's way.
    pub fn nginx() -> Encoder {
        Encoder {
            indexing: false,
            ..Encoder::nghttp2()
        }
    }

    /// A header block of `fields`.
    pub fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            self.field(&mut out, name, value);
        }
        out
    }

    fn field(&mut self, out: &mut Vec<u8>, name: &str, value: &str) {
        let exact = STATIC
            .iter()
            .position(|&(n, v)| n == name && v == value)
            .map(|i| i + 1)
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|(n, v)| n == name && v == value)
                    .map(|i| i + 1 + STATIC.len())
            });
        if let Some(index) = exact {
            integer(out, 0x80, 7, index);
            return;
        }
        let name_index = STATIC
            .iter()
            .position(|&(n, _)| n == name)
            .map(|i| i + 1)
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|i| i + 1 + STATIC.len())
            })
            .unwrap_or(0);
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        let index_it =
            self.indexing && !NOT_INDEXED.contains(&name) && size <= DEFAULT_TABLE_SIZE * 3 / 4;
        if index_it {
            integer(out, 0x40, 6, name_index);
        } else {
            integer(out, 0x00, 4, name_index);
        }
        if name_index == 0 {
            string(out, name.as_bytes());
        }
        string(out, value.as_bytes());
        if index_it {
            self.entries
                .push_front((name.to_string(), value.to_string()));
            self.size += size;
            while self.size > DEFAULT_TABLE_SIZE {
                let Some((n, v)) = self.entries.pop_back() else {
                    break;
                };
                self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
            }
        }
    }
}

/// An integer with an `n`-bit prefix (RFC 7541 section 5.1) after the bits of `flags`.
fn integer(out: &mut Vec<u8>, flags: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// A string literal, Huffman-coded when shorter (section 5.2).
fn string(out: &mut Vec<u8>, s: &[u8]) {
    let coded = huffman::encode(s);
    if coded.len() < s.len() {
        integer(out, 0x80, 7, coded.len());
        out.extend_from_slice(&coded);
    } else {
        integer(out, 0x00, 7, s.len());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::hpack::Decoder;

    fn decoded(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
        let text = |b: &Option<crate::http2::hpack::Text>| {
            String::from_utf8(b.as_deref().unwrap().to_vec()).unwrap()
        };
        d.decode(block, 1 << 20)
            .unwrap()
            .fields
            .iter()
            .map(|f| (text(&f.name), text(&f.value)))
            .collect()
    }

    #[test]
    fn the_decoder_reads_what_the_encoders_write_and_the_client_refers_to_its_table() {
        let path = "/api/v2/items/".to_string() + &"7".repeat(200);
        let request = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "10.93.0.2:8082"),
            (":path", path.as_str()),
            ("user-agent", "h2load nghttp2/1.52.0"),
            ("x-custom", "a value"),
        ];
        let mut client = Encoder::nghttp2();
        let mut d = Decoder::new(true, 1 << 16);
        let first = client.block(&request);
        let second = client.block(&request);
        let expected: Vec<(String, String)> = request
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded(&mut d, &first), expected);
        assert_eq!(decoded(&mut d, &second), expected);
        // The second time, authority, user agent and the custom field are one byte each; :path is a
        // literal again (never indexed), its value Huffman-coded (digits: 5 bits instead of 8).
        let path_len = 1 + 2 + huffman::encode(path.as_bytes()).len();
        assert_eq!(second.len(), 2 + 3 + path_len, "{second:02x?}");
        assert!(first.len() > second.len() + 30);

        let mut server = Encoder::nginx();
        let mut d = Decoder::new(true, 1 << 16);
        let response = [
            (":status", "200"),
            ("server", "nginx/1.22.1"),
            ("content-type", "application/json"),
        ];
        let a = server.block(&response);
        let b = server.block(&response);
        assert_eq!(a, b, "nothing indexed");
        assert_eq!(a[0], 0x88, ":status 200 from the static table");
        assert_eq!(decoded(&mut d, &a).len(), 3);
        assert_eq!(decoded(&mut d, &b)[2].1, "application/json");
    }

    #[test]
    fn integers_past_their_prefix() {
        let mut out = Vec::new();
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }
}
