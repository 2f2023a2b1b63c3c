//! HTTP/2 traffic for benchmarks, as the live HTTP/2 benchmark makes it (h2load against nginx's h2c
//! listener), with more variety: many concurrent connections with prior knowledge, each carrying
//! batches of concurrent streams; GETs and JSON POSTs with the headers a real client sends, encoded
//! with the dynamic table as nghttp2 does (so most of a request's fields are references to it);
//! responses encoded as nginx does, with JSON bodies of every size over one or several DATA frames,
//! the streams' frames interleaved. Every stream is a pair the default rules keep. Deterministic for
//! a given seed.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::h2::{frame, PREFACE};
use super::h2enc::Encoder;
use super::mix::{MixOptions, MixStats, Rng};
use super::{Conversation, Frame};

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// SETTINGS_MAX_FRAME_SIZE's default: what nginx's DATA frames are cut to.
const MAX_FRAME: usize = 16_384;

/// Streams a client keeps open at once (h2load's `-m` in the live benchmark).
const MAX_BATCH: u64 = 10;

struct Live {
    conv: Conversation,
    client: Encoder,
    server: Encoder,
    next_stream: u32,
    /// Batches left before this connection ends.
    remaining: u32,
}

/// One stream's request and response on the wire.
struct Stream {
    request: Vec<u8>,
    /// The response's frames, in order (HEADERS, then DATA).
    response: Vec<Vec<u8>>,
}

/// JSON of `len` bytes or a little more, naming `path`.
fn json(path: &str, len: usize) -> Vec<u8> {
    let mut out = format!(r#"{{"path":"{path}","status":"ok","items":["#).into_bytes();
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                r#"{{"id":{i},"name":"item-{i}","price":{}.5}},"#,
                i * 7 % 100
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.extend_from_slice(b"{}]}");
    out
}

fn stream(c: &mut Live, rng: &mut Rng, n: u64, authority: &str) -> (Stream, bool) {
    let id = c.next_stream;
    c.next_stream += 2;
    let path = format!("/api/v2/items/{n}");
    let post = rng.range(0, 99) < 20;
    let mut request = Vec::new();
    if post {
        let body = json(&path, rng.size(50, 3_000));
        let len = body.len().to_string();
        let block = c.client.block(&[
            (":method", "POST"),
            (":path", &path),
            (":scheme", "http"),
            (":authority", authority),
            ("user-agent", "h2load nghttp2/1.52.0"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("content-length", &len),
        ]);
        request.extend(frame(HEADERS, END_HEADERS, id, &block));
        request.extend(frame(DATA, END_STREAM, id, &body));
    } else {
        let block = c.client.block(&[
            (":method", "GET"),
            (":path", &path),
            (":scheme", "http"),
            (":authority", authority),
            ("user-agent", "h2load nghttp2/1.52.0"),
            ("accept", "application/json"),
        ]);
        request.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
    }
    // Mostly about the size of the live benchmark's answers (1 KB), some much larger.
    let size = if rng.range(0, 99) < 85 {
        rng.size(200, 2_000)
    } else {
        rng.size(2_000, 60_000)
    };
    let body = json(&path, size);
    let len = body.len().to_string();
    let date = format!(
        "Tue, 14 Nov 2023 22:{:02}:{:02} GMT",
        n / 600 % 60,
        n / 10 % 60
    );
    let block = c.server.block(&[
        (":status", "200"),
        ("server", "nginx/1.22.1"),
        ("date", &date),
        ("content-type", "application/json"),
        ("content-length", &len),
    ]);
    let mut response = vec![frame(HEADERS, END_HEADERS, id, &block)];
    let chunks = body.len().div_ceil(MAX_FRAME);
    for (i, chunk) in body.chunks(MAX_FRAME).enumerate() {
        let flags = if i + 1 == chunks { END_STREAM } else { 0 };
        response.push(frame(DATA, flags, id, chunk));
    }
    (Stream { request, response }, post)
}

/// A batch of concurrent streams on `c`: the requests, then the responses in a shuffled order with
/// their frames interleaved.
fn batch(c: &mut Live, rng: &mut Rng, n: &mut u64, stats: &mut MixStats, authority: &str) {
    let k = rng.range(1, MAX_BATCH);
    let mut streams = Vec::new();
    for _ in 0..k {
        let (s, post) = stream(c, rng, *n, authority);
        *n += 1;
        *stats
            .exchanges
            .entry(if post { "h2_post" } else { "h2_get" })
            .or_default() += 1;
        stats.expected_pairs += 1;
        streams.push(s);
    }
    let requests: Vec<u8> = streams.iter().flat_map(|s| s.request.clone()).collect();
    c.conv.client_sends(&requests);
    let mut pending: Vec<std::collections::VecDeque<Vec<u8>>> =
        streams.into_iter().map(|s| s.response.into()).collect();
    let mut responses = Vec::new();
    while !pending.is_empty() {
        let i = rng.range(0, pending.len() as u64 - 1) as usize;
        if let Some(f) = pending[i].pop_front() {
            responses.extend(f);
        }
        if pending[i].is_empty() {
            pending.swap_remove(i);
        }
    }
    c.conv.server_sends(&responses);
    // The client gives the connection's window back now and then.
    if rng.range(0, 3) == 0 {
        c.conv
            .client_sends(&frame(WINDOW_UPDATE, 0, 0, &(1u32 << 20).to_be_bytes()));
    }
}

fn new_live(
    rng: &mut Rng,
    now: i64,
    port_n: u32,
    stats: &mut MixStats,
    server: SocketAddr,
) -> Live {
    stats.connections += 1;
    let client_ip = Ipv4Addr::new(10, 3, ((port_n >> 8) & 0xff) as u8, (port_n & 0xff) as u8);
    let port = 10_000 + (port_n % 50_000) as u16;
    let mut conv = Conversation::new(
        SocketAddr::V4(SocketAddrV4::new(client_ip, port)),
        server,
        now,
    )
    .with_isns(rng.next_u64() as u32, rng.next_u64() as u32);
    conv.step_us = 20;
    conv.handshake();
    // h2load's SETTINGS (max concurrent streams, initial window) and connection window; nginx's
    // SETTINGS (max concurrent streams, initial window, max frame size) and window; the ACKs.
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(
        SETTINGS,
        0,
        0,
        &[0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 0xff, 0xff],
    ));
    hello.extend(frame(WINDOW_UPDATE, 0, 0, &0x3fff_0000u32.to_be_bytes()));
    conv.client_sends(&hello);
    let mut answer = frame(
        SETTINGS,
        0,
        0,
        &[
            0, 3, 0, 0, 0, 128, 0, 4, 0, 1, 0, 0, 0, 5, 0, 0xff, 0xff, 0xff,
        ],
    );
    answer.extend(frame(WINDOW_UPDATE, 0, 0, &0x7fff_0000u32.to_be_bytes()));
    answer.extend(frame(SETTINGS, ACK, 0, &[]));
    conv.server_sends(&answer);
    conv.client_sends(&frame(SETTINGS, ACK, 0, &[]));
    Live {
        conv,
        client: Encoder::nghttp2(),
        server: Encoder::nginx(),
        next_stream: 1,
        remaining: rng.range(1, 100) as u32,
    }
}

/// The connection's end: the server's GOAWAY (the last stream it processed, no error), then FINs.
fn end(c: &mut Live) {
    let last = c.next_stream.saturating_sub(2);
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    c.conv.server_sends(&frame(GOAWAY, 0, 0, &payload));
    c.conv.close();
}

/// Generates the HTTP/2 mix, handing each frame to `out` in capture order.
pub fn generate(
    options: &MixOptions,
    mut out: impl FnMut(&Frame) -> io::Result<()>,
) -> io::Result<MixStats> {
    let mut rng = Rng::new(options.seed);
    let mut stats = MixStats::default();
    let mut now = options.start_us;
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 2), 8082));
    let authority = "10.1.0.2:8082";
    let mut port_n = 0u32;
    let mut live: Vec<Live> = (0..options.connections.max(1))
        .map(|_| {
            port_n += 1;
            new_live(&mut rng, now, port_n, &mut stats, server)
        })
        .collect();
    let mut emit = |conv: &mut Conversation, stats: &mut MixStats| -> io::Result<()> {
        for f in conv.take_frames() {
            stats.frames += 1;
            stats.bytes += f.data.len() as u64;
            out(&f)?;
        }
        Ok(())
    };
    let mut n = 0u64;
    while stats.bytes < options.target_bytes {
        let i = rng.range(0, live.len() as u64 - 1) as usize;
        let slot = &mut live[i];
        slot.conv.set_now_us(now);
        batch(slot, &mut rng, &mut n, &mut stats, authority);
        slot.remaining = slot.remaining.saturating_sub(1);
        if slot.remaining == 0 {
            end(slot);
        }
        now = slot.conv.now_us() + 50;
        emit(&mut slot.conv, &mut stats)?;
        if slot.remaining == 0 {
            port_n += 1;
            *slot = new_live(&mut rng, now, port_n, &mut stats, server);
        }
    }
    for slot in &mut live {
        end(slot);
        emit(&mut slot.conv, &mut stats)?;
    }
    Ok(stats)
}

/// Writes the HTTP/2 mix as a pcap stream.
pub fn write_pcap(options: &MixOptions, out: impl Write) -> io::Result<MixStats> {
    super::generate_pcap(out, |emit| generate(options, emit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_h2_mix_is_deterministic_and_reaches_its_size() {
        let options = MixOptions {
            target_bytes: 1_000_000,
            connections: 4,
            seed: 3,
            ..MixOptions::default()
        };
        let mut a = Vec::new();
        let sa = write_pcap(&options, &mut a).unwrap();
        let mut b = Vec::new();
        let sb = write_pcap(&options, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert!(sa.bytes >= 1_000_000);
        let streams = sa.exchanges["h2_get"] + sa.exchanges["h2_post"];
        assert_eq!(sa.expected_pairs, streams);
        assert!(sa.exchanges["h2_post"] > 0);
    }
}
