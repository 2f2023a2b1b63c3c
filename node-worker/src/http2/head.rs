//! A decoded header block as a [`MessageHead`]: the pseudo-headers become the start line the rules and
//! the pair message read (`:method`, `:path`, `:status`), `:authority` becomes the `host` header an
//! HTTP/1 request would carry, and what the decoder could not know is listed, never invented.

use std::ops::Range;

use super::hpack::Field;
use crate::app::head::{MessageHead, StartLine, Version};

/// What an HTTP/2 message carries beside its head (written into the pair message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http2Extra {
    pub stream_id: u32,
    /// `:path` was an entry the decoder did not know (a late join): the path is unknown, not empty.
    pub path_unknown: bool,
    /// Headers whose value (and maybe name: `None`) the decoder did not know, in order.
    pub unknown_headers: Vec<Option<Vec<u8>>>,
    /// Trailers (a second header block ending the stream), in order.
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Http2Extra {
    /// Bytes kept beside the head (for budgets).
    pub fn memory_size(&self) -> usize {
        self.unknown_headers
            .iter()
            .map(|n| n.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            + self
                .trailers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    }
}

/// Why a header block cannot be a message head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// A pseudo-header missing, repeated or unknown, or a name that is not a lower-case token
    /// (RFC 9113 section 8.3 and 8.2.1).
    #[error("malformed HTTP/2 header block")]
    Malformed,
    /// `:method` or `:status` is an entry the decoder did not know: the rules cannot judge it.
    #[error("HTTP/2 pseudo-header unknown to a late-joining decoder")]
    Unknown,
}

/// Which bytes a token (RFC 9110 section 5.6.2) is made of: `TOKEN` any, `LOWER` all but upper-case
/// letters (an HTTP/2 field name). One lookup per byte: testing each byte against the punctuation
/// list was a fifth of building a head.
const TOKEN: u8 = 1;
const LOWER: u8 = 2;
static TOKEN_BYTES: [u8; 256] = token_bytes();

const fn token_bytes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let punctuation = matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        );
        if c.is_ascii_alphanumeric() || punctuation {
            t[b] = if c.is_ascii_uppercase() {
                TOKEN
            } else {
                TOKEN | LOWER
            };
        }
        b += 1;
    }
    t
}

/// Whether `text` is a token (RFC 9110 section 5.6.2): what a method or a field name is made of.
fn is_token(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .all(|&b| TOKEN_BYTES[usize::from(b)] & TOKEN != 0)
}

/// Whether `name` is a valid HTTP/2 field name: a token in lower case.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| TOKEN_BYTES[usize::from(b)] & LOWER != 0)
}

struct Builder {
    raw: Vec<u8>,
    headers: Vec<(Range<u32>, Range<u32>)>,
}

impl Builder {
    /// Room for every byte of `fields` and for `headers` headers: one allocation each, not the
    /// doublings of growing vectors (`Builder::header` took 7 % of the worker's profile under h2load).
    fn for_fields(fields: &[Field], headers: usize) -> Builder {
        let len = |b: &Option<super::hpack::Text>| b.as_ref().map_or(0, |b| b.len());
        let bytes = fields.iter().map(|f| len(&f.name) + len(&f.value)).sum();
        Builder {
            raw: Vec::with_capacity(bytes),
            headers: Vec::with_capacity(headers),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Range<u32> {
        let start = self.raw.len() as u32;
        self.raw.extend_from_slice(bytes);
        start..self.raw.len() as u32
    }

    fn header(&mut self, name: &[u8], value: &[u8]) {
        let n = self.put(name);
        let v = self.put(value);
        self.headers.push((n, v));
    }
}

/// The pseudo-headers of a block, and the regular fields after them.
#[derive(Default)]
struct Split<'f> {
    method: Option<Option<&'f [u8]>>,
    path: Option<Option<&'f [u8]>>,
    authority: Option<Option<&'f [u8]>>,
    status: Option<Option<&'f [u8]>>,
    scheme_or_protocol: bool,
    regular: Vec<&'f Field>,
    /// Fields whose name is unknown (an entry from before the decoder joined): a pseudo-header not
    /// found may be one of them.
    unknown_names: bool,
}

impl Split<'_> {
    /// A pseudo-header: its value, unknown (`Some(None)`: absent, but a field of unknown name may
    /// be it), or absent (`None`).
    fn pseudo<'f>(&self, slot: Option<Option<&'f [u8]>>) -> Option<Option<&'f [u8]>> {
        match slot {
            None if self.unknown_names => Some(None),
            other => other,
        }
    }
}

fn split(fields: &[Field]) -> Result<Split<'_>, HeadError> {
    let mut s = Split {
        regular: Vec::with_capacity(fields.len()),
        ..Split::default()
    };
    for f in fields {
        let Some(name) = f.name.as_deref() else {
            s.unknown_names = true;
            s.regular.push(f);
            continue;
        };
        if let Some(pseudo) = name.strip_prefix(b":") {
            let slot = match pseudo {
                b"method" => &mut s.method,
                b"path" => &mut s.path,
                b"authority" => &mut s.authority,
                b"status" => &mut s.status,
                b"scheme" | b"protocol" => {
                    s.scheme_or_protocol = true;
                    continue;
                }
                _ => return Err(HeadError::Malformed),
            };
            if slot.is_some() {
                return Err(HeadError::Malformed);
            }
            *slot = Some(f.value.as_deref());
        } else {
            if !valid_name(name) {
                return Err(HeadError::Malformed);
            }
            s.regular.push(f);
        }
    }
    Ok(s)
}

/// The regular fields into `b` (known ones) and `extra` (unknown ones).
fn regular(b: &mut Builder, extra: &mut Http2Extra, fields: &[&Field]) {
    for f in fields {
        match (&f.name, &f.value) {
            (Some(n), Some(v)) => b.header(n, v),
            (name, _) => extra
                .unknown_headers
                .push(name.as_deref().map(<[u8]>::to_vec)),
        }
    }
}

/// A request head from its header block.
pub fn request_head(
    fields: &[Field],
    stream_id: u32,
) -> Result<(MessageHead, Http2Extra), HeadError> {
    let s = split(fields)?;
    if s.status.is_some() {
        return Err(HeadError::Malformed);
    }
    let method = match s.pseudo(s.method) {
        None => return Err(HeadError::Malformed),
        Some(None) => return Err(HeadError::Unknown),
        Some(Some(m)) if is_token(m) => m,
        Some(Some(_)) => return Err(HeadError::Malformed),
    };
    let mut extra = Http2Extra {
        stream_id,
        ..Http2Extra::default()
    };
    let mut b = Builder::for_fields(fields, s.regular.len() + 1);
    let method = b.put(method);
    // CONNECT has no :path (RFC 9113 section 8.5); any other request must have one.
    let target = match s.pseudo(s.path) {
        Some(Some(p)) => b.put(p),
        Some(None) => {
            extra.path_unknown = true;
            b.put(b"")
        }
        None if method_is_connect(&b.raw, &method) => b.put(b""),
        None => return Err(HeadError::Malformed),
    };
    let has_host = s.regular.iter().any(|f| f.name.as_deref() == Some(b"host"));
    match s.authority {
        Some(Some(a)) if !has_host => b.header(b"host", a),
        Some(None) if !has_host => extra.unknown_headers.push(Some(b"host".to_vec())),
        _ => {}
    }
    regular(&mut b, &mut extra, &s.regular);
    let start = StartLine::Request { method, target };
    Ok((
        MessageHead::new(b.raw, start, Version::Http2, b.headers),
        extra,
    ))
}

fn method_is_connect(raw: &[u8], method: &Range<u32>) -> bool {
    raw.get(method.start as usize..method.end as usize) == Some(b"CONNECT")
}

/// A response head (final or interim) from its header block.
pub fn response_head(
    fields: &[Field],
    stream_id: u32,
) -> Result<(MessageHead, Http2Extra), HeadError> {
    let s = split(fields)?;
    if s.method.is_some() || s.path.is_some() || s.authority.is_some() || s.scheme_or_protocol {
        return Err(HeadError::Malformed);
    }
    let status = match s.pseudo(s.status) {
        None => return Err(HeadError::Malformed),
        Some(None) => return Err(HeadError::Unknown),
        Some(Some(text)) => parse_status(text).ok_or(HeadError::Malformed)?,
    };
    let mut extra = Http2Extra {
        stream_id,
        ..Http2Extra::default()
    };
    let mut b = Builder::for_fields(fields, s.regular.len());
    regular(&mut b, &mut extra, &s.regular);
    // HTTP/2 has no reason phrase.
    let start = StartLine::Response {
        status,
        reason: 0..0,
    };
    Ok((
        MessageHead::new(b.raw, start, Version::Http2, b.headers),
        extra,
    ))
}

/// Three digits, 100 to 999.
fn parse_status(text: &[u8]) -> Option<u16> {
    match text {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Trailers: regular fields only. Unknown ones are added to `extra`'s unknown headers.
pub fn trailers(fields: &[Field], extra: &mut Http2Extra) -> Result<(), HeadError> {
    for f in fields {
        match (&f.name, &f.value) {
            (Some(n), _) if n.starts_with(b":") || !valid_name(n) => {
                return Err(HeadError::Malformed)
            }
            (Some(n), Some(v)) => extra.trailers.push((n.to_vec(), v.to_vec())),
            (name, _) => extra
                .unknown_headers
                .push(name.as_deref().map(<[u8]>::to_vec)),
        }
    }
    Ok(())
}

/// Whether a block that begins a response is interim (1xx): the final response follows.
pub fn is_interim(head: &MessageHead) -> bool {
    head.status().is_some_and(|s| (100..200).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, value: &str) -> Field {
        Field {
            name: Some(name.as_bytes().to_vec().into()),
            value: Some(value.as_bytes().to_vec().into()),
        }
    }

    fn unknown(name: Option<&str>) -> Field {
        Field {
            name: name.map(|n| n.as_bytes().to_vec().into()),
            value: None,
        }
    }

    /// The table agrees with RFC 9110's tchar, byte by byte; names are lower case.
    #[test]
    fn token_bytes_as_rfc9110_says() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token(&[b, b'a']), tchar, "{b:#x}");
            assert_eq!(
                valid_name(&[b'a', b]),
                tchar && !b.is_ascii_uppercase(),
                "{b:#x}"
            );
        }
        assert!(!is_token(b"") && !valid_name(b""));
        assert!(is_token(b"GET") && !valid_name(b"Content-Type"));
        assert!(valid_name(b"x-request-id"));
    }

    #[test]
    fn a_request_with_authority_as_host() {
        let fields = [
            f(":method", "POST"),
            f(":scheme", "http"),
            f(":path", "/v1/users?id=3"),
            f(":authority", "users:8080"),
            f("content-type", "application/json"),
            unknown(Some("cookie")),
            unknown(None),
        ];
        let (head, extra) = request_head(&fields, 3).unwrap();
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.target(), b"/v1/users?id=3");
        assert_eq!(head.path(), b"/v1/users");
        assert_eq!(head.version, Version::Http2);
        assert_eq!(
            head.headers().collect::<Vec<_>>(),
            vec![
                (&b"host"[..], &b"users:8080"[..]),
                (b"content-type", b"application/json")
            ]
        );
        assert_eq!(extra.stream_id, 3);
        assert_eq!(extra.unknown_headers, vec![Some(b"cookie".to_vec()), None]);
        assert!(!extra.path_unknown);
    }

    #[test]
    fn unknown_pseudo_headers() {
        let (head, extra) =
            request_head(&[f(":method", "GET"), unknown(Some(":path"))], 1).unwrap();
        assert!(extra.path_unknown);
        assert_eq!(head.target(), b"");
        // HPACK never knows a name without its value: an unknown entry may be the :path.
        let (_, extra) = request_head(&[f(":method", "GET"), unknown(None)], 1).unwrap();
        assert!(extra.path_unknown);
        assert_eq!(extra.unknown_headers, vec![None]);
        assert_eq!(
            request_head(&[unknown(None), f(":path", "/")], 1).unwrap_err(),
            HeadError::Unknown
        );
        assert_eq!(
            response_head(&[unknown(None)], 1).unwrap_err(),
            HeadError::Unknown
        );
        assert_eq!(
            request_head(&[unknown(Some(":method")), f(":path", "/")], 1).unwrap_err(),
            HeadError::Unknown
        );
        assert_eq!(
            response_head(&[unknown(Some(":status"))], 1).unwrap_err(),
            HeadError::Unknown
        );
    }

    #[test]
    fn malformed_blocks() {
        for fields in [
            vec![f(":path", "/")],
            vec![f(":method", "GET")],
            vec![f(":method", "GET"), f(":path", "/"), f(":path", "/x")],
            vec![f(":method", "GET"), f(":path", "/"), f(":status", "200")],
            vec![f(":method", "GET"), f(":path", "/"), f("Upper", "x")],
            vec![f(":method", "GET"), f(":path", "/"), f("bad name", "x")],
            vec![f(":method", "G T"), f(":path", "/")],
            vec![f(":method", "GET"), f(":path", "/"), f(":x", "1")],
        ] {
            assert_eq!(
                request_head(&fields, 1).unwrap_err(),
                HeadError::Malformed,
                "{fields:?}"
            );
        }
        for fields in [
            vec![f(":status", "20")],
            vec![f(":status", "2000")],
            vec![f(":status", "abc")],
            vec![f(":status", "099")],
            vec![f(":status", "200"), f(":path", "/")],
            vec![],
        ] {
            assert_eq!(
                response_head(&fields, 1).unwrap_err(),
                HeadError::Malformed,
                "{fields:?}"
            );
        }
        let (head, _) =
            request_head(&[f(":method", "CONNECT"), f(":authority", "a:443")], 1).unwrap();
        assert_eq!(head.target(), b"");
    }

    #[test]
    fn responses_and_trailers() {
        let (head, _) = response_head(&[f(":status", "204"), f("server", "x")], 1).unwrap();
        assert_eq!(head.status(), Some(204));
        assert_eq!(head.reason(), b"");
        assert!(!is_interim(&head));
        let (interim, _) = response_head(&[f(":status", "103")], 1).unwrap();
        assert!(is_interim(&interim));
        let mut extra = Http2Extra::default();
        trailers(&[f("grpc-status", "0"), unknown(None)], &mut extra).unwrap();
        assert_eq!(
            extra.trailers,
            vec![(b"grpc-status".to_vec(), b"0".to_vec())]
        );
        assert_eq!(extra.unknown_headers, vec![None]);
        assert_eq!(
            trailers(&[f(":status", "200")], &mut extra),
            Err(HeadError::Malformed)
        );
    }
}
