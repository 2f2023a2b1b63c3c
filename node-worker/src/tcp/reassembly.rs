//! Reassembly of one direction of a TCP connection into an ordered byte stream.
//!
//! In-order payload is handed on straight from the packet (no copy); only segments that arrive ahead of
//! a hole are buffered, within the connection's [`Allowance`]. A hole is given up on, and reported as a
//! gap, when the peer acknowledges data beyond it (the bytes reached the peer but not the capture), when
//! buffering the next segment would exceed the budget, or when the connection ends.

use crate::memory::Allowance;

/// Bytes the reassemblers saw twice or never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Payload bytes already delivered (retransmissions, overlaps).
    pub bytes_retransmitted: u64,
    /// Payload bytes given up on (lost segments).
    pub bytes_missing: u64,
}

/// The largest hole at the end of a stream that a FIN or an acknowledgment is believed to prove: more
/// than the largest window in flight is a number from a garbled or hostile segment, not a loss.
const MAX_TRAILING_HOLE: i64 = 1 << 24;

/// `a - b` in sequence space: positive when `a` is after `b`.
pub fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// A run of in-order stream bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Sequence number of `bytes[0]`.
    pub seq: u32,
    /// The acknowledgment number of the segment that carried these bytes: how much of the opposite
    /// direction the sender had received when it sent them.
    pub ack: u32,
    pub bytes: &'a [u8],
}

/// What a reassembled stream delivers to.
pub trait StreamConsumer {
    fn data(&mut self, chunk: Chunk<'_>, allowance: &mut Allowance<'_>);
    /// `missing` bytes will never come; the stream continues after them.
    fn gap(&mut self, missing: u64, allowance: &mut Allowance<'_>);
    /// The stream ended (FIN after all data, RST, or the connection was forgotten).
    fn end(&mut self, allowance: &mut Allowance<'_>);
}

/// One TCP segment as seen by its direction's reassembler.
#[derive(Clone, Copy, Debug)]
pub struct SegmentIn<'a> {
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
    /// Payload bytes on the wire beyond `payload` that were not captured (snaplen).
    pub missing_tail: u32,
}

/// What one buffered segment costs beyond its payload (its entry and the allocation's bookkeeping). It is
/// charged to the budget with the payload, so that many tiny segments cannot hold many times the memory
/// the budget says.
const SEGMENT_OVERHEAD: usize = 64;

/// Segments buffered ahead of holes, at most, per direction. Beyond, the first hole is given up on as when
/// the budget is full. Keeping them sorted costs up to this many moves per segment: the bound keeps a
/// stream of tiny segments in reverse order from taking time quadratic in the budget.
const MAX_PENDING_SEGMENTS: usize = 1024;

#[derive(Debug)]
struct Pending {
    seq: u32,
    ack: u32,
    data: Vec<u8>,
}

/// The reassembly state of one direction.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The sequence number of the next byte to deliver; `None` before the first segment.
    next: Option<u32>,
    /// Sequence number just after the last byte, once a FIN was seen.
    fin: Option<u32>,
    ended: bool,
    /// Segments ahead of `next`, sorted by sequence number.
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// The highest acknowledgment the peer sent for this direction.
    peer_ack: Option<u32>,
}

impl Reassembler {
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether a SYN (or the first byte) fixed this direction's start.
    pub fn is_started(&self) -> bool {
        self.next.is_some()
    }

    /// The sequence number of the next byte expected.
    pub fn next_seq(&self) -> Option<u32> {
        self.next
    }

    /// Bytes reserved for buffered segments (payload plus a fixed overhead per segment).
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub fn push<C: StreamConsumer>(
        &mut self,
        seg: &SegmentIn<'_>,
        allowance: &mut Allowance<'_>,
        counters: &mut ReassemblyStats,
        out: &mut C,
    ) {
        if self.ended {
            return;
        }
        if seg.rst {
            self.finish(allowance, counters, out);
            return;
        }
        let mut seq = seg.seq;
        if seg.syn {
            seq = seq.wrapping_add(1);
            if self.next.is_none() {
                self.next = Some(seq);
            }
        }
        let next = *self.next.get_or_insert(seq);
        let len = seg.payload.len() as u32 + seg.missing_tail;
        if seg.fin {
            self.fin = Some(seq.wrapping_add(len));
        }
        if len > 0 {
            // A segment entirely before `next`, even partly, is (partly) a retransmission.
            let before = seq_diff(next, seq);
            if before == i64::from(i32::MIN) {
                // Exactly half the sequence space away: neither before nor after `next` (found by
                // fuzzing, it was delivered without its gap). No real peer sends it: counted as a
                // retransmission, like data outside the window.
                counters.bytes_retransmitted += u64::from(len);
                self.check_fin(allowance, out);
                return;
            }
            let (seq, payload, missing_tail) = if before > 0 {
                let before = before as u64;
                if before >= u64::from(len) {
                    counters.bytes_retransmitted += u64::from(len);
                    (next, &[][..], 0)
                } else {
                    counters.bytes_retransmitted += before;
                    let cut = (before as usize).min(seg.payload.len());
                    let tail_cut = before as u32 - cut as u32;
                    (next, &seg.payload[cut..], seg.missing_tail - tail_cut)
                }
            } else {
                (seq, seg.payload, seg.missing_tail)
            };
            if !payload.is_empty() || missing_tail > 0 {
                self.accept(
                    seq,
                    seg.ack,
                    payload,
                    missing_tail,
                    allowance,
                    counters,
                    out,
                );
            }
        }
        self.check_fin(allowance, out);
    }

    /// The peer acknowledged `ack` of this direction: bytes before it reached the peer.
    pub fn peer_acked<C: StreamConsumer>(
        &mut self,
        ack: u32,
        allowance: &mut Allowance<'_>,
        counters: &mut ReassemblyStats,
        out: &mut C,
    ) {
        match self.peer_ack {
            Some(prev) if seq_diff(ack, prev) <= 0 => return,
            _ => self.peer_ack = Some(ack),
        }
        if self.ended {
            return;
        }
        // Only when later data is already buffered: then the hole is confirmed lost, not merely late.
        if let (Some(next), Some(first)) = (self.next, self.pending.first()) {
            if seq_diff(ack, first.seq) >= 0 {
                let missing = seq_diff(first.seq, next).max(0) as u64;
                self.skip_to(first.seq, missing, allowance, counters, out);
                self.drain(allowance, counters, out);
                self.check_fin(allowance, out);
            }
        }
    }

    /// The connection is over (or forgotten): deliver what is buffered across its holes, then end.
    pub fn finish<C: StreamConsumer>(
        &mut self,
        allowance: &mut Allowance<'_>,
        counters: &mut ReassemblyStats,
        out: &mut C,
    ) {
        if self.ended {
            return;
        }
        loop {
            self.drain(allowance, counters, out);
            match (self.next, self.pending.first()) {
                (Some(next), Some(first)) => {
                    let (to, missing) = (first.seq, seq_diff(first.seq, next).max(0) as u64);
                    self.skip_to(to, missing, allowance, counters, out);
                }
                _ => break,
            }
        }
        // Bytes after the last one seen that the FIN (or else the peer's acknowledgment) proves were
        // sent: lost, and said so, so that what they held is counted as a loss rather than as a
        // request never answered. An acknowledgment may cover a FIN the capture missed (one sequence
        // number, no data): it proves one byte less.
        if let Some(next) = self.next {
            let proven_end = self
                .fin
                .or_else(|| self.peer_ack.map(|ack| ack.wrapping_sub(1)));
            let plausible = |end: &u32| (1..=MAX_TRAILING_HOLE).contains(&seq_diff(*end, next));
            if let Some(end) = proven_end.filter(plausible) {
                let missing = seq_diff(end, next) as u64;
                self.skip_to(end, missing, allowance, counters, out);
            }
        }
        self.ended = true;
        out.end(allowance);
    }

    #[allow(clippy::too_many_arguments)]
    fn accept<C: StreamConsumer>(
        &mut self,
        seq: u32,
        ack: u32,
        payload: &[u8],
        missing_tail: u32,
        allowance: &mut Allowance<'_>,
        counters: &mut ReassemblyStats,
        out: &mut C,
    ) {
        let Some(next) = self.next else { return };
        if seq != next {
            let peer_has_it = self.peer_ack.is_some_and(|a| seq_diff(a, seq) >= 0);
            if !peer_has_it {
                if self.store(seq, ack, payload, allowance, counters) {
                    return;
                }
                // No room to wait for the hole: give it up now rather than buffer more.
                let first = self.pending.first().map_or(seq, |p| p.seq);
                let to = if seq_diff(first, seq) < 0 { first } else { seq };
                let missing = seq_diff(to, next).max(0) as u64;
                self.skip_to(to, missing, allowance, counters, out);
                self.drain(allowance, counters, out);
                let Some(next) = self.next else { return };
                let behind = seq_diff(next, seq);
                if behind >= i64::from(payload.len() as u32 + missing_tail) {
                    return;
                }
                if behind > 0 {
                    let cut = (behind as usize).min(payload.len());
                    counters.bytes_retransmitted += cut as u64;
                    let tail = missing_tail - (behind as u32 - cut as u32);
                    return self.accept(next, ack, &payload[cut..], tail, allowance, counters, out);
                }
                if seq != next {
                    let missing = seq_diff(seq, next).max(0) as u64;
                    self.skip_to(seq, missing, allowance, counters, out);
                }
            } else {
                let missing = seq_diff(seq, next).max(0) as u64;
                self.skip_to(seq, missing, allowance, counters, out);
            }
        }
        if !payload.is_empty() {
            out.data(
                Chunk {
                    seq,
                    ack,
                    bytes: payload,
                },
                allowance,
            );
        }
        let mut next = seq.wrapping_add(payload.len() as u32);
        if missing_tail > 0 {
            counters.bytes_missing += u64::from(missing_tail);
            out.gap(u64::from(missing_tail), allowance);
            next = next.wrapping_add(missing_tail);
        }
        self.next = Some(next);
        self.drain(allowance, counters, out);
    }

    /// Buffers an early segment. Returns false when the budget (or the segment count) refuses it.
    fn store(
        &mut self,
        seq: u32,
        ack: u32,
        payload: &[u8],
        allowance: &mut Allowance<'_>,
        counters: &mut ReassemblyStats,
    ) -> bool {
        // A duplicate of a buffered segment costs nothing (and is a retransmission).
        if let Some(p) = self.pending.iter().find(|p| p.seq == seq) {
            if p.data.len() >= payload.len() {
                counters.bytes_retransmitted += payload.len() as u64;
                return true;
            }
        }
        if payload.is_empty() {
            return true;
        }
        if self.pending.len() >= MAX_PENDING_SEGMENTS {
            return false;
        }
        if allowance.reserve(payload.len() + SEGMENT_OVERHEAD).is_err() {
            return false;
        }
        self.pending_bytes += payload.len() + SEGMENT_OVERHEAD;
        let at = self.pending.partition_point(|p| {
            seq_diff(p.seq, seq) < 0 || (p.seq == seq && p.data.len() >= payload.len())
        });
        self.pending.insert(
            at,
            Pending {
                seq,
                ack,
                data: payload.to_vec(),
            },
        );
        true
    }

    /// Gives up on `missing` bytes: the stream resumes at `to`.
    fn skip_to<C: StreamConsumer>(
        &mut self,
        to: u32,
        missing: u64,
        allowance: &mut Allowance<'_>,
        counters: &mut ReassemblyStats,
        out: &mut C,
    ) {
        if missing > 0 {
            counters.bytes_missing += missing;
            out.gap(missing, allowance);
        }
        self.next = Some(to);
    }

    /// Delivers buffered segments that have become contiguous.
    fn drain<C: StreamConsumer>(
        &mut self,
        allowance: &mut Allowance<'_>,
        counters: &mut ReassemblyStats,
        out: &mut C,
    ) {
        while let (Some(next), Some(first)) = (self.next, self.pending.first()) {
            let behind = seq_diff(next, first.seq);
            if behind < 0 {
                return;
            }
            let p = self.pending.remove(0);
            self.pending_bytes -= p.data.len() + SEGMENT_OVERHEAD;
            allowance.release(p.data.len() + SEGMENT_OVERHEAD);
            let behind = behind as usize;
            if behind >= p.data.len() {
                counters.bytes_retransmitted += p.data.len() as u64;
                continue;
            }
            counters.bytes_retransmitted += behind as u64;
            let bytes = &p.data[behind..];
            out.data(
                Chunk {
                    seq: next,
                    ack: p.ack,
                    bytes,
                },
                allowance,
            );
            self.next = Some(next.wrapping_add(bytes.len() as u32));
        }
    }

    fn check_fin<C: StreamConsumer>(&mut self, allowance: &mut Allowance<'_>, out: &mut C) {
        if let (Some(fin), Some(next)) = (self.fin, self.next) {
            if seq_diff(next, fin) >= 0 && self.pending.is_empty() {
                self.ended = true;
                out.end(allowance);
            }
        }
    }

    /// Returns buffered segments' bytes to the budget (the connection is being dropped).
    pub fn release(&mut self, allowance: &mut Allowance<'_>) {
        allowance.release(self.pending_bytes);
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{FlowBudget, TotalBudget};

    /// Records what the stream delivered: bytes, with gaps as `?` per missing byte (small tests only).
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        ended: bool,
        gaps: u64,
    }

    impl StreamConsumer for Recorder {
        fn data(&mut self, chunk: Chunk<'_>, _: &mut Allowance<'_>) {
            self.bytes.extend_from_slice(chunk.bytes);
        }
        fn gap(&mut self, missing: u64, _: &mut Allowance<'_>) {
            self.gaps += missing;
            self.bytes
                .extend(std::iter::repeat_n(b'?', missing as usize));
        }
        fn end(&mut self, _: &mut Allowance<'_>) {
            self.ended = true;
        }
    }

    struct Harness {
        r: Reassembler,
        out: Recorder,
        flow: FlowBudget,
        total: TotalBudget,
        counters: ReassemblyStats,
        flow_limit: usize,
    }

    impl Harness {
        fn new(flow_limit: usize) -> Self {
            Harness {
                r: Reassembler::default(),
                out: Recorder::default(),
                flow: FlowBudget::default(),
                total: TotalBudget::new(1 << 20),
                counters: ReassemblyStats::default(),
                flow_limit,
            }
        }

        fn seg(&mut self, seq: u32, payload: &[u8], syn: bool, fin: bool) {
            let mut allowance = Allowance {
                flow: &mut self.flow,
                total: &mut self.total,
                flow_limit: self.flow_limit,
            };
            let seg = SegmentIn {
                seq,
                ack: 0,
                syn,
                fin,
                rst: false,
                payload,
                missing_tail: 0,
            };
            self.r
                .push(&seg, &mut allowance, &mut self.counters, &mut self.out);
        }

        fn data(&mut self, seq: u32, payload: &[u8]) {
            self.seg(seq, payload, false, false);
        }

        fn ack(&mut self, ack: u32) {
            let mut allowance = Allowance {
                flow: &mut self.flow,
                total: &mut self.total,
                flow_limit: self.flow_limit,
            };
            self.r
                .peer_acked(ack, &mut allowance, &mut self.counters, &mut self.out);
        }

        fn finish(&mut self) {
            let mut allowance = Allowance {
                flow: &mut self.flow,
                total: &mut self.total,
                flow_limit: self.flow_limit,
            };
            self.r
                .finish(&mut allowance, &mut self.counters, &mut self.out);
        }
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        let mut h = Harness::new(1000);
        h.seg(99, b"", true, false);
        h.data(100, b"hello ");
        h.data(111, b"!");
        h.data(106, b"world");
        h.data(100, b"hello "); // retransmission
        h.data(109, b"ld!"); // overlap
        h.seg(112, b"", false, true);
        assert_eq!(h.out.bytes, b"hello world!");
        assert!(h.out.ended);
        assert_eq!(h.flow.used(), 0);
        assert_eq!(h.counters.bytes_retransmitted, 9);
    }

    #[test]
    fn mid_stream_start_and_sequence_wrap() {
        let mut h = Harness::new(1000);
        let start = u32::MAX - 3;
        h.data(start.wrapping_add(4), b"5678");
        h.data(start, b"1234");
        assert_eq!(
            h.out.bytes, b"5678",
            "bytes before the first seen are taken for retransmissions"
        );
        let mut h = Harness::new(1000);
        h.data(start, b"1234");
        h.data(start.wrapping_add(4), b"5678");
        assert_eq!(h.out.bytes, b"12345678");
    }

    #[test]
    fn a_hole_acked_by_the_peer_is_a_gap() {
        let mut h = Harness::new(1000);
        h.data(0, b"aa");
        h.data(4, b"cc");
        assert_eq!(h.out.bytes, b"aa");
        h.ack(6);
        assert_eq!(h.out.bytes, b"aa??cc");
        assert_eq!(h.counters.bytes_missing, 2);
        // Early data waits until the peer acknowledges past it...
        h.data(8, b"ee");
        assert_eq!(h.out.bytes, b"aa??cc");
        h.ack(10);
        assert_eq!(h.out.bytes, b"aa??cc??ee");
        // ...or is delivered at once when the peer already did.
        h.ack(20);
        h.data(12, b"gg");
        assert_eq!(h.out.bytes, b"aa??cc??ee??gg");
    }

    #[test]
    fn a_full_budget_gives_up_the_hole_instead_of_buffering() {
        let mut h = Harness::new(4);
        h.data(0, b"a");
        h.data(2, b"cccc");
        h.data(6, b"dd");
        assert_eq!(h.out.bytes, b"a?ccccdd");
        assert_eq!(h.flow.used(), 0);
    }

    #[test]
    fn a_segment_half_the_sequence_space_away_is_ignored() {
        // Neither before nor after the stream's position (found by fuzzing).
        for ack_first in [false, true] {
            let mut h = Harness::new(1000);
            h.data(0, b"ab");
            if ack_first {
                h.ack(2u32.wrapping_add(1 << 31));
            }
            h.data(2u32.wrapping_add(1 << 31), b"zz");
            h.data(2, b"cd");
            h.finish();
            assert_eq!(h.out.bytes, b"abcd");
            assert_eq!(h.counters.bytes_missing, 0);
            assert_eq!(h.counters.bytes_retransmitted, 2);
        }
    }

    #[test]
    fn tiny_segments_pay_for_their_entries_and_are_bounded_in_number() {
        // Every byte in its own segment, in reverse order, never reaching the hole at 0.
        let mut h = Harness::new(1 << 20);
        h.data(0, b"a");
        for seq in (2..20_000u32).rev() {
            h.data(seq, b"x");
        }
        assert!(h.r.pending.len() <= MAX_PENDING_SEGMENTS);
        assert_eq!(h.flow.used(), h.r.buffered_bytes());
        assert_eq!(h.flow.used(), h.r.pending.len() * (1 + SEGMENT_OVERHEAD));
        assert!(h.counters.bytes_missing > 0, "the hole was given up on");
        h.finish();
        assert_eq!(h.flow.used(), 0);
        assert_eq!(
            h.out.bytes.len(),
            20_000,
            "every byte or gap delivered once"
        );
        // A duplicate of a buffered segment is counted as retransmitted.
        let mut h = Harness::new(1000);
        h.data(0, b"a");
        h.data(5, b"fff");
        h.data(5, b"fff");
        assert_eq!(h.counters.bytes_retransmitted, 3);
    }

    #[test]
    fn finish_delivers_across_holes() {
        let mut h = Harness::new(100);
        h.data(0, b"a");
        h.data(5, b"f");
        h.data(3, b"d");
        h.finish();
        assert_eq!(h.out.bytes, b"a??d?f");
        assert!(h.out.ended);
        assert_eq!(h.flow.used(), 0);
    }

    #[test]
    fn a_hole_before_the_fin_or_the_peers_ack_is_a_gap_at_the_end() {
        // The last segment before the FIN was lost.
        let mut h = Harness::new(100);
        h.data(0, b"ab");
        h.seg(4, b"", false, true);
        h.finish();
        assert_eq!(h.out.bytes, b"ab??");
        assert_eq!(h.counters.bytes_missing, 2);
        assert!(h.out.ended);
        // No FIN: the peer acknowledged bytes the capture never saw.
        // (It may acknowledge a FIN not captured, the last sequence number: not counted as data.)
        let mut h = Harness::new(100);
        h.data(0, b"ab");
        h.ack(6);
        h.finish();
        assert_eq!(h.out.bytes, b"ab???");
        // Nothing proven missing: nothing reported.
        let mut h = Harness::new(100);
        h.data(0, b"ab");
        h.ack(3);
        h.finish();
        assert_eq!(h.out.bytes, b"ab");
        assert_eq!(h.counters.bytes_missing, 0);
    }

    #[test]
    fn syn_with_data_and_fin_before_the_last_bytes() {
        let mut h = Harness::new(100);
        h.seg(10, b"ab", true, false);
        h.seg(15, b"", false, true);
        assert!(!h.out.ended, "FIN arrived before byte 13-14");
        h.data(13, b"cd");
        assert_eq!(h.out.bytes, b"abcd");
        assert!(h.out.ended);
    }
}
