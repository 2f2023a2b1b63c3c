//! gRPC over HTTP/2 (the gRPC "PROTOCOL-HTTP2" wire format): a body is a sequence of
//! length-prefixed messages (a compressed flag, a 4-byte big-endian length, the message), compressed
//! ones with the coding named by `grpc-encoding`; the service and method are the `:path`
//! (`/package.Service/Method`), the status and its message the trailers' `grpc-status` and
//! `grpc-message`. Pure functions over a complete message.

use std::borrow::Cow;

use crate::app::head::MessageHead;
use crate::body;
use crate::stats::DropReason;

/// Whether a head's Content-Type is gRPC's (`application/grpc`, or `application/grpc+proto`,
/// `+json`, ...).
pub fn is_grpc(head: &MessageHead) -> bool {
    let Some(value) = head.header("content-type") else {
        return false;
    };
    let media = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    // Compared in place, case aside (a lower-cased copy was an allocation per message).
    const GRPC: &[u8] = b"application/grpc";
    match media.get(..GRPC.len()) {
        Some(start) if start.eq_ignore_ascii_case(GRPC) => {
            matches!(media.get(GRPC.len()), None | Some(b'+'))
        }
        _ => false,
    }
}

/// The service and method of a gRPC request path, `/package.Service/Method`.
pub fn service_method(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = path.strip_prefix(b"/")?;
    let slash = memchr::memchr(b'/', rest)?;
    let (service, method) = (&rest[..slash], &rest[slash + 1..]);
    (!service.is_empty() && !method.is_empty() && !method.contains(&b'/'))
        .then_some((service, method))
}

/// The messages of a gRPC body, decompressed (`encoding`: the `grpc-encoding` header) with their
/// decoded total capped at `max_decoded`. A body that is not a whole number of messages, or a
/// compressed message without a coding we can undo, cannot be read: a counted drop.
pub fn messages<'b>(
    body: &'b [u8],
    encoding: Option<&[u8]>,
    max_decoded: usize,
) -> Result<Vec<Cow<'b, [u8]>>, DropReason> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut total = 0usize;
    while !rest.is_empty() {
        let Some((prefix, after)) = rest.split_first_chunk::<5>() else {
            return Err(DropReason::BodyDecode);
        };
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if after.len() < len {
            return Err(DropReason::BodyDecode);
        }
        let (message, next) = after.split_at(len);
        rest = next;
        let message = match prefix[0] {
            0 => Cow::Borrowed(message),
            1 => {
                let coding = encoding
                    .filter(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity"))
                    .ok_or(DropReason::BodyDecode)?;
                match body::decode(message, Some(coding), max_decoded.saturating_sub(total))? {
                    Some(decoded) => Cow::Owned(decoded),
                    None => Cow::Borrowed(message),
                }
            }
            _ => return Err(DropReason::BodyDecode),
        };
        total += message.len();
        if total > max_decoded {
            return Err(DropReason::DecodedTooLarge);
        }
        out.push(message);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::head::response_head;
    use crate::http2::hpack::Field;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn messages_split_and_decompressed() {
        let mut body = framed(0, b"\x08\x01");
        body.extend(framed(1, &crate::synth::gzip(b"hello")));
        body.extend(framed(0, b""));
        let got = messages(&body, Some(b"gzip"), 1000).unwrap();
        assert_eq!(got, vec![&b"\x08\x01"[..], b"hello", b""]);
        assert_eq!(messages(b"", None, 10).unwrap().len(), 0);
    }

    #[test]
    fn unreadable_bodies() {
        assert_eq!(messages(b"\0\0\0", None, 100), Err(DropReason::BodyDecode));
        assert_eq!(
            messages(b"\0\0\0\0\x05ab", None, 100),
            Err(DropReason::BodyDecode)
        );
        assert_eq!(
            messages(&framed(1, b"x"), None, 100),
            Err(DropReason::BodyDecode)
        );
        assert_eq!(
            messages(&framed(1, b"x"), Some(b"identity"), 100),
            Err(DropReason::BodyDecode)
        );
        assert_eq!(
            messages(&framed(2, b"x"), None, 100),
            Err(DropReason::BodyDecode)
        );
        assert_eq!(
            messages(
                &framed(1, &crate::synth::gzip(&[0; 5000])),
                Some(b"gzip"),
                100
            ),
            Err(DropReason::DecodedTooLarge)
        );
        assert_eq!(
            messages(&[framed(0, b"abc"), framed(0, b"abc")].concat(), None, 5),
            Err(DropReason::DecodedTooLarge)
        );
    }

    #[test]
    fn paths_and_content_types() {
        assert_eq!(
            service_method(b"/helloworld.Greeter/SayHello"),
            Some((&b"helloworld.Greeter"[..], &b"SayHello"[..]))
        );
        for bad in [&b"/x"[..], b"/a/b/c", b"a/b", b"//b", b"/a/"] {
            assert_eq!(service_method(bad), None, "{bad:?}");
        }
        let head = |ct: &str| {
            let f = |n: &str, v: &str| Field {
                name: Some(n.as_bytes().to_vec().into()),
                value: Some(v.as_bytes().to_vec().into()),
            };
            response_head(&[f(":status", "200"), f("content-type", ct)], 1)
                .unwrap()
                .0
        };
        assert!(is_grpc(&head("application/grpc")));
        assert!(is_grpc(&head("application/grpc+proto")));
        assert!(is_grpc(&head("Application/GRPC+json; charset=utf-8")));
        assert!(!is_grpc(&head("application/grpc-web")));
        assert!(is_grpc(&head(" application/grpc ; x=1")));
        assert!(is_grpc(&head("application/grpc+")));
        assert!(!is_grpc(&head("application/grpcx")));
        assert!(!is_grpc(&head("application/grp")));
        assert!(!is_grpc(&head("")));
        assert!(!is_grpc(&head("application/json")));
    }
}
