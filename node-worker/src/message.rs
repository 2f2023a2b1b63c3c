//! The pair message (DESIGN.md, contract): one JSON object per request/response pair.

use std::borrow::Cow;
use std::net::SocketAddr;

use base64::Engine as _;
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

use crate::body;
use crate::exchange::{CompletedPair, HttpMessage};
use crate::filters::Rules;
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

/// Where the worker runs and which interface saw the pair.
pub struct PairContext<'a> {
    pub node: &'a str,
    pub interceptor: &'a str,
    pub interface: &'a InterfaceInfo,
}

#[derive(Serialize)]
struct PairJson<'a> {
    schema: &'static str,
    id: &'a str,
    node: &'a str,
    interceptor: &'a str,
    interface: InterfaceJson<'a>,
    source: EndpointJson<'a>,
    destination: EndpointJson<'a>,
    request: MessageJson<'a>,
    response: MessageJson<'a>,
    latency_us: i64,
}

#[derive(Serialize)]
struct InterfaceJson<'a> {
    name: &'a str,
    netns: Option<&'a str>,
    mode: &'static str,
}

#[derive(Serialize)]
struct EndpointJson<'a> {
    ip: String,
    port: u16,
    pod: Option<&'a PodRef>,
}

#[derive(Serialize)]
struct MessageJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Cow<'a, str>>,
    version: &'static str,
    headers: HeadersJson<'a>,
    body: Cow<'a, str>,
    body_base64: bool,
    content_encoding: Option<Cow<'a, str>>,
    wire_bytes: u64,
    timestamp: String,
}

struct HeadersJson<'a> {
    message: &'a HttpMessage,
    rules: &'a Rules,
}

impl Serialize for HeadersJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let head = &self.message.head;
        let mut seq = serializer.serialize_seq(None)?;
        for (name, value) in head.headers() {
            let value = if self.rules.should_mask(name) {
                Cow::Borrowed(MASK)
            } else {
                String::from_utf8_lossy(value)
            };
            seq.serialize_element(&(String::from_utf8_lossy(name), value))?;
        }
        seq.end()
    }
}

fn version(minor: u8) -> &'static str {
    if minor == 0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}

/// RFC 3339 in UTC with microseconds.
pub fn rfc3339_us(timestamp_us: i64) -> String {
    let nanos = i128::from(timestamp_us) * 1000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

/// The body as the contract wants it: content-decoded, text when UTF-8, else base64.
fn body_json<'a>(
    message: &'a HttpMessage,
    rules: &Rules,
) -> Result<(Cow<'a, str>, bool), DropReason> {
    let encoding = message.head.header_joined("content-encoding");
    let decoded = body::decode(
        &message.body,
        encoding.as_deref(),
        rules.max_decoded_body_bytes,
    )?;
    let bytes: Cow<'a, [u8]> = match decoded {
        Some(d) => Cow::Owned(d),
        None => Cow::Borrowed(&message.body),
    };
    Ok(match bytes {
        Cow::Borrowed(b) => match std::str::from_utf8(b) {
            Ok(s) => (Cow::Borrowed(s), false),
            Err(_) => (
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
                true,
            ),
        },
        Cow::Owned(v) => match String::from_utf8(v) {
            Ok(s) => (Cow::Owned(s), false),
            Err(e) => (
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                true,
            ),
        },
    })
}

fn message_json<'a>(
    message: &'a HttpMessage,
    rules: &'a Rules,
) -> Result<MessageJson<'a>, DropReason> {
    let head = &message.head;
    let (body, body_base64) = body_json(message, rules)?;
    let is_request = head.is_request();
    Ok(MessageJson {
        method: is_request.then(|| String::from_utf8_lossy(head.method())),
        path: is_request.then(|| String::from_utf8_lossy(head.target())),
        status: head.status(),
        reason: (!is_request).then(|| String::from_utf8_lossy(head.reason())),
        version: version(head.minor_version),
        headers: HeadersJson { message, rules },
        body,
        body_base64,
        content_encoding: head
            .header_joined("content-encoding")
            .map(|v| Cow::Owned(String::from_utf8_lossy(&v).into_owned())),
        wire_bytes: message.wire_bytes,
        timestamp: rfc3339_us(message.first_us),
    })
}

fn endpoint_json(e: &Endpoint) -> EndpointJson<'_> {
    EndpointJson {
        ip: e.addr.ip().to_string(),
        port: e.addr.port(),
        pod: e.pod.as_ref(),
    }
}

/// Encodes a pair as compact JSON into `out`. Fails (a counted drop) when a body cannot be decoded or
/// decodes to more than the configured maximum.
pub fn encode_pair(
    pair: &CompletedPair,
    id: &str,
    ctx: &PairContext<'_>,
    source: &Endpoint,
    destination: &Endpoint,
    rules: &Rules,
    out: &mut Vec<u8>,
) -> Result<(), DropReason> {
    let json = PairJson {
        schema: SCHEMA,
        id,
        node: ctx.node,
        interceptor: ctx.interceptor,
        interface: InterfaceJson {
            name: &ctx.interface.name,
            netns: ctx.interface.netns.as_deref(),
            mode: ctx.interface.mode.as_str(),
        },
        source: endpoint_json(source),
        destination: endpoint_json(destination),
        request: message_json(&pair.request, rules)?,
        response: message_json(&pair.response, rules)?,
        latency_us: pair
            .response
            .first_us
            .saturating_sub(pair.request.last_us)
            .max(0),
    };
    serde_json::to_writer(&mut *out, &json).map_err(|_| DropReason::SinkFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
    }
}
