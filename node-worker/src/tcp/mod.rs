//! TCP: connection identity and per-direction stream reassembly.

pub mod reassembly;

use std::net::SocketAddr;

/// A connection's identity, independent of the direction of a packet: its two endpoints in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub low: SocketAddr,
    pub high: SocketAddr,
    /// Where the addresses mean something: 0 for addresses unique on the node (pod IPs); for loopback
    /// addresses, which every network namespace has, the capture interface they were seen on (two mesh
    /// pods may both talk to 127.0.0.1:8080 from the same port).
    pub scope: u32,
}

/// Hashes the addresses and ports only (the derived hash also feeds IPv6 flow info and scope, and the
/// enum tags): it runs for every packet.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn addr<H: std::hash::Hasher>(a: &SocketAddr, state: &mut H) {
            match a.ip() {
                std::net::IpAddr::V4(v4) => state.write_u32(v4.to_bits()),
                std::net::IpAddr::V6(v6) => state.write_u128(v6.to_bits()),
            }
            state.write_u16(a.port());
        }
        addr(&self.low, state);
        addr(&self.high, state);
        state.write_u32(self.scope);
    }
}

/// Which way a packet travels relative to its [`FlowKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From `low` to `high`.
    LowToHigh,
    HighToLow,
}

impl Direction {
    pub fn index(self) -> usize {
        match self {
            Direction::LowToHigh => 0,
            Direction::HighToLow => 1,
        }
    }

    pub fn reverse(self) -> Direction {
        match self {
            Direction::LowToHigh => Direction::HighToLow,
            Direction::HighToLow => Direction::LowToHigh,
        }
    }
}

impl FlowKey {
    /// The key of the connection a packet from `src` to `dst` belongs to, and the packet's direction.
    pub fn of(src: SocketAddr, dst: SocketAddr) -> (FlowKey, Direction) {
        if (src.ip(), src.port()) <= (dst.ip(), dst.port()) {
            (
                FlowKey {
                    low: src,
                    high: dst,
                    scope: 0,
                },
                Direction::LowToHigh,
            )
        } else {
            (
                FlowKey {
                    low: dst,
                    high: src,
                    scope: 0,
                },
                Direction::HighToLow,
            )
        }
    }

    /// The sender of packets travelling in `dir`.
    pub fn source(&self, dir: Direction) -> SocketAddr {
        match dir {
            Direction::LowToHigh => self.low,
            Direction::HighToLow => self.high,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let a: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let (k1, d1) = FlowKey::of(a, b);
        let (k2, d2) = FlowKey::of(b, a);
        assert_eq!(k1, k2);
        assert_eq!(d1, d2.reverse());
        assert_eq!(k1.source(d1), a);
        assert_eq!(k1.source(d2), b);
    }
}
