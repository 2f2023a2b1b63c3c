//! What a stream carries, told from its first bytes: the start of an HTTP/1 message, the HTTP/2
//! connection preface, a TLS record, or something else.
//!
//! Pure: it sees a direction's first bytes (empty lines before them already skipped, as HTTP/1
//! tolerates them) and what the direction carries when the handshake said so. A verdict other than
//! [`Detected::NeedMore`] is final: the connection acts on the first one.

use super::streams::Role;
use crate::http1::start::{classify_start, Start, DECIDED_WITHIN};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request or response starts here (a request on a server's direction, or the
    /// reverse, is not one).
    Http1,
    /// The HTTP/2 connection preface: a client speaking HTTP/2 with prior knowledge (h2c), or a
    /// server's first SETTINGS frame (its preface, which may be captured before the client's).
    Http2,
    /// A TLS handshake record: encrypted traffic.
    Tls,
    /// Anything else.
    Other,
    /// Too few bytes to tell.
    NeedMore,
}

/// The first line of the HTTP/2 connection preface (RFC 9113 section 3.4), the whole of which is
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`. The line is enough to tell: no HTTP/1.x message starts so (its
/// version is 2.0), and HTTP/1 would take it for a complete request head.
const HTTP2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// The TLS record type of a handshake (RFC 8446 section 5.1): what a TLS client sends first.
const TLS_HANDSHAKE: u8 = 0x16;

/// No verdict needs more than this many first bytes: [`detect`] of a longer stream start is that of
/// its first `WINDOW` bytes, and a start that needs more is shorter than this.
pub const WINDOW: usize = DECIDED_WITHIN;

/// What `first`, the first bytes of a direction whose role is `role` (when known), carry.
pub fn detect(first: &[u8], role: Option<Role>) -> Detected {
    let Some(&byte) = first.first() else {
        return Detected::NeedMore;
    };
    // Before HTTP/1: the preface has the shape of an HTTP/1 request line.
    let n = first.len().min(HTTP2_PREFACE_LINE.len());
    if first[..n] == HTTP2_PREFACE_LINE[..n] {
        return if n == HTTP2_PREFACE_LINE.len() {
            Detected::Http2
        } else {
            Detected::NeedMore
        };
    }
    if byte == TLS_HANDSHAKE {
        return Detected::Tls;
    }
    if role == Some(Role::Response) && byte == 0 {
        return server_preface(first);
    }
    match (classify_start(first), role) {
        (Start::Unknown, _) => Detected::NeedMore,
        (Start::Not, _)
        | (Start::Request, Some(Role::Response))
        | (Start::Response, Some(Role::Request)) => Detected::Other,
        (Start::Request | Start::Response, _) => Detected::Http1,
    }
}

/// A server's first bytes starting with a zero byte (no HTTP/1 response does): HTTP/2 if they are a
/// SETTINGS frame header (RFC 9113 section 3.4: the server's preface), anything else otherwise.
fn server_preface(first: &[u8]) -> Detected {
    let Some(header) = first.first_chunk::<9>() else {
        return Detected::NeedMore;
    };
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let settings = header[3] == 0x4 && header[4] == 0 && header[5..] == [0, 0, 0, 0];
    if settings && len.is_multiple_of(6) && len <= 6 * 16 {
        Detected::Http2
    } else {
        Detected::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Option<Role> = Some(Role::Request);
    const SERVER: Option<Role> = Some(Role::Response);

    #[test]
    fn http1_starts_on_their_side() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n", CLIENT), Detected::Http1);
        assert_eq!(detect(b"POST /x HTTP/1.1", None), Detected::Http1);
        assert_eq!(detect(b"HTTP/1.1 200 OK\r\n", SERVER), Detected::Http1);
        assert_eq!(detect(b"http/1.0 200 OK\r\n", None), Detected::Http1);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n", SERVER), Detected::Other);
        assert_eq!(detect(b"HTTP/1.1 200 OK\r\n", CLIENT), Detected::Other);
        // A request with the method PRI is still HTTP/1 once it is not the preface.
        assert_eq!(detect(b"PRI * HTTP/1.1\r\n", CLIENT), Detected::Http1);
        assert_eq!(detect(b"PRIVATE / HTTP/1.1\r\n", CLIENT), Detected::Http1);
    }

    #[test]
    fn the_http2_preface() {
        assert_eq!(
            detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", CLIENT),
            Detected::Http2
        );
        assert_eq!(detect(b"PRI * HTTP/2.0\r\n\r\n", CLIENT), Detected::Http2);
        for n in 1..HTTP2_PREFACE_LINE.len() {
            assert_eq!(
                detect(&HTTP2_PREFACE_LINE[..n], CLIENT),
                Detected::NeedMore,
                "{n} bytes"
            );
        }
    }

    #[test]
    fn tls_and_everything_else() {
        assert_eq!(detect(b"\x16\x03\x01\x02\x00\x01", CLIENT), Detected::Tls);
        assert_eq!(detect(b"\x16", CLIENT), Detected::Tls);
        assert_eq!(detect(b"\x15\x03\x03\x00\x02", SERVER), Detected::Other);
        assert_eq!(
            detect(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", CLIENT),
            Detected::Other
        );
        assert_eq!(
            detect(b"220 smtp.example.com ESMTP\r\n", SERVER),
            Detected::Other
        );
        assert_eq!(detect(b"\x00\x00\x12\x04\x00", SERVER), Detected::NeedMore);
        assert_eq!(
            detect(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", SERVER),
            Detected::Http2
        );
        assert_eq!(
            detect(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", CLIENT),
            Detected::Other
        );
        // Not a SETTINGS frame on stream 0 of a size SETTINGS can have.
        for other in [
            &b"\x00\x00\x11\x04\x00\x00\x00\x00\x00"[..],
            b"\x00\x00\x12\x01\x00\x00\x00\x00\x00",
            b"\x00\x00\x12\x04\x01\x00\x00\x00\x00",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x01",
            b"\x00\x01\x02\x04\x00\x00\x00\x00\x00",
        ] {
            assert_eq!(detect(other, SERVER), Detected::Other, "{other:?}");
        }
        assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n", CLIENT), Detected::Other);
    }

    #[test]
    fn too_few_bytes() {
        assert_eq!(detect(b"", CLIENT), Detected::NeedMore);
        assert_eq!(detect(b"GE", CLIENT), Detected::NeedMore);
        assert_eq!(detect(b"HTT", SERVER), Detected::NeedMore);
        assert_eq!(detect(b"GET ", SERVER), Detected::NeedMore);
        assert_eq!(detect(&[b'A'; WINDOW - 2], CLIENT), Detected::NeedMore);
        assert_eq!(detect(&[b'A'; WINDOW], CLIENT), Detected::Other);
    }

    /// Every prefix of a few stream starts: a verdict is final, comes within `WINDOW` bytes, and
    /// looking at `WINDOW` bytes of a longer start gives the same verdict.
    #[test]
    fn verdicts_are_final_within_the_window() {
        let samples: [&[u8]; 8] = [
            b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64",
            b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
            b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"OPTIONSOPTIONSOPTIONSOPTIONSOPTIONS / HTTP/1.1\r\n",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n",
        ];
        for sample in samples {
            for role in [None, CLIENT, SERVER] {
                let mut told = None;
                for n in 0..=sample.len() {
                    let v = detect(&sample[..n], role);
                    match told {
                        Some(t) => assert_eq!(v, t, "{sample:?} at {n}"),
                        None if v != Detected::NeedMore => told = Some(v),
                        None => assert!(n < WINDOW, "{sample:?} undecided at {n}"),
                    }
                    if n >= WINDOW {
                        assert_eq!(v, detect(&sample[..WINDOW], role));
                    }
                }
            }
        }
    }
}
