//! The pipeline: packets in, pair messages out to a sink. It owns the connection table and the time.
//!
//! Time is the packets' own (capture timestamps, never going backwards here) so that a capture file is
//! processed exactly as it was captured; live capture also advances it with [`Pipeline::tick`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use interceptor_crds::config::WorkerConfig;

use crate::app::{CompletedPair, Connection, Env, Opaque};
use crate::decode::{self, Skip};
use crate::filters::Rules;
use crate::memory::{release_flow, Allowance, FlowBudget, TotalBudget};
use crate::message::{encode_pair, Endpoint, Ipv4Text, Origin, PodRef};
use crate::pair_id::{write_pair_id, IdPrefix};
use crate::sink::{PairRef, Sink, SinkStats};
use crate::source::{InterfaceInfo, Packet};
use crate::stats::{Counters, DropReason};
use crate::tcp::reassembly::{seq_diff, Reassembler, ReassemblyStats, SegmentIn};
use crate::tcp::{Direction, FlowKey};

/// Maps addresses to pods (the Kubernetes API in cluster mode; nothing offline).
pub trait PodLookup: Send {
    fn pod(&self, addr: &SocketAddr) -> Option<PodRef>;

    /// The pod whose network namespace is `netns` (as in `InterfaceInfo::netns`), with the container
    /// listening on `port` when known: loopback addresses name no pod by themselves, but on a pod's
    /// loopback both ends belong to that pod (its application and its sidecar).
    fn pod_in_netns(&self, _netns: &str, _port: u16) -> Option<PodRef> {
        None
    }
}

/// Who runs the pipeline: written into every pair.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node: String,
    /// `<namespace>/<InterceptorConfig name>`.
    pub interceptor: String,
}

/// Bounds of the connection table.
#[derive(Clone, Copy, Debug)]
struct TableLimits {
    max_flows: usize,
    flow_buffer: usize,
    idle_us: i64,
}

impl TableLimits {
    fn from_config(config: &WorkerConfig) -> Self {
        let l = &config.limits;
        TableLimits {
            max_flows: usize::try_from(l.max_flows).unwrap_or(usize::MAX),
            flow_buffer: usize::try_from(l.max_flow_buffer_bytes).unwrap_or(usize::MAX),
            idle_us: i64::try_from(l.flow_idle_timeout_seconds.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
        }
    }
}

struct Flow {
    conn: Connection,
    reassembly: [Reassembler; 2],
    budget: FlowBudget,
    last_seen_us: i64,
    interface: usize,
    /// The SYN's sequence number, to tell a new connection on the same ports from a retransmission.
    syn_seq: Option<u32>,
    /// Another view of a connection tracked under another key (see [`Pipeline::views`]): its packets
    /// are counted and skipped.
    mirror: bool,
    /// Whether any payload was seen (a view that has seen none can still give way to a better one).
    payload_seen: bool,
}

/// Flow keys come from the network: a fast hasher, but a seeded one (no fixed collisions to aim at).
type FlowHasher = foldhash::fast::RandomState;

/// How often (in packet time) timeouts are checked.
const SWEEP_EVERY_US: i64 = 1_000_000;

/// How long a closed connection is remembered (like TCP's TIME_WAIT), so that its packets seen late on
/// another interface (two pods on one node both tapped) are recognised as copies, not a new connection.
const TOMBSTONE_US: i64 = 60_000_000;

/// A connection that closed recently.
#[derive(Clone, Copy, Debug)]
struct Tombstone {
    /// The client's initial sequence number, if its SYN was seen: a SYN with another one is a new
    /// connection on the same ports.
    syn_seq: Option<u32>,
    /// Where each direction's stream had got to: data beyond it means the connection went on (an
    /// RST that the endpoints ignored), not a copy.
    next_seq: [Option<u32>; 2],
    closed_us: i64,
}

impl Tombstone {
    /// Whether a packet of this closed connection is only a copy of what was already processed.
    fn is_copy(&self, seg: &decode::TcpSegment<'_>, dir: Direction) -> bool {
        let flags = seg.flags;
        if flags.syn && !flags.ack {
            return self.syn_seq == Some(seg.seq);
        }
        if seg.payload.is_empty() {
            return true;
        }
        let end = seg.seq.wrapping_add(seg.payload.len() as u32);
        match self.next_seq[dir.index()] {
            Some(next) => seq_diff(end, next) <= 0,
            None => false,
        }
    }
}

pub struct Pipeline {
    rules: Rules,
    limits: TableLimits,
    identity: Identity,
    flows: HashMap<FlowKey, Flow, FlowHasher>,
    closed: HashMap<FlowKey, Tombstone, FlowHasher>,
    /// Connections by client address and initial sequence number. A Service's traffic between two pods
    /// of one node is tapped twice, through NAT: on the client's interface towards the ClusterIP, on the
    /// server's towards the pod. The client's address and ISN are the same in both views, so the second
    /// view is recognised and skipped instead of being paired twice.
    views: HashMap<(SocketAddr, u32, u32), FlowKey, FlowHasher>,
    /// Each interface tapped, with its fields of the pair message.
    interfaces: Vec<(InterfaceInfo, Origin)>,
    total: TotalBudget,
    counters: Counters,
    reassembly: ReassemblyStats,
    sink: Box<dyn Sink>,
    pods: Option<Box<dyn PodLookup>>,
    now_us: i64,
    last_sweep_us: i64,
    completed: Vec<CompletedPair>,
    encoded: Vec<u8>,
    id_prefix: IdPrefix,
    next_id: u64,
    /// The id of the pair being encoded (a buffer reused for every pair).
    id: String,
    /// The partition key of the pairs being sent (a reused buffer).
    partition_key: String,
}

impl Pipeline {
    pub fn new(config: &WorkerConfig, identity: Identity, sink: Box<dyn Sink>) -> Self {
        Pipeline {
            rules: Rules::from_config(config),
            limits: TableLimits::from_config(config),
            identity,
            flows: HashMap::default(),
            closed: HashMap::default(),
            views: HashMap::default(),
            interfaces: Vec::new(),
            total: TotalBudget::new(
                usize::try_from(config.limits.max_total_buffer_bytes).unwrap_or(usize::MAX),
            ),
            counters: Counters::default(),
            reassembly: ReassemblyStats::default(),
            sink,
            pods: None,
            now_us: i64::MIN,
            last_sweep_us: i64::MIN,
            completed: Vec::new(),
            encoded: Vec::with_capacity(ENCODED_INITIAL_BYTES),
            id_prefix: IdPrefix::random(),
            next_id: 0,
            id: String::new(),
            partition_key: String::new(),
        }
    }

    /// Applies a new configuration without losing connections or buffered pairs.
    pub fn reconfigure(&mut self, config: &WorkerConfig) {
        self.rules = Rules::from_config(config);
        self.limits = TableLimits::from_config(config);
    }

    /// Ids from now on start with `prefix` instead of a random one: the same input then gives the same
    /// output (e.g. to compare two builds).
    pub fn set_id_prefix(&mut self, prefix: IdPrefix) {
        self.id_prefix = prefix;
    }

    pub fn set_pod_lookup(&mut self, pods: Box<dyn PodLookup>) {
        self.pods = Some(pods);
    }

    /// Registers an interface; packets name it by the returned index.
    pub fn add_interface(&mut self, info: InterfaceInfo) -> usize {
        if let Some(i) = self.interfaces.iter().position(|(known, _)| *known == info) {
            return i;
        }
        let origin = Origin::new(&self.identity.node, &self.identity.interceptor, &info);
        self.interfaces.push((info, origin));
        self.interfaces.len() - 1
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.bytes_retransmitted = self.reassembly.bytes_retransmitted;
        c.bytes_missing = self.reassembly.bytes_missing;
        c
    }

    pub fn sink_stats(&self) -> SinkStats {
        self.sink.stats()
    }

    pub fn sink_mut(&mut self) -> &mut dyn Sink {
        self.sink.as_mut()
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Bytes buffered across all connections now, and the most ever.
    pub fn buffered_bytes(&self) -> (usize, usize) {
        (self.total.used(), self.total.peak())
    }

    /// One captured packet.
    pub fn handle(&mut self, interface: usize, packet: &Packet<'_>) {
        self.counters.packets += 1;
        self.counters.bytes += u64::from(packet.orig_len);
        self.advance(packet.timestamp_us);
        let seg = match decode::decode(packet.link_type, packet.data) {
            Ok(seg) => seg,
            Err(Skip::NotTcp) => {
                self.counters.packets_not_tcp += 1;
                return;
            }
            Err(Skip::Fragment) => {
                self.counters.packets_fragmented += 1;
                return;
            }
            Err(Skip::Malformed) => {
                self.counters.packets_malformed += 1;
                return;
            }
        };
        let (mut key, dir) = FlowKey::of(seg.src, seg.dst);
        if seg.src.ip().is_loopback() || seg.dst.ip().is_loopback() {
            key.scope = u32::try_from(interface).map_or(u32::MAX, |i| i.saturating_add(1));
        }
        let flags = seg.flags;

        // A SYN with a new initial sequence number on a known pair of ports is a new connection.
        if flags.syn && !flags.ack {
            if let Some(flow) = self.flows.get(&key) {
                if flow.syn_seq.is_some_and(|s| s != seg.seq)
                    || flow.syn_seq.is_none() && flow_is_done(flow)
                {
                    self.close_flow(&key, Close::Replaced);
                }
            }
        }
        if !self.flows.contains_key(&key) {
            if (!flags.syn && seg.payload.is_empty()) || flags.rst {
                return;
            }
            if let Some(tomb) = self.closed.get(&key) {
                if tomb.is_copy(&seg, dir)
                    && self.now_us.saturating_sub(tomb.closed_us) < TOMBSTONE_US
                {
                    self.counters.packets_after_close += 1;
                    return;
                }
                self.closed.remove(&key);
            }
            if self.flows.len() >= self.limits.max_flows {
                self.counters.count_drop(DropReason::FlowTableFull);
                return;
            }
            let client = flags
                .syn
                .then(|| if flags.ack { dir.reverse() } else { dir });
            let from_start = match client {
                Some(_) => [true, true],
                None => [false, false],
            };
            let client_syn = (flags.syn && !flags.ack).then_some(seg.seq);
            let mirror = client_syn.is_some_and(|isn| self.is_second_view(seg.src, isn, key));
            if mirror {
                self.counters.flows_mirrored += 1;
            } else {
                self.counters.flows += 1;
            }
            self.flows.insert(
                key,
                Flow {
                    conn: Connection::new(client, from_start, self.rules.max_header_bytes),
                    reassembly: [Reassembler::default(), Reassembler::default()],
                    budget: FlowBudget::default(),
                    last_seen_us: self.now_us,
                    interface,
                    syn_seq: client_syn,
                    mirror,
                    payload_seen: false,
                },
            );
        }
        let Pipeline {
            flows,
            total,
            counters,
            rules,
            reassembly,
            completed,
            limits,
            now_us,
            ..
        } = self;
        let Some(flow) = flows.get_mut(&key) else {
            return;
        };
        flow.last_seen_us = *now_us;
        if flow.mirror {
            counters.packets_mirrored += 1;
            if flags.rst || flags.fin {
                self.close_flow(&key, Close::Ended);
            }
            return;
        }
        flow.payload_seen |= !seg.payload.is_empty();
        if flows_is_ignored(flow) {
            if flags.rst || flags.fin {
                self.close_flow(&key, Close::Ended);
            }
            return;
        }
        let mut env = Env {
            rules,
            counters,
            now_us: *now_us,
            completed,
        };
        let mut allowance = Allowance {
            flow: &mut flow.budget,
            total,
            flow_limit: limits.flow_buffer,
        };
        let segment = SegmentIn {
            seq: seg.seq,
            ack: seg.ack,
            syn: flags.syn,
            fin: flags.fin,
            rst: flags.rst,
            payload: seg.payload,
            missing_tail: seg.missing_tail,
        };
        let [low, high] = &mut flow.reassembly;
        let (this, other) = match dir {
            Direction::LowToHigh => (low, high),
            Direction::HighToLow => (high, low),
        };
        if flags.syn {
            flow.conn.stream_started(dir, seg.seq.wrapping_add(1));
        }
        this.push(
            &segment,
            &mut allowance,
            reassembly,
            &mut flow.conn.side(dir, &mut env),
        );
        if flags.rst {
            other.finish(
                &mut allowance,
                reassembly,
                &mut flow.conn.side(dir.reverse(), &mut env),
            );
        } else if flags.ack {
            other.peer_acked(
                seg.ack,
                &mut allowance,
                reassembly,
                &mut flow.conn.side(dir.reverse(), &mut env),
            );
        }
        let done = flow_is_done(flow);
        let not_http = flow.conn.opaque().is_some_and(Opaque::is_not_http);
        self.emit_completed(&key);
        if done {
            self.close_flow(&key, Close::Ended);
        } else if not_http {
            // Keep the (now cheap) entry so the rest of the connection is skipped, but free its buffers.
            if let Some(flow) = self.flows.get_mut(&key) {
                let mut allowance = Allowance {
                    flow: &mut flow.budget,
                    total: &mut self.total,
                    flow_limit: self.limits.flow_buffer,
                };
                for r in &mut flow.reassembly {
                    r.release(&mut allowance);
                }
            }
        }
    }

    /// Time passes without packets (live capture).
    pub fn tick(&mut self, now_us: i64) {
        self.advance(now_us);
        self.sink.poll();
    }

    fn advance(&mut self, now_us: i64) {
        if now_us <= self.now_us {
            return;
        }
        self.now_us = now_us;
        if self.last_sweep_us == i64::MIN {
            self.last_sweep_us = now_us;
        } else if now_us - self.last_sweep_us >= SWEEP_EVERY_US {
            self.last_sweep_us = now_us;
            self.sweep();
        }
    }

    /// Whether a new connection (client SYN from `client` with sequence number `isn`, under `key`) is a
    /// second view of one already tracked. When the new view is the better one (its server is a known
    /// pod, the tracked view's is not: the server's side of a Service's NAT) and the tracked view has
    /// carried no payload yet, the tracked view becomes the mirror instead.
    fn is_second_view(&mut self, client: SocketAddr, isn: u32, key: FlowKey) -> bool {
        let Some(&primary) = self.views.get(&(client, isn, key.scope)) else {
            self.views.insert((client, isn, key.scope), key);
            return false;
        };
        let Some(tracked) = self
            .flows
            .get_mut(&primary)
            .filter(|f| !f.mirror && primary != key)
        else {
            self.views.insert((client, isn, key.scope), key);
            return false;
        };
        let server_of = |k: &FlowKey| if k.low == client { k.high } else { k.low };
        let known = |addr: SocketAddr| self.pods.as_ref().is_some_and(|p| p.pod(&addr).is_some());
        if !tracked.payload_seen && known(server_of(&key)) && !known(server_of(&primary)) {
            tracked.mirror = true;
            self.views.insert((client, isn, key.scope), key);
            return false;
        }
        true
    }

    /// Response timeouts, idle connections, old tombstones.
    fn sweep(&mut self) {
        let now = self.now_us;
        self.closed
            .retain(|_, t| now.saturating_sub(t.closed_us) < TOMBSTONE_US);
        let idle: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| self.now_us.saturating_sub(f.last_seen_us) > self.limits.idle_us)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.counters.flows_expired += 1;
            self.close_flow(&key, Close::Forgotten);
        }
        if self.rules.response_timeout_us.is_none() {
            return;
        }
        let mut with_output = Vec::new();
        for (key, flow) in self.flows.iter_mut() {
            if flow.conn.pending() == 0 {
                continue;
            }
            let mut env = Env {
                rules: &self.rules,
                counters: &mut self.counters,
                now_us: self.now_us,
                completed: &mut self.completed,
            };
            let mut allowance = Allowance {
                flow: &mut flow.budget,
                total: &mut self.total,
                flow_limit: self.limits.flow_buffer,
            };
            flow.conn.expire(&mut env, &mut allowance);
            if !self.completed.is_empty() {
                with_output.push(*key);
            }
        }
        for key in with_output {
            self.emit_completed(&key);
        }
    }

    /// Forgets a connection: delivers what its streams buffered (across holes, when it is forgotten
    /// rather than ended), ends its messages, and gives up on requests still waiting.
    fn close_flow(&mut self, key: &FlowKey, how: Close) {
        let Some(mut flow) = self.flows.remove(key) else {
            return;
        };
        let drain = how == Close::Forgotten;
        if let Some(isn) = flow.syn_seq {
            let client = key.source(flow.conn.client().unwrap_or(Direction::LowToHigh));
            if self.views.get(&(client, isn, key.scope)) == Some(key) {
                self.views.remove(&(client, isn, key.scope));
            }
        }
        if how == Close::Ended && self.closed.len() < self.limits.max_flows {
            self.closed.insert(
                *key,
                Tombstone {
                    syn_seq: flow.syn_seq,
                    next_seq: [flow.reassembly[0].next_seq(), flow.reassembly[1].next_seq()],
                    closed_us: self.now_us,
                },
            );
        }
        {
            let mut env = Env {
                rules: &self.rules,
                counters: &mut self.counters,
                now_us: self.now_us,
                completed: &mut self.completed,
            };
            let mut allowance = Allowance {
                flow: &mut flow.budget,
                total: &mut self.total,
                flow_limit: self.limits.flow_buffer,
            };
            if !flow.conn.is_ignored() {
                for dir in [Direction::LowToHigh, Direction::HighToLow] {
                    let r = &mut flow.reassembly[dir.index()];
                    if drain {
                        r.finish(
                            &mut allowance,
                            &mut self.reassembly,
                            &mut flow.conn.side(dir, &mut env),
                        );
                    } else {
                        r.release(&mut allowance);
                    }
                }
            }
            flow.conn.close(&mut env, &mut allowance);
            for r in &mut flow.reassembly {
                r.release(&mut allowance);
            }
        }
        count_flow_kind(&mut self.counters, &flow.conn);
        release_flow(&mut flow.budget, &mut self.total);
        let client_dir = flow.conn.client().unwrap_or(Direction::LowToHigh);
        self.emit(key, client_dir, flow.interface);
    }

    /// Encodes and hands on the pairs completed by the last call into a connection.
    fn emit_completed(&mut self, key: &FlowKey) {
        if let Some(f) = self.flows.get(key) {
            let (client_dir, interface) =
                (f.conn.client().unwrap_or(Direction::LowToHigh), f.interface);
            self.emit(key, client_dir, interface);
        }
    }

    fn emit(&mut self, key: &FlowKey, client_dir: Direction, interface: usize) {
        if self.completed.is_empty() {
            return;
        }
        let client = key.source(client_dir);
        let server = key.source(client_dir.reverse());
        let known = self.interfaces.get(interface);
        let interface_netns = known.and_then(|(i, _)| i.netns.as_deref());
        let lookup = |addr: SocketAddr| Endpoint {
            addr,
            pod: self.pods.as_ref().and_then(|p| {
                match (interface_netns, addr.ip().is_loopback()) {
                    (Some(netns), true) => p.pod_in_netns(netns, addr.port()),
                    _ => p.pod(&addr),
                }
            }),
        };
        let (source, destination) = (lookup(client), lookup(server));
        let fallback;
        let origin = match known {
            Some((_, origin)) => origin,
            // Not reached: every index comes from `add_interface`.
            None => {
                let unknown = InterfaceInfo {
                    name: String::new(),
                    netns: None,
                    mode: crate::source::CaptureMode::File,
                };
                fallback = Origin::new(&self.identity.node, &self.identity.interceptor, &unknown);
                &fallback
            }
        };
        write_partition_key(&mut self.partition_key, &destination);
        for pair in self.completed.drain(..) {
            self.encoded.clear();
            write_pair_id(&mut self.id, &self.id_prefix, self.next_id);
            self.next_id += 1;
            match encode_pair(
                &pair,
                &self.id,
                origin,
                &source,
                &destination,
                &self.rules,
                &mut self.encoded,
            ) {
                Ok(()) => {
                    self.counters.pairs_emitted += 1;
                    self.sink.send(PairRef {
                        key: &self.partition_key,
                        value: &self.encoded,
                    });
                }
                Err(reason) => self.counters.count_drop(reason),
            }
        }
        // The buffer is reused for every pair, but a rare large one must not keep its memory for good.
        if self.encoded.capacity() > ENCODED_KEEP_BYTES {
            self.encoded = Vec::with_capacity(ENCODED_INITIAL_BYTES);
        }
    }

    /// End of input: every connection is drained and closed, and the sink flushed.
    pub fn finish(&mut self, flush_timeout: Duration) -> Result<(), crate::sink::SinkError> {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for key in keys {
            self.close_flow(&key, Close::Forgotten);
        }
        self.sink.flush(flush_timeout)
    }
}

/// Writes the partition key of pairs sent to `destination` into `key` (a buffer reused for every
/// pair): its pod as `namespace/name`, or, for no known pod, its address as `Display` writes it
/// (`10.0.0.7:8080`, `[::1]:8080`), IPv4 without the formatting machinery.
fn write_partition_key(key: &mut String, destination: &Endpoint) {
    key.clear();
    match (&destination.pod, destination.addr) {
        (Some(pod), _) => {
            key.push_str(&pod.namespace);
            key.push('/');
            key.push_str(&pod.name);
        }
        (None, SocketAddr::V4(v4)) => {
            key.push_str(Ipv4Text::new(*v4.ip()).as_str());
            key.push(':');
            key.push_str(itoa::Buffer::new().format(v4.port()));
        }
        (None, addr @ SocketAddr::V6(_)) => {
            use std::fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(key, "{addr}");
        }
    }
}

/// The pair buffer's first size, and the most capacity it keeps between pairs. Escaping reserves six
/// times a body's length, so this keeps it for bodies up to about 700 KB; of that capacity only what
/// was written (at most the largest message the limits let through) is resident memory.
const ENCODED_INITIAL_BYTES: usize = 4096;
const ENCODED_KEEP_BYTES: usize = 4 << 20;

/// Why a connection is forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// FIN/RST seen: remember it for a while so that late copies are not taken for a new connection.
    Ended,
    /// A new connection took its ports.
    Replaced,
    /// Idle for too long, or the input ended: deliver what it buffered.
    Forgotten,
}

fn flows_is_ignored(flow: &Flow) -> bool {
    flow.conn.is_ignored()
}

fn flow_is_done(flow: &Flow) -> bool {
    flow.reassembly.iter().all(Reassembler::is_ended)
}

fn count_flow_kind(counters: &mut Counters, conn: &Connection) {
    match conn.opaque() {
        Some(why) if why.is_not_http() => counters.flows_not_http += 1,
        Some(Opaque::Tunnel) => counters.flows_tunneled += 1,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_name_the_pod_or_read_as_display_does() {
        let mut key = String::from("left over");
        for addr in [
            "10.0.0.7:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:80",
            "[fe80::1]:443",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            write_partition_key(&mut key, &Endpoint { addr, pod: None });
            assert_eq!(key, addr.to_string());
        }
        let pod = PodRef {
            namespace: "shop".into(),
            name: "api-7d9f".into(),
            container: None,
        };
        let addr = "10.0.0.7:8080".parse().unwrap();
        write_partition_key(
            &mut key,
            &Endpoint {
                addr,
                pod: Some(pod),
            },
        );
        assert_eq!(key, "shop/api-7d9f");
    }
}
