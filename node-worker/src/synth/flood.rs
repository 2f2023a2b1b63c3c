//! Floods of connections for the memory benchmark: `n` connections opened one after another and never
//! closed, so that every one the table admits is tracked at once when the capture ends. What a tracked
//! connection costs is the peak RSS of such a flood, less that of a capture with almost none, over `n`.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::{http_request, Conversation, PcapWriter};

/// What each connection of a flood does before going silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// A SYN, never answered.
    Syn,
    /// The three-way handshake, then nothing: tracked, holding no payload.
    Handshake,
    /// The handshake and one small request that is never answered: tracked, holding that request.
    Request,
}

impl FloodKind {
    pub const ALL: [FloodKind; 3] = [FloodKind::Syn, FloodKind::Handshake, FloodKind::Request];

    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Syn => "syn",
            FloodKind::Handshake => "handshake",
            FloodKind::Request => "request",
        }
    }

    pub fn parse(s: &str) -> Option<FloodKind> {
        FloodKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Microseconds between two connections' starts: 100 000 connections fit in one second, well within
/// the default idle and response timeouts, so none is forgotten before the capture ends.
const STEP_US: i64 = 10;

/// The `n`-th client: distinct addresses in 10.64.0.0/10, one port each.
fn client(n: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a40_0000 | (n & 0x003f_ffff));
    SocketAddr::V4(SocketAddrV4::new(ip, 40_000 + (n >> 22) as u16))
}

/// Writes a flood of `n` connections of `kind` to one server as a pcap stream; returns the frames written.
pub fn write_flood(kind: FloodKind, n: u32, start_us: i64, out: impl Write) -> io::Result<u64> {
    let mut writer = PcapWriter::new(io::BufWriter::with_capacity(1 << 20, out), 1, 262_144)?;
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 8080));
    let request = http_request(
        "POST",
        "/never",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    let mut frames = 0u64;
    for i in 0..n {
        let mut c = Conversation::new(client(i), server, start_us + i64::from(i) * STEP_US);
        c.step_us = 1;
        match kind {
            FloodKind::Syn => {
                let isn = 1_000u32.wrapping_add(i.wrapping_mul(7919));
                c.raw_segment(super::Side::Client, isn, None, true, false, false, b"");
            }
            FloodKind::Handshake => {
                c.handshake();
            }
            FloodKind::Request => {
                c.handshake();
                c.client_sends(&request);
            }
        }
        for f in c.frames() {
            writer.write(f)?;
            frames += 1;
        }
    }
    writer.into_inner().flush()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_writes_its_packets_per_connection() {
        for (kind, per) in [
            (FloodKind::Syn, 1),
            (FloodKind::Handshake, 3),
            (FloodKind::Request, 5),
        ] {
            let mut out = Vec::new();
            assert_eq!(write_flood(kind, 10, 0, &mut out).unwrap(), 10 * per);
            assert_eq!(FloodKind::parse(kind.name()), Some(kind));
        }
        assert_ne!(client(0), client(1 << 22));
    }
}
