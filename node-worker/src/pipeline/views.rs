//! Connections by client address and initial sequence number (see `Pipeline::views`), kept small:
//! every connection seen from its SYN has an entry, so a flood of SYNs fills this table as much as
//! the connection table. An entry is 48 bytes instead of 108: the addresses in 20 bytes instead of
//! `SocketAddr`'s 32, and the tracked connection named by its server's address alone (its key is
//! rebuilt from the client's and the server's, as the decoder built it).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::tcp::FlowKey;

/// An IP address and port in 20 bytes. IPv6 flow info and scope id are not kept: the decoder never
/// sets them (a key that had them would only not be found: a second view counted as a connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Addr {
    ip: [u8; 16],
    port: u16,
    v6: bool,
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        let (ip, v6) = match a.ip() {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), false),
            IpAddr::V6(v6) => (v6.octets(), true),
        };
        Addr {
            ip,
            port: a.port(),
            v6,
        }
    }
}

impl From<Addr> for SocketAddr {
    fn from(a: Addr) -> SocketAddr {
        let v6 = Ipv6Addr::from(a.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if !a.v6 => IpAddr::V4(v4),
            _ if !a.v6 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, a.port)
    }
}

/// (client, ISN, scope) -> the server of the connection tracked for them.
#[derive(Default)]
pub(super) struct Views<S> {
    map: HashMap<(Addr, u32, u32), Addr, S>,
}

impl<S: std::hash::BuildHasher> Views<S> {
    /// The key of the connection tracked for `client`'s SYN with `isn` in `scope`.
    pub fn get(&self, client: SocketAddr, isn: u32, scope: u32) -> Option<FlowKey> {
        let server = self.map.get(&(client.into(), isn, scope))?;
        let (mut key, _) = FlowKey::of(client, (*server).into());
        key.scope = scope;
        Some(key)
    }

    /// `key` is the connection tracked for `client`'s SYN with `isn` (in `key.scope`).
    pub fn insert(&mut self, client: SocketAddr, isn: u32, key: FlowKey) {
        let server = if key.low == client { key.high } else { key.low };
        self.map
            .insert((client.into(), isn, key.scope), server.into());
    }

    /// Gives memory back after a flood (see `FlowTable::shrink_when_sparse`).
    pub fn shrink_when_sparse(&mut self) {
        if self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len() * 2);
        }
    }

    /// Forgets the entry, if it names `key`.
    pub fn remove(&mut self, client: SocketAddr, isn: u32, key: &FlowKey) {
        if self.get(client, isn, key.scope).as_ref() == Some(key) {
            self.map.remove(&(client.into(), isn, key.scope));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_entry_names_the_tracked_key_and_is_small() {
        assert!(std::mem::size_of::<((Addr, u32, u32), Addr)>() <= 48);
        let mut views = Views::<std::hash::RandomState>::default();
        for (client, server) in [
            ("10.0.0.1:40000", "10.0.0.2:80"),
            ("10.0.0.9:80", "10.0.0.2:40000"),
            ("[fd00::1]:40000", "[fd00::2]:8080"),
            ("[::ffff:10.0.0.1]:1", "10.0.0.1:2"),
        ] {
            let (client, server) = (addr(client), addr(server));
            let (mut key, _) = FlowKey::of(client, server);
            key.scope = 3;
            views.insert(client, 7, key);
            assert_eq!(views.get(client, 7, 3), Some(key));
            assert_eq!(views.get(client, 8, 3), None);
            assert_eq!(views.get(client, 7, 0), None);
            let (other, _) = FlowKey::of(client, addr("10.9.9.9:9"));
            views.remove(client, 7, &other);
            assert_eq!(views.get(client, 7, 3), Some(key), "another key's removal");
            views.remove(client, 7, &key);
            assert_eq!(views.get(client, 7, 3), None);
        }
        for isn in 0..1000 {
            views.insert(
                addr("10.0.0.1:1"),
                isn,
                FlowKey::of(addr("10.0.0.1:1"), addr("10.0.0.2:2")).0,
            );
        }
        let full = views.map.capacity();
        for isn in 1..1000 {
            views.map.remove(&(addr("10.0.0.1:1").into(), isn, 0));
        }
        views.shrink_when_sparse();
        assert!(views.map.capacity() < full / 8, "{}", views.map.capacity());
        assert!(views.get(addr("10.0.0.1:1"), 0, 0).is_some());
    }
}
