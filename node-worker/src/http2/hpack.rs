//! HPACK (RFC 7541): header blocks to header fields, with one dynamic table per direction, read
//! passively.
//!
//! A passive reader differs from an endpoint in two ways, and this decoder is written for both:
//! - It may join late. When the capture started after the connection did (or after a header block
//!   was lost or refused), the table holds entries it never saw. It then keeps what it can: entries
//!   inserted since are known (they are always the newest, so their indices are exact), the static
//!   table and literals are known, and a reference past the known entries resolves to an unknown
//!   field instead of failing the block. A name or value it cannot know is `None`, never invented.
//! - Its memory is ours, not the peers': the table is capped by our limit whatever size the peers
//!   agreed; entries evicted early for our cap become unknown, as after a late join.
//!
//! Crates were considered (`hpack`, `fluke-hpack`/`loona-hpack`, `httlib-hpack`, `hpack_codec`):
//! all fail a whole block on an index past the table, which a passive reader must survive.

use std::collections::VecDeque;
use std::ops::Deref;
use std::rc::Rc;

use super::huffman;

/// RFC 7541 section 4.1: an entry's size counts 32 bytes of overhead besides its name and value.
const ENTRY_OVERHEAD: usize = 32;

/// Fields a block's list has room for from the start (a request's or response's usual count).
const FIELDS_AT_ONCE: usize = 16;

/// The initial dynamic table size (SETTINGS_HEADER_TABLE_SIZE's default).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// The static table (RFC 7541 Appendix A), index 1 first.
pub(crate) const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a representation")]
    Truncated,
    #[error("integer too large")]
    Integer,
    #[error("index 0, or past every entry the table can hold")]
    Index,
    #[error("dynamic table size update above the allowed maximum, or after a field")]
    SizeUpdate,
    #[error(transparent)]
    Huffman(#[from] huffman::HuffmanError),
}

/// A decoded header field; `None` where the decoder cannot know (an entry from before it joined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Text>,
    pub value: Option<Text>,
}

/// A field's name or value. Static-table text is borrowed and dynamic-table text shared with its
/// entry: neither is allocated or copied per field (copying the entries a client refers to in each
/// request, its authority and user agent, was most of HPACK's allocations under h2load).
#[derive(Clone, Debug)]
pub enum Text {
    Static(&'static [u8]),
    Shared(Rc<[u8]>),
    Owned(Vec<u8>),
}

impl Deref for Text {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Text::Static(b) => b,
            Text::Shared(b) => b,
            Text::Owned(b) => b,
        }
    }
}

/// The same bytes, wherever they are kept.
impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl From<Vec<u8>> for Text {
    fn from(bytes: Vec<u8>) -> Text {
        Text::Owned(bytes)
    }
}

/// What a block decoded to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Block {
    pub fields: Vec<Field>,
    /// The header list's size as RFC 7541 counts it (names, values and 32 bytes per field), for
    /// fields kept; collection stops past the caller's limit, decoding does not (the table must
    /// follow the whole block).
    pub list_size: usize,
    /// Whether fields were left out for the limit.
    pub too_large: bool,
}

#[derive(Clone, Debug)]
struct Entry {
    /// `None`: the name came from an entry the decoder does not know.
    name: Option<Rc<[u8]>>,
    value: Rc<[u8]>,
}

impl Entry {
    /// The entry's size as far as known (exact when its name is known; a lower bound otherwise).
    fn size(&self) -> usize {
        self.name.as_ref().map_or(0, |n| n.len()) + self.value.len() + ENTRY_OVERHEAD
    }
}

/// One direction's decoder.
#[derive(Debug)]
pub struct Decoder {
    /// Known entries, newest first.
    entries: VecDeque<Entry>,
    /// The sum of the known entries' sizes (lower bounds for those with unknown names).
    size: usize,
    /// The table's maximum size as the peers set it.
    max_size: usize,
    /// The largest maximum the peer's decoder allows (SETTINGS_HEADER_TABLE_SIZE), when seen.
    settings_max: Option<usize>,
    /// Our cap on what we keep, whatever the peers use.
    cap: usize,
    /// Whether entries older than the known ones may exist (late join, a lost block, our cap).
    unknown_older: bool,
    /// Whether some known entry's size is only a lower bound (its name is unknown).
    inexact: bool,
}

impl Decoder {
    /// A decoder for a direction seen from its first header block (`from_start`) or joined late.
    /// It keeps at most `cap` bytes of entries (as RFC 7541 counts them).
    pub fn new(from_start: bool, cap: usize) -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            settings_max: None,
            cap,
            unknown_older: !from_start,
            inexact: false,
        }
    }

    /// Bytes of entries the table holds (as RFC 7541 counts them: a bound on its memory).
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Whether references may resolve to unknown fields.
    pub fn is_partial(&self) -> bool {
        self.unknown_older || self.inexact
    }

    /// The peer's decoder announced SETTINGS_HEADER_TABLE_SIZE: size updates beyond it are errors.
    pub fn set_settings_max(&mut self, max: u32) {
        self.settings_max = Some(max as usize);
    }

    /// A header block was lost (skipped, refused, cut by lost bytes): every entry now is uncertain.
    pub fn lose(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.unknown_older = true;
        self.inexact = false;
    }

    /// Decodes one complete header block, keeping fields while the list stays within
    /// `max_list_size`. On an error the table cannot be trusted any more: it is lost (see
    /// [`Decoder::lose`]) and the block's fields so far are returned with the error.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
    ) -> Result<Block, (Block, HpackError)> {
        // Room for the fields of a usual block at once (each takes at least one byte of it): growing
        // from empty reallocated twice per block, 2 % of the worker's instructions under HTTP/2.
        let mut out = Block {
            fields: Vec::with_capacity(block.len().min(FIELDS_AT_ONCE)),
            ..Block::default()
        };
        match self.decode_into(block, max_list_size, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.lose();
                Err((out, e))
            }
        }
    }

    fn decode_into(
        &mut self,
        block: &[u8],
        max_list: usize,
        out: &mut Block,
    ) -> Result<(), HpackError> {
        let mut input = Input { bytes: block };
        let mut fields_seen = false;
        // A Huffman string decodes to at most 8/5 of its length; a string longer than the block is
        // refused before decoding, so this is the most a string can take.
        let max_string = block.len().saturating_mul(8) / 5 + 1;
        while let Some(&first) = input.bytes.first() {
            if first & 0x80 != 0 {
                // Indexed field (section 6.1).
                let index = input.integer(7)?;
                let field = self.lookup(index)?;
                push(out, field, max_list);
                fields_seen = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (section 6.3): only before the first field.
                let size = input.integer(5)?;
                if fields_seen {
                    return Err(HpackError::SizeUpdate);
                }
                self.resize(size)?;
            } else {
                // Literal (section 6.2): with incremental indexing (01), without (0000) or never
                // indexed (0001).
                let (prefix, index_it) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name_index = input.integer(prefix)?;
                let name = if name_index == 0 {
                    Some(Text::Owned(input.string(max_string)?))
                } else {
                    self.lookup(name_index)?.name
                };
                let mut value = Text::Owned(input.string(max_string)?);
                if index_it {
                    // The entry keeps the text and the field shares it; a name from the dynamic
                    // table is shared by both entries. (A static name is copied into its entry:
                    // entries are added far less often than referred to.)
                    let name = name.as_ref().map(|n| match n {
                        Text::Shared(shared) => Rc::clone(shared),
                        other => Rc::from(&other[..]),
                    });
                    let shared: Rc<[u8]> = Rc::from(&value[..]);
                    value = Text::Shared(Rc::clone(&shared));
                    self.insert(Entry {
                        name,
                        value: shared,
                    });
                }
                push(
                    out,
                    Field {
                        name,
                        value: Some(value),
                    },
                    max_list,
                );
                fields_seen = true;
            }
        }
        Ok(())
    }

    /// The field at `index` (static table first, then the dynamic table, newest first).
    fn lookup(&self, index: usize) -> Result<Field, HpackError> {
        if index == 0 {
            return Err(HpackError::Index);
        }
        if let Some(&(name, value)) = STATIC.get(index - 1) {
            return Ok(Field {
                name: Some(Text::Static(name.as_bytes())),
                value: Some(Text::Static(value.as_bytes())),
            });
        }
        let i = index - 1 - STATIC.len();
        if let Some(e) = self.entries.get(i) {
            return Ok(Field {
                name: e.name.clone().map(Text::Shared),
                value: Some(Text::Shared(Rc::clone(&e.value))),
            });
        }
        // Past the known entries: an entry from before we joined, if any may exist and the table
        // can hold that many (each entry takes at least 32 bytes).
        // Joined late, the peers may have agreed a larger table than the default we assume: up to our
        // cap is believed.
        let max = if self.unknown_older && self.settings_max.is_none() {
            self.max_size.max(self.cap)
        } else {
            self.max_size
        };
        let room = max.saturating_sub(self.size) / ENTRY_OVERHEAD;
        if self.is_partial() && i < self.entries.len() + room.max(1) {
            return Ok(Field {
                name: None,
                value: None,
            });
        }
        Err(HpackError::Index)
    }

    fn resize(&mut self, size: usize) -> Result<(), HpackError> {
        // Without the peer's SETTINGS (a late join) any size is believed; ours caps what we keep.
        if self.settings_max.is_some_and(|max| size > max) {
            return Err(HpackError::SizeUpdate);
        }
        self.max_size = size;
        self.evict();
        Ok(())
    }

    fn insert(&mut self, entry: Entry) {
        if entry.name.is_none() {
            self.inexact = true;
        }
        let size = entry.size();
        if size > self.max_size {
            // Section 4.4: an entry larger than the table empties it and is not added. With an
            // unknown name, the size is a lower bound: the entry may or may not fit.
            self.entries.clear();
            self.size = 0;
            self.inexact = false;
            return;
        }
        self.size += size;
        self.entries.push_front(entry);
        self.evict();
    }

    /// Drops the oldest entries while the table is over its maximum (surely: sizes are lower
    /// bounds), or over our cap (then older entries exist that we do not know).
    fn evict(&mut self) {
        while self.size > self.max_size || self.size > self.cap {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.size();
            if self.size + e.size() <= self.max_size {
                self.unknown_older = true;
            }
        }
        if self.entries.is_empty() {
            self.size = 0;
        }
    }
}

fn push(out: &mut Block, field: Field, max_list: usize) {
    let len = field.name.as_ref().map_or(0, |n| n.len())
        + field.value.as_ref().map_or(0, |v| v.len())
        + ENTRY_OVERHEAD;
    if out.too_large || out.list_size + len > max_list {
        out.too_large = true;
        return;
    }
    out.list_size += len;
    out.fields.push(field);
}

/// The rest of a header block.
struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    /// An integer with an `n`-bit prefix (section 5.1), the first byte's other bits ignored.
    fn integer(&mut self, n: u32) -> Result<usize, HpackError> {
        let (&first, mut rest) = self.bytes.split_first().ok_or(HpackError::Truncated)?;
        let max_prefix = (1usize << n) - 1;
        let mut value = usize::from(first) & max_prefix;
        if value == max_prefix {
            let mut shift = 0u32;
            loop {
                let (&b, r) = rest.split_first().ok_or(HpackError::Truncated)?;
                rest = r;
                // Four continuation bytes reach 2^28: more than any size or index we accept.
                if shift > 21 {
                    return Err(HpackError::Integer);
                }
                value += usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        self.bytes = rest;
        Ok(value)
    }

    /// A string literal (section 5.2), Huffman-decoded when so marked.
    fn string(&mut self, max_len: usize) -> Result<Vec<u8>, HpackError> {
        let huffman = self.bytes.first().is_some_and(|b| b & 0x80 != 0);
        let len = self.integer(7)?;
        let raw = self.bytes.get(..len).ok_or(HpackError::Truncated)?;
        self.bytes = &self.bytes[len..];
        if !huffman {
            return Ok(raw.to_vec());
        }
        // The shortest code is five bits: room for the longest decoding, never regrown.
        let mut out = Vec::with_capacity(len * 8 / 5 + 1);
        huffman::decode(raw, &mut out, max_len)?;
        Ok(out)
    }
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

    fn texts(block: &Block) -> Vec<(String, String)> {
        let t = |b: &Option<Text>| match b {
            Some(b) => String::from_utf8(b.to_vec()).unwrap(),
            None => "?".to_string(),
        };
        block
            .fields
            .iter()
            .map(|f| (t(&f.name), t(&f.value)))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn table(d: &Decoder) -> Vec<(String, String)> {
        d.entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8(e.name.clone().unwrap().to_vec()).unwrap(),
                    String::from_utf8(e.value.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    /// A reference to a dynamic entry shares the entry's text (no copy per field); static text is
    /// borrowed; a literal's value is shared with the entry it adds.
    #[test]
    fn fields_share_the_tables_text() {
        let mut d = Decoder::new(true, 1 << 16);
        // user-agent: h2load (literal with incremental indexing, name index 58), then index 62.
        let mut block = vec![0x40 | 58, 6];
        block.extend_from_slice(b"h2load");
        let first = d.decode(&block, 1 << 16).unwrap();
        let second = d.decode(&[0x80 | 62, 0x82], 1 << 16).unwrap();
        let entry = &d.entries[0].value;
        for value in [&first.fields[0].value, &second.fields[0].value] {
            assert!(
                matches!(value, Some(Text::Shared(v)) if Rc::ptr_eq(v, entry)),
                "{value:?}"
            );
        }
        assert!(matches!(&second.fields[0].name, Some(Text::Shared(n)) if &n[..] == b"user-agent"));
        assert!(matches!(second.fields[1].value, Some(Text::Static(b"GET"))));
        assert_eq!(
            texts(&second),
            pairs(&[("user-agent", "h2load"), (":method", "GET")])
        );
    }

    #[test]
    fn rfc7541_c2_single_representations() {
        let mut d = Decoder::new(true, 1 << 16);
        let b = d
            .decode(
                &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
                1 << 16,
            )
            .unwrap();
        assert_eq!(texts(&b), pairs(&[("custom-key", "custom-header")]));
        assert_eq!(d.table_size(), 55);
        let mut d = Decoder::new(true, 1 << 16);
        let b = d
            .decode(&hex("040c 2f73 616d 706c 652f 7061 7468"), 1 << 16)
            .unwrap();
        assert_eq!(texts(&b), pairs(&[(":path", "/sample/path")]));
        assert_eq!(d.table_size(), 0);
        let b = d
            .decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"), 1 << 16)
            .unwrap();
        assert_eq!(texts(&b), pairs(&[("password", "secret")]));
        assert_eq!(d.table_size(), 0);
        let b = d.decode(&hex("82"), 1 << 16).unwrap();
        assert_eq!(texts(&b), pairs(&[(":method", "GET")]));
    }

    /// C.3 (without Huffman) and C.4 (with): three requests on one connection.
    #[test]
    fn rfc7541_c3_c4_requests() {
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut d = Decoder::new(true, 1 << 16);
            let b = d.decode(&hex(blocks[0]), 1 << 16).unwrap();
            assert_eq!(
                texts(&b),
                pairs(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com")
                ])
            );
            assert_eq!(d.table_size(), 57);
            let b = d.decode(&hex(blocks[1]), 1 << 16).unwrap();
            assert_eq!(
                texts(&b),
                pairs(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com"),
                    ("cache-control", "no-cache")
                ])
            );
            assert_eq!(d.table_size(), 110);
            let b = d.decode(&hex(blocks[2]), 1 << 16).unwrap();
            assert_eq!(
                texts(&b),
                pairs(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value")
                ])
            );
            assert_eq!(
                table(&d),
                pairs(&[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com")
                ])
            );
            assert_eq!(d.table_size(), 164);
            assert!(!d.is_partial());
        }
    }

    /// C.5 (without Huffman) and C.6 (with): three responses, a 256-byte table, evictions.
    #[test]
    fn rfc7541_c5_c6_responses_with_eviction() {
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        for blocks in [
            [
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "4803 3330 37c1 c0bf",
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
            ],
            [
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
        ] {
            let mut d = Decoder::new(true, 1 << 16);
            d.resize(256).unwrap();
            let b = d.decode(&hex(blocks[0]), 1 << 16).unwrap();
            assert_eq!(
                texts(&b),
                pairs(&[
                    (":status", "302"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", "https://www.example.com")
                ])
            );
            assert_eq!(d.table_size(), 222);
            let b = d.decode(&hex(blocks[1]), 1 << 16).unwrap();
            assert_eq!(
                texts(&b),
                pairs(&[
                    (":status", "307"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", "https://www.example.com")
                ])
            );
            assert_eq!(d.table_size(), 222);
            let b = d.decode(&hex(blocks[2]), 1 << 16).unwrap();
            assert_eq!(
                texts(&b),
                pairs(&[
                    (":status", "200"),
                    ("cache-control", "private"),
                    ("date", date2),
                    ("location", "https://www.example.com"),
                    ("content-encoding", "gzip"),
                    ("set-cookie", cookie)
                ])
            );
            assert_eq!(
                table(&d),
                pairs(&[("set-cookie", cookie), ("content-encoding", "gzip"), ("date", date2)])
            );
            assert_eq!(d.table_size(), 215);
            assert!(!d.is_partial());
        }
    }

    #[test]
    fn late_join_resolves_what_it_can() {
        // The third request of C.3 seen alone: two references (62: custom-key is inserted by this very
        // block, so 62 and 63 before it refer to entries from before the join).
        let mut d = Decoder::new(false, 1 << 16);
        let b = d
            .decode(
                &hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
                1 << 16,
            )
            .unwrap();
        assert_eq!(
            texts(&b),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                ("?", "?"),
                ("custom-key", "custom-value")
            ])
        );
        // Now the newest entry is known: index 62 resolves, 63 does not.
        let b = d.decode(&hex("bebf"), 1 << 16).unwrap();
        assert_eq!(
            texts(&b),
            pairs(&[("custom-key", "custom-value"), ("?", "?")])
        );
        // A literal whose name is an unknown entry: the value is known, the name is not.
        let b = d.decode(&hex("7f01 0178"), 1 << 16).unwrap();
        assert_eq!(texts(&b), pairs(&[("?", "x")]));
        let b = d.decode(&hex("be"), 1 << 16).unwrap();
        assert_eq!(texts(&b), pairs(&[("?", "x")]));
        // An index far past anything the table can hold is an error even so.
        let (_, e) = d.decode(&hex("ff ff ff 07"), 1 << 16).unwrap_err();
        assert_eq!(e, HpackError::Index);
        // From the start, the same reference is an error, and the table is then lost.
        let mut d = Decoder::new(true, 1 << 16);
        assert_eq!(
            d.decode(&hex("bf"), 1 << 16).unwrap_err().1,
            HpackError::Index
        );
        assert!(d.is_partial());
        assert_eq!(d.decode(&hex("bf"), 1 << 16).unwrap().fields.len(), 1);
    }

    #[test]
    fn our_cap_bounds_the_table_and_makes_it_partial() {
        let mut d = Decoder::new(true, 100);
        // custom-key: custom-header (55 bytes), twice: the first is evicted for our cap only.
        let insert = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        d.decode(&insert, 1 << 16).unwrap();
        assert!(!d.is_partial());
        d.decode(&insert, 1 << 16).unwrap();
        assert_eq!(d.table_size(), 55);
        assert!(d.is_partial());
        let b = d.decode(&hex("bebf"), 1 << 16).unwrap();
        assert_eq!(
            texts(&b),
            pairs(&[("custom-key", "custom-header"), ("?", "?")])
        );
    }

    #[test]
    fn limits_and_errors() {
        let mut d = Decoder::new(true, 1 << 16);
        // The list limit stops collecting, not decoding: the entry is still inserted.
        let b = d
            .decode(
                &hex("8240 0a63 7573 746f 6d2d 6b65 790d 6375 7374 6f6d 2d68 6561 6465 72"),
                50,
            )
            .unwrap();
        assert!(b.too_large);
        assert_eq!(b.fields.len(), 1);
        assert_eq!(d.table_size(), 55);
        // Size update after a field; above SETTINGS; truncated; bad integer.
        let mut d = Decoder::new(true, 1 << 16);
        assert_eq!(
            d.decode(&hex("823f e11f"), 1 << 16).unwrap_err().1,
            HpackError::SizeUpdate
        );
        let mut d = Decoder::new(true, 1 << 16);
        d.set_settings_max(100);
        assert_eq!(
            d.decode(&hex("3f e11f"), 1 << 16).unwrap_err().1,
            HpackError::SizeUpdate
        );
        let mut d = Decoder::new(true, 1 << 16);
        assert_eq!(
            d.decode(&hex("400a 6375"), 1 << 16).unwrap_err().1,
            HpackError::Truncated
        );
        assert_eq!(
            d.decode(&hex("ffff ffff ff0f"), 1 << 16).unwrap_err().1,
            HpackError::Integer
        );
        assert_eq!(
            d.decode(&hex("80"), 1 << 16).unwrap_err().1,
            HpackError::Index
        );
        // A size update to 0 empties the table.
        let mut d = Decoder::new(true, 1 << 16);
        d.decode(
            &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
            1 << 16,
        )
        .unwrap();
        d.decode(&hex("20"), 1 << 16).unwrap();
        assert_eq!(d.table_size(), 0);
    }

    proptest::proptest! {
        /// Any bytes: no panic, a table within our cap, a list within the limit.
        #[test]
        fn any_blocks(blocks in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 1..6),
                from_start in proptest::prelude::any::<bool>()) {
            let mut d = Decoder::new(from_start, 300);
            for block in blocks {
                let b = match d.decode(&block, 200) {
                    Ok(b) => b,
                    Err((b, _)) => b,
                };
                proptest::prop_assert!(b.list_size <= 200);
                proptest::prop_assert!(d.table_size() <= 300);
                let real: usize = d.entries.iter().map(Entry::size).sum();
                proptest::prop_assert_eq!(real, d.table_size());
            }
        }
    }
}
