//! Copies of an exchange between a pod and a sidecar pod of the same node, matched by content.
//!
//! A sidecar proxy (Istio's envoy, Linkerd's proxy) re-originates every inbound connection to its
//! application from inside the pod: from 127.0.0.6 (Istio) or the pod's own address (Linkerd). When the
//! client is another tapped pod of this node, its own tap records the exchange (its view: the real
//! client, the real server), and the sidecar pod's loopback tap records it again on the proxy's leg,
//! whose client cannot be told from its addresses (see `mesh_views` for the cases addresses settle).
//! Connections cannot be matched either: the proxy pools its connections to the application and sends
//! any client's requests over any of them. So pairs are matched, by what they carry: method, target,
//! status and both bodies (the proxy adds headers of its own, it does not touch these).
//!
//! The rule is the mesh views' one: the client's view is kept, the proxy's leg is skipped (counted).
//! Either copy may complete first (the proxy's leg usually does: the answer crosses the pod's `lo`
//! before the client's interface, but the capture loop reads the taps one after the other, so either
//! may come first), so each waits for the other: a client's view up to [`VIEW_WAIT_US`] (with nothing
//! to match, it is sent then: the proxy answered by itself, a 503, a denial), a proxy leg up to
//! [`LEG_WAIT_US`] (clients of other nodes, the common case, never send a view: their exchanges are
//! delayed that long). Held pairs are bounded ([`MAX_HELD`], [`MAX_HELD_BYTES`]): beyond, the oldest
//! is sent without waiting. Matching is by content in constant time.
//!
//! Pure: no clock, no I/O; the pipeline passes packet time and sends what comes out.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};

use crate::app::CompletedPair;

/// How long a client's view waits for the proxy's leg, in packet time (a view with no leg: the proxy
/// answered by itself).
pub const VIEW_WAIT_US: i64 = 1_000_000;
/// How long a proxy leg waits for a client's view: longer than the capture takes to hand over another
/// tap's packets of the same moment (a 20 ms block timeout, a 100 ms poll), short enough that an
/// exchange with a client of another node (no view ever comes: the common case) is hardly delayed.
pub const LEG_WAIT_US: i64 = 250_000;
/// At most this many pairs wait, and at most this many bytes of them: beyond, the oldest is sent.
pub const MAX_HELD: usize = 16_384;
pub const MAX_HELD_BYTES: usize = 8 << 20;

/// Which copy of an exchange a pair is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Seen on the client's tap: kept.
    ClientView,
    /// Seen on the sidecar pod's loopback, on its proxy's inbound leg: skipped when a client's view
    /// matches it.
    ProxyLeg,
}

/// A connection's pairs are one copy of exchanges with a sidecar pod of this node: which copy, of which
/// pod, completed when (packet time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOf {
    pub role: Role,
    pub pod: PodKey,
    pub at_us: i64,
}

/// The sidecar pod's namespace an exchange was addressed to (a hash of its label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PodKey(u64);

impl PodKey {
    pub fn of(netns_label: &str) -> PodKey {
        PodKey(fixed_hash(netns_label.as_bytes()))
    }
}

/// What an exchange carries that the proxy leaves as it is: method, target, status, both bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

impl Fingerprint {
    pub fn of(pair: &CompletedPair) -> Fingerprint {
        let mut h = hasher();
        let (request, response) = (&pair.request, &pair.response);
        request.head.method().hash(&mut h);
        request.head.target().hash(&mut h);
        response.head.status().hash(&mut h);
        request.body.hash(&mut h);
        response.body.hash(&mut h);
        Fingerprint(h.finish())
    }
}

/// A fixed hasher: fingerprints are compared within one worker only; fixed keeps tests reproducible.
fn hasher() -> impl Hasher {
    foldhash::quality::FixedState::with_seed(0x1d5e_ca12).build_hasher()
}

fn fixed_hash(bytes: &[u8]) -> u64 {
    let mut h = hasher();
    bytes.hash(&mut h);
    h.finish()
}

type Content = (PodKey, Fingerprint);

struct Held<T> {
    content: Content,
    since_us: i64,
    bytes: usize,
    item: T,
}

/// The copies of one role waiting, oldest first, found by content in constant time. A copy taken by
/// its match leaves an empty slot, skipped when the front is popped.
struct Queue<T> {
    slots: VecDeque<Option<Held<T>>>,
    /// The sequence number of `slots[0]`.
    first: u64,
    /// Sequence numbers of the copies held, by content, oldest first.
    by_content: HashMap<Content, VecDeque<u64>, foldhash::fast::RandomState>,
    held: usize,
    wait_us: i64,
}

impl<T> Queue<T> {
    fn new(wait_us: i64) -> Self {
        Queue {
            slots: VecDeque::new(),
            first: 0,
            by_content: HashMap::default(),
            held: 0,
            wait_us,
        }
    }

    fn push(&mut self, held: Held<T>) {
        let seq = self.first + self.slots.len() as u64;
        self.by_content
            .entry(held.content)
            .or_default()
            .push_back(seq);
        self.slots.push_back(Some(held));
        self.held += 1;
    }

    /// The oldest copy with this content.
    fn take(&mut self, content: &Content) -> Option<Held<T>> {
        let seqs = self.by_content.get_mut(content)?;
        let seq = seqs.pop_front()?;
        if seqs.is_empty() {
            self.by_content.remove(content);
        }
        let slot = usize::try_from(seq - self.first).ok()?;
        let held = self.slots.get_mut(slot)?.take()?;
        self.held -= 1;
        self.trim();
        Some(held)
    }

    /// When the oldest copy held began to wait.
    fn oldest(&self) -> Option<i64> {
        self.slots
            .front()
            .and_then(|s| s.as_ref())
            .map(|h| h.since_us)
    }

    fn pop_oldest(&mut self) -> Option<Held<T>> {
        let held = self.slots.pop_front()??;
        self.first += 1;
        if let Some(seqs) = self.by_content.get_mut(&held.content) {
            seqs.pop_front();
            if seqs.is_empty() {
                self.by_content.remove(&held.content);
            }
        }
        self.held -= 1;
        self.trim();
        Some(held)
    }

    /// Drops the empty slots at the front, so that the front is always a copy held (or nothing).
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first += 1;
        }
    }
}

/// The copies waiting for their other half.
pub struct SidecarCopies<T> {
    views: Queue<T>,
    legs: Queue<T>,
    held_bytes: usize,
}

impl<T> Default for SidecarCopies<T> {
    fn default() -> Self {
        SidecarCopies {
            views: Queue::new(VIEW_WAIT_US),
            legs: Queue::new(LEG_WAIT_US),
            held_bytes: 0,
        }
    }
}

impl<T> SidecarCopies<T> {
    /// The other copy of an exchange with this content addressed to `pod`, if one is held: taken (the
    /// oldest, if several: among identical exchanges any one will do, every one kept is a client's
    /// view). A proxy leg finds the client's view to send; a client's view finds the leg to skip.
    pub fn take_other(&mut self, role: Role, pod: PodKey, fingerprint: Fingerprint) -> Option<T> {
        let other = match role {
            Role::ClientView => &mut self.legs,
            Role::ProxyLeg => &mut self.views,
        };
        let held = other.take(&(pod, fingerprint))?;
        self.held_bytes -= held.bytes;
        Some(held.item)
    }

    /// Keeps a copy (`item`, of `bytes`) completed at `now_us` until its other half comes
    /// ([`Self::take_other`]) or it is due ([`Self::pop_due`]).
    pub fn hold(
        &mut self,
        role: Role,
        pod: PodKey,
        fingerprint: Fingerprint,
        now_us: i64,
        bytes: usize,
        item: T,
    ) {
        let queue = match role {
            Role::ClientView => &mut self.views,
            Role::ProxyLeg => &mut self.legs,
        };
        self.held_bytes += bytes;
        queue.push(Held {
            content: (pod, fingerprint),
            since_us: now_us,
            bytes,
            item,
        });
    }

    /// A pair held that waited long enough by `now_us` (a view [`VIEW_WAIT_US`], a leg
    /// [`LEG_WAIT_US`]), or the oldest when the bounds are passed: to be sent. Call until `None`
    /// (with `i64::MAX`: every one, at the end of input).
    pub fn pop_due(&mut self, now_us: i64) -> Option<T> {
        let over = self.views.held + self.legs.held > MAX_HELD || self.held_bytes > MAX_HELD_BYTES;
        let due = |q: &Queue<T>| {
            q.oldest()
                .filter(|&since| over || now_us.saturating_sub(since) >= q.wait_us)
        };
        let queue = match (due(&self.views), due(&self.legs)) {
            (Some(v), Some(l)) if l < v => &mut self.legs,
            (Some(_), _) => &mut self.views,
            (None, Some(_)) => &mut self.legs,
            (None, None) => return None,
        };
        let held = queue.pop_oldest()?;
        self.held_bytes -= held.bytes;
        Some(held.item)
    }

    pub fn is_empty(&self) -> bool {
        self.views.held + self.legs.held == 0
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.views.held + self.legs.held
    }

    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fp(n: u64) -> Fingerprint {
        Fingerprint(n)
    }

    fn pod(label: &str) -> PodKey {
        PodKey::of(label)
    }

    /// What the pipeline does with a copy: the other half's item when one was held (`Err`), else
    /// it is held.
    fn offer<T>(
        c: &mut SidecarCopies<T>,
        role: Role,
        pod: PodKey,
        f: Fingerprint,
        now: i64,
        item: T,
    ) -> Result<(), T> {
        if let Some(other) = c.take_other(role, pod, f) {
            return Err(other);
        }
        c.hold(role, pod, f, now, 10, item);
        Ok(())
    }

    #[test]
    fn the_proxy_leg_first_then_the_clients_view_one_is_sent() {
        let mut c = SidecarCopies::default();
        assert_eq!(
            offer(&mut c, Role::ProxyLeg, pod("b"), fp(1), 0, "leg"),
            Ok(())
        );
        // The view finds the leg (skipped); the view is sent.
        assert_eq!(
            offer(&mut c, Role::ClientView, pod("b"), fp(1), 500, "view"),
            Err("leg")
        );
        assert!(c.is_empty());
        assert_eq!(c.held_bytes(), 0);
        assert_eq!(c.pop_due(i64::MAX), None);
    }

    #[test]
    fn the_clients_view_first_then_the_proxy_leg_one_is_sent() {
        let mut c = SidecarCopies::default();
        assert_eq!(
            offer(&mut c, Role::ClientView, pod("b"), fp(1), 0, "view"),
            Ok(())
        );
        assert_eq!(
            offer(&mut c, Role::ProxyLeg, pod("b"), fp(1), 10, "leg"),
            Err("view")
        );
        assert!(c.is_empty());
    }

    #[test]
    fn a_leg_waits_less_than_a_view() {
        let mut c = SidecarCopies::default();
        assert_eq!(
            offer(&mut c, Role::ClientView, pod("b"), fp(1), 0, "view"),
            Ok(())
        );
        assert_eq!(
            offer(&mut c, Role::ProxyLeg, pod("b"), fp(2), 10, "leg"),
            Ok(())
        );
        assert_eq!(c.pop_due(10 + LEG_WAIT_US - 1), None);
        assert_eq!(
            c.pop_due(10 + LEG_WAIT_US),
            Some("leg"),
            "the leg's wait is over first"
        );
        assert_eq!(c.pop_due(VIEW_WAIT_US - 1), None);
        assert_eq!(c.pop_due(VIEW_WAIT_US), Some("view"));
        assert!(c.is_empty());
    }

    #[test]
    fn copies_match_only_within_one_pod_and_one_content() {
        let mut c = SidecarCopies::default();
        assert_eq!(
            offer(&mut c, Role::ProxyLeg, pod("b"), fp(1), 0, "leg-b1"),
            Ok(())
        );
        assert_eq!(
            offer(&mut c, Role::ClientView, pod("c"), fp(1), 1, "view-c1"),
            Ok(())
        );
        assert_eq!(
            offer(&mut c, Role::ClientView, pod("b"), fp(2), 2, "view-b2"),
            Ok(())
        );
        // Two views of the same content do not match each other, nor two legs.
        assert_eq!(
            offer(&mut c, Role::ClientView, pod("c"), fp(1), 3, "view-c1'"),
            Ok(())
        );
        assert_eq!(
            offer(&mut c, Role::ProxyLeg, pod("b"), fp(1), 4, "leg-b1'"),
            Ok(())
        );
        assert_eq!(c.len(), 5);
        // Nothing matched: each sent once its wait is over, the oldest first.
        let rest: Vec<_> = std::iter::from_fn(|| c.pop_due(i64::MAX)).collect();
        assert_eq!(
            rest,
            ["leg-b1", "view-c1", "view-b2", "view-c1'", "leg-b1'"]
        );
        assert_eq!(c.held_bytes(), 0);
    }

    #[test]
    fn identical_exchanges_pair_off_one_to_one_oldest_first() {
        let mut c = SidecarCopies::default();
        for i in 0..3 {
            assert_eq!(offer(&mut c, Role::ProxyLeg, pod("b"), fp(7), i, i), Ok(()));
        }
        // One taken from the middle of the queue by another content first.
        assert_eq!(
            offer(&mut c, Role::ProxyLeg, pod("b"), fp(8), 3, 99),
            Ok(())
        );
        assert_eq!(
            offer(&mut c, Role::ClientView, pod("b"), fp(8), 4, 0),
            Err(99)
        );
        for i in 10..13 {
            assert_eq!(
                offer(&mut c, Role::ClientView, pod("b"), fp(7), i, i),
                Err(i - 10)
            );
        }
        assert!(c.is_empty());
        assert_eq!(c.pop_due(i64::MAX), None);
    }

    #[test]
    fn held_pairs_are_bounded_in_count_and_bytes() {
        let mut c = SidecarCopies::default();
        for i in 0..MAX_HELD + 3 {
            c.hold(Role::ClientView, pod("b"), fp(i as u64), 0, 1, i);
        }
        let early: Vec<_> = std::iter::from_fn(|| c.pop_due(0)).collect();
        assert_eq!(early, [0, 1, 2], "the oldest sent without waiting");
        assert_eq!(c.len(), MAX_HELD);
        // Sent by age: a match still finds what is left.
        assert_eq!(c.take_other(Role::ProxyLeg, pod("b"), fp(3)), Some(3));
        assert_eq!(c.take_other(Role::ProxyLeg, pod("b"), fp(1)), None);

        let mut c = SidecarCopies::default();
        let big = MAX_HELD_BYTES / 2 + 1;
        for i in 0..3 {
            c.hold(Role::ClientView, pod("b"), fp(i), 0, big, i);
        }
        let early: Vec<_> = std::iter::from_fn(|| c.pop_due(0)).collect();
        assert_eq!(early, [0, 1]);
        assert_eq!(c.held_bytes(), big);
    }

    fn pair_of(
        method: &str,
        target: &str,
        status: u16,
        request: &[u8],
        response: &[u8],
    ) -> CompletedPair {
        use crate::app::HttpMessage;
        use crate::http1::head::{parse_request, parse_response};
        let head = format!("{method} {target} HTTP/1.1\r\nHost: b\r\n\r\n").into_bytes();
        let mut request_message = HttpMessage::started(parse_request(head).unwrap(), 0);
        request_message.body = request.to_vec();
        let head = format!("HTTP/1.1 {status} X\r\nServer: envoy\r\n\r\n").into_bytes();
        let mut response_message = HttpMessage::started(parse_response(head).unwrap(), 0);
        response_message.body = response.to_vec();
        CompletedPair {
            request: request_message,
            response: response_message,
        }
    }

    #[test]
    fn fingerprints_differ_by_each_field_the_proxy_keeps() {
        let base = Fingerprint::of(&pair_of("GET", "/a", 200, b"q", b"r"));
        assert_eq!(
            base,
            Fingerprint::of(&pair_of("GET", "/a", 200, b"q", b"r"))
        );
        for other in [
            pair_of("POST", "/a", 200, b"q", b"r"),
            pair_of("GET", "/b", 200, b"q", b"r"),
            pair_of("GET", "/a", 503, b"q", b"r"),
            pair_of("GET", "/a", 200, b"Q", b"r"),
            pair_of("GET", "/a", 200, b"q", b"R"),
        ] {
            assert_ne!(base, Fingerprint::of(&other));
        }
    }
}
