//! The pipeline: packets in, pair messages out to a sink. It owns the connection table and the time.
//!
//! Time is the packets' own (capture timestamps, never going backwards here) so that a capture file is
//! processed exactly as it was captured; live capture also advances it with [`Pipeline::tick`].
//!
//! A packet goes through [`Pipeline::handle`]'s steps: decoded, admitted into the connection table (or
//! skipped: not a connection start, a late copy of a closed one, a full table), skipped if it belongs
//! to a second view of a connection tracked already (`views`), fed to its direction's reassembler and
//! from there to the connection's application layer, and its connection torn down once both streams
//! ended. Pairs the call completed are then encoded and sent ([`output`]).

mod flow;
pub mod mesh_views;
mod output;
mod shared;
mod sidecar_copies;
mod table;
mod views;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use interceptor_crds::config::WorkerConfig;

use crate::app::{Connection, Opaque};
use crate::decode::{self, Skip, TcpSegment};
use crate::filters::Rules;
use crate::memory::{release_flow, FlowBudget, TotalBudget};
use crate::message::{Endpoint, Origin, PodRef};
use crate::pair_id::IdPrefix;
use crate::redirect::{RedirectStats, Redirects};
use crate::sink::{Sink, SinkStats};
use crate::source::{InterfaceInfo, Packet};
use crate::stats::{Counters, DropReason};
use crate::tcp::reassembly::{Reassembler, ReassemblyStats, SegmentIn};
use crate::tcp::{Direction, FlowKey};
use flow::{count_flow_kind, Close, Flow, TableLimits, Tombstone, TOMBSTONE_US};
use mesh_views::NodeTaps;
use output::{Ends, Output};
use shared::Shared;
use sidecar_copies::{CopyOf, PodKey, Role};

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

/// Flow keys come from the network: a fast hasher, but a seeded one (no fixed collisions to aim at).
type FlowHasher = foldhash::fast::RandomState;

/// How often (in packet time) timeouts are checked.
const SWEEP_EVERY_US: i64 = 1_000_000;

pub struct Pipeline {
    shared: Shared,
    identity: Identity,
    /// Each flow boxed, the table holding one pointer per bucket (see [`table`]).
    flows: table::FlowTable<FlowHasher>,
    closed: HashMap<FlowKey, Tombstone, FlowHasher>,
    /// Connections by client address and initial sequence number. A Service's traffic between two pods
    /// of one node is tapped twice, through NAT: on the client's interface towards the ClusterIP, on the
    /// server's towards the pod. The client's address and ISN are the same in both views, so the second
    /// view is recognised and skipped instead of being paired twice.
    views: views::Views<FlowHasher>,
    /// Each interface tapped, with its fields of the pair message.
    interfaces: Vec<(InterfaceInfo, Origin)>,
    pods: Option<Box<dyn PodLookup>>,
    /// Per interface: the real destination of connections a mesh redirected to its proxy (mesh
    /// loopback taps only; see `redirect`).
    redirects: HashMap<usize, Redirects>,
    /// The node's tapped namespaces, to skip the server-side copy of an exchange with a meshed pod.
    node_taps: NodeTaps,
    last_sweep_us: i64,
    output: Output,
}

/// What feeding a packet to its connection left to do.
enum Fed {
    /// The packet was not parsed (a second view, or a connection no longer read); a FIN or RST still
    /// ends the connection.
    Skipped { ends: bool },
    /// Parsed: pairs it completed are to be sent, and the connection torn down if done.
    Parsed {
        client_dir: Direction,
        interface: usize,
        done: bool,
        not_http: bool,
    },
}

impl Pipeline {
    pub fn new(config: &WorkerConfig, identity: Identity, sink: Box<dyn Sink>) -> Self {
        Pipeline {
            shared: Shared {
                rules: Rules::from_config(config),
                limits: TableLimits::from_config(config),
                total: TotalBudget::new(
                    usize::try_from(config.limits.max_total_buffer_bytes).unwrap_or(usize::MAX),
                ),
                counters: Counters::default(),
                reassembly: ReassemblyStats::default(),
                now_us: i64::MIN,
                completed: Vec::new(),
            },
            identity,
            flows: table::FlowTable::default(),
            closed: HashMap::default(),
            views: views::Views::default(),
            interfaces: Vec::new(),
            pods: None,
            redirects: HashMap::new(),
            node_taps: NodeTaps::default(),
            last_sweep_us: i64::MIN,
            output: Output::new(sink),
        }
    }

    /// Applies a new configuration without losing connections or buffered pairs.
    pub fn reconfigure(&mut self, config: &WorkerConfig) {
        self.shared.rules = Rules::from_config(config);
        self.shared.limits = TableLimits::from_config(config);
    }

    /// Ids from now on start with `prefix` instead of a random one: the same input then gives the same
    /// output (e.g. to compare two builds).
    pub fn set_id_prefix(&mut self, prefix: IdPrefix) {
        self.output.set_id_prefix(prefix);
    }

    pub fn set_pod_lookup(&mut self, pods: Box<dyn PodLookup>) {
        self.pods = Some(pods);
    }

    /// Packets of `interface` from now on have the destination a mesh's redirection hid restored.
    pub fn set_redirects(&mut self, interface: usize, redirects: Redirects) {
        self.redirects.insert(interface, redirects);
    }

    /// The tap `info` closed: its redirect translation goes (its conntrack socket and file hold the
    /// pod's namespace open). Returns whether it had one.
    pub fn drop_redirects(&mut self, info: &InterfaceInfo) -> bool {
        self.interfaces
            .iter()
            .position(|(known, _)| known == info)
            .is_some_and(|index| self.redirects.remove(&index).is_some())
    }

    /// Interfaces with a redirect translation now.
    pub fn redirected_interfaces(&self) -> usize {
        self.redirects.len()
    }

    /// The node's tapped namespaces as of the last scan (see `mesh_views`).
    pub fn set_node_taps(&mut self, node_taps: NodeTaps) {
        self.node_taps = node_taps;
    }

    /// What the redirect translation did, over every interface.
    pub fn redirect_stats(&self) -> RedirectStats {
        let mut total = RedirectStats::default();
        for r in self.redirects.values() {
            total.add(&r.stats);
        }
        total
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
        let mut c = self.shared.counters.clone();
        c.bytes_retransmitted = self.shared.reassembly.bytes_retransmitted;
        c.bytes_missing = self.shared.reassembly.bytes_missing;
        c
    }

    pub fn sink_stats(&self) -> SinkStats {
        self.output.sink.stats()
    }

    pub fn sink_mut(&mut self) -> &mut dyn Sink {
        self.output.sink.as_mut()
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Bytes buffered across all connections now, and the most ever.
    pub fn buffered_bytes(&self) -> (usize, usize) {
        (self.shared.total.used(), self.shared.total.peak())
    }

    /// One captured packet.
    pub fn handle(&mut self, interface: usize, packet: &Packet<'_>) {
        self.shared.counters.packets += 1;
        self.shared.counters.bytes += u64::from(packet.orig_len);
        self.advance(packet.timestamp_us);
        let Some(mut seg) = self.decode(packet) else {
            return;
        };
        // Only mesh loopback taps translate: without one (most nodes), no map lookup per packet.
        if !self.redirects.is_empty() {
            if let Some(redirects) = self.redirects.get_mut(&interface) {
                redirects.translate(&mut seg, self.shared.now_us);
            }
        }
        let (key, dir) = flow_key(&seg, interface);
        self.replace_if_new_connection(&key, &seg);
        if !self.flows.contains_key(&key) && !self.admit(key, dir, &seg, interface) {
            return;
        }
        match self.feed(&key, dir, &seg) {
            Some(Fed::Skipped { ends: true }) => self.close_flow(&key, Close::Ended),
            Some(Fed::Skipped { ends: false }) | None => {}
            Some(Fed::Parsed {
                client_dir,
                interface,
                done,
                not_http,
            }) => {
                self.emit(&key, client_dir, interface);
                if done {
                    self.close_flow(&key, Close::Ended);
                } else if not_http {
                    self.release_buffers(&key);
                }
            }
        }
    }

    /// A TCP segment, or `None` (counted by why) for a packet that carries none.
    fn decode<'p>(&mut self, packet: &Packet<'p>) -> Option<TcpSegment<'p>> {
        let counters = &mut self.shared.counters;
        match decode::decode(packet.link_type, packet.data) {
            Ok(seg) => Some(seg),
            Err(Skip::NotTcp) => {
                counters.packets_not_tcp += 1;
                None
            }
            Err(Skip::Fragment) => {
                counters.packets_fragmented += 1;
                None
            }
            Err(Skip::Malformed) => {
                counters.packets_malformed += 1;
                None
            }
        }
    }

    /// A SYN with a new initial sequence number on a known pair of ports is a new connection: the old
    /// one is closed.
    fn replace_if_new_connection(&mut self, key: &FlowKey, seg: &TcpSegment<'_>) {
        let client_syn = seg.flags.syn && !seg.flags.ack;
        if !client_syn {
            return;
        }
        if let Some(flow) = self.flows.get(key) {
            if flow.syn_seq.is_some_and(|s| s != seg.seq)
                || flow.syn_seq.is_none() && flow.is_done()
            {
                self.close_flow(key, Close::Replaced);
            }
        }
    }

    /// Whether a packet of a connection not tracked starts tracking it. Not: a packet without payload
    /// that is not a SYN (nothing to parse), an RST, a late copy of a connection closed recently, or
    /// one over the table's bound (a counted drop). A connection seen from its SYN that is a second
    /// view of one tracked already is tracked as a mirror (its packets counted and skipped).
    fn admit(
        &mut self,
        key: FlowKey,
        dir: Direction,
        seg: &TcpSegment<'_>,
        interface: usize,
    ) -> bool {
        let flags = seg.flags;
        if (!flags.syn && seg.payload.is_empty()) || flags.rst {
            return false;
        }
        if let Some(tomb) = self.closed.get(&key) {
            if tomb.is_copy(seg, dir)
                && self.shared.now_us.saturating_sub(tomb.closed_us) < TOMBSTONE_US
            {
                self.shared.counters.packets_after_close += 1;
                return false;
            }
            self.closed.remove(&key);
        }
        if self.flows.len() >= self.shared.limits.max_flows {
            self.shared.counters.count_drop(DropReason::FlowTableFull);
            return false;
        }
        let client = flags
            .syn
            .then(|| if flags.ack { dir.reverse() } else { dir });
        let from_start = [client.is_some(); 2];
        let client_syn = (flags.syn && !flags.ack).then_some(seg.seq);
        let tap_netns = self
            .interfaces
            .get(interface)
            .and_then(|(info, _)| info.netns.as_deref());
        let meshed_copy =
            client_syn.is_some() && self.node_taps.is_server_side_copy(tap_netns, seg.src.ip());
        let mirror =
            meshed_copy || client_syn.is_some_and(|isn| self.is_second_view(seg.src, isn, key));
        if mirror {
            self.shared.counters.flows_mirrored += 1;
        } else {
            self.shared.counters.flows += 1;
        }
        let flow = Flow {
            key,
            conn: Connection::new(client, from_start, self.shared.rules.max_header_bytes),
            reassembly: [Reassembler::default(), Reassembler::default()],
            budget: FlowBudget::default(),
            last_seen_us: self.shared.now_us,
            interface: u32::try_from(interface).unwrap_or(u32::MAX),
            syn_seq: client_syn,
            mirror,
            payload_seen: false,
            copy_checked: client_syn.is_some(),
        };
        self.flows.insert(Box::new(flow));
        true
    }

    /// Feeds a packet to its connection's reassembler in `dir`, and what the other direction learns
    /// from it (its end on RST, what was acknowledged), into the connection's application layer.
    fn feed(&mut self, key: &FlowKey, dir: Direction, seg: &TcpSegment<'_>) -> Option<Fed> {
        let flow = self.flows.get_mut(key)?;
        let flags = seg.flags;
        flow.last_seen_us = self.shared.now_us;
        if flow.mirror {
            self.shared.counters.packets_mirrored += 1;
            return Some(Fed::Skipped {
                ends: flags.rst || flags.fin,
            });
        }
        flow.payload_seen |= !seg.payload.is_empty();
        if flow.conn.is_ignored() {
            return Some(Fed::Skipped {
                ends: flags.rst || flags.fin,
            });
        }
        let cx = self.shared.context(&mut flow.budget);
        let (mut env, mut allowance, stats) = (cx.env, cx.allowance, cx.reassembly);
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
            stats,
            &mut flow.conn.side(dir, &mut env),
        );
        let other_side = &mut flow.conn.side(dir.reverse(), &mut env);
        if flags.rst {
            other.finish(&mut allowance, stats, other_side);
        } else if flags.ack {
            other.peer_acked(seg.ack, &mut allowance, stats, other_side);
        }
        if !flow.copy_checked && self.node_taps.has_mesh() {
            let tap_netns = self
                .interfaces
                .get(flow.interface())
                .and_then(|(info, _)| info.netns.as_deref());
            if settle_joined_copy(flow, &self.node_taps, tap_netns, &mut self.shared) {
                return Some(Fed::Skipped {
                    ends: flags.rst || flags.fin,
                });
            }
        }
        Some(Fed::Parsed {
            client_dir: flow.client_dir(),
            interface: flow.interface(),
            done: flow.is_done(),
            not_http: flow.conn.opaque().is_some_and(Opaque::is_not_http),
        })
    }

    /// A connection that is not HTTP keeps its (now cheap) entry, so that the rest of it is skipped,
    /// but frees what its streams buffered.
    fn release_buffers(&mut self, key: &FlowKey) {
        if let Some(flow) = self.flows.get_mut(key) {
            let mut allowance = self.shared.context(&mut flow.budget).allowance;
            for r in &mut flow.reassembly {
                r.release(&mut allowance);
            }
        }
    }

    /// Time passes without packets (live capture).
    pub fn tick(&mut self, now_us: i64) {
        self.advance(now_us);
        self.output.sink.poll();
    }

    fn advance(&mut self, now_us: i64) {
        if now_us <= self.shared.now_us {
            return;
        }
        self.shared.now_us = now_us;
        self.output.send_due(now_us, &mut self.shared.counters);
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
        let Some(primary) = self.views.get(client, isn, key.scope) else {
            self.views.insert(client, isn, key);
            return false;
        };
        let Some(tracked) = self
            .flows
            .get_mut(&primary)
            .filter(|f| !f.mirror && primary != key)
        else {
            self.views.insert(client, isn, key);
            return false;
        };
        let server_of = |k: &FlowKey| if k.low == client { k.high } else { k.low };
        let known = |addr: SocketAddr| self.pods.as_ref().is_some_and(|p| p.pod(&addr).is_some());
        if !tracked.payload_seen && known(server_of(&key)) && !known(server_of(&primary)) {
            tracked.mirror = true;
            self.views.insert(client, isn, key);
            return false;
        }
        true
    }

    /// Response timeouts, idle connections, old tombstones.
    fn sweep(&mut self) {
        let now = self.shared.now_us;
        self.closed
            .retain(|_, t| now.saturating_sub(t.closed_us) < TOMBSTONE_US);
        let idle_us = self.shared.limits.idle_us;
        let idle: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|f| now.saturating_sub(f.last_seen_us) > idle_us)
            .map(|f| f.key)
            .collect();
        for key in idle {
            self.shared.counters.flows_expired += 1;
            self.close_flow(&key, Close::Forgotten);
        }
        self.flows.shrink_when_sparse();
        self.views.shrink_when_sparse();
        if self.closed.len() < self.closed.capacity() / 4 {
            self.closed.shrink_to(self.closed.len() * 2);
        }
        if self.shared.rules.response_timeout_us.is_none() {
            return;
        }
        let mut with_output = Vec::new();
        for flow in self.flows.iter_mut() {
            if flow.conn.pending() == 0 {
                continue;
            }
            let mut cx = self.shared.context(&mut flow.budget);
            flow.conn.expire(&mut cx.env, &mut cx.allowance);
            if !self.shared.completed.is_empty() {
                with_output.push((flow.key, flow.client_dir(), flow.interface()));
            }
        }
        for (key, client_dir, interface) in with_output {
            self.emit(&key, client_dir, interface);
        }
    }

    /// Forgets a connection: delivers what its streams buffered (across holes, when it is forgotten
    /// rather than ended), ends its messages, and gives up on requests still waiting.
    fn close_flow(&mut self, key: &FlowKey, how: Close) {
        let Some(mut flow) = self.flows.remove(key) else {
            return;
        };
        if let Some(isn) = flow.syn_seq {
            let client = key.source(flow.client_dir());
            self.views.remove(client, isn, key);
        }
        if how == Close::Ended && self.closed.len() < self.shared.limits.max_flows {
            self.closed.insert(*key, flow.tombstone(self.shared.now_us));
        }
        {
            let cx = self.shared.context(&mut flow.budget);
            let (mut env, mut allowance, stats) = (cx.env, cx.allowance, cx.reassembly);
            if !flow.conn.is_ignored() {
                for dir in [Direction::LowToHigh, Direction::HighToLow] {
                    let r = &mut flow.reassembly[dir.index()];
                    if how == Close::Forgotten {
                        r.finish(&mut allowance, stats, &mut flow.conn.side(dir, &mut env));
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
        count_flow_kind(&mut self.shared.counters, &flow.conn);
        release_flow(&mut flow.budget, &mut self.shared.total);
        self.emit(key, flow.client_dir(), flow.interface());
    }

    /// Whether a connection from `client` to `server`, tapped in `tap_netns`, carries one of the two
    /// copies of exchanges with a sidecar pod of this node (see `sidecar_copies`), and which.
    fn copy_of(
        &self,
        tap_netns: Option<&str>,
        client: SocketAddr,
        server: SocketAddr,
    ) -> Option<CopyOf> {
        if !self.node_taps.has_sidecar() {
            return None;
        }
        let (role, pod) = if let Some(pod) = self.node_taps.sidecar_peer(tap_netns, server.ip()) {
            (Role::ClientView, pod)
        } else {
            let tap_netns = tap_netns?;
            self.node_taps
                .is_sidecar_inbound_leg(tap_netns, client.ip(), server)
                .then_some((Role::ProxyLeg, tap_netns))?
        };
        Some(CopyOf {
            role,
            pod: PodKey::of(pod),
            at_us: self.shared.now_us,
        })
    }

    /// Encodes and sends the pairs the last call into the connection `key` completed.
    fn emit(&mut self, key: &FlowKey, client_dir: Direction, interface: usize) {
        if self.shared.completed.is_empty() {
            return;
        }
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
        let (client, mut server) = (key.source(client_dir), key.source(client_dir.reverse()));
        // A connection a mesh redirected to its proxy: the real destination its answers told.
        if let Some(real) = self
            .redirects
            .get(&interface)
            .and_then(|r| r.learned(client, server))
        {
            server = real;
        }
        let copy = self.copy_of(interface_netns, client, server);
        let ends = Ends {
            origin,
            source: lookup(client),
            destination: lookup(server),
        };
        let Shared {
            completed,
            rules,
            counters,
            ..
        } = &mut self.shared;
        self.output.send(completed, &ends, copy, rules, counters);
    }

    /// End of input: every connection is drained and closed, and the sink flushed.
    pub fn finish(&mut self, flush_timeout: Duration) -> Result<(), crate::sink::SinkError> {
        let keys: Vec<FlowKey> = self.flows.iter().map(|f| f.key).collect();
        for key in keys {
            self.close_flow(&key, Close::Forgotten);
        }
        self.output.send_due(i64::MAX, &mut self.shared.counters);
        self.output.sink.flush(flush_timeout)
    }
}

/// A connection joined mid-way has no SYN to tell its client when it is admitted (see
/// [`NodeTaps::is_server_side_copy`]); its first message does. If it then turns out to be the
/// server-side copy of an exchange with a meshed pod of this node, whose client's tap records it, it
/// becomes a mirror: what it parsed so far is discarded (its pairs come out of the client's tap), its
/// buffers freed, the rest of its packets skipped. True when it did. Checked once per connection.
fn settle_joined_copy(
    flow: &mut Flow,
    node_taps: &NodeTaps,
    tap_netns: Option<&str>,
    shared: &mut Shared,
) -> bool {
    let Some(client_dir) = flow.conn.client() else {
        return false;
    };
    flow.copy_checked = true;
    if !node_taps.is_server_side_copy(tap_netns, flow.key.source(client_dir).ip()) {
        return false;
    }
    flow.mirror = true;
    flow.conn = Connection::new(Some(client_dir), [false; 2], shared.rules.max_header_bytes);
    flow.reassembly = [Reassembler::default(), Reassembler::default()];
    release_flow(&mut flow.budget, &mut shared.total);
    shared.completed.clear();
    shared.counters.flows = shared.counters.flows.saturating_sub(1);
    shared.counters.flows_mirrored += 1;
    true
}

/// A segment's connection and direction. Loopback addresses are scoped to the interface they were
/// seen on: every network namespace has its own.
fn flow_key(seg: &TcpSegment<'_>, interface: usize) -> (FlowKey, Direction) {
    let (mut key, dir) = FlowKey::of(seg.src, seg.dst);
    if seg.src.ip().is_loopback() || seg.dst.ip().is_loopback() {
        key.scope = u32::try_from(interface).map_or(u32::MAX, |i| i.saturating_add(1));
    }
    (key, dir)
}
