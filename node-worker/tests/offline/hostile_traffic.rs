//! Adversarial traffic through the real pipeline (issue 8). Each test checks that the bytes buffered
//! across all connections (the pipeline's own high-water mark) stay under the configured budget plus a
//! small fixed slack, and that the counters explain what was given up on. Frames go straight into the
//! pipeline (no capture file) so that the large cases stream: a 100 MB body is never held in memory.
//! The process-level checks (peak RSS of the binary, signals, full disks) are in the live tests'
//! `hostile_process`.

use base64::Engine as _;
use std::net::SocketAddr;
use std::time::Duration;

use interceptor_crds::config::WorkerConfig;
use node_worker::pipeline::{Identity, Pipeline};
use node_worker::source::{CaptureMode, InterfaceInfo, LinkType, Packet};
use node_worker::stats::Counters;
use node_worker::synth::{
    chunked, gzip, http_request, http_response, tcp_frame, Conversation, Frame, Side,
};
use testkit::sink::TestSink;

/// Bytes of bookkeeping allowed above a configured budget (parsed heads' index vectors and the like).
const SLACK: usize = 64 * 1024;

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// The pipeline fed frame by frame; tracks the largest flow table seen.
struct Feeder {
    pipeline: Pipeline,
    iface: usize,
    pairs: TestSink,
    max_flows: usize,
    budget: usize,
}

struct Done {
    counters: Counters,
    pairs: Vec<serde_json::Value>,
    peak: usize,
    max_flows: usize,
}

impl Done {
    fn drops(&self, reason: &str) -> u64 {
        self.counters
            .drops_by_reason()
            .find(|(r, _)| r.as_str() == reason)
            .map_or(0, |(_, n)| n)
    }

    fn paths(&self) -> Vec<String> {
        self.pairs
            .iter()
            .map(|p| p["request"]["path"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Feeder {
    fn new(config: &WorkerConfig) -> Feeder {
        let pairs = TestSink::new();
        let identity = Identity {
            node: "n".into(),
            interceptor: "ns/i".into(),
        };
        let mut pipeline = Pipeline::new(config, identity, Box::new(pairs.clone()));
        let iface = pipeline.add_interface(InterfaceInfo {
            name: "h0".into(),
            netns: None,
            mode: CaptureMode::File,
        });
        Feeder {
            pipeline,
            iface,
            pairs,
            max_flows: 0,
            budget: usize::try_from(config.limits.max_total_buffer_bytes).unwrap(),
        }
    }

    fn raw(&mut self, timestamp_us: i64, link_type: LinkType, data: &[u8]) {
        self.pipeline.handle(
            self.iface,
            &Packet {
                timestamp_us,
                link_type,
                data,
                orig_len: data.len() as u32,
            },
        );
        self.max_flows = self.max_flows.max(self.pipeline.flows());
    }

    fn frames(&mut self, frames: &[Frame]) {
        for f in frames {
            self.raw(f.timestamp_us, LinkType::ETHERNET, &f.data);
        }
    }

    /// Drains a conversation's frames written so far.
    fn take(&mut self, c: &mut Conversation) {
        let frames = c.take_frames();
        self.frames(&frames);
    }

    fn finish(mut self) -> Done {
        self.pipeline.finish(Duration::from_millis(10)).unwrap();
        let (left, peak) = self.pipeline.buffered_bytes();
        assert_eq!(left, 0, "every buffered byte is released at the end");
        assert!(
            peak <= self.budget + SLACK,
            "peak buffered {peak} above the budget {} + slack",
            self.budget
        );
        let pairs = self.pairs.values();
        Done {
            counters: self.pipeline.counters(),
            pairs,
            peak,
            max_flows: self.max_flows,
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn client(n: u32) -> SocketAddr {
    SocketAddr::from((
        [10, 10 + (n >> 16) as u8, (n >> 8) as u8, n as u8],
        40000 + (n % 20000) as u16,
    ))
}

const START: i64 = 1_700_000_000_000_000;

/// `bytes` sent as a stream of MSS-sized segments from `side`, built from one template frame (so
/// that 100 MB can stream without building 70 000 frames with etherparse). `fill` gives each segment's
/// payload.
#[allow(clippy::too_many_arguments)] // a test helper: the arguments are the segment's fields
fn stream_segments(
    feeder: &mut Feeder,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    total: usize,
    now: &mut i64,
    mut fill: impl FnMut(usize, &mut [u8]),
) -> u32 {
    const MSS: usize = 1448;
    let template = tcp_frame(src, dst, 0, Some(ack), false, false, false, &[0u8; MSS]);
    let header = template.len() - MSS;
    let mut frame = template.clone();
    let mut sent = 0usize;
    let mut seq = seq;
    while sent < total {
        let n = MSS.min(total - sent);
        frame.truncate(header + n);
        // TCP sequence number: after the Ethernet (14) and IPv4 (20) headers.
        frame[14 + 20 + 4..14 + 20 + 8].copy_from_slice(&seq.to_be_bytes());
        // The IPv4 total length, for a short last segment.
        let ip_len = (20 + 20 + n) as u16;
        frame[14 + 2..14 + 4].copy_from_slice(&ip_len.to_be_bytes());
        fill(sent, &mut frame[header..header + n]);
        *now += 10;
        feeder.raw(*now, LinkType::ETHERNET, &frame);
        sent += n;
        seq = seq.wrapping_add(n as u32);
    }
    seq
}

/// A flood of half-open connections: SYNs that are never answered, and connections that send a
/// request head and then nothing. The flow table never exceeds `maxFlows`; the rest are counted;
/// idle connections are forgotten and their requests counted.
#[test]
fn a_flood_of_half_open_connections() {
    let mut config = WorkerConfig::default();
    config.limits.max_flows = 2000;
    config.limits.flow_idle_timeout_seconds = 5;
    let mut f = Feeder::new(&config);
    let server = addr("10.0.0.2:80");
    let mut now = START;
    // 30 000 bare SYNs.
    for n in 0..30_000u32 {
        now += 10;
        let syn = tcp_frame(
            client(n),
            server,
            n.wrapping_mul(7919),
            None,
            true,
            false,
            false,
            b"",
        );
        f.raw(now, LinkType::ETHERNET, &syn);
    }
    let after_syns = f.pipeline.counters();
    assert_eq!(after_syns.flows, 2000);
    assert_eq!(
        after_syns.drops(node_worker::stats::DropReason::FlowTableFull),
        28_000
    );
    // After the idle timeout, 1000 connections that send a request and go silent.
    now += 6_000_000;
    for n in 0..1000u32 {
        let mut c = Conversation::new(client(100_000 + n), server, now);
        c.handshake();
        c.client_sends(&http_request("GET", "/never", &[], b""));
        f.take(&mut c);
        now = c.now_us();
    }
    // Much later, one good exchange.
    let mut c = Conversation::new(addr("10.0.9.9:5555"), server, now + 20_000_000);
    c.handshake();
    c.client_sends(&http_request("GET", "/ok", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    f.take(&mut c);
    let d = f.finish();
    assert!(d.max_flows <= 2000, "flow table reached {}", d.max_flows);
    assert_eq!(d.paths(), ["/ok"]);
    // The SYN-only flows were expired before the second wave, which was tracked whole.
    assert_eq!(d.counters.flows, 2000 + 1000 + 1);
    // Idle for 5 s (before the 10 s response timeout): forgotten, their requests unanswered.
    assert_eq!(d.drops("unanswered"), 1000, "{}", d.counters.summary());
    assert_eq!(d.counters.total_drops(), 28_000 + 1000);
    assert_eq!(d.drops("flow_table_full"), 28_000);
    assert_eq!(d.counters.flows_expired, 3000);
}

/// Thousands of connections each sending requests that are never answered: the heads waiting for
/// responses stay within the total budget (the rest are counted as `total_buffer_full`), and every
/// request is accounted for once the timeout passes.
#[test]
fn a_flood_of_requests_never_answered() {
    let mut config = WorkerConfig::default();
    config.limits.max_total_buffer_bytes = 256 * 1024;
    config.limits.response_timeout_seconds = 2;
    let mut f = Feeder::new(&config);
    let server = addr("10.0.0.2:8080");
    let mut now = START;
    let n = 4000u32;
    let per_connection = 3;
    let header = ("X-Pad", "p".repeat(200));
    for i in 0..n {
        let mut c = Conversation::new(client(i), server, now);
        c.step_us = 1;
        c.handshake();
        for k in 0..per_connection {
            c.client_sends(&http_request(
                "POST",
                &format!("/q/{i}/{k}"),
                &[JSON, (header.0, &header.1)],
                b"{}",
            ));
        }
        f.take(&mut c);
        now = c.now_us();
    }
    // Something much later moves the clock past the timeout.
    let mut c = Conversation::new(addr("10.0.9.9:5555"), server, now + 5_000_000);
    c.handshake();
    f.take(&mut c);
    let d = f.finish();
    let requests = u64::from(n) * per_connection;
    assert_eq!(d.counters.requests, requests);
    assert!(
        d.drops("total_buffer_full") > 0,
        "the budget was reached: {}",
        d.counters.summary()
    );
    assert_eq!(
        d.drops("response_timeout") + d.drops("total_buffer_full"),
        requests,
        "every request is one drop: {}",
        d.counters.summary()
    );
    assert_eq!(d.counters.total_drops(), requests);
    assert!(d.pairs.is_empty());
}

/// A 100 MB body: declared by Content-Length it is refused at the head and never buffered; chunked
/// or until-close, collection stops at maxMessageBytes. The connection stays in step afterwards.
#[test]
fn a_hundred_megabyte_body() {
    const SIZE: usize = 100 << 20;
    let config = WorkerConfig::default();
    let limit = usize::try_from(config.limits.max_message_bytes).unwrap();
    for framing in ["length", "chunked", "close"] {
        let mut f = Feeder::new(&config);
        let (cl, sv) = (addr("10.0.0.1:40000"), addr("10.0.0.2:8080"));
        let mut c = Conversation::new(cl, sv, START).with_isns(1000, 500_000);
        c.handshake();
        f.take(&mut c);
        let mut now = c.now_us();
        let head = match framing {
            "length" => format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {SIZE}\r\n\r\n"),
            "chunked" => "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            // A close-delimited response body to a small request.
            _ => "GET /download HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
        };
        let mut seq = 1001u32;
        let mut server_seq = 500_001u32;
        let mut head_bytes = head.into_bytes();
        if framing == "close" {
            seq = stream_segments(
                &mut f,
                cl,
                sv,
                seq,
                server_seq,
                head_bytes.len(),
                &mut now,
                |at, out| out.copy_from_slice(&head_bytes[at..at + out.len()]),
            );
            head_bytes = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n".to_vec();
        }
        // The body: chunked in 64 KiB chunks, else plain bytes.
        let chunk_head = format!("{:x}\r\n", 65536).into_bytes();
        let body_len = if framing == "chunked" {
            SIZE + (SIZE / 65536) * (chunk_head.len() + 2) + 5
        } else {
            SIZE
        };
        let total = head_bytes.len() + body_len;
        let (src, dst, start, ack) = if framing == "close" {
            (sv, cl, server_seq, seq)
        } else {
            (cl, sv, seq, server_seq)
        };
        let hl = head_bytes.len();
        let end = stream_segments(&mut f, src, dst, start, ack, total, &mut now, |at, out| {
            if at >= hl && framing != "chunked" {
                out.fill(b'z');
                return;
            }
            for (i, b) in out.iter_mut().enumerate() {
                let pos = at + i;
                *b = if pos < hl {
                    head_bytes[pos]
                } else if framing == "chunked" {
                    let body_pos = pos - hl;
                    let unit = chunk_head.len() + 65536 + 2;
                    let in_unit = body_pos % unit;
                    if body_pos >= (SIZE / 65536) * unit {
                        b"0\r\n\r\n"[body_pos - (SIZE / 65536) * unit]
                    } else if in_unit < chunk_head.len() {
                        chunk_head[in_unit]
                    } else if in_unit >= chunk_head.len() + 65536 {
                        b"\r\n"[in_unit - chunk_head.len() - 65536]
                    } else {
                        b'z'
                    }
                } else {
                    b'z'
                };
            }
        });
        if framing == "close" {
            server_seq = end;
            // The server closes: FIN.
            now += 10;
            f.raw(
                now,
                LinkType::ETHERNET,
                &tcp_frame(sv, cl, server_seq, Some(seq), false, true, false, b""),
            );
        } else {
            seq = end;
            let resp = http_response(200, &[JSON], b"{}");
            now += 10;
            f.raw(
                now,
                LinkType::ETHERNET,
                &tcp_frame(sv, cl, server_seq, Some(seq), false, false, false, &resp),
            );
            server_seq += resp.len() as u32;
            // The connection carries on: a small exchange after the big one is paired.
            let req = http_request("GET", "/after", &[], b"");
            now += 10;
            f.raw(
                now,
                LinkType::ETHERNET,
                &tcp_frame(cl, sv, seq, Some(server_seq), false, false, false, &req),
            );
            seq += req.len() as u32;
            now += 10;
            f.raw(
                now,
                LinkType::ETHERNET,
                &tcp_frame(sv, cl, server_seq, Some(seq), false, false, false, &resp),
            );
        }
        let d = f.finish();
        assert_eq!(
            d.drops("message_too_large"),
            1,
            "{framing}: {}",
            d.counters.summary()
        );
        assert_eq!(
            d.counters.total_drops(),
            1,
            "{framing}: {}",
            d.counters.summary()
        );
        if framing == "close" {
            assert!(d.pairs.is_empty());
        } else {
            assert_eq!(d.paths(), ["/after"], "{framing}");
        }
        let bound = if framing == "length" {
            SLACK
        } else {
            limit + SLACK
        };
        assert!(d.peak <= bound, "{framing}: peak {} > {bound}", d.peak);
        assert_eq!(d.counters.bytes_missing, 0);
    }
}

/// A 1 MB header block (many header lines, in small segments and in large ones) is cut off at
/// maxHeaderBytes, counted, and the connection finds the next request.
#[test]
fn a_one_megabyte_header_block() {
    let config = WorkerConfig::default();
    let max_header = usize::try_from(config.limits.max_header_bytes).unwrap();
    let mut head = b"GET /huge HTTP/1.1\r\nHost: a\r\n".to_vec();
    let mut i = 0;
    while head.len() < 1 << 20 {
        head.extend_from_slice(format!("X-Header-{i}: {}\r\n", "v".repeat(40)).as_bytes());
        i += 1;
    }
    head.extend_from_slice(b"\r\n");
    for mss in [100usize, 1448, 60_000] {
        let mut f = Feeder::new(&config);
        let mut c = Conversation::new(addr("10.0.0.1:40000"), addr("10.0.0.2:80"), START);
        c.mss = mss;
        c.handshake();
        c.client_sends(&http_request("GET", "/before", &[], b""));
        c.server_sends(&http_response(200, &[JSON], b"{}"));
        c.client_sends(&head);
        c.server_sends(&http_response(431, &[], b""));
        c.client_sends(&http_request("GET", "/next", &[], b""));
        c.server_sends(&http_response(200, &[JSON], b"{}"));
        c.close();
        f.take(&mut c);
        let d = f.finish();
        assert_eq!(
            d.drops("header_too_large"),
            1,
            "mss {mss}: {}",
            d.counters.summary()
        );
        assert!(d.peak <= max_header + SLACK, "mss {mss}: peak {}", d.peak);
        assert_eq!(
            d.paths(),
            ["/before", "/next"],
            "mss {mss}: {}",
            d.counters.summary()
        );
        // The 431 answers the dropped head: that exchange is counted once, as header_too_large.
        assert_eq!(
            d.counters.total_drops(),
            1,
            "mss {mss}: {}",
            d.counters.summary()
        );
    }
}

/// Thousands of pipelined requests on one connection, then their responses in order: at most
/// maxPendingRequests wait at once, every request is a pair or a counted drop, and no response is
/// paired with the wrong request.
#[test]
fn thousands_of_pipelined_requests() {
    let config = WorkerConfig::default();
    let n = 5000;
    let mut c = Conversation::new(addr("10.0.0.1:40000"), addr("10.0.0.2:80"), START);
    c.handshake();
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for i in 0..n {
        requests.extend(http_request("GET", &format!("/p/{i}"), &[], b""));
        responses.extend(http_response(
            200,
            &[JSON],
            format!("{{\"i\":{i}}}").as_bytes(),
        ));
    }
    c.client_sends(&requests);
    c.server_sends(&responses);
    c.close();
    let mut f = Feeder::new(&config);
    f.take(&mut c);
    let d = f.finish();
    assert!(d.drops("too_many_pending") > 0, "{}", d.counters.summary());
    for p in &d.pairs {
        let path = p["request"]["path"].as_str().unwrap();
        let i = path.trim_start_matches("/p/");
        assert_eq!(
            p["response"]["body"],
            format!("{{\"i\":{i}}}"),
            "{path} paired with another response"
        );
    }
    // Every request parsed is a pair or one drop (a connection this far past maxPendingRequests is
    // given up on: the rest of it is not parsed).
    assert_eq!(
        d.counters.pairs_emitted + d.counters.total_drops() - d.drops("unmatched_response"),
        d.counters.requests,
        "{}",
        d.counters.summary()
    );
    assert!(d.peak < 64 * 1024 * 4, "peak {}", d.peak);
}

/// Overlapping segments with conflicting data: the stream is rebuilt once (the first bytes received
/// for a position win, whichever copy carried them), the pair is emitted once with a consistent
/// body, and the overlap is counted as retransmitted.
#[test]
fn overlapping_segments_with_conflicting_data() {
    let config = WorkerConfig::default();
    let body_a = br#"{"owner":"alice","amount":100}"#;
    let body_b = br#"{"owner":"mallo","amount":999}"#;
    assert_eq!(body_a.len(), body_b.len());
    let req_a = http_request("POST", "/pay", &[JSON], body_a);
    let req_b = http_request("POST", "/pay", &[JSON], body_b);
    let (cl, sv) = (addr("10.0.0.1:40000"), addr("10.0.0.2:80"));
    let head_len = req_a.len() - body_a.len();
    // Orders: in-order then conflicting copy; conflicting copy early (ahead of a hole) then the real
    // one; two conflicting early copies with other boundaries.
    for case in 0..3 {
        let mut c = Conversation::new(cl, sv, START);
        c.handshake();
        let (cs, ss) = (1001u32, 500_001u32);
        let at = |off: usize| cs + off as u32;
        match case {
            0 => {
                c.raw_segment(Side::Client, cs, Some(ss), false, false, false, &req_a);
                c.raw_segment(
                    Side::Client,
                    at(head_len),
                    Some(ss),
                    false,
                    false,
                    false,
                    body_b,
                );
            }
            1 => {
                c.raw_segment(
                    Side::Client,
                    at(head_len),
                    Some(ss),
                    false,
                    false,
                    false,
                    body_b,
                );
                c.raw_segment(
                    Side::Client,
                    at(head_len),
                    Some(ss),
                    false,
                    false,
                    false,
                    body_a,
                );
                c.raw_segment(
                    Side::Client,
                    cs,
                    Some(ss),
                    false,
                    false,
                    false,
                    &req_a[..head_len],
                );
            }
            _ => {
                c.raw_segment(
                    Side::Client,
                    at(head_len + 5),
                    Some(ss),
                    false,
                    false,
                    false,
                    &req_b[head_len + 5..],
                );
                c.raw_segment(
                    Side::Client,
                    at(head_len),
                    Some(ss),
                    false,
                    false,
                    false,
                    &req_a[head_len..head_len + 10],
                );
                c.raw_segment(
                    Side::Client,
                    cs,
                    Some(ss),
                    false,
                    false,
                    false,
                    &req_a[..head_len],
                );
            }
        }
        let resp = http_response(200, &[JSON], b"{}");
        c.raw_segment(
            Side::Server,
            ss,
            Some(at(req_a.len())),
            false,
            false,
            false,
            &resp,
        );
        c.raw_segment(
            Side::Client,
            at(req_a.len()),
            Some(ss + resp.len() as u32),
            false,
            true,
            false,
            b"",
        );
        c.raw_segment(
            Side::Server,
            ss + resp.len() as u32,
            Some(at(req_a.len()) + 1),
            false,
            true,
            false,
            b"",
        );
        let mut f = Feeder::new(&config);
        f.take(&mut c);
        let d = f.finish();
        assert_eq!(d.pairs.len(), 1, "case {case}: {}", d.counters.summary());
        let body = d.pairs[0]["request"]["body"].as_str().unwrap().to_string();
        let expected: String = match case {
            0 => String::from_utf8(body_a.to_vec()).unwrap(),
            1 => String::from_utf8(body_b.to_vec()).unwrap(),
            // The lower segment wins where they overlap.
            _ => format!(
                "{}{}",
                std::str::from_utf8(&body_a[..10]).unwrap(),
                std::str::from_utf8(&body_b[10..]).unwrap()
            ),
        };
        assert_eq!(body, expected, "case {case}");
        let overlap = match case {
            0 | 1 => body_a.len(),
            _ => 5,
        };
        assert_eq!(
            d.counters.bytes_retransmitted, overlap as u64,
            "case {case}"
        );
        assert_eq!(d.counters.total_drops(), 0);
    }
}

/// Chunk sizes at and beyond 2^64 (and just under 2^60) never overflow: a size that does not fit is a
/// parse error, a huge one that fits is cut off at maxMessageBytes; the connection recovers.
#[test]
fn a_chunk_size_of_two_to_the_sixty_four() {
    let config = WorkerConfig::default();
    for (size, reason) in [
        ("10000000000000000", "http_parse_error"),
        ("ffffffffffffffff", "http_parse_error"),
        ("ffffffffffffffffffffffffffffffff", "http_parse_error"),
        ("-1", "http_parse_error"),
        ("fffffffffffffff", "message_too_large"),
    ] {
        let mut c = Conversation::new(addr("10.0.0.1:40000"), addr("10.0.0.2:80"), START);
        c.handshake();
        c.client_sends(&http_request("GET", "/big", &[], b""));
        let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        resp.extend_from_slice(format!("{size}\r\n").as_bytes());
        resp.extend(std::iter::repeat_n(b'c', 2 << 20));
        c.server_sends(&resp);
        c.close();
        let mut f = Feeder::new(&config);
        f.take(&mut c);
        let d = f.finish();
        assert_eq!(d.drops(reason), 1, "{size}: {}", d.counters.summary());
        assert_eq!(
            d.counters.total_drops(),
            1,
            "{size}: {}",
            d.counters.summary()
        );
        assert!(d.pairs.is_empty());
        assert!(d.peak <= (1 << 20) + SLACK, "{size}: peak {}", d.peak);
    }
}

/// Decompression bombs (200 MiB of gzip, the same gzipped again, 8 MiB deflate and brotli), each
/// within the wire limits, are kept as sent: base64 of the encoded bytes, `"body_decoded": false`,
/// with decoding stopped at the cap (issue 15, item 5; they were dropped before). A body that decodes
/// to exactly the limit, and a long chain of small codings, are decoded.
#[test]
fn gzip_bombs() {
    use std::io::Write;
    let mut config = WorkerConfig::default();
    config.limits.max_decoded_body_bytes = 1 << 20;
    // Built cheaply (the test's dependencies are not optimised): 1 MiB of zeros compressed once, the
    // gzip member repeated (a multi-member gzip stream decodes to all of them one after the other).
    let zeros = vec![0u8; 1 << 20];
    let member = gzip(&zeros);
    let bomb = member.repeat(200);
    let nested = gzip(&bomb);
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..8 {
        deflate.write_all(&zeros).unwrap();
    }
    let deflate = deflate.finish().unwrap();
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 1, 22);
        for _ in 0..8 {
            w.write_all(&zeros).unwrap();
        }
    }
    let exact = gzip(&vec![b'a'; 1 << 20]);
    // A body encoded 50 times over; each layer is small.
    let mut layered = br#"{"deep":true}"#.to_vec();
    for _ in 0..50 {
        layered = gzip(&layered);
    }
    let chain = vec!["gzip"; 50].join(", ");
    // Whether the body is decoded (else kept as sent).
    let cases: Vec<(&str, &[u8], bool)> = vec![
        ("gzip", &bomb, false),
        ("gzip, gzip", &nested, false),
        ("deflate", &deflate, false),
        ("br", &br, false),
        ("gzip", &exact, true),
        (&chain, &layered, true),
    ];
    for (coding, body, decoded) in cases {
        assert!(
            body.len() < 1 << 20,
            "{coding}: {} bytes compressed",
            body.len()
        );
        let mut c = Conversation::new(addr("10.0.0.1:40000"), addr("10.0.0.2:80"), START);
        c.handshake();
        c.client_sends(&http_request("GET", "/bomb", &[], b""));
        c.server_sends(&http_response(
            200,
            &[JSON, ("Content-Encoding", coding)],
            body,
        ));
        c.close();
        let mut f = Feeder::new(&config);
        f.take(&mut c);
        let d = f.finish();
        assert_eq!(d.pairs.len(), 1, "{coding}: {}", d.counters.summary());
        assert_eq!(d.counters.total_drops(), 0, "{coding}");
        let response = &d.pairs[0]["response"];
        assert_eq!(response["content_encoding"], coding);
        if decoded {
            assert!(response.get("body_decoded").is_none(), "{coding}");
        } else {
            assert_eq!(response["body_decoded"], false, "{coding}");
            assert_eq!(response["body_base64"], true, "{coding}");
            let sent = base64::engine::general_purpose::STANDARD.encode(body);
            assert!(
                response["body"] == sent.as_str(),
                "{coding}: the bytes as sent"
            );
        }
    }
}

/// Random bytes on HTTP ports, with and without a handshake, in both directions: ignored cheaply
/// (not HTTP), nothing kept buffered, nothing emitted, no parse drops invented.
#[test]
fn random_bytes_on_http_ports() {
    let config = WorkerConfig::default();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let mut f = Feeder::new(&config);
    let server = addr("10.0.0.2:80");
    let mut now = START;
    for i in 0..300u32 {
        let mut c = Conversation::new(client(i), server, now);
        if i % 2 == 0 {
            c.handshake();
        } else {
            // Caught mid-way: the parser searches for a message start in what follows.
            c = c.with_isns(i.wrapping_mul(1_000_003), 7);
        }
        let len = 1000 + (i as usize * 997) % 60_000;
        c.client_sends(&random(len));
        c.server_sends(&random(len / 2));
        if i % 3 == 0 {
            c.close();
        }
        f.take(&mut c);
        now = c.now_us();
    }
    // A long random stream caught mid-way (4 MiB): scanning gives up, memory stays flat.
    let mut c = Conversation::new(addr("10.0.7.7:7777"), server, now).with_isns(99, 77);
    c.client_sends(&random(5 << 20));
    f.take(&mut c);
    let (_, peak_so_far) = f.pipeline.buffered_bytes();
    let d = f.finish();
    assert!(d.pairs.is_empty());
    assert!(peak_so_far <= 64 * 1024, "peak {peak_so_far}");
    assert!(d.counters.flows_not_http >= 150, "{}", d.counters.summary());
    assert_eq!(d.counters.requests, 0, "{}", d.counters.summary());
}

/// A capture file cut at every byte offset: no panic, the pairs before the damage, a truncation
/// noted when the cut is inside a record.
#[test]
fn a_capture_file_truncated_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Conversation::new(addr("10.0.0.1:40000"), addr("10.0.0.2:80"), START);
    c.handshake();
    for i in 0..3 {
        c.client_sends(&http_request(
            "POST",
            &format!("/t/{i}"),
            &[JSON],
            b"{\"a\":1}",
        ));
        c.server_sends(&http_response(200, &[JSON], b"{}"));
    }
    c.close();
    let full_path = dir.path().join("full.pcap");
    node_worker::synth::write_pcap_file(&full_path, c.frames()).unwrap();
    let full = std::fs::read(&full_path).unwrap();
    let cut_path = dir.path().join("cut.pcap");
    let mut last_pairs = 0;
    for cut in (0..=full.len())
        .step_by(7)
        .chain([full.len() - 1, full.len()])
    {
        std::fs::write(&cut_path, &full[..cut]).unwrap();
        let Ok(mut source) = node_worker::source::file::FileSource::open(&cut_path) else {
            assert!(cut < 24, "a file with its header opens (cut at {cut})");
            continue;
        };
        let mut f = Feeder::new(&WorkerConfig::default());
        let end = source.for_each(|p| f.pipeline.handle(f.iface, p));
        let d = f.finish();
        assert!(d.pairs.len() <= 3);
        if cut == full.len() {
            assert_eq!(end, node_worker::source::file::FileEnd::Complete);
            assert_eq!(d.pairs.len(), 3);
        }
        last_pairs = d.pairs.len();
    }
    assert_eq!(last_pairs, 3);
}

/// Timestamps that jump backwards (by seconds, an hour, to the epoch) and back again: pairs
/// are still made, latencies are never negative, and no timeout fires on a clock that went back.
#[test]
fn a_capture_with_timestamps_going_backwards() {
    let config = WorkerConfig::default();
    let mut frames = Vec::new();
    for i in 0..20u32 {
        let mut c = Conversation::new(client(i), addr("10.0.0.2:80"), START + i64::from(i) * 1_000);
        c.handshake();
        c.client_sends(&http_request("GET", &format!("/b/{i}"), &[], b""));
        c.server_sends(&http_response(200, &[JSON], b"{}"));
        c.close();
        frames.extend(c.into_frames());
    }
    // Only ever back from the true time (so no timeout can legitimately fire), by varying amounts:
    // consecutive frames jump back and forth.
    let jumps = [0i64, -3_600_000_000, -5_000_000, -START, 0, -1, -20_000_000];
    for (i, f) in frames.iter_mut().enumerate() {
        f.timestamp_us += jumps[i % jumps.len()];
    }
    let mut f = Feeder::new(&config);
    f.frames(&frames);
    let d = f.finish();
    assert_eq!(d.pairs.len(), 20, "{}", d.counters.summary());
    for p in &d.pairs {
        assert!(p["latency_us"].as_i64().unwrap() >= 0);
    }
    assert_eq!(d.counters.total_drops(), 0, "{}", d.counters.summary());
}

/// Many tiny out-of-order segments ahead of a hole: what they cost in memory is bounded by the
/// per-connection budget, and the time to process them stays linear (no quadratic insert).
#[test]
fn tiny_out_of_order_segments() {
    let mut config = WorkerConfig::default();
    config.limits.max_flow_buffer_bytes = 256 * 1024;
    let (cl, sv) = (addr("10.0.0.1:40000"), addr("10.0.0.2:80"));
    let mut f = Feeder::new(&config);
    let mut c = Conversation::new(cl, sv, START);
    c.handshake();
    f.take(&mut c);
    let mut now = c.now_us();
    let head = http_request("POST", "/tiny", &[JSON], &vec![b'1'; 300_000]);
    // Every byte after the first 100 in its own segment, in reverse order: the hole is never filled.
    let template = tcp_frame(cl, sv, 0, Some(500_001), false, false, false, b"x");
    let mut frame = template.clone();
    for off in (100..head.len()).rev().step_by(2) {
        frame[14 + 20 + 4..14 + 20 + 8].copy_from_slice(&(1001 + off as u32).to_be_bytes());
        let last = frame.len() - 1;
        frame[last] = head[off];
        now += 1;
        f.raw(now, LinkType::ETHERNET, &frame);
    }
    let d = f.finish();
    assert!(d.peak <= 256 * 1024 + SLACK, "peak {}", d.peak);
    assert!(d.counters.bytes_missing > 0);
}

/// A chunked body sent one byte per segment, and a head one byte per segment: no quadratic copying,
/// and the pair comes out right.
#[test]
fn one_byte_segments() {
    let config = WorkerConfig::default();
    let mut c = Conversation::new(addr("10.0.0.1:40000"), addr("10.0.0.2:80"), START);
    c.mss = 1;
    c.handshake();
    let body = br#"{"one":"byte at a time"}"#;
    let mut request = format!("POST /one HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", "p".repeat(20_000)).into_bytes();
    request.extend(chunked(body, 3, &[("X-Trailer", "t")]));
    c.client_sends(&request);
    c.mss = 1448;
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    let mut f = Feeder::new(&config);
    f.take(&mut c);
    let d = f.finish();
    assert_eq!(d.pairs.len(), 1, "{}", d.counters.summary());
    assert_eq!(
        d.pairs[0]["request"]["body"],
        std::str::from_utf8(body).unwrap()
    );
}
