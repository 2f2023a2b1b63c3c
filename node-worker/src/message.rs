//! The pair message (DESIGN.md, contract): one JSON object per request/response pair.

use std::borrow::Cow;
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine as _;
use serde::Serialize;

use crate::app::{CompletedPair, HttpMessage};
use crate::body;
use crate::filters::Rules;
use crate::http2::grpc;
use crate::http2::head::Http2Extra;
use crate::json;
use crate::source::InterfaceInfo;
use crate::stats::DropReason;

pub const SCHEMA: &str = "interceptor.pair/v1";
const MASK: &str = "[REDACTED]";

/// A Kubernetes pod an address belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub container: Option<String>,
}

/// One end of a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub pod: Option<PodRef>,
}

/// Where the worker runs and which interface saw a pair: the same for every pair of an interface, so
/// its fields of the message (`node`, `interceptor`, `interface`) are written once, then copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    fields: Vec<u8>,
}

impl Origin {
    pub fn new(node: &str, interceptor: &str, interface: &InterfaceInfo) -> Origin {
        let mut object = Vec::new();
        let mut o = json::Object::new(&mut object);
        o.str("node", node);
        o.str("interceptor", interceptor);
        {
            let mut i = json::Object::new(o.key("interface"));
            i.str("name", &interface.name);
            i.opt_str("netns", interface.netns.as_deref());
            json::token(i.key("mode"), interface.mode.as_str().as_bytes());
            i.end();
        }
        o.end();
        // The fields without the braces around them.
        let fields = object
            .get(1..object.len().saturating_sub(1))
            .unwrap_or_default()
            .to_vec();
        Origin { fields }
    }
}

/// A timestamp as RFC 3339 text, on the stack.
#[derive(Clone, Copy)]
pub struct Rfc3339([u8; 27]);

impl Rfc3339 {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or(EPOCH)
    }
}

const EPOCH: &str = "1970-01-01T00:00:00.000000Z";

thread_local! {
    /// The last second written (pairs come many to the second) and its text, `None` when out of range.
    static LAST_SECOND: Cell<(i64, Option<Rfc3339>)> = const { Cell::new((i64::MIN, None)) };
}

/// RFC 3339 in UTC with microseconds, e.g. `2023-11-14T22:13:20.123456Z`; years outside 0-9999 read
/// as the epoch. Written by hand, without allocating, and the date and time of day only once per
/// second: it is called twice per pair, and formatting showed in profiles.
pub fn rfc3339_us(timestamp_us: i64) -> Rfc3339 {
    let secs = timestamp_us.div_euclid(1_000_000);
    let second = LAST_SECOND.with(|last| match last.get() {
        (cached, text) if cached == secs => text,
        _ => {
            let text = rfc3339_second(secs);
            last.set((secs, text));
            text
        }
    });
    let Some(mut text) = second else {
        let mut epoch = [0u8; 27];
        epoch.copy_from_slice(EPOCH.as_bytes());
        return Rfc3339(epoch);
    };
    let mut micros = timestamp_us.rem_euclid(1_000_000);
    for at in (20..26).rev() {
        text.0[at] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    text
}

/// The text of a whole second (microseconds zero), `None` for years outside 0-9999.
fn rfc3339_second(secs: i64) -> Option<Rfc3339> {
    let (date, time_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = date + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, value: i64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, time_of_day / 3_600, 2);
    put(14, time_of_day / 60 % 60, 2);
    put(17, time_of_day % 60, 2);
    Some(Rfc3339(out))
}

/// An IPv4 address as `Display` writes it (`10.0.0.7`), on the stack and without the formatting
/// machinery: written for every pair (its message, its partition key).
pub struct Ipv4Text {
    bytes: [u8; 15],
    len: usize,
}

impl Ipv4Text {
    pub fn new(ip: Ipv4Addr) -> Ipv4Text {
        let mut text = Ipv4Text {
            bytes: [0; 15],
            len: 0,
        };
        let mut push = |b: u8| {
            text.bytes[text.len] = b;
            text.len += 1;
        };
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                push(b'.');
            }
            if octet >= 100 {
                push(b'0' + octet / 100);
            }
            if octet >= 10 {
                push(b'0' + octet / 10 % 10);
            }
            push(b'0' + octet % 10);
        }
        text
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and dots are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// Writes an address as JSON text.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(v4) => json::extend_short(out, Ipv4Text::new(v4).as_bytes()),
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
    out.push(b'"');
}

/// A body as the pair message carries it.
struct BodyText<'a> {
    text: Cow<'a, str>,
    /// `text` is the base64 of the bytes (they are not UTF-8, or not decoded).
    base64: bool,
    /// The body is kept as sent, still content-encoded: it decodes past `maxDecodedBodyBytes`.
    not_decoded: bool,
}

/// The body as the contract wants it: content-decoded, text when UTF-8, else base64. A body that
/// decodes past `maxDecodedBodyBytes` is kept as sent (the message's limits are on the wire, where it
/// is within them): base64 of the encoded bytes, no bigger than the message (the decoder stops at the
/// cap, and what it produced is freed).
fn body_text<'a>(
    message: &'a HttpMessage,
    encoding: Option<&[u8]>,
    rules: &Rules,
) -> Result<BodyText<'a>, DropReason> {
    let base64 = |b: &[u8]| Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b));
    let decoded = match body::decode(&message.body, encoding, rules.max_decoded_body_bytes) {
        Ok(decoded) => decoded,
        Err(DropReason::DecodedTooLarge) => {
            return Ok(BodyText {
                text: base64(&message.body),
                base64: true,
                not_decoded: true,
            })
        }
        Err(reason) => return Err(reason),
    };
    let (text, base64) = match decoded {
        None => match simdutf8::basic::from_utf8(&message.body) {
            Ok(s) => (Cow::Borrowed(s), false),
            Err(_) => (base64(&message.body), true),
        },
        Some(v) => match String::from_utf8(v) {
            Ok(s) => (Cow::Owned(s), false),
            Err(e) => (base64(e.as_bytes()), true),
        },
    };
    Ok(BodyText {
        text,
        base64,
        not_decoded: false,
    })
}

/// Writes a request or a response. `grpc`: the pair is gRPC (either half says so).
fn write_message(
    out: &mut Vec<u8>,
    message: &HttpMessage,
    rules: &Rules,
    grpc: bool,
) -> Result<(), DropReason> {
    let head = &message.head;
    // Decode first: a body that cannot be decoded drops the pair before anything is written.
    let encoding = head.header_joined("content-encoding");
    let body = body_text(message, encoding.as_deref(), rules)?;
    let grpc_encoding = head.header("grpc-encoding");
    let grpc_messages = match grpc {
        true => Some(grpc::messages(
            &message.body,
            grpc_encoding,
            rules.max_decoded_body_bytes,
        )?),
        false => None,
    };
    let http2 = message.http2.as_deref();
    let mut o = json::Object::new(out);
    if head.is_request() {
        // Methods are tokens (httparse and the HTTP/2 head check both accept only those).
        json::token(o.key("method"), head.method());
        if http2.is_some_and(|h| h.path_unknown) {
            // A late-joining HPACK decoder could not know the path: unknown, never invented.
            o.key("path").extend_from_slice(b"null");
        } else {
            json::lossy(o.key("path"), head.target());
        }
    } else {
        o.num("status", head.status().unwrap_or(0));
        json::lossy(o.key("reason"), head.reason());
    }
    json::token(o.key("version"), head.version.as_str().as_bytes());
    let headers = o.key("headers");
    let start = headers.len();
    for (name, value) in head.headers() {
        let value = if rules.should_mask(name) {
            MASK.as_bytes()
        } else {
            value
        };
        write_header(headers, name, value);
    }
    // The first header's comma opens the list.
    match headers.get_mut(start) {
        Some(first) => *first = b'[',
        None => headers.push(b'['),
    }
    headers.push(b']');
    o.str("body", &body.text);
    o.bool("body_base64", body.base64);
    match encoding {
        Some(v) => json::lossy(o.key("content_encoding"), &v),
        None => o.key("content_encoding").extend_from_slice(b"null"),
    }
    if body.not_decoded {
        // Present only then (an optional field of the contract): `body` is the base64 of the bytes
        // as sent, still encoded as `content_encoding` says.
        o.bool("body_decoded", false);
    }
    o.num("wire_bytes", message.wire_bytes);
    json::token(
        o.key("timestamp"),
        rfc3339_us(message.first_us).as_str().as_bytes(),
    );
    if let Some(h2) = http2 {
        write_http2(&mut o, h2, rules);
    }
    if let Some(messages) = grpc_messages {
        let mut g = json::Object::new(o.key("grpc"));
        if head.is_request() {
            match grpc::service_method(head.path()) {
                Some((service, method)) => {
                    json::lossy(g.key("service"), service);
                    json::lossy(g.key("method"), method);
                }
                None => {
                    g.key("service").extend_from_slice(b"null");
                    g.key("method").extend_from_slice(b"null");
                }
            }
        } else {
            // In the trailers, or in the headers of a response without a body (Trailers-Only).
            let trailer = |name: &str| {
                http2
                    .and_then(|h| {
                        h.trailers
                            .iter()
                            .find(|(n, _)| n.as_slice() == name.as_bytes())
                    })
                    .map(|(_, v)| v.as_slice())
                    .or_else(|| head.header(name))
            };
            match trailer("grpc-status")
                .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u32>().ok())
            {
                Some(status) => g.num("status", status),
                None => g.key("status").extend_from_slice(b"null"),
            }
            match trailer("grpc-message") {
                Some(m) => json::lossy(g.key("message"), m),
                None => g.key("message").extend_from_slice(b"null"),
            }
        }
        match grpc_encoding {
            Some(e) => json::lossy(g.key("encoding"), e),
            None => g.key("encoding").extend_from_slice(b"null"),
        }
        g.num("count", messages.len());
        let list = g.key("messages");
        list.push(b'[');
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            list.push(b'"');
            list.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(m)
                    .as_bytes(),
            );
            list.push(b'"');
        }
        list.push(b']');
        g.end();
    }
    o.end();
    Ok(())
}

/// The fields only an HTTP/2 message has: its stream, its trailers, and the headers a late-joining
/// HPACK decoder could not know (`null` for a name it could not know either).
fn write_http2(o: &mut json::Object<'_>, h2: &Http2Extra, rules: &Rules) {
    o.num("stream_id", h2.stream_id);
    let trailers = o.key("trailers");
    let start = trailers.len();
    for (name, value) in &h2.trailers {
        let value = if rules.should_mask(name) {
            MASK.as_bytes()
        } else {
            value
        };
        write_header(trailers, name, value);
    }
    match trailers.get_mut(start) {
        Some(first) => *first = b'[',
        None => trailers.push(b'['),
    }
    trailers.push(b']');
    if !h2.unknown_headers.is_empty() {
        let list = o.key("unknown_headers");
        list.push(b'[');
        for (i, name) in h2.unknown_headers.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            match name {
                Some(n) => json::lossy(list, n),
                None => list.extend_from_slice(b"null"),
            }
        }
        list.push(b']');
    }
}

/// Writes one header as `,["name","value"]`. Done for every header of every message, so in few moves:
/// a plain value (nearly all) shares its quotes' moves with the name's.
fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // httparse accepts only token characters in a header name (lines with others are skipped).
    debug_assert!(json::is_token(name), "not a header token: {name:?}");
    out.reserve(name.len() + value.len() + 9);
    out.extend_from_slice(b",[\"");
    json::extend_short(out, name);
    if json::is_plain(value) {
        out.extend_from_slice(b"\",\"");
        json::extend_short(out, value);
        out.extend_from_slice(b"\"]");
    } else {
        out.extend_from_slice(b"\",");
        json::escape_lossy(out, value);
        out.push(b']');
    }
}

fn write_endpoint(out: &mut Vec<u8>, e: &Endpoint) {
    let mut o = json::Object::new(out);
    write_ip(o.key("ip"), e.addr.ip());
    o.num("port", e.addr.port());
    match &e.pod {
        Some(pod) => {
            let mut p = json::Object::new(o.key("pod"));
            p.str("namespace", &pod.namespace);
            p.str("name", &pod.name);
            p.opt_str("container", pod.container.as_deref());
            p.end();
        }
        None => o.key("pod").extend_from_slice(b"null"),
    }
    o.end();
}

/// Encodes a pair as compact JSON after what `out` holds (the pair message of DESIGN.md). Fails (a counted drop)
/// when a body cannot be decoded or decodes to more than the configured maximum; `out` is then left
/// with a partial message the caller discards.
pub fn encode_pair(
    pair: &CompletedPair,
    id: &str,
    origin: &Origin,
    source: &Endpoint,
    destination: &Endpoint,
    rules: &Rules,
    out: &mut Vec<u8>,
) -> Result<(), DropReason> {
    let mut o = json::Object::new(out);
    json::token(o.key("schema"), SCHEMA.as_bytes());
    // A hex prefix, a dash, a hex counter.
    json::token(o.key("id"), id.as_bytes());
    o.fields(&origin.fields);
    write_endpoint(o.key("source"), source);
    write_endpoint(o.key("destination"), destination);
    // gRPC is HTTP/2 only; either half's Content-Type says so.
    let grpc = pair.request.http2.is_some()
        && (grpc::is_grpc(&pair.request.head) || grpc::is_grpc(&pair.response.head));
    write_message(o.key("request"), &pair.request, rules, grpc)?;
    write_message(o.key("response"), &pair.response, rules, grpc)?;
    let latency = pair
        .response
        .first_us
        .saturating_sub(pair.request.last_us)
        .max(0);
    o.num("latency_us", latency);
    o.end();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_does() {
        for ip in [
            "10.93.0.2",
            "0.0.0.0",
            "255.255.255.255",
            "100.105.10.200",
            "::1",
            "fd00::a:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(out, format!("\"{ip}\"").into_bytes());
        }
    }

    #[test]
    fn timestamps_in_the_same_second_and_out_of_range() {
        let base = 1_700_000_000_000_000;
        assert_eq!(rfc3339_us(base + 1).as_str(), "2023-11-14T22:13:20.000001Z");
        assert_eq!(
            rfc3339_us(base + 999_999).as_str(),
            "2023-11-14T22:13:20.999999Z"
        );
        assert_eq!(rfc3339_us(i64::MAX).as_str(), EPOCH);
        assert_eq!(rfc3339_us(i64::MAX - 1).as_str(), EPOCH);
        assert_eq!(rfc3339_us(base + 7).as_str(), "2023-11-14T22:13:20.000007Z");
        assert_eq!(rfc3339_us(i64::MIN).as_str(), EPOCH);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_us(0).as_str(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(951_825_600_000_001).as_str(),
            "2000-02-29T12:00:00.000001Z"
        );
        assert_eq!(rfc3339_us(-1).as_str(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            rfc3339_us(4_102_444_799_999_999).as_str(),
            "2099-12-31T23:59:59.999999Z"
        );
        // Every day of four years, against the time crate.
        for day in 0..(4 * 366) {
            let us = (1_700_000_000 + day * 86_400 + 3_661) * 1_000_000 + 42;
            let t = time::OffsetDateTime::from_unix_timestamp(us / 1_000_000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000042Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            assert_eq!(rfc3339_us(us).as_str(), expected);
        }
        assert_eq!(
            rfc3339_us(1_700_000_000_123_456).as_str(),
            "2023-11-14T22:13:20.123456Z"
        );
    }
}
