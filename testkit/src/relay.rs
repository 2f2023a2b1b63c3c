//! Test helper: a user-space packet relay that impairs traffic on the wire, for kernels without
//! `sch_netem`. It runs in a "middle" namespace between two veth links and bridges Ethernet frames
//! between them with pcap (read with direction "in", write with `pcap_sendpacket`), dropping,
//! duplicating and reordering TCP frames on the way. TCP then really retransmits, sees duplicates and
//! out-of-order segments, as on a lossy network. Optionally it also copies every frame, impaired on its
//! own, onto a third "mirror" interface: a capture point that loses packets the endpoints never miss
//! (like an overloaded tap), so a capture there has real gaps. The mirror gets each frame before it
//! is forwarded, so it sees a request before its response unless its `reorder` holds frames back
//! (then frames of the two directions can swap, as at a capture point that merges them).
//!
//! Frames sent by a veth carry TCP checksums the sender left for offload (`CHECKSUM_PARTIAL`); a frame
//! re-injected from user space is checked by the receiver, so the relay recomputes the IPv4 TCP
//! checksum. The endpoints' veths need `gso_max_segs 1` (see [`Relay::prepare_endpoint`]) so that no
//! frame is larger than the MTU.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use node_worker::discovery::in_netns;
use pcap::{Active, Capture, Direction};

/// What to do to TCP frames, in per-mille of frames. SYNs are never dropped or held (a lost SYN costs a
/// 1 s retransmission timeout and tests nothing here).
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    pub drop: u32,
    pub duplicate: u32,
    pub reorder: u32,
    pub seed: u64,
}

impl Impairment {
    pub const NONE: Impairment = Impairment {
        drop: 0,
        duplicate: 0,
        reorder: 0,
        seed: 1,
    };
}

/// What the relay did (all directions; the mirror separately).
#[derive(Debug, Default)]
pub struct RelayStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub send_errors: AtomicU64,
    pub mirror_sent: AtomicU64,
    pub mirror_dropped: AtomicU64,
    pub mirror_duplicated: AtomicU64,
    pub mirror_reordered: AtomicU64,
}

impl RelayStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A running relay; stops and joins its threads on drop.
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub stats: Arc<RelayStats>,
}

/// xorshift64*: deterministic, good enough to pick frames.
struct Rng(u64);

impl Rng {
    fn per_mille(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u32 % 1000
    }
}

/// IPv4 TCP frame: (is SYN). Other frames (ARP, IPv6 neighbour discovery) are never impaired.
fn tcp_syn(frame: &[u8]) -> Option<bool> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let flags = *frame.get(14 + ihl + 13)?;
    Some(flags & 0x02 != 0)
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn add_words(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Recomputes the TCP checksum of an IPv4 TCP frame in place.
fn fix_tcp_checksum(frame: &mut [u8]) {
    if tcp_syn(frame).is_none() {
        return;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    if total < ihl + 20 || frame.len() < 14 + total {
        return;
    }
    let (ip, tcp) = frame[14..14 + total].split_at_mut(ihl);
    tcp[16] = 0;
    tcp[17] = 0;
    let tcp_len = tcp.len() as u32;
    let pseudo = add_words(&ip[12..20]) + 6 + tcp_len;
    let sum = !fold(pseudo + add_words(tcp));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// One output with its impairment: forwards, drops, duplicates or holds back frames.
struct Output {
    handle: Capture<Active>,
    impairment: Impairment,
    rng: Rng,
    held: Option<Vec<u8>>,
    mirror: bool,
}

impl Output {
    fn send(&mut self, frame: &[u8], stats: &RelayStats) {
        if self.handle.sendpacket(frame).is_err() {
            stats.send_errors.fetch_add(1, Ordering::Relaxed);
        } else if self.mirror {
            stats.mirror_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self, stats: &RelayStats, what: &str) {
        let counter = match (self.mirror, what) {
            (false, "drop") => &stats.dropped,
            (false, "dup") => &stats.duplicated,
            (false, _) => &stats.reordered,
            (true, "drop") => &stats.mirror_dropped,
            (true, "dup") => &stats.mirror_duplicated,
            (true, _) => &stats.mirror_reordered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn offer(&mut self, frame: &[u8], stats: &RelayStats) {
        let Some(syn) = tcp_syn(frame) else {
            self.send(frame, stats);
            self.release(stats);
            return;
        };
        let imp = self.impairment;
        let roll = self.rng.per_mille();
        let dropping = roll < imp.drop;
        let duplicating = !dropping && roll < imp.drop + imp.duplicate;
        let holding = !dropping && !duplicating && roll < imp.drop + imp.duplicate + imp.reorder;
        if dropping && !syn {
            self.count(stats, "drop");
        } else if duplicating {
            self.count(stats, "dup");
            self.send(frame, stats);
            self.send(frame, stats);
        } else if holding && !syn && self.held.is_none() {
            // Sent after the next frame.
            self.count(stats, "reorder");
            self.held = Some(frame.to_vec());
            return;
        } else {
            self.send(frame, stats);
        }
        self.release(stats);
    }

    fn release(&mut self, stats: &RelayStats) {
        if let Some(held) = self.held.take() {
            self.send(&held, stats);
        }
    }
}

fn open(ns: &crate::netns::Netns, interface: &str) -> Capture<Active> {
    let name = interface.to_string();
    in_netns(&ns.path(), move || {
        Capture::from_device(name.as_str())
            .and_then(|c| {
                c.immediate_mode(true)
                    .snaplen(65_535)
                    .timeout(5)
                    .buffer_size(4 << 20)
                    .open()
            })
            .map_err(|e| format!("{name}: {e}"))
    })
    .expect("enter namespace")
    .unwrap_or_else(|e| panic!("relay cannot open {e}"))
}

impl Relay {
    /// Limits an endpoint's veth to MTU-sized frames (no GSO super-frames for the relay to copy).
    pub fn prepare_endpoint(ns: &crate::netns::Netns, interface: &str) {
        ns.ip(&["link", "set", "dev", interface, "gso_max_segs", "1"]);
    }

    /// Bridges `a` and `b` (interfaces in `ns`) with `path` impairment in both directions; with
    /// `mirror`, also copies every frame onto that interface with its own impairment.
    pub fn start(
        ns: &crate::netns::Netns,
        a: &str,
        b: &str,
        path: Impairment,
        mirror: Option<(&str, Impairment)>,
    ) -> Relay {
        Self::start_with(ns, a, b, path, mirror, false)
    }

    /// [`Relay::start`]; with `late_mirror`, the mirror copy is made after the frame went on, so a
    /// quick answer can reach the mirror before the frame that caused it (a response captured before
    /// its request, as by a capture point that merges sources with different delays).
    pub fn start_with(
        ns: &crate::netns::Netns,
        a: &str,
        b: &str,
        path: Impairment,
        mirror: Option<(&str, Impairment)>,
        late_mirror: bool,
    ) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let mut threads = Vec::new();
        // One mirror for both directions, written before the frame goes on: the mirror sees each
        // frame before anything it causes (as a capture at an endpoint would), unless `reorder` holds
        // frames back.
        let mirror_output = mirror.map(|(interface, imp)| {
            Arc::new(Mutex::new(Output {
                handle: open(ns, interface),
                impairment: imp,
                rng: Rng(imp.seed | 1),
                held: None,
                mirror: true,
            }))
        });
        for (n, (from, to)) in [(a, b), (b, a)].into_iter().enumerate() {
            let input = open(ns, from);
            input
                .direction(Direction::In)
                .unwrap_or_else(|e| panic!("relay cannot set direction on {from}: {e}"));
            let salt = n as u64 + 1;
            let output = Output {
                handle: open(ns, to),
                impairment: path,
                rng: Rng(path.seed.wrapping_mul(31).wrapping_add(salt) | 1),
                held: None,
                mirror: false,
            };
            let mirror = mirror_output.clone();
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            threads.push(std::thread::spawn(move || {
                forward(input, output, mirror, late_mirror, &stop, &stats);
            }));
        }
        Relay {
            stop,
            threads,
            stats,
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn forward(
    mut input: Capture<Active>,
    mut output: Output,
    mirror: Option<Arc<Mutex<Output>>>,
    late_mirror: bool,
    stop: &AtomicBool,
    stats: &RelayStats,
) {
    let mut frame = Vec::with_capacity(65_536);
    while !stop.load(Ordering::Relaxed) {
        match input.next_packet() {
            Ok(packet) => {
                frame.clear();
                frame.extend_from_slice(packet.data);
                fix_tcp_checksum(&mut frame);
                if late_mirror {
                    output.offer(&frame, stats);
                }
                if let Some(mirror) = &mirror {
                    mirror.lock().expect("mirror").offer(&frame, stats);
                }
                if !late_mirror {
                    output.offer(&frame, stats);
                }
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing more came: what was held back goes now.
                output.release(stats);
                if let Some(mirror) = &mirror {
                    mirror.lock().expect("mirror").release(stats);
                }
            }
            Err(_) => break,
        }
    }
}
