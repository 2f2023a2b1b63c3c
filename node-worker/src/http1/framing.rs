//! How a message's body is delimited (RFC 9112 section 6), decided from its head.

use crate::app::head::MessageHead;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
    /// The body runs until the connection closes.
    UntilClose,
    /// The connection switches protocol after this message (`101 Switching Protocols`): stop parsing it.
    Tunnel,
    /// No body, and what follows in this direction may be a CONNECT tunnel's bytes (after a CONNECT
    /// request, or a `2xx` answering one): read as HTTP/1 if it starts as HTTP/1 (a proxy carrying
    /// plain HTTP), otherwise not read at all (TLS, anything else).
    ConnectTunnel,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("a request with a Transfer-Encoding that does not end in chunked")]
    RequestTransferEncoding,
}

/// The body framing of a request.
pub fn request_framing(head: &MessageHead) -> Result<Framing, FramingError> {
    if head.has_header("transfer-encoding") {
        return if last_coding_is_chunked(head) {
            Ok(Framing::Chunked)
        } else {
            Err(FramingError::RequestTransferEncoding)
        };
    }
    match content_length(head)? {
        Some(0) | None => Ok(Framing::None),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// The body framing of a response to a request with `request_method` (if the request is known).
pub fn response_framing(
    head: &MessageHead,
    request_method: Option<&[u8]>,
) -> Result<Framing, FramingError> {
    let status = head.status().unwrap_or(0);
    if status == 101 {
        return Ok(Framing::Tunnel);
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    match request_method {
        Some(m) if m.eq_ignore_ascii_case(b"HEAD") => return Ok(Framing::None),
        Some(m) if m.eq_ignore_ascii_case(b"CONNECT") && (200..300).contains(&status) => {
            return Ok(Framing::ConnectTunnel)
        }
        _ => {}
    }
    if head.has_header("transfer-encoding") {
        return Ok(if last_coding_is_chunked(head) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    match content_length(head)? {
        Some(0) => Ok(Framing::None),
        Some(n) => Ok(Framing::Length(n)),
        None => Ok(Framing::UntilClose),
    }
}

fn last_coding_is_chunked(head: &MessageHead) -> bool {
    head.headers_named("transfer-encoding")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        // `identity` is an obsolete no-op coding; some clients still list it after chunked.
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"identity"))
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// The Content-Length, if any. Repeated values (also within one comma list) must agree.
fn content_length(head: &MessageHead) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    for value in head.headers_named("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::ContentLength);
            }
            let n = part
                .iter()
                .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
            match found {
                Some(prev) if prev != n => return Err(FramingError::ContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::{parse_request, parse_response};

    fn req(text: &str) -> MessageHead {
        parse_request(text.as_bytes().to_vec()).unwrap()
    }

    fn res(text: &str) -> MessageHead {
        parse_response(text.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn requests() {
        assert_eq!(
            request_framing(&req("GET / HTTP/1.1\r\n\r\n")),
            Ok(Framing::None)
        );
        assert_eq!(
            request_framing(&req("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            request_framing(&req(
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"
            )),
            Ok(Framing::Chunked),
            "Transfer-Encoding wins over Content-Length"
        );
        assert!(
            request_framing(&req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")).is_err()
        );
        assert!(request_framing(&req(
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        ))
        .is_err());
        assert_eq!(
            request_framing(&req("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")),
            Ok(Framing::Length(5))
        );
        assert!(request_framing(&req(
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
        ))
        .is_err());
        assert!(request_framing(&req("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")).is_err());
    }

    #[test]
    fn responses() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(
            response_framing(&res(ok), Some(b"GET")),
            Ok(Framing::Length(10))
        );
        assert_eq!(response_framing(&res(ok), Some(b"HEAD")), Ok(Framing::None));
        assert_eq!(
            response_framing(&res(ok), Some(b"CONNECT")),
            Ok(Framing::ConnectTunnel),
            "a 2xx to CONNECT has no body, whatever its head says"
        );
        assert_eq!(
            response_framing(&res("HTTP/1.1 100 Continue\r\n\r\n"), None),
            Ok(Framing::None)
        );
        assert_eq!(
            response_framing(
                &res("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
                None
            ),
            Ok(Framing::Tunnel)
        );
        assert_eq!(
            response_framing(
                &res("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
                None
            ),
            Ok(Framing::None)
        );
        assert_eq!(
            response_framing(&res("HTTP/1.0 200 OK\r\n\r\n"), None),
            Ok(Framing::UntilClose)
        );
        assert_eq!(
            response_framing(
                &res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                None
            ),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            response_framing(
                &res("HTTP/1.1 407 No\r\nContent-Length: 3\r\n\r\n"),
                Some(b"CONNECT")
            ),
            Ok(Framing::Length(3))
        );
    }
}
