//! The fuzz targets' bodies (the `fuzz/` crate's targets call them), shared with the regression tests
//! (`node-worker/tests/offline/fuzz_regressions.rs`), so that a committed crasher replays exactly what
//! the fuzzer ran.
//!
//! Inputs are read with [`Input`], a tolerant byte reader (missing bytes read as zero), not with
//! `arbitrary`, so that the tests need no extra dependency. Each target checks the
//! invariants of its stage after every step: budgets never exceeded, everything released at the end,
//! delivered bytes consistent with what was sent, and every pair message valid JSON.

/// The `http2_decoders` target: frames and HPACK below the connection.
pub mod http2;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use interceptor_crds::config::WorkerConfig;
use node_worker::app::{CompletedPair, Connection, Env};
use node_worker::filters::Rules;
use node_worker::memory::{release_flow, Allowance, FlowBudget, TotalBudget};
use node_worker::message::{encode_pair, Endpoint, Origin};
use node_worker::pipeline::{Identity, Pipeline};
use node_worker::sink::{PairRef, Sink, SinkError, SinkStats};
use node_worker::source::{CaptureMode, InterfaceInfo, LinkType, Packet};
use node_worker::stats::Counters;
use node_worker::tcp::reassembly::{
    Chunk, Reassembler, ReassemblyStats, SegmentIn, StreamConsumer,
};
use node_worker::tcp::Direction;

/// Reads the fuzzer's bytes as a sequence of small values; past the end, everything is zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// Small limits make every bound reachable by the fuzzer; the defaults check the product's settings.
pub fn config(selector: u8) -> WorkerConfig {
    let mut c = WorkerConfig::default();
    if selector & 1 == 1 {
        let l = &mut c.limits;
        l.max_message_bytes = 2048;
        l.max_pair_bytes = 3072;
        l.response_timeout_seconds = 1;
        l.max_decoded_body_bytes = 4096;
        l.max_header_bytes = 256;
        l.max_flows = 4;
        l.max_flow_buffer_bytes = 4096;
        l.max_total_buffer_bytes = 8192;
        l.max_pending_requests = 3;
        l.flow_idle_timeout_seconds = 2;
    }
    if selector & 2 == 2 {
        // Every content rule off, so that pairs reach the encoder.
        let f = &mut c.filters;
        f.content_types.clear();
        f.exclude_user_agent_prefixes.clear();
        f.exclude_headers.clear();
        f.exclude_status_codes.clear();
        f.exclude_paths.clear();
    }
    if selector & 4 == 4 {
        c.limits.max_message_bytes = 0;
        c.limits.max_pair_bytes = 0;
        c.limits.response_timeout_seconds = 0;
    }
    c
}

/// Fragments the structured targets splice into payloads, so that the fuzzer reaches deep HTTP states.
pub const DICTIONARY: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /v1/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":\"close\"}",
    b"HEAD / HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00\x43\xbf\xa6\xa3\x02\x00",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Authorization: Bearer x\r\nCookie: a=b\r\n",
    b"\r\n\r\n",
    b"GET x HTTP/1.1\r\n",
    b"xPOST /a HTTP/1.1\r\n",
];

/// A payload: raw fuzzer bytes, or a dictionary entry.
fn payload<'a>(input: &mut Input<'a>) -> std::borrow::Cow<'a, [u8]> {
    let selector = input.u8();
    if selector & 0x80 != 0 {
        let n = usize::from(input.u16() % 2048);
        std::borrow::Cow::Borrowed(input.bytes(n))
    } else {
        let mut v = Vec::new();
        for _ in 0..=(selector >> 5) & 3 {
            v.extend_from_slice(DICTIONARY[usize::from(input.u8()) % DICTIONARY.len()]);
        }
        std::borrow::Cow::Owned(v)
    }
}

// ---------------------------------------------------------------------------------------------------
// TCP reassembly

/// What one reassembled direction delivered, checked as it goes.
struct StreamCheck<'s> {
    /// Next sequence number expected by the consumer.
    next: Option<u32>,
    /// Every byte value sent at each sequence number (relative to the ISN).
    sent: &'s HashMap<u32, Vec<u8>>,
    isn: u32,
    ended: bool,
    delivered: u64,
    gaps: u64,
}

impl StreamConsumer for StreamCheck<'_> {
    fn data(&mut self, chunk: Chunk<'_>, _: &mut Allowance<'_>) {
        assert!(!self.ended, "data after the end");
        assert!(!chunk.bytes.is_empty(), "empty chunk");
        if let Some(next) = self.next {
            assert_eq!(chunk.seq, next, "chunks are contiguous");
        }
        for (i, &b) in chunk.bytes.iter().enumerate() {
            let rel = chunk.seq.wrapping_add(i as u32).wrapping_sub(self.isn);
            let values = self.sent.get(&rel);
            assert!(
                values.is_some_and(|v| v.contains(&b)),
                "byte {b} at {rel} was never sent there"
            );
        }
        self.delivered += chunk.bytes.len() as u64;
        self.next = Some(chunk.seq.wrapping_add(chunk.bytes.len() as u32));
    }

    fn gap(&mut self, missing: u64, _: &mut Allowance<'_>) {
        assert!(!self.ended, "gap after the end");
        assert!(missing > 0, "empty gap");
        self.gaps += missing;
        if let Some(next) = self.next.as_mut() {
            *next = next.wrapping_add(missing as u32);
        }
    }

    fn end(&mut self, _: &mut Allowance<'_>) {
        assert!(!self.ended, "ended twice");
        self.ended = true;
    }
}

/// The reassembler under arbitrary segments (any sequence numbers, lengths, flags, snaplen tails)
/// and acknowledgments, with a small budget.
pub fn tcp_reassembly(data: &[u8]) {
    let mut input = Input::new(data);
    let isn = input.u32();
    let flow_limit = usize::from(input.u16() % 8192);
    let mut flow = FlowBudget::default();
    let mut total = TotalBudget::new(4096);
    let mut stats = ReassemblyStats::default();
    let mut r = Reassembler::default();
    // First pass: what would be sent where (so that delivered bytes can be checked).
    let mut sent: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut ops = Vec::new();
    let mut steps = 0;
    while !input.is_empty() && steps < 512 {
        steps += 1;
        let op = input.u8();
        match op % 8 {
            0..=5 => {
                // Offsets mostly near the ISN, sometimes anywhere (wrap-around, far future/past).
                let offset = if op & 0x80 != 0 {
                    input.u32()
                } else {
                    u32::from(input.u16() % 4096).wrapping_sub(64)
                };
                let len = usize::from(input.u8() % 64);
                let fill = input.u8();
                let payload: Vec<u8> = if op & 0x40 != 0 {
                    input.bytes(len).to_vec()
                } else {
                    // Conflicting retransmissions: the same range with other bytes.
                    (0..len)
                        .map(|i| fill.wrapping_add((offset as usize + i) as u8))
                        .collect()
                };
                let missing_tail = if op & 0x20 != 0 {
                    u32::from(input.u8() % 16)
                } else {
                    0
                };
                let flags = input.u8();
                for (i, &b) in payload.iter().enumerate() {
                    let rel = offset.wrapping_add(i as u32);
                    // The SYN takes one sequence number: data starts after it.
                    sent.entry(rel.wrapping_add(u32::from(flags & 1)))
                        .or_default()
                        .push(b);
                }
                ops.push(Op::Seg {
                    seq: isn.wrapping_add(offset),
                    ack: input.u32(),
                    syn: flags & 1 != 0,
                    fin: flags & 2 != 0,
                    rst: flags & 0x1c == 0x1c,
                    payload,
                    missing_tail,
                });
            }
            6 => ops.push(Op::Ack(isn.wrapping_add(u32::from(input.u16())))),
            _ => ops.push(Op::Finish),
        }
    }
    let mut check = StreamCheck {
        next: None,
        sent: &sent,
        isn,
        ended: false,
        delivered: 0,
        gaps: 0,
    };
    for op in &ops {
        let mut allowance = Allowance {
            flow: &mut flow,
            total: &mut total,
            flow_limit,
        };
        match op {
            Op::Seg {
                seq,
                ack,
                syn,
                fin,
                rst,
                payload,
                missing_tail,
            } => {
                let seg = SegmentIn {
                    seq: *seq,
                    ack: *ack,
                    syn: *syn,
                    fin: *fin,
                    rst: *rst,
                    payload,
                    missing_tail: *missing_tail,
                };
                r.push(&seg, &mut allowance, &mut stats, &mut check);
            }
            Op::Ack(ack) => r.peer_acked(*ack, &mut allowance, &mut stats, &mut check),
            Op::Finish => r.finish(&mut allowance, &mut stats, &mut check),
        }
        assert!(flow.used() <= flow_limit, "per-flow budget exceeded");
        assert!(total.used() <= 4096, "total budget exceeded");
        assert_eq!(
            flow.used(),
            r.buffered_bytes(),
            "budget matches what is buffered"
        );
        assert_eq!(check.ended, r.is_ended());
    }
    let mut allowance = Allowance {
        flow: &mut flow,
        total: &mut total,
        flow_limit,
    };
    r.finish(&mut allowance, &mut stats, &mut check);
    assert!(check.ended);
    assert_eq!(flow.used(), 0, "everything released at the end");
    assert_eq!(total.used(), 0);
    assert_eq!(
        check.gaps, stats.bytes_missing,
        "gaps are counted as missing bytes"
    );
}

enum Op {
    Seg {
        seq: u32,
        ack: u32,
        syn: bool,
        fin: bool,
        rst: bool,
        payload: Vec<u8>,
        missing_tail: u32,
    },
    Ack(u32),
    Finish,
}

// ---------------------------------------------------------------------------------------------------
// HTTP: one connection, both parsers and the pairing

fn ctx_interface() -> InterfaceInfo {
    InterfaceInfo {
        name: "fuzz0".into(),
        netns: None,
        mode: CaptureMode::File,
    }
}

/// Encodes a completed pair and checks the message is JSON with the expected shape.
fn check_encoded(pair: &CompletedPair, rules: &Rules) {
    let origin = Origin::new("n", "ns/i", &ctx_interface());
    let a: SocketAddr = SocketAddr::from(([10, 0, 0, 1], 40000));
    let b: SocketAddr = SocketAddr::from(([10, 0, 0, 2], 80));
    let mut out = Vec::new();
    if encode_pair(
        pair,
        "id",
        &origin,
        &Endpoint { addr: a, pod: None },
        &Endpoint { addr: b, pod: None },
        rules,
        &mut out,
    )
    .is_ok()
    {
        check_pair_json(&out);
    }
}

/// A pair message must be one valid JSON object with the contract's top-level fields.
fn check_pair_json(value: &[u8]) {
    let v: serde_json::Value = match serde_json::from_slice(value) {
        Ok(v) => v,
        Err(e) => panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(value)),
    };
    assert_eq!(v["schema"], "interceptor.pair/v1");
    assert!(v["request"]["method"].is_string());
    assert!(v["response"]["status"].is_u64());
}

/// One HTTP connection fed both directions' streams in arbitrary pieces, with gaps, ends and the
/// passing of time; every completed pair is encoded.
pub fn http_connection(data: &[u8]) {
    let mut input = Input::new(data);
    let config = config(input.u8());
    let rules = Rules::from_config(&config);
    let shape = input.u8();
    let client = match shape & 3 {
        0 => None,
        1 => Some(Direction::LowToHigh),
        _ => Some(Direction::HighToLow),
    };
    let from_start = [shape & 4 != 0, shape & 8 != 0];
    let mut conn = Connection::new(client, from_start, rules.max_header_bytes);
    let flow_limit = usize::try_from(config.limits.max_flow_buffer_bytes).unwrap_or(usize::MAX);
    let total_limit = usize::try_from(config.limits.max_total_buffer_bytes).unwrap_or(usize::MAX);
    let mut flow = FlowBudget::default();
    let mut total = TotalBudget::new(total_limit);
    let mut counters = Counters::default();
    let mut completed = Vec::new();
    let mut now_us: i64 = 1_700_000_000_000_000;
    let mut seq = [input.u32(), input.u32()];
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        let op = input.u8();
        let dir = if op & 1 == 0 {
            Direction::LowToHigh
        } else {
            Direction::HighToLow
        };
        let i = dir.index();
        let mut env = Env {
            rules: &rules,
            counters: &mut counters,
            now_us,
            completed: &mut completed,
        };
        let mut allowance = Allowance {
            flow: &mut flow,
            total: &mut total,
            flow_limit,
        };
        match (op >> 1) % 8 {
            0..=4 => {
                let bytes = payload(&mut input);
                // The ACK a peer would send: usually all the other side sent so far.
                let ack = if op & 0x80 != 0 {
                    input.u32()
                } else {
                    seq[1 - i]
                };
                // Split as the network might.
                let cut = usize::from(input.u8()).min(bytes.len());
                for piece in [&bytes[..cut], &bytes[cut..]] {
                    if piece.is_empty() {
                        continue;
                    }
                    conn.side(dir, &mut env).data(
                        Chunk {
                            seq: seq[i],
                            ack,
                            bytes: piece,
                        },
                        &mut allowance,
                    );
                    seq[i] = seq[i].wrapping_add(piece.len() as u32);
                }
            }
            5 => {
                let missing = u64::from(input.u16()) + 1;
                conn.side(dir, &mut env).gap(missing, &mut allowance);
                seq[i] = seq[i].wrapping_add(missing as u32);
            }
            6 => conn.side(dir, &mut env).end(&mut allowance),
            _ => {
                now_us += i64::from(input.u16()) * 1000;
                env.now_us = now_us;
                conn.expire(&mut env, &mut allowance);
            }
        }
        assert!(flow.used() <= flow_limit, "per-flow budget exceeded");
        assert!(total.used() <= total_limit, "total budget exceeded");
        assert!(
            conn.parser_reserved() <= rules.max_header_bytes.max(8192) + 4,
            "a parser buffers {} bytes",
            conn.parser_reserved()
        );
        for pair in completed.drain(..) {
            check_encoded(&pair, &rules);
        }
    }
    let mut env = Env {
        rules: &rules,
        counters: &mut counters,
        now_us,
        completed: &mut completed,
    };
    let mut allowance = Allowance {
        flow: &mut flow,
        total: &mut total,
        flow_limit,
    };
    conn.close(&mut env, &mut allowance);
    assert_eq!(conn.pending(), 0);
    assert_eq!(conn.parser_reserved(), 0, "parsers release their buffers");
    for pair in completed.drain(..) {
        check_encoded(&pair, &rules);
    }
    assert_eq!(flow.used(), 0, "a closed connection holds nothing");
    release_flow(&mut flow, &mut total);
    assert_eq!(total.used(), 0);
}

// ---------------------------------------------------------------------------------------------------
// The whole pipeline

/// Checks every pair the pipeline hands on.
struct CheckingSink {
    sent: u64,
}

impl Sink for CheckingSink {
    fn send(&mut self, pair: PairRef<'_>) {
        check_pair_json(pair.value);
        self.sent += 1;
    }
    fn flush(&mut self, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
    fn stats(&self) -> SinkStats {
        SinkStats {
            accepted: self.sent,
            delivered: self.sent,
            ..SinkStats::default()
        }
    }
}

pub const LINK_TYPES: &[LinkType] = &[
    LinkType::ETHERNET,
    LinkType::RAW,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType(147),
];

fn new_pipeline(config: &WorkerConfig) -> (Pipeline, usize) {
    let identity = Identity {
        node: "fuzz".into(),
        interceptor: "fuzz/interceptor".into(),
    };
    let mut p = Pipeline::new(config, identity, Box::new(CheckingSink { sent: 0 }));
    let iface = p.add_interface(ctx_interface());
    (p, iface)
}

fn check_pipeline_end(mut p: Pipeline, config: &WorkerConfig) {
    let limit = usize::try_from(config.limits.max_total_buffer_bytes).unwrap_or(usize::MAX);
    let (_, peak) = p.buffered_bytes();
    assert!(peak <= limit, "peak {peak} above the total budget {limit}");
    if p.finish(Duration::from_millis(1)).is_err() {
        panic!("the checking sink never fails");
    }
    let (used, _) = p.buffered_bytes();
    assert_eq!(used, 0, "everything released at the end");
    assert_eq!(p.flows(), 0);
    let c = p.counters();
    assert_eq!(p.sink_stats().accepted, c.pairs_emitted);
}

/// Arbitrary frames, each with a link type and a timestamp step (which may go backwards).
/// Input: config byte, then frames as `[link type][time step][len u16][bytes]`.
pub fn pipeline_raw(data: &[u8]) {
    let mut input = Input::new(data);
    let config = config(input.u8());
    let (mut p, iface) = new_pipeline(&config);
    let mut now: i64 = 1_700_000_000_000_000;
    let mut frames = 0;
    while !input.is_empty() && frames < 1024 {
        frames += 1;
        let link = LINK_TYPES[usize::from(input.u8()) % LINK_TYPES.len()];
        let step = input.u8();
        now += if step == 0xff {
            -5_000_000
        } else {
            i64::from(step) * 10_000
        };
        let len = usize::from(input.u16());
        let bytes = input.bytes(len);
        p.handle(
            iface,
            &Packet {
                timestamp_us: now,
                link_type: link,
                data: bytes,
                orig_len: bytes.len() as u32 + u32::from(step & 3) * 100,
            },
        );
    }
    check_pipeline_end(p, &config);
}

/// Valid TCP/IP frames (built with the synth module) around arbitrary payloads, on a few connections,
/// so that the fuzzer reaches HTTP through decoding and reassembly.
pub fn pipeline_tcp(data: &[u8]) {
    let mut input = Input::new(data);
    let config = config(input.u8());
    let (mut p, iface) = new_pipeline(&config);
    let clients: [SocketAddr; 3] = [
        SocketAddr::from(([10, 0, 0, 1], 40000)),
        SocketAddr::from(([10, 0, 0, 1], 40001)),
        "[fd00::1]:40002"
            .parse()
            .unwrap_or(SocketAddr::from(([10, 0, 0, 3], 40002))),
    ];
    let servers: [SocketAddr; 3] = [
        SocketAddr::from(([10, 0, 0, 2], 80)),
        SocketAddr::from(([10, 0, 0, 2], 80)),
        "[fd00::2]:8080"
            .parse()
            .unwrap_or(SocketAddr::from(([10, 0, 0, 4], 8080))),
    ];
    // Next sequence number per connection and direction (client, server).
    let mut next = [[1000u32, 500_000u32]; 3];
    for n in &mut next {
        n[0] = n[0].wrapping_add(u32::from(input.u16()) << 16);
    }
    let mut now: i64 = 1_700_000_000_000_000;
    let mut frames = 0;
    while !input.is_empty() && frames < 512 {
        frames += 1;
        let op = input.u8();
        let c = usize::from(op & 3) % 3;
        let from_server = op & 4 != 0;
        let (src, dst) = if from_server {
            (servers[c], clients[c])
        } else {
            (clients[c], servers[c])
        };
        let (me, peer) = if from_server { (1, 0) } else { (0, 1) };
        let flags = input.u8();
        let step = input.u8();
        now += if step == 0xff {
            -3_000_000
        } else {
            i64::from(step) * 1000
        };
        let body = if op & 8 != 0 {
            payload(&mut input)
        } else {
            std::borrow::Cow::Borrowed(&[][..])
        };
        // Sequence: in order, or shifted (reordering, overlap, retransmission, far jumps).
        let seq = match (op >> 4) & 3 {
            0 | 1 => next[c][me],
            2 => next[c][me]
                .wrapping_add(u32::from(input.u16()) % 4096)
                .wrapping_sub(2048),
            _ => input.u32(),
        };
        let syn = flags & 1 != 0;
        let fin = flags & 2 != 0;
        let rst = flags & 0x0c == 0x0c;
        let ack = (flags & 0x10 == 0).then_some(next[c][peer]);
        let frame = node_worker::synth::tcp_frame(src, dst, seq, ack, syn, fin, rst, &body);
        let advance = body.len() as u32 + u32::from(syn) + u32::from(fin);
        if seq == next[c][me] || (op >> 4) & 3 < 2 {
            next[c][me] = seq.wrapping_add(advance);
        }
        // Sometimes the capture keeps only part of the frame (snaplen).
        let keep = if flags & 0x20 != 0 {
            usize::from(input.u16()).min(frame.len())
        } else {
            frame.len()
        };
        p.handle(
            iface,
            &Packet {
                timestamp_us: now,
                link_type: LinkType::ETHERNET,
                data: &frame[..keep],
                orig_len: frame.len() as u32,
            },
        );
    }
    check_pipeline_end(p, &config);
}
