//! Parsing an HTTP/1.x message head (start line and headers) into a [`MessageHead`].
//!
//! The head is parsed once with httparse; afterwards only byte ranges into the owned copy are kept.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::app::head::{MessageHead, StartLine, Version};

/// Headers beyond this many make a message unparseable (and dropped, counted).
const MAX_HEADERS: usize = 128;

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

/// `HTTP/1.<minor>`: httparse reads only 0 and 1.
fn version(minor: u8) -> Version {
    if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    }
}

/// Parses `raw`, which must hold exactly one complete request head (ending with the empty line).
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
    Ok(MessageHead::new(
        raw,
        start,
        version(minor_version),
        headers,
    ))
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
    let start = StartLine::Response {
        status: code,
        reason,
    };
    Ok(MessageHead::new(
        raw,
        start,
        version(minor_version),
        headers,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head() {
        let raw = b"POST /v1/users?id=3 HTTP/1.1\r\nHost: users\r\ncontent-type: application/json\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let head = parse_request(raw.to_vec()).unwrap();
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.target(), b"/v1/users?id=3");
        assert_eq!(head.path(), b"/v1/users");
        assert_eq!(head.version, Version::Http11);
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
        let head = parse_response(raw.to_vec()).unwrap();
        assert_eq!(head.status(), Some(200));
        assert_eq!(head.reason(), b"OK");
        assert_eq!(head.version, Version::Http10);
        assert!(head.header_lists("transfer-encoding", "chunked"));
        assert!(head.header_lists("Connection", "close"));
        assert!(!head.header_lists("Connection", "keep-alive"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_request(b"\x16\x03\x01\x02\x00\r\n\r\n".to_vec()).is_err());
        assert!(parse_response(b"HTTP/1.1 2XX OK\r\n\r\n".to_vec()).is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\n".to_vec()).is_err());
    }

    #[test]
    fn too_many_headers_is_an_error() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            raw.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(parse_request(raw).is_err());
    }
}
