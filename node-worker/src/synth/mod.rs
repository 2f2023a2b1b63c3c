//! Synthetic traffic: scripted TCP conversations turned into Ethernet frames and pcap files.
//!
//! Used by the tests (exact edge cases: loss, reordering, retransmission, odd HTTP) and by the benchmark
//! generator. The frames are real packets (etherparse builds them); the pcap writer is the plain
//! classic format that every tool reads.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;

pub mod flood;
pub mod h2;
pub mod h2enc;
pub mod h2mix;
pub mod mix;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub timestamp_us: i64,
    pub data: Vec<u8>,
}

/// A TCP connection whose packets are written as the script says.
#[derive(Clone, Debug)]
pub struct Conversation {
    client: SocketAddr,
    server: SocketAddr,
    client_next: u32,
    server_next: u32,
    now_us: i64,
    /// Payload bytes per segment.
    pub mss: usize,
    /// Microseconds between consecutive packets.
    pub step_us: i64,
    frames: Vec<Frame>,
}

/// Who sends a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Conversation {
    pub fn new(client: SocketAddr, server: SocketAddr, start_us: i64) -> Self {
        Conversation {
            client,
            server,
            client_next: 1_000,
            server_next: 500_000,
            now_us: start_us,
            mss: 1448,
            step_us: 100,
            frames: Vec::new(),
        }
    }

    /// Sets both initial sequence numbers (before the handshake), e.g. to test wrap-around.
    pub fn with_isns(mut self, client: u32, server: u32) -> Self {
        self.client_next = client;
        self.server_next = server;
        self
    }

    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    /// Lets time pass.
    pub fn wait_us(&mut self, us: i64) -> &mut Self {
        self.now_us += us;
        self
    }

    fn endpoints(&self, side: Side) -> (SocketAddr, SocketAddr) {
        match side {
            Side::Client => (self.client, self.server),
            Side::Server => (self.server, self.client),
        }
    }

    /// Appends one segment with explicit numbers and flags.
    #[allow(clippy::too_many_arguments)]
    pub fn raw_segment(
        &mut self,
        side: Side,
        seq: u32,
        ack: Option<u32>,
        syn: bool,
        fin: bool,
        rst: bool,
        payload: &[u8],
    ) {
        let (src, dst) = self.endpoints(side);
        self.now_us += self.step_us;
        self.frames.push(Frame {
            timestamp_us: self.now_us,
            data: tcp_frame(src, dst, seq, ack, syn, fin, rst, payload),
        });
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self) -> &mut Self {
        let (c, s) = (self.client_next, self.server_next);
        self.raw_segment(Side::Client, c, None, true, false, false, b"");
        self.raw_segment(
            Side::Server,
            s,
            Some(c.wrapping_add(1)),
            true,
            false,
            false,
            b"",
        );
        self.client_next = c.wrapping_add(1);
        self.server_next = s.wrapping_add(1);
        self.raw_segment(
            Side::Client,
            self.client_next,
            Some(self.server_next),
            false,
            false,
            false,
            b"",
        );
        self
    }

    /// `side` sends `bytes` in MSS-sized segments; the peer acknowledges them.
    pub fn send(&mut self, side: Side, bytes: &[u8]) -> &mut Self {
        for chunk in bytes.chunks(self.mss.max(1)) {
            let (seq, ack) = match side {
                Side::Client => (self.client_next, self.server_next),
                Side::Server => (self.server_next, self.client_next),
            };
            self.raw_segment(side, seq, Some(ack), false, false, false, chunk);
            let next = seq.wrapping_add(chunk.len() as u32);
            match side {
                Side::Client => self.client_next = next,
                Side::Server => self.server_next = next,
            }
        }
        self.ack(side.peer())
    }

    pub fn client_sends(&mut self, bytes: &[u8]) -> &mut Self {
        self.send(Side::Client, bytes)
    }

    pub fn server_sends(&mut self, bytes: &[u8]) -> &mut Self {
        self.send(Side::Server, bytes)
    }

    /// A pure ACK from `side` of everything the peer sent.
    pub fn ack(&mut self, side: Side) -> &mut Self {
        let (seq, ack) = match side {
            Side::Client => (self.client_next, self.server_next),
            Side::Server => (self.server_next, self.client_next),
        };
        self.raw_segment(side, seq, Some(ack), false, false, false, b"");
        self
    }

    /// FIN from both sides, client first.
    pub fn close(&mut self) -> &mut Self {
        let (c, s) = (self.client_next, self.server_next);
        self.raw_segment(Side::Client, c, Some(s), false, true, false, b"");
        self.raw_segment(
            Side::Server,
            s,
            Some(c.wrapping_add(1)),
            false,
            true,
            false,
            b"",
        );
        self.client_next = c.wrapping_add(1);
        self.server_next = s.wrapping_add(1);
        self.raw_segment(
            Side::Client,
            self.client_next,
            Some(self.server_next),
            false,
            false,
            false,
            b"",
        );
        self
    }

    /// RST from `side`.
    pub fn reset(&mut self, side: Side) -> &mut Self {
        let seq = match side {
            Side::Client => self.client_next,
            Side::Server => self.server_next,
        };
        self.raw_segment(side, seq, None, false, false, true, b"");
        self
    }

    /// Takes the frames written so far (for streaming long conversations).
    pub fn take_frames(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.frames)
    }

    /// Sets the clock (e.g. to interleave conversations on one timeline); time never goes back.
    pub fn set_now_us(&mut self, now_us: i64) {
        self.now_us = self.now_us.max(now_us);
    }

    /// The frames so far.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn into_frames(self) -> Vec<Frame> {
        self.frames
    }
}

impl Side {
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// An Ethernet frame carrying one TCP segment over IPv4 or IPv6 (by the addresses' family).
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        (s, d) => {
            // Mixed families cannot share a packet: map the IPv4 side into IPv6.
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            eth.ipv6(v6(s), v6(d), 64)
        }
    };
    let mut tcp = ip.tcp(src.port(), dst.port(), seq, 65_535);
    if let Some(ack) = ack {
        tcp = tcp.ack(ack);
    }
    if syn {
        tcp = tcp.syn();
    }
    if fin {
        tcp = tcp.fin();
    }
    if rst {
        tcp = tcp.rst();
    }
    if !payload.is_empty() {
        tcp = tcp.psh();
    }
    let mut out = Vec::with_capacity(tcp.size(payload.len()));
    // Writing into a Vec cannot fail; a payload too large for one IP packet is a caller bug.
    if tcp.write(&mut out, payload).is_err() {
        out.clear();
    }
    out
}

/// Runs a generator of Ethernet frames (the mixes' `generate`) into a buffered pcap stream, snaplen
/// 262 144, and returns what the generator returned.
pub fn generate_pcap<S>(
    out: impl Write,
    generate: impl FnOnce(&mut dyn FnMut(&Frame) -> io::Result<()>) -> io::Result<S>,
) -> io::Result<S> {
    let mut writer = PcapWriter::new(io::BufWriter::with_capacity(1 << 20, out), 1, 262_144)?;
    let stats = generate(&mut |f| writer.write(f))?;
    writer.into_inner().flush()?;
    Ok(stats)
}

/// Writes frames as a classic pcap stream (microsecond timestamps).
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W, link_type: u32, snaplen: u32) -> io::Result<Self> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&snaplen.to_le_bytes())?;
        out.write_all(&link_type.to_le_bytes())?;
        Ok(PcapWriter { out })
    }

    /// Writes a frame, keeping at most `captured` of its bytes (to mimic snaplen truncation).
    pub fn write_truncated(&mut self, frame: &Frame, captured: usize) -> io::Result<()> {
        let secs = frame.timestamp_us.div_euclid(1_000_000);
        let micros = frame.timestamp_us.rem_euclid(1_000_000);
        let kept = &frame.data[..captured.min(frame.data.len())];
        self.out.write_all(&(secs as u32).to_le_bytes())?;
        self.out.write_all(&(micros as u32).to_le_bytes())?;
        self.out.write_all(&(kept.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&(frame.data.len() as u32).to_le_bytes())?;
        self.out.write_all(kept)
    }

    pub fn write(&mut self, frame: &Frame) -> io::Result<()> {
        self.write_truncated(frame, frame.data.len())
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Writes Ethernet frames to a pcap file.
pub fn write_pcap_file(path: &std::path::Path, frames: &[Frame]) -> io::Result<()> {
    let file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut writer = PcapWriter::new(file, 1, 262_144)?;
    for frame in frames {
        writer.write(frame)?;
    }
    writer.into_inner().flush()
}

/// An HTTP/1.1 request with a body and Content-Length.
pub fn http_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: svc\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// An HTTP/1.1 response with a body and Content-Length.
pub fn http_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// `data` gzipped (default level), as a `Content-Encoding: gzip` body.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// A body in chunked transfer coding, in chunks of `size` bytes, with optional trailers.
pub fn chunked(body: &[u8], size: usize, trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}
