//! A message head (start line and headers) as the rules and the pair message read it, whatever
//! protocol carried it: HTTP/1 parses one from its text (`http1::head`), HTTP/2 will build one from a
//! decoded header block.
//!
//! The head owns its bytes and keeps only byte ranges into them, so a head costs two allocations
//! however many headers it has.

use std::ops::Range;

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

/// The protocol version a message was sent with, as the pair message names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHead {
    raw: Vec<u8>,
    pub start: StartLine,
    pub version: Version,
    headers: Vec<(Range<u32>, Range<u32>)>,
}

impl MessageHead {
    /// A head over `raw`: the start line's parts and each header's name and value are ranges of it.
    pub fn new(
        raw: Vec<u8>,
        start: StartLine,
        version: Version,
        headers: Vec<(Range<u32>, Range<u32>)>,
    ) -> MessageHead {
        MessageHead {
            raw,
            start,
            version,
            headers,
        }
    }

    fn slice(&self, r: &Range<u32>) -> &[u8] {
        self.raw
            .get(r.start as usize..r.end as usize)
            .unwrap_or_default()
    }

    /// The size of the bytes the head was read from (for HTTP/1, its size on the wire).
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
    fn versions_as_the_pair_message_writes_them() {
        assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
        assert_eq!(Version::Http2.as_str(), "HTTP/2");
    }

    #[test]
    fn ranges_out_of_the_raw_bytes_read_as_empty() {
        let head = MessageHead::new(
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            StartLine::Request {
                method: 0..3,
                target: 40..50,
            },
            Version::Http11,
            vec![(0..3, 99..100)],
        );
        assert_eq!(head.method(), b"GET");
        assert_eq!(head.target(), b"");
        assert_eq!(
            head.headers().collect::<Vec<_>>(),
            vec![(&b"GET"[..], &b""[..])]
        );
    }
}
