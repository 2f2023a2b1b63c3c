//! The real destination of connections a service mesh redirected to its proxy, on the pod's loopback.
//!
//! Istio (sidecar and ambient) and Linkerd send the application's outbound connections to their proxy
//! with a nat `REDIRECT` in the pod's namespace (15001, 4140). Captured on `lo`, such a connection's two
//! directions do not look like one connection: the application's packets go `pod:port ->
//! 127.0.0.1:15001` (after the nat), the proxy's answers come back `destination -> pod:port` (the nat
//! undone before they reach `lo`). [`Redirects`] gives the application's packets their real
//! destination, asked once per connection from conntrack in the pod's namespace ([`conntrack`]), so
//! that both directions are one connection between the pod and its real peer. When conntrack cannot tell
//! (no entry, or no CAP_NET_ADMIN for ctnetlink), the answers are made to come from the proxy's address
//! instead, so that the exchange is still one connection, and the real destination they carried is
//! remembered ([`Redirects::learned`]): the pipeline names it when it emits the pair. Only a connection
//! whose answers were never seen keeps the proxy's port as destination, which names no pod (unknown).
//!
//! Pure apart from the [`Resolve`] it is given; bounded (a table of at most [`MAX_CLIENTS`] entries,
//! forgotten after [`ENTRY_TTL_US`] without a packet).

pub mod conntrack;

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::decode::TcpSegment;

/// Asks where a redirected connection was going.
pub trait Resolve: Send {
    /// The original destination of the connection from `client` that the kernel redirected to `proxy`
    /// (`Ok(None)`: no such connection known).
    fn original_destination(
        &mut self,
        client: SocketAddr,
        proxy: SocketAddr,
    ) -> Result<Option<SocketAddr>, conntrack::ConntrackError>;
}

/// Redirected connections tracked per tap at most; beyond, new ones are not translated (counted).
pub const MAX_CLIENTS: usize = 16_384;
/// An entry without a packet for this long is forgotten (conntrack keeps a closed connection 120 s).
pub const ENTRY_TTL_US: i64 = 180_000_000;
/// How often (packet time) stale entries are swept.
const SWEEP_EVERY_US: i64 = 10_000_000;

/// What the translation did, for the summary and the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectStats {
    /// Redirected connections whose original destination conntrack gave.
    pub resolved: u64,
    /// Redirected connections conntrack did not know.
    pub unknown: u64,
    /// Redirected connections conntrack did not tell whose destination the answers told.
    pub learned: u64,
    /// Conntrack could not be asked (the answer is then unknown too).
    pub errors: u64,
    /// Redirected connections not tracked because the table was full.
    pub table_full: u64,
}

impl RedirectStats {
    pub fn add(&mut self, other: &RedirectStats) {
        self.resolved += other.resolved;
        self.unknown += other.unknown;
        self.learned += other.learned;
        self.errors += other.errors;
        self.table_full += other.table_full;
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The proxy's listener the connection was redirected to (`127.0.0.1:15001`).
    proxy: SocketAddr,
    original: Option<SocketAddr>,
    /// Where the answers came from, when conntrack did not tell.
    learned: Option<SocketAddr>,
    seen_us: i64,
}

/// The redirected connections of one loopback tap, by client address.
pub struct Redirects {
    ports: Vec<u16>,
    resolver: Box<dyn Resolve>,
    clients: HashMap<SocketAddr, Entry, foldhash::fast::RandomState>,
    last_sweep_us: i64,
    pub stats: RedirectStats,
}

impl std::fmt::Debug for Redirects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirects")
            .field("ports", &self.ports)
            .field("clients", &self.clients.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Redirects {
    /// For a tap whose mesh redirects outbound connections to these loopback `ports`.
    pub fn new(ports: &[u16], resolver: Box<dyn Resolve>) -> Redirects {
        Redirects {
            ports: ports.to_vec(),
            resolver,
            clients: HashMap::default(),
            last_sweep_us: i64::MIN,
            stats: RedirectStats::default(),
        }
    }

    /// Rewrites a segment captured on the tap so that a redirected connection's two directions are
    /// one connection with its real peer.
    pub fn translate(&mut self, seg: &mut TcpSegment<'_>, now_us: i64) {
        self.sweep(now_us);
        if seg.dst.ip().is_loopback() && self.ports.contains(&seg.dst.port()) {
            if let Some(original) = self.outbound(seg, now_us) {
                seg.dst = original;
            }
            return;
        }
        // The other direction: the kernel shows the real destination as the source already.
        if let Some(entry) = self.clients.get_mut(&seg.dst) {
            if entry.original.is_none() && !seg.src.ip().is_loopback() {
                entry.seen_us = now_us;
                if entry.learned.is_none() {
                    self.stats.learned += 1;
                }
                entry.learned = Some(seg.src);
                seg.src = entry.proxy;
            } else if entry.original == Some(seg.src) {
                entry.seen_us = now_us;
            }
        }
    }

    /// The original destination of the application's packet `seg` to the proxy (asked once per
    /// connection: at its SYN, or at its first packet seen).
    fn outbound(&mut self, seg: &TcpSegment<'_>, now_us: i64) -> Option<SocketAddr> {
        let client = seg.src;
        let opening = seg.flags.syn && !seg.flags.ack;
        if let Some(entry) = self.clients.get_mut(&client) {
            if !opening && entry.proxy == seg.dst {
                entry.seen_us = now_us;
                return entry.original;
            }
        }
        let original = match self.resolver.original_destination(client, seg.dst) {
            Ok(Some(original)) => {
                self.stats.resolved += 1;
                Some(original)
            }
            Ok(None) => {
                self.stats.unknown += 1;
                None
            }
            Err(error) => {
                self.stats.errors += 1;
                if self.stats.errors == 1 {
                    tracing::warn!(%client, %error,
                        "conntrack cannot be asked on this tap: destinations of redirected connections are taken from their answers");
                } else {
                    tracing::debug!(%client, %error, "conntrack lookup failed");
                }
                None
            }
        };
        if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(&client) {
            self.sweep_now(now_us);
            if self.clients.len() >= MAX_CLIENTS {
                self.stats.table_full += 1;
                return original;
            }
        }
        self.clients.insert(
            client,
            Entry {
                proxy: seg.dst,
                original,
                learned: None,
                seen_us: now_us,
            },
        );
        original
    }

    fn sweep(&mut self, now_us: i64) {
        if now_us.saturating_sub(self.last_sweep_us) >= SWEEP_EVERY_US {
            self.sweep_now(now_us);
        }
    }

    fn sweep_now(&mut self, now_us: i64) {
        self.last_sweep_us = now_us;
        self.clients
            .retain(|_, e| now_us.saturating_sub(e.seen_us) < ENTRY_TTL_US);
    }

    /// The real destination of the connection from `client` to the proxy at `proxy` as its answers
    /// told it, when conntrack did not (the pipeline names it in the pair).
    pub fn learned(&self, client: SocketAddr, proxy: SocketAddr) -> Option<SocketAddr> {
        if !proxy.ip().is_loopback() || !self.ports.contains(&proxy.port()) {
            return None;
        }
        self.clients
            .get(&client)
            .filter(|e| e.proxy == proxy)
            .and_then(|e| e.learned)
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decode::TcpFlags;
    use std::sync::{Arc, Mutex};

    /// Answers from a fixed table, and records what it was asked.
    #[derive(Clone, Default)]
    struct Table {
        known: HashMap<SocketAddr, SocketAddr>,
        asked: Arc<Mutex<Vec<SocketAddr>>>,
        fail: bool,
    }

    impl Resolve for Table {
        fn original_destination(
            &mut self,
            client: SocketAddr,
            _proxy: SocketAddr,
        ) -> Result<Option<SocketAddr>, conntrack::ConntrackError> {
            self.asked.lock().unwrap().push(client);
            if self.fail {
                return Err(conntrack::ConntrackError::Truncated);
            }
            Ok(self.known.get(&client).copied())
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn seg(src: &str, dst: &str, syn: bool, ack: bool) -> TcpSegment<'static> {
        TcpSegment {
            src: addr(src),
            dst: addr(dst),
            seq: 1,
            ack: 0,
            flags: TcpFlags {
                syn,
                ack,
                fin: false,
                rst: false,
            },
            payload: b"",
            missing_tail: 0,
        }
    }

    fn ends(s: &TcpSegment<'_>) -> (String, String) {
        (s.src.to_string(), s.dst.to_string())
    }

    const APP: &str = "10.1.0.5:40000";
    const PROXY: &str = "127.0.0.1:15001";
    const PEER: &str = "10.2.0.9:8080";

    #[test]
    fn a_redirected_connection_becomes_one_connection_with_its_real_peer() {
        let table = Table {
            known: [(addr(APP), addr(PEER))].into(),
            ..Table::default()
        };
        let asked = Arc::clone(&table.asked);
        let mut r = Redirects::new(&[15001], Box::new(table));
        let mut syn = seg(APP, PROXY, true, false);
        r.translate(&mut syn, 0);
        assert_eq!(ends(&syn), (APP.into(), PEER.into()));
        let mut syn_ack = seg(PEER, APP, true, true);
        r.translate(&mut syn_ack, 1);
        assert_eq!(ends(&syn_ack), (PEER.into(), APP.into()), "left as it is");
        let mut data = seg(APP, PROXY, false, true);
        r.translate(&mut data, 2);
        assert_eq!(ends(&data), (APP.into(), PEER.into()));
        assert_eq!(asked.lock().unwrap().len(), 1, "asked once per connection");
        assert_eq!(r.stats.resolved, 1);
        // Unrelated loopback traffic and other ports are left alone.
        let mut local = seg("127.0.0.1:50000", "127.0.0.1:8080", false, true);
        r.translate(&mut local, 3);
        assert_eq!(
            ends(&local),
            ("127.0.0.1:50000".into(), "127.0.0.1:8080".into())
        );
        let mut inbound = seg("10.3.0.1:41000", "10.1.0.5:8080", true, false);
        r.translate(&mut inbound, 4);
        assert_eq!(
            ends(&inbound),
            ("10.3.0.1:41000".into(), "10.1.0.5:8080".into())
        );
    }

    #[test]
    fn a_new_syn_from_the_same_client_port_is_asked_again() {
        let table = Table {
            known: [(addr(APP), addr(PEER))].into(),
            ..Table::default()
        };
        let asked = Arc::clone(&table.asked);
        let mut r = Redirects::new(&[15001], Box::new(table));
        r.translate(&mut seg(APP, PROXY, true, false), 0);
        r.translate(&mut seg(APP, PROXY, true, false), 5);
        assert_eq!(asked.lock().unwrap().len(), 2);
    }

    #[test]
    fn unknown_destinations_keep_the_proxys_address_on_both_directions_and_are_learned() {
        for fail in [false, true] {
            let mut r = Redirects::new(
                &[15001],
                Box::new(Table {
                    fail,
                    ..Table::default()
                }),
            );
            let mut syn = seg(APP, PROXY, true, false);
            r.translate(&mut syn, 0);
            assert_eq!(ends(&syn), (APP.into(), PROXY.into()));
            assert_eq!(r.learned(addr(APP), addr(PROXY)), None, "nothing seen yet");
            let mut answer = seg(PEER, APP, true, true);
            r.translate(&mut answer, 1);
            assert_eq!(ends(&answer), (PROXY.into(), APP.into()));
            assert_eq!(
                (r.stats.unknown, r.stats.errors),
                if fail { (0, 1) } else { (1, 0) }
            );
            // The answers told the real destination: the pair will name it.
            assert_eq!(r.learned(addr(APP), addr(PROXY)), Some(addr(PEER)));
            assert_eq!(r.learned(addr(APP), addr("127.0.0.1:8080")), None);
            assert_eq!(r.learned(addr("10.1.0.5:1"), addr(PROXY)), None);
            let mut more = seg(PEER, APP, false, true);
            r.translate(&mut more, 2);
            assert_eq!(r.stats.learned, 1, "counted once per connection");
        }
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_connections() {
        let mut r = Redirects::new(&[15001], Box::new(Table::default()));
        for i in 0..MAX_CLIENTS + 10 {
            let client = format!("10.1.{}.{}:4000", i / 250, i % 250);
            r.translate(&mut seg(&client, PROXY, true, false), 0);
        }
        assert_eq!(r.len(), MAX_CLIENTS);
        assert_eq!(r.stats.table_full, 10);
        r.translate(&mut seg(APP, PROXY, true, false), ENTRY_TTL_US + 1);
        assert_eq!(r.len(), 1, "the idle ones were swept");
    }
}
