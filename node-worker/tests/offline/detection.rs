//! Telling what a connection carries from its first bytes, through the whole pipeline: HTTP/1 however
//! its first bytes are cut, HTTP/2 with prior knowledge and TLS counted as not HTTP (never as parse
//! errors), and a direction whose first bytes are not HTTP/1 making the connection opaque.

use node_worker::synth::h2::PREFACE;
use node_worker::synth::{http_request, http_response, Conversation, Frame, Side};
use testkit::pipeline::{conversation, open_config, run, Outcome, JSON};

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
/// An empty SETTINGS frame, then a HEADERS frame on stream 1 (its block holds text that looks like
/// an HTTP/1 request, which must not be parsed as one).
const CLIENT_FRAMES: &[u8] =
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x14\x01\x05\x00\x00\x00\x01GET / HTTP/1.1\r\n\r\n\x00\x00";
/// SETTINGS, SETTINGS ack, and a HEADERS frame answering stream 1.
const SERVER_FRAMES: &[u8] =
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x01\x01\x05\x00\x00\x00\x01\x88";

/// An h2c connection whose client sends the preface and its first frames, cut after `cut` bytes
/// (0: in one segment).
fn http2_prior_knowledge(cut: usize) -> Vec<Frame> {
    let mut c = conversation(1);
    let first = [PREFACE, CLIENT_FRAMES].concat();
    if cut == 0 {
        c.client_sends(&first);
    } else {
        c.client_sends(&first[..cut]);
        c.client_sends(&first[cut..]);
    }
    c.server_sends(SERVER_FRAMES);
    c.close();
    c.into_frames()
}

fn request() -> Vec<u8> {
    http_request("POST", "/v1/users", &[JSON], b"{\"name\":\"a\"}")
}

fn response() -> Vec<u8> {
    http_response(201, &[JSON], b"{\"id\":7}")
}

/// One JSON exchange whose request goes out in the given pieces (after `blank` empty lines).
fn http1_in_pieces(blank: usize, cuts: &[usize]) -> Vec<Frame> {
    let mut c = conversation(1);
    let mut bytes = b"\r\n".repeat(blank);
    bytes.extend_from_slice(&request());
    let mut from = 0;
    for &cut in cuts.iter().chain([&bytes.len()]) {
        if cut > from {
            c.client_sends(&bytes[from..cut]);
            from = cut;
        }
    }
    c.server_sends(&response());
    c.close();
    c.into_frames()
}

/// A request answered by a server speaking something else (a TLS alert).
fn server_answers_in_another_protocol() -> Vec<Frame> {
    let mut c = conversation(1);
    c.client_sends(&request());
    c.server_sends(b"\x15\x03\x03\x00\x02\x02\x28");
    c.close();
    c.into_frames()
}

/// The client's first two bytes, then a hole of seven bytes (never captured, but acknowledged by the
/// server), then the rest of a first request and a second one; each answered.
fn first_bytes_then_a_hole() -> Vec<Frame> {
    let mut c = Conversation::new(
        testkit::pipeline::addr("10.0.0.1:40000"),
        testkit::pipeline::addr("10.0.0.2:8080"),
        1_700_000_000_000_000,
    )
    .with_isns(1000, 500_000);
    c.handshake();
    let (client, server) = (1001u32, 500_001u32);
    let first = request();
    let second = http_request("POST", "/v1/orders", &[JSON], b"{\"n\":2}");
    let ok = response();
    c.raw_segment(
        Side::Client,
        client,
        Some(server),
        false,
        false,
        false,
        &first[..2],
    );
    let rest = &first[9..];
    let rest_seq = client + 9;
    c.raw_segment(
        Side::Client,
        rest_seq,
        Some(server),
        false,
        false,
        false,
        rest,
    );
    let after_first = client + first.len() as u32;
    c.raw_segment(
        Side::Server,
        server,
        Some(after_first),
        false,
        false,
        false,
        &ok,
    );
    let after_ok = server + ok.len() as u32;
    c.raw_segment(
        Side::Client,
        after_first,
        Some(after_ok),
        false,
        false,
        false,
        &second,
    );
    let after_second = after_first + second.len() as u32;
    c.raw_segment(
        Side::Server,
        after_ok,
        Some(after_second),
        false,
        false,
        false,
        &ok,
    );
    let end = after_ok + ok.len() as u32;
    c.raw_segment(
        Side::Client,
        after_second,
        Some(end),
        false,
        true,
        false,
        b"",
    );
    c.raw_segment(
        Side::Server,
        end,
        Some(after_second + 1),
        false,
        true,
        false,
        b"",
    );
    c.into_frames()
}

fn assert_not_http(out: &Outcome, what: &str) {
    assert_eq!(out.counters.flows_not_http, 1, "{what}");
    assert_eq!(out.counters.requests, 0, "{what}: nothing parsed");
    assert_eq!(
        out.counters.total_drops(),
        0,
        "{what}: no drop, no parse error"
    );
    assert!(out.pairs.is_empty(), "{what}");
    assert!(out.peak_buffered < 1024, "{what}: {}", out.peak_buffered);
}

/// The preface, cut anywhere, selects HTTP/2: never an HTTP/1 parse error, never "not HTTP". These
/// frames' header block is text, not HPACK: one counted header error, and the response that had no
/// request to answer (`offline/http2_pipeline.rs` has the whole HTTP/2 behaviour).
#[test]
fn http2_with_prior_knowledge_is_read_as_http2_never_an_http1_parse_error() {
    let whole = PREFACE.len() + CLIENT_FRAMES.len();
    for cut in 0..whole {
        let out = run(&http2_prior_knowledge(cut), &open_config());
        let what = format!("preface cut after {cut} bytes");
        assert_eq!(out.counters.flows_not_http, 0, "{what}");
        assert_eq!(out.drops("http_parse_error"), 0, "{what}");
        assert_eq!(out.drops("http2_header_error"), 1, "{what}");
        assert_eq!(out.drops("unmatched_response"), 1, "{what}");
        assert_eq!(out.counters.total_drops(), 2, "{what}");
        assert!(out.pairs.is_empty(), "{what}");
    }
}

#[test]
fn tls_is_not_http() {
    let mut c = conversation(1);
    c.client_sends(b"\x16");
    c.client_sends(b"\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a client hello");
    c.server_sends(b"\x16\x03\x03\x00\x5a\x02 a server hello");
    c.close();
    assert_not_http(&run(c.frames(), &open_config()), "TLS");
}

#[test]
fn a_request_cut_anywhere_in_its_first_bytes_pairs_as_if_whole() {
    let whole = run(&http1_in_pieces(0, &[]), &open_config());
    assert_eq!(whole.summary(), [("POST".into(), "/v1/users".into(), 201)]);
    let request_len = request().len();
    let mut cases: Vec<(usize, Vec<usize>)> = (1..48).map(|cut| (0, vec![cut])).collect();
    // One byte per segment, and empty lines before the request cut among them.
    cases.push((0, (1..request_len).collect()));
    cases.push((2, vec![1, 3, 5, 6]));
    for (blank, cuts) in cases {
        let out = run(&http1_in_pieces(blank, &cuts), &open_config());
        let what = format!("{blank} empty lines, cut at {cuts:?}");
        assert_eq!(out.summary(), whole.summary(), "{what}");
        assert_eq!(
            out.pairs[0]["request"]["body"], whole.pairs[0]["request"]["body"],
            "{what}"
        );
        assert_eq!(
            out.pairs[0]["request"]["wire_bytes"], whole.pairs[0]["request"]["wire_bytes"],
            "{what}"
        );
        assert_eq!(out.counters.flows_not_http, 0, "{what}");
        assert_eq!(out.counters.total_drops(), 0, "{what}");
    }
}

#[test]
fn a_request_with_the_method_pri_is_http1() {
    let mut c = conversation(1);
    c.client_sends(b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n");
    c.server_sends(&response());
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(out.summary(), [("PRI".into(), "*".into(), 201)]);
}

#[test]
fn a_server_answering_in_another_protocol_makes_the_connection_opaque() {
    let out = run(&server_answers_in_another_protocol(), &open_config());
    assert_eq!(out.counters.flows_not_http, 1);
    assert_eq!(out.counters.requests, 1, "the request was parsed before");
    assert_eq!(out.counters.responses, 0);
    assert_eq!(
        out.drops("unanswered"),
        1,
        "the request still waits when the connection ends"
    );
    assert!(out.pairs.is_empty());
}

/// What detection holds is HTTP/1's once the stream ends or loses bytes, and HTTP/1 counts it as it
/// always did: a message begun and lost. (These counts are those of the worker before detection moved
/// out of the HTTP/1 parser, on the same captures.)
#[test]
fn held_first_bytes_are_http1_s_when_the_stream_ends_or_has_a_hole() {
    for first in [&b"GE"[..], b"PRI * HTTP/2"] {
        let mut c = conversation(1);
        c.client_sends(first);
        c.close();
        let out = run(c.frames(), &open_config());
        assert_eq!(out.drops("stream_gap"), 1, "{first:?}");
        assert_eq!(out.counters.total_drops(), 1, "{first:?}");
        assert_eq!(out.counters.flows_not_http, 0, "{first:?}");
        assert_eq!(
            out.peak_buffered,
            first.len(),
            "held, reserved as HTTP/1 would"
        );
    }
    // The first response answers client bytes not seen yet (lost, or still to come): its exchange
    // is uncertain, and the first request, lost in the hole, is that same exchange. The next request
    // cannot be trusted after the loss (uncertain too), and its response is the rest of it: two
    // exchanges, two drops.
    let out = run(&first_bytes_then_a_hole(), &open_config());
    assert_eq!(out.counters.bytes_missing, 7);
    assert_eq!(out.drops("pairing_uncertain"), 2);
    assert_eq!(out.counters.total_drops(), 2, "{}", out.counters.summary());
    assert_eq!((out.counters.requests, out.counters.responses), (1, 2));
    assert!(out.pairs.is_empty());
}
