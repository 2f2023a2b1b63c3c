//! A parsed HTTP/1.x message head (start line and headers), owning its bytes.
//!
//! The head is parsed once with httparse; afterwards only byte ranges into the owned copy are kept, so a
//! head costs two allocations however many headers it has.

use std::mem::MaybeUninit;
use std::ops::Range;

/// Headers beyond this many make a message unparseable (and dropped, counted).
const MAX_HEADERS: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Range<u32>,
        target: Range<u32>,
    },
    Response {
        status: u16,
        reason: Range<u32>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHead {
    raw: Vec<u8>,
    pub start: StartLine,
    /// `HTTP/1.<minor>`.
    pub minor_version: u8,
    headers: Vec<(Range<u32>, Range<u32>)>,
}

/// Why a head could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP head: {0}")]
pub struct HeadError(pub String);

fn config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .ignore_invalid_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true);
    config
}

/// Room for httparse's header slices, left uninitialised: httparse writes the ones it uses, and
/// initialising all of them (4 KiB) cost more than parsing a typical head.
fn header_storage<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

fn span(base: &[u8], part: &[u8]) -> Range<u32> {
    // Both slices come from the same buffer: the offset is a plain address difference.
    let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    start as u32..(start + part.len()) as u32
}

impl MessageHead {
    /// Parses `raw`, which must hold exactly one complete head (ending with the empty line).
    pub fn parse_request(raw: Vec<u8>) -> Result<MessageHead, HeadError> {
        let mut storage = header_storage();
        let mut req = httparse::Request::new(&mut []);
        let status = config()
            .parse_request_with_uninit_headers(&mut req, &raw, &mut storage)
            .map_err(|e| HeadError(e.to_string()))?;
        if status.is_partial() {
            return Err(HeadError("incomplete head".into()));
        }
        let (Some(method), Some(path), Some(minor_version)) = (req.method, req.path, req.version)
        else {
            return Err(HeadError("incomplete request line".into()));
        };
        let start = StartLine::Request {
            method: span(&raw, method.as_bytes()),
            target: span(&raw, path.as_bytes()),
        };
        let headers = req
            .headers
            .iter()
            .map(|h| (span(&raw, h.name.as_bytes()), span(&raw, h.value)))
            .collect();
        Ok(MessageHead {
            start,
            minor_version,
            headers,
            raw,
        })
    }

    /// Parses `raw`, which must hold exactly one complete response head.
    pub fn parse_response(mut raw: Vec<u8>) -> Result<MessageHead, HeadError> {
        // Some servers (seen from nginx) write the protocol name in lower case; httparse wants it upper.
        if raw.len() >= 5 && raw[..5].eq_ignore_ascii_case(b"HTTP/") {
            raw[..4].copy_from_slice(b"HTTP");
        }
        let mut storage = header_storage();
        let mut res = httparse::Response::new(&mut []);
        let status = config()
            .parse_response_with_uninit_headers(&mut res, &raw, &mut storage)
            .map_err(|e| HeadError(e.to_string()))?;
        if status.is_partial() {
            return Err(HeadError("incomplete head".into()));
        }
        let (Some(code), Some(minor_version)) = (res.code, res.version) else {
            return Err(HeadError("incomplete status line".into()));
        };
        let reason = match res.reason {
            Some(r) if !r.is_empty() => span(&raw, r.as_bytes()),
            _ => 0..0,
        };
        let headers = res
            .headers
            .iter()
            .map(|h| (span(&raw, h.name.as_bytes()), span(&raw, h.value)))
            .collect();
        Ok(MessageHead {
            start: StartLine::Response {
                status: code,
                reason,
            },
            minor_version,
            headers,
            raw,
        })
    }

    fn slice(&self, r: &Range<u32>) -> &[u8] {
        self.raw
            .get(r.start as usize..r.end as usize)
            .unwrap_or_default()
    }

    /// The head's size on the wire.
    pub fn wire_len(&self) -> usize {
        self.raw.len()
    }

    /// Bytes this head keeps in memory (for budgets).
    pub fn memory_size(&self) -> usize {
        self.raw.capacity()
            + self.headers.capacity() * std::mem::size_of::<(Range<u32>, Range<u32>)>()
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> &[u8] {
        match &self.start {
            StartLine::Request { method, .. } => self.slice(method),
            StartLine::Response { .. } => b"",
        }
    }

    pub fn target(&self) -> &[u8] {
        match &self.start {
            StartLine::Request { target, .. } => self.slice(target),
            StartLine::Response { .. } => b"",
        }
    }

    /// The request target without its query string.
    pub fn path(&self) -> &[u8] {
        let target = self.target();
        let end = memchr::memchr2(b'?', b'#', target).unwrap_or(target.len());
        &target[..end]
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> &[u8] {
        match &self.start {
            StartLine::Response { reason, .. } => self.slice(reason),
            StartLine::Request { .. } => b"",
        }
    }

    /// Headers in order, with their original case and duplicates.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (self.slice(n), self.slice(v)))
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers_named(name).next()
    }

    pub fn headers_named<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s [u8]> + use<'s, 'n> {
        // Lengths first: most names differ in length, and comparing ranges costs less than slicing.
        self.headers
            .iter()
            .filter(move |(n, _)| n.len() == name.len())
            .filter(move |(n, _)| self.slice(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.slice(v))
    }

    /// All values of a header joined with `, ` (a list header may be repeated: RFC 9110 section 5.3).
    pub fn header_joined(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        let mut values = self.headers_named(name);
        let first = values.next()?;
        let mut rest = values.peekable();
        if rest.peek().is_none() {
            return Some(std::borrow::Cow::Borrowed(first));
        }
        let mut joined = first.to_vec();
        for v in rest {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(v);
        }
        Some(std::borrow::Cow::Owned(joined))
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Whether a comma-separated header (Connection, Transfer-Encoding, ...) lists `token`.
    pub fn header_lists(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head() {
        let raw = b"POST /v1/users?id=3 HTTP/1.1\r\nHost: users\r\ncontent-type: application/json\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let head = MessageHead::parse_request(raw.to_vec()).unwrap();
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.target(), b"/v1/users?id=3");
        assert_eq!(head.path(), b"/v1/users");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.header("Content-Type"), Some(&b"application/json"[..]));
        assert_eq!(
            head.headers_named("x-a").collect::<Vec<_>>(),
            vec![&b"1"[..], &b"2"[..]]
        );
        assert_eq!(head.headers().count(), 4);
        assert_eq!(head.wire_len(), raw.len());
    }

    #[test]
    fn response_head_and_lists() {
        let raw = b"HTTP/1.0 200 OK\nTransfer-Encoding: gzip, Chunked\nConnection: close\n\n";
        let head = MessageHead::parse_response(raw.to_vec()).unwrap();
        assert_eq!(head.status(), Some(200));
        assert_eq!(head.reason(), b"OK");
        assert_eq!(head.minor_version, 0);
        assert!(head.header_lists("transfer-encoding", "chunked"));
        assert!(head.header_lists("Connection", "close"));
        assert!(!head.header_lists("Connection", "keep-alive"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(MessageHead::parse_request(b"\x16\x03\x01\x02\x00\r\n\r\n".to_vec()).is_err());
        assert!(MessageHead::parse_response(b"HTTP/1.1 2XX OK\r\n\r\n".to_vec()).is_err());
        assert!(MessageHead::parse_request(b"GET / HTTP/1.1\r\n".to_vec()).is_err());
    }

    #[test]
    fn too_many_headers_is_an_error() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            raw.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(MessageHead::parse_request(raw).is_err());
    }
}
