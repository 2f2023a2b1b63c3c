//! One tracked connection of the pipeline's table, what is remembered of it once closed, and the
//! table's bounds.

use interceptor_crds::config::WorkerConfig;

use crate::app::{Connection, Opaque};
use crate::decode::TcpSegment;
use crate::memory::FlowBudget;
use crate::stats::Counters;
use crate::tcp::reassembly::{seq_diff, Reassembler};
use crate::tcp::Direction;

/// Bounds of the connection table.
#[derive(Clone, Copy, Debug)]
pub(super) struct TableLimits {
    pub max_flows: usize,
    pub flow_buffer: usize,
    pub idle_us: i64,
}

impl TableLimits {
    pub fn from_config(config: &WorkerConfig) -> Self {
        let l = &config.limits;
        TableLimits {
            max_flows: usize::try_from(l.max_flows).unwrap_or(usize::MAX),
            flow_buffer: usize::try_from(l.max_flow_buffer_bytes).unwrap_or(usize::MAX),
            idle_us: i64::try_from(l.flow_idle_timeout_seconds.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
        }
    }
}

pub(super) struct Flow {
    /// The key the table finds it by (kept here: the table's buckets hold only the box).
    pub key: crate::tcp::FlowKey,
    pub conn: Connection,
    pub reassembly: [Reassembler; 2],
    pub budget: FlowBudget,
    pub last_seen_us: i64,
    /// Index of the interface it is tapped on (`u32`: with the fields around it, the flow fits a
    /// smaller allocation).
    pub interface: u32,
    /// The SYN's sequence number, to tell a new connection on the same ports from a retransmission.
    pub syn_seq: Option<u32>,
    /// Another view of a connection tracked under another key (see `Pipeline::views`): its packets
    /// are counted and skipped.
    pub mirror: bool,
    /// Whether any payload was seen (a view that has seen none can still give way to a better one).
    pub payload_seen: bool,
    /// Joined mid-way: whether its client, once known, was checked for a server-side copy of a
    /// meshed exchange (see `Pipeline::settle_joined_copy`).
    pub copy_checked: bool,
}

impl Flow {
    pub fn interface(&self) -> usize {
        self.interface as usize
    }

    /// Both streams ended.
    pub fn is_done(&self) -> bool {
        self.reassembly.iter().all(Reassembler::is_ended)
    }

    /// The direction of requests (the first packet's, when it never said).
    pub fn client_dir(&self) -> Direction {
        self.conn.client().unwrap_or(Direction::LowToHigh)
    }

    /// What a closed connection is remembered as.
    pub fn tombstone(&self, closed_us: i64) -> Tombstone {
        Tombstone {
            syn_seq: self.syn_seq,
            next_seq: [self.reassembly[0].next_seq(), self.reassembly[1].next_seq()],
            closed_us,
        }
    }
}

/// Counts what the connection turned out to carry, when it is forgotten.
pub(super) fn count_flow_kind(counters: &mut Counters, conn: &Connection) {
    match conn.opaque() {
        Some(why) if why.is_not_http() => counters.flows_not_http += 1,
        Some(Opaque::Tunnel) => counters.flows_tunneled += 1,
        Some(Opaque::Upgraded) => counters.flows_upgraded += 1,
        _ => {}
    }
}

/// How long a closed connection is remembered (like TCP's TIME_WAIT), so that its packets seen late on
/// another interface (two pods on one node both tapped) are recognised as copies, not a new connection.
pub(super) const TOMBSTONE_US: i64 = 60_000_000;

/// A connection that closed recently.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tombstone {
    /// The client's initial sequence number, if its SYN was seen: a SYN with another one is a new
    /// connection on the same ports.
    syn_seq: Option<u32>,
    /// Where each direction's stream had got to: data beyond it means the connection went on (an
    /// RST that the endpoints ignored), not a copy.
    next_seq: [Option<u32>; 2],
    pub closed_us: i64,
}

impl Tombstone {
    /// Whether a packet of this closed connection is only a copy of what was already processed.
    pub fn is_copy(&self, seg: &TcpSegment<'_>, dir: Direction) -> bool {
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

/// Why a connection is forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Close {
    /// FIN/RST seen: remember it for a while so that late copies are not taken for a new connection.
    Ended,
    /// A new connection took its ports.
    Replaced,
    /// Idle for too long, or the input ended: deliver what it buffered.
    Forgotten,
}
