//! One TCP connection read as HTTP/2: a frame reader and an HPACK decoder per direction, and the
//! pairing of each stream's request with its response.
//!
//! Pairing is by stream id, so it never guesses: a stream's request (headers, DATA, trailers) and
//! its response meet in one [`Exchange`] slot, judged by the same rules as HTTP/1 as soon as the
//! information exists (request head: user agent, headers, path; response head: status, content
//! type; sizes as frames arrive). A stream reset, refused by GOAWAY, or cut by lost bytes or the
//! connection's end is a counted drop. Everything buffered (header blocks being assembled, heads,
//! bodies, the HPACK tables) is reserved from the connection's [`Allowance`] first.

use super::frame::{looks_like_frames, Control, Event, FrameError, FrameHeader, FrameReader};
use super::frame::{Kind, HEADER_LEN};
use super::frame::{FLAG_END_HEADERS, FLAG_END_STREAM, MAX_FRAME_LEN};
use super::head::{self, HeadError, Http2Extra};
use super::hpack::{self, Decoder};
use crate::app::exchange::{self, close_reason, Env, Exchange, Half, HttpMessage, Queue};
use crate::app::head::MessageHead;
use crate::app::streams::Role;
use crate::filters::Rules;
use crate::memory::Allowance;
use crate::stats::DropReason;
use crate::tcp::Direction;

/// Bounds of one connection, from the configured limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longer frames are skipped (counted): a longer DATA frame would exceed maxMessageBytes, a longer
    /// header frame maxHeaderBytes.
    pub max_frame_len: u32,
    /// A header block (compressed, as assembled from its frames) and a decoded header list are held
    /// up to this many bytes.
    pub max_header_bytes: usize,
    /// Streams waiting for their pair at once (as HTTP/1 requests waiting for responses).
    pub max_streams: usize,
    /// Bytes of HPACK table kept per direction (as RFC 7541 counts them), whatever the peers agreed.
    pub table_cap: usize,
}

impl Limits {
    pub fn from_rules(rules: &Rules) -> Limits {
        let message = rules.max_message_bytes.unwrap_or(u64::from(MAX_FRAME_LEN));
        let largest = message.max(rules.max_header_bytes as u64);
        Limits {
            max_frame_len: u32::try_from(largest)
                .unwrap_or(MAX_FRAME_LEN)
                .min(MAX_FRAME_LEN),
            max_header_bytes: rules.max_header_bytes,
            max_streams: rules.max_pending_requests.max(1),
            // SETTINGS_HEADER_TABLE_SIZE is 4096 unless a decoder asks for more; 64 KiB covers what
            // common servers and clients ask, and is small beside the flow buffer.
            table_cap: 64 * 1024,
        }
    }
}

/// A header block being assembled from HEADERS (or PUSH_PROMISE) and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// A PUSH_PROMISE's block: decoded (the table must follow it) and not paired.
    push: bool,
    end_stream: bool,
    bytes: Vec<u8>,
    /// Frame bytes on the wire so far.
    wire: u64,
    /// Why the block is not kept (too large, no budget): it is skipped and its table lost.
    refused: Option<DropReason>,
}

/// Where the content of the frame being read in a direction goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Current {
    None,
    Data(u32),
    Block,
}

/// What HTTP/2 keeps per exchange beside its slot: the stream.
type Slot = Exchange<u32>;

#[derive(Debug)]
struct State {
    /// The direction that sent the preface, or (joined late) whose first header block was a
    /// request.
    client: Option<Direction>,
    limits: Limits,
    hpack: [Decoder; 2],
    blocks: [Option<Block>; 2],
    current: [Current; 2],
    /// Streams with a request seen and their pair not yet complete, oldest first.
    slots: Queue<u32>,
    next_id: u64,
    /// A direction that ended: not read further.
    stopped: [bool; 2],
    /// Whether a direction's reader is at a frame boundary: from its first byte, or since a piece of
    /// it was recognised as whole frames (after a late join or lost bytes).
    synced: [bool; 2],
    /// Bytes reserved for the HPACK tables.
    table_reserved: usize,
    /// Bytes reserved for header blocks being assembled.
    blocks_reserved: usize,
    /// Upgraded from HTTP/1.1: stream 1 is the upgrade request (a response on it without a slot is
    /// one whose request was not kept, not an unmatched one).
    upgraded: bool,
}

#[derive(Debug)]
pub struct Connection {
    readers: [FrameReader; 2],
    state: State,
}

impl Connection {
    /// A connection whose `client` sent the preface (when known: a connection joined late learns it
    /// from its first request); `from_start` per direction: seen from its first byte (a client's
    /// then starts with the preface, and its HPACK table starts empty). A direction caught mid-way is
    /// read from the first piece of it that is whole frames.
    pub fn new(client: Option<Direction>, from_start: [bool; 2], limits: Limits) -> Connection {
        let reader = |dir: Direction| {
            let preface = Some(dir) == client && from_start[dir.index()];
            FrameReader::new(preface, limits.max_frame_len)
        };
        let decoder = |i: usize| Decoder::new(from_start[i], limits.table_cap);
        Connection {
            readers: [reader(Direction::LowToHigh), reader(Direction::HighToLow)],
            state: State {
                client,
                limits,
                hpack: [decoder(0), decoder(1)],
                blocks: [None, None],
                current: [Current::None; 2],
                slots: Queue::new(),
                next_id: 0,
                stopped: [false; 2],
                synced: from_start,
                table_reserved: 0,
                blocks_reserved: 0,
                upgraded: false,
            },
        }
    }

    /// Stops reading (the connection became opaque) and gives up what still waits, for the
    /// connection's remaining life as an opaque one (it times out or ends with the connection).
    pub fn into_waiting(mut self, allowance: &mut Allowance<'_>) -> Queue<()> {
        for dir in [Direction::LowToHigh, Direction::HighToLow] {
            self.state.lose_block(dir, allowance);
        }
        allowance.release(self.state.table_reserved);
        self.state
            .slots
            .into_iter()
            .map(Exchange::without_protocol)
            .collect()
    }

    /// The direction that carries requests, once known.
    pub fn client(&self) -> Option<Direction> {
        self.state.client
    }

    /// The connection upgraded from HTTP/1.1 (`Upgrade: h2c`): stream 1 is the upgrade request
    /// (an HTTP/1.1 message, still waiting for its response), if it was kept.
    pub fn upgraded(&mut self, request: Option<Exchange<()>>) {
        self.state.upgraded = true;
        if let Some(ex) = request {
            let id = self.state.next_id;
            self.state.next_id += 1;
            self.state.slots.push_back(Exchange {
                id,
                request: ex.request,
                request_done_us: ex.request_done_us,
                request_content_type_ok: ex.request_content_type_ok,
                response: None,
                dropped: ex.dropped,
                reserved: ex.reserved,
                protocol: 1,
            });
        }
    }

    /// Streams waiting for their pair.
    pub fn pending(&self) -> usize {
        self.state.slots.len()
    }

    /// Whether nothing more of this connection will be read.
    pub fn is_ignored(&self) -> bool {
        self.state.stopped.iter().all(|&s| s)
    }

    /// Bytes held by decoding itself (header blocks being assembled, HPACK tables).
    pub fn parser_reserved(&self) -> usize {
        self.state.blocks_reserved + self.state.table_reserved
    }

    /// Bytes of `dir`'s stream.
    pub fn data(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let i = dir.index();
        if self.state.stopped[i] {
            return;
        }
        if !self.state.synced[i] {
            if !looks_like_frames(bytes) {
                return;
            }
            self.readers[i] = FrameReader::new(false, self.state.limits.max_frame_len);
            self.state.synced[i] = true;
        }
        let state = &mut self.state;
        let result = self.readers[i].read(bytes, &mut |event| {
            state.on_event(dir, event, env, allowance);
        });
        if result.is_err() {
            // Not the preface after all: nothing of this direction can be read.
            env.counters.count_drop(DropReason::Http2FrameError);
            self.state.stop(dir, DropReason::StreamGap, env, allowance);
        }
    }

    /// `dir` lost bytes: what it still owed is lost, its header table is uncertain, and frame
    /// boundaries are found again by validation.
    pub fn gap(&mut self, dir: Direction, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        let i = dir.index();
        self.state.synced[i] = false;
        self.state.lose_block(dir, allowance);
        self.state.hpack[i].lose();
        self.state.sync_tables(dir, allowance);
        self.state
            .drop_owed(dir, |_| DropReason::StreamGap, env, allowance);
    }

    /// `dir` ended: what it still owed will not come.
    pub fn end(&mut self, dir: Direction, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        self.state.stop_with(dir, close_reason, env, allowance);
    }

    /// The response timeout: a stream whose request is complete and whose response has not
    /// completed in time is dropped.
    pub fn expire(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        let Some(timeout) = env.rules.response_timeout_us else {
            return;
        };
        let now = env.now_us;
        let late = |ex: &Slot| {
            ex.request.done
                && !ex.response.as_ref().is_some_and(|r| r.done)
                && now.saturating_sub(ex.request_done_us) > timeout
        };
        self.state
            .remove_where(late, |_| DropReason::ResponseTimeout, env, allowance);
    }

    /// The connection is being forgotten: give up on whatever waits, and free the tables.
    pub fn close(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        for dir in [Direction::LowToHigh, Direction::HighToLow] {
            self.state.stop_with(dir, close_reason, env, allowance);
        }
        allowance.release(self.state.table_reserved);
        self.state.table_reserved = 0;
    }
}

impl State {
    /// What `dir` carries, once the client is known.
    fn role(&self, dir: Direction) -> Option<Role> {
        self.client.map(|client| {
            if dir == client {
                Role::Request
            } else {
                Role::Response
            }
        })
    }

    fn slot(&mut self, stream: u32) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|ex| ex.protocol == stream)
    }

    fn on_event(
        &mut self,
        dir: Direction,
        event: Event<'_>,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let i = dir.index();
        match event {
            Event::Start { header, .. } => self.on_start(dir, &header, env, allowance),
            Event::Content(bytes) => match self.current[i] {
                Current::Data(stream) => self.on_body(dir, stream, bytes, env, allowance),
                Current::Block => self.on_block_bytes(dir, bytes, allowance),
                Current::None => {}
            },
            Event::End(header) => {
                let current = std::mem::replace(&mut self.current[i], Current::None);
                match current {
                    Current::Data(stream) if header.has(FLAG_END_STREAM) => {
                        self.half_done(dir, stream, env, allowance);
                    }
                    Current::Block if header.has(FLAG_END_HEADERS) => {
                        self.finish_block(dir, env, allowance);
                    }
                    _ => {}
                }
            }
            Event::Control { header, control } => {
                self.interrupt_block(dir, &header, env, allowance);
                self.on_control(dir, &header, control, env, allowance);
            }
            Event::Skipped { header, why } => {
                let reason = match why {
                    FrameError::TooLarge => DropReason::Http2FrameTooLarge,
                    FrameError::Malformed | FrameError::BadPadding => DropReason::Http2FrameError,
                };
                if matches!(
                    header.kind,
                    Kind::Headers | Kind::Continuation | Kind::PushPromise
                ) {
                    // A header block we do not decode changes the table in ways we cannot follow.
                    self.lose_block(dir, allowance);
                    self.hpack[i].lose();
                }
                self.interrupt_block(dir, &header, env, allowance);
                if !self.drop_stream(header.stream, reason, env, allowance) {
                    env.counters.count_drop(reason);
                }
            }
        }
    }

    fn on_start(
        &mut self,
        dir: Direction,
        header: &FrameHeader,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let i = dir.index();
        self.interrupt_block(dir, header, env, allowance);
        let wire = HEADER_LEN as u64 + u64::from(header.len);
        match header.kind {
            Kind::Data => {
                self.current[i] = Current::Data(header.stream);
                self.add_wire(dir, header.stream, wire, env, allowance);
            }
            Kind::Headers | Kind::PushPromise => {
                self.blocks[i] = Some(Block {
                    stream: header.stream,
                    push: header.kind == Kind::PushPromise,
                    end_stream: header.has(FLAG_END_STREAM),
                    bytes: Vec::new(),
                    wire,
                    refused: None,
                });
                self.current[i] = Current::Block;
            }
            Kind::Continuation => match self.blocks[i].as_mut() {
                Some(block) => {
                    block.wire += wire;
                    self.current[i] = Current::Block;
                }
                None => {
                    // A CONTINUATION without a block begun: its content cannot be decoded.
                    env.counters.count_drop(DropReason::Http2FrameError);
                    self.hpack[i].lose();
                }
            },
            _ => {}
        }
    }

    /// A header block must be followed only by CONTINUATION frames of its stream (RFC 9113 section
    /// 6.10); any other frame abandons it.
    fn interrupt_block(
        &mut self,
        dir: Direction,
        header: &FrameHeader,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let i = dir.index();
        let Some(block) = self.blocks[i].as_ref() else {
            return;
        };
        if header.kind == Kind::Continuation && header.stream == block.stream {
            return;
        }
        let stream = block.stream;
        self.lose_block(dir, allowance);
        self.hpack[i].lose();
        if !self.drop_stream(stream, DropReason::Http2FrameError, env, allowance) {
            env.counters.count_drop(DropReason::Http2FrameError);
        }
    }

    /// Forgets the block being assembled in `dir`, releasing its bytes.
    fn lose_block(&mut self, dir: Direction, allowance: &mut Allowance<'_>) {
        if let Some(block) = self.blocks[dir.index()].take() {
            allowance.release(block.bytes.len());
            self.blocks_reserved -= block.bytes.len().min(self.blocks_reserved);
        }
        self.current[dir.index()] = Current::None;
    }

    fn on_block_bytes(&mut self, dir: Direction, bytes: &[u8], allowance: &mut Allowance<'_>) {
        let max = self.limits.max_header_bytes;
        let Some(block) = self.blocks[dir.index()].as_mut() else {
            return;
        };
        if block.refused.is_some() {
            return;
        }
        let verdict = if block.bytes.len() + bytes.len() > max {
            Err(DropReason::HeaderTooLarge)
        } else {
            allowance.reserve(bytes.len())
        };
        match verdict {
            Ok(()) => {
                block.bytes.extend_from_slice(bytes);
                self.blocks_reserved += bytes.len();
            }
            Err(reason) => {
                // Refused: nothing more of it is kept; the stream is dropped when the block ends.
                block.refused = Some(reason);
                let held = std::mem::take(&mut block.bytes).len();
                allowance.release(held);
                self.blocks_reserved -= held.min(self.blocks_reserved);
            }
        }
    }

    /// A header block is complete: decoded, then a request, a response or trailers.
    fn finish_block(&mut self, dir: Direction, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        let i = dir.index();
        let Some(block) = self.blocks[i].take() else {
            return;
        };
        let held = block.bytes.len();
        if let Some(reason) = block.refused {
            self.hpack[i].lose();
            if !self.drop_stream(block.stream, reason, env, allowance) {
                env.counters.count_drop(reason);
            }
            return;
        }
        let decoded = self.hpack[i].decode(&block.bytes, self.limits.max_header_bytes);
        allowance.release(held);
        self.blocks_reserved -= held.min(self.blocks_reserved);
        self.sync_tables(dir, allowance);
        let fields = match decoded {
            Ok(b) if b.too_large => Err(DropReason::HeaderTooLarge),
            Ok(b) => Ok(b.fields),
            Err((_, error)) => {
                tracing::debug!(%error, stream = block.stream, "HPACK block not decoded");
                Err(DropReason::Http2HeaderError)
            }
        };
        if block.push {
            // Server push: decoded for the table's sake, not paired.
            return;
        }
        match fields {
            Ok(fields) => self.on_fields(dir, &block, &fields, env, allowance),
            Err(reason) => {
                if !self.drop_stream(block.stream, reason, env, allowance) {
                    env.counters.count_drop(reason);
                }
            }
        }
    }

    /// Keeps the HPACK tables' reservation in step with their size; a table that cannot grow within
    /// the budget is lost (later references to it resolve to unknown, as after a late join).
    fn sync_tables(&mut self, dir: Direction, allowance: &mut Allowance<'_>) {
        let size = |s: &State| s.hpack.iter().map(Decoder::table_size).sum::<usize>();
        let now = size(self);
        if now > self.table_reserved {
            if allowance.reserve(now - self.table_reserved).is_err() {
                self.hpack[dir.index()].lose();
                let after = size(self);
                if after < self.table_reserved {
                    allowance.release(self.table_reserved - after);
                } else if after > self.table_reserved {
                    // The other direction's table alone: already reserved before this block.
                    let _ = allowance.reserve(after - self.table_reserved);
                }
                self.table_reserved = after;
                return;
            }
        } else {
            allowance.release(self.table_reserved - now);
        }
        self.table_reserved = now;
    }

    fn on_fields(
        &mut self,
        dir: Direction,
        block: &Block,
        fields: &[hpack::Field],
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let stream = block.stream;
        if self.client.is_none() {
            // Joined late: the first block that says which it is tells which side is the client.
            self.client = learn_client(dir, fields);
        }
        let Some(role) = self.role(dir) else {
            env.counters.count_drop(DropReason::Http2HeaderUnknown);
            return;
        };
        match role {
            Role::Request => match self.slot(stream) {
                Some(ex) if !ex.request.done => {
                    // Trailers: they end the request.
                    add_trailers(ex, Role::Request, fields, block.wire, env, allowance);
                    if block.end_stream {
                        self.half_done(dir, stream, env, allowance);
                    }
                }
                Some(_) => env.counters.count_drop(DropReason::Http2FrameError),
                None => self.on_request(dir, block, fields, env, allowance),
            },
            Role::Response => {
                let upgraded = self.upgraded;
                let Some(ex) = self.slot(stream) else {
                    // Its request was not seen (a late join), or was already given up on.
                    let pushed = stream.is_multiple_of(2);
                    let upgrade_request_not_kept = upgraded && stream == 1;
                    if !pushed && !upgrade_request_not_kept {
                        env.counters.responses += 1;
                        env.counters.count_drop(DropReason::UnmatchedResponse);
                    }
                    return;
                };
                match &ex.response {
                    None => {
                        env.counters.responses += 1;
                        on_response(ex, block, fields, env, allowance);
                    }
                    Some(r) if !r.done => {
                        add_trailers(ex, Role::Response, fields, block.wire, env, allowance)
                    }
                    Some(_) => env.counters.count_drop(DropReason::Http2FrameError),
                }
                let interim = ex.response.is_none();
                if block.end_stream && !interim {
                    self.half_done(dir, stream, env, allowance);
                }
            }
        }
    }

    fn on_request(
        &mut self,
        dir: Direction,
        block: &Block,
        fields: &[hpack::Field],
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        env.counters.requests += 1;
        let stream = block.stream;
        if stream.is_multiple_of(2) || self.stopped[dir.reverse().index()] {
            // A client stream id is odd; with the server's direction lost no response can be read.
            let reason = if stream.is_multiple_of(2) {
                DropReason::Http2HeaderError
            } else {
                DropReason::StreamGap
            };
            env.counters.count_drop(reason);
            return;
        }
        let too_many = self.slots.len() >= self.limits.max_streams;
        if too_many && self.slots.len() >= self.limits.max_streams.saturating_mul(4) {
            // Far beyond the limit: not even a place is kept (its response will be unmatched).
            env.counters.count_drop(DropReason::TooManyPending);
            return;
        }
        let built = head::request_head(fields, stream);
        let mut dropped = too_many.then_some(DropReason::TooManyPending);
        let mut reserved = 0;
        let mut content_type_ok = false;
        let message = match built {
            Ok((head, extra)) => {
                dropped = dropped.or_else(|| {
                    env.rules
                        .check_request(&head)
                        .and_then(|()| env.rules.check_sizes(block.wire, block.wire))
                        .err()
                });
                content_type_ok = env.rules.content_type_allowed(&head);
                let size = head.memory_size() + extra.memory_size();
                if dropped.is_none() {
                    match allowance.reserve(size) {
                        Ok(()) => reserved = size,
                        Err(reason) => dropped = Some(reason),
                    }
                }
                dropped
                    .is_none()
                    .then(|| started(head, extra, block.wire, env.now_us))
            }
            Err(e) => {
                dropped = dropped.or(Some(head_reason(e)));
                None
            }
        };
        if let Some(reason) = dropped {
            env.counters.count_drop(reason);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.slots.push_back(Exchange {
            id,
            request: Half {
                message,
                done: false,
                wire: block.wire,
            },
            request_done_us: env.now_us,
            request_content_type_ok: content_type_ok,
            response: None,
            dropped,
            reserved,
            protocol: stream,
        });
        if block.end_stream {
            self.half_done(dir, stream, env, allowance);
        }
    }

    /// DATA frame bytes on the wire for `stream`'s half in `dir` (checked against the size limits
    /// before its content comes).
    fn add_wire(
        &mut self,
        dir: Direction,
        stream: u32,
        wire: u64,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let Some(role) = self.role(dir) else {
            return;
        };
        let Some(ex) = self.slot(stream) else {
            return;
        };
        let request_wire = ex.request.wire;
        let (half, other) = match role {
            Role::Request => (Some(&mut ex.request), 0),
            Role::Response => (ex.response.as_deref_mut(), request_wire),
        };
        let Some(half) = half else {
            // DATA before the response's HEADERS: not a valid response.
            ex.doom(DropReason::Http2FrameError, env.counters, allowance);
            return;
        };
        half.wire += wire;
        let total = half.wire;
        if let Some(m) = half.message.as_mut() {
            m.wire_bytes = total;
        }
        if ex.dropped.is_none() {
            if let Err(reason) = env.rules.check_sizes(total, total.saturating_add(other)) {
                ex.doom(reason, env.counters, allowance);
            }
        }
    }

    fn on_body(
        &mut self,
        dir: Direction,
        stream: u32,
        bytes: &[u8],
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let Some(role) = self.role(dir) else {
            return;
        };
        let Some(ex) = self.slot(stream) else {
            return;
        };
        if ex.dropped.is_some() {
            return;
        }
        let half = match role {
            Role::Request => Some(&mut ex.request),
            Role::Response => ex.response.as_deref_mut(),
        };
        let Some(message) = half.and_then(|h| h.message.as_mut()) else {
            return;
        };
        match allowance.reserve(bytes.len()) {
            Ok(()) => {
                message.body.extend_from_slice(bytes);
                message.last_us = env.now_us;
                ex.reserved += bytes.len();
            }
            Err(reason) => ex.doom(reason, env.counters, allowance),
        }
    }

    /// `dir`'s half of `stream` ended (END_STREAM): the pair is emitted once both halves are done.
    fn half_done(
        &mut self,
        dir: Direction,
        stream: u32,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let Some(role) = self.role(dir) else {
            return;
        };
        let Some(pos) = self.slots.iter().position(|ex| ex.protocol == stream) else {
            return;
        };
        let ex = &mut self.slots[pos];
        match role {
            Role::Request => {
                ex.request.done = true;
                ex.request_done_us = env.now_us;
                if let Some(m) = ex.request.message.as_mut() {
                    m.last_us = env.now_us;
                }
            }
            Role::Response => {
                if let Some(r) = ex.response.as_mut() {
                    r.done = true;
                    if let Some(m) = r.message.as_mut() {
                        m.last_us = env.now_us;
                    }
                }
            }
        }
        if !ex.is_complete() {
            return;
        }
        if let Some(ex) = self.slots.remove(pos) {
            exchange::emit(ex, env, allowance);
        }
    }

    fn on_control(
        &mut self,
        dir: Direction,
        header: &FrameHeader,
        control: Control,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        match control {
            Control::Settings {
                ack: false,
                header_table_size: Some(size),
            } => {
                // The sender's decoder allows this much: it bounds the other direction's encoder.
                self.hpack[dir.reverse().index()].set_settings_max(size);
            }
            Control::RstStream { .. } => {
                self.drop_stream(header.stream, DropReason::Http2StreamReset, env, allowance);
            }
            Control::GoAway { last_stream, .. } => {
                // Streams the GOAWAY's receiver opened beyond `last_stream` were not and will not be
                // processed. Only client streams are paired.
                if self.role(dir) == Some(Role::Response) {
                    self.remove_where(
                        |ex| ex.protocol > last_stream,
                        |_| DropReason::Http2GoAway,
                        env,
                        allowance,
                    );
                }
            }
            Control::Settings { .. } | Control::Other => {}
        }
    }

    /// Gives up on `stream`'s exchange, if one waits: whether there was one.
    fn drop_stream(
        &mut self,
        stream: u32,
        reason: DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> bool {
        if stream == 0 {
            return false;
        }
        let before = self.slots.len();
        self.remove_where(|ex| ex.protocol == stream, |_| reason, env, allowance);
        self.slots.len() < before
    }

    /// Removes the exchanges `which` selects, each dropped for `reason(exchange)` (counted unless
    /// already dropped).
    fn remove_where(
        &mut self,
        which: impl Fn(&Slot) -> bool,
        reason: impl Fn(&Slot) -> DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let mut kept = Queue::with_capacity(self.slots.len());
        for mut ex in self.slots.drain(..) {
            if which(&ex) {
                let why = reason(&ex);
                ex.drop_for(why, env.counters);
                allowance.release(ex.reserved);
            } else {
                kept.push_back(ex);
            }
        }
        self.slots = kept;
    }

    /// `dir` is not read further; exchanges still owing something in it are dropped for `reason`.
    fn stop(
        &mut self,
        dir: Direction,
        reason: DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        self.stop_with(dir, |_| reason, env, allowance);
    }

    fn stop_with(
        &mut self,
        dir: Direction,
        reason: impl Fn(&Slot) -> DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let i = dir.index();
        self.stopped[i] = true;
        self.lose_block(dir, allowance);
        self.hpack[i].lose();
        self.sync_tables(dir, allowance);
        self.drop_owed(dir, reason, env, allowance);
    }

    /// Drops the exchanges still owing something in `dir`.
    fn drop_owed(
        &mut self,
        dir: Direction,
        reason: impl Fn(&Slot) -> DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let Some(role) = self.role(dir) else {
            return;
        };
        let owes = move |ex: &Slot| match role {
            Role::Request => !ex.request.done,
            Role::Response => !ex.response.as_ref().is_some_and(|r| r.done),
        };
        self.remove_where(owes, reason, env, allowance);
    }
}

/// Which side is the client, from a header block of `dir` seen before anything said so: a request's
/// pseudo-headers say `dir`, a response's the other; a block of unknown fields says nothing.
fn learn_client(dir: Direction, fields: &[hpack::Field]) -> Option<Direction> {
    fields.iter().find_map(|f| match f.name.as_deref()? {
        b":method" | b":path" | b":scheme" | b":authority" => Some(dir),
        b":status" => Some(dir.reverse()),
        _ => None,
    })
}

fn head_reason(e: HeadError) -> DropReason {
    match e {
        HeadError::Malformed => DropReason::Http2HeaderError,
        HeadError::Unknown => DropReason::Http2HeaderUnknown,
    }
}

/// A message of which the head has come (`wire` bytes of frames so far).
fn started(head: MessageHead, extra: Http2Extra, wire: u64, now_us: i64) -> HttpMessage {
    let mut m = HttpMessage::started(head, now_us);
    m.wire_bytes = wire;
    m.http2 = Some(Box::new(extra));
    m
}

/// The first header block on a stream's response side: interim (ignored), or the response head.
fn on_response(
    ex: &mut Slot,
    block: &Block,
    fields: &[hpack::Field],
    env: &mut Env<'_>,
    allowance: &mut Allowance<'_>,
) {
    let (head, extra) = match head::response_head(fields, block.stream) {
        Ok(built) => built,
        Err(e) => {
            ex.doom(head_reason(e), env.counters, allowance);
            ex.response = Some(Box::new(Half {
                message: None,
                done: false,
                wire: block.wire,
            }));
            return;
        }
    };
    if head::is_interim(&head) {
        return;
    }
    let mut response = Half {
        message: None,
        done: false,
        wire: block.wire,
    };
    if ex.dropped.is_none() {
        let size = head.memory_size() + extra.memory_size();
        if ex.admit_response(&head, block.wire, size, env, allowance) {
            response.message = Some(started(head, extra, block.wire, env.now_us));
        }
    }
    ex.response = Some(Box::new(response));
}

/// A second header block on a half: its trailers.
fn add_trailers(
    ex: &mut Slot,
    role: Role,
    fields: &[hpack::Field],
    wire: u64,
    env: &mut Env<'_>,
    allowance: &mut Allowance<'_>,
) {
    let request_wire = ex.request.wire;
    let (half, other) = match role {
        Role::Request => (Some(&mut ex.request), 0),
        Role::Response => (ex.response.as_deref_mut(), request_wire),
    };
    let Some(half) = half else {
        return;
    };
    half.wire += wire;
    let total = half.wire;
    let Some(message) = half.message.as_mut() else {
        return;
    };
    message.wire_bytes = total;
    let (verdict, grown) = {
        let extra = message.http2.get_or_insert_with(Box::default);
        let before = extra.memory_size();
        let parsed = head::trailers(fields, extra).map_err(head_reason);
        (parsed, extra.memory_size().saturating_sub(before))
    };
    let verdict = verdict
        .and_then(|()| env.rules.check_sizes(total, total.saturating_add(other)))
        .and_then(|()| allowance.reserve(grown));
    match verdict {
        Ok(()) => ex.reserved += grown,
        Err(reason) => ex.doom(reason, env.counters, allowance),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::app::exchange::CompletedPair;
    use crate::http2::frame::{FLAG_PADDED, PREFACE};
    use crate::memory::{FlowBudget, TotalBudget};
    use crate::stats::Counters;
    use crate::synth::h2::{frame, literal};
    use interceptor_crds::config::WorkerConfig;

    const C: Direction = Direction::LowToHigh;
    const S: Direction = Direction::HighToLow;

    pub(crate) fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        fields
            .iter()
            .flat_map(|(n, v)| literal(n, v, false))
            .collect()
    }

    pub(crate) fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
        let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
        frame(1, flags, stream, &block(fields))
    }

    pub(crate) fn data(stream: u32, body: &[u8], end_stream: bool) -> Vec<u8> {
        frame(
            0,
            if end_stream { FLAG_END_STREAM } else { 0 },
            stream,
            body,
        )
    }

    pub(crate) fn get(stream: u32, path: &str) -> Vec<u8> {
        headers(
            stream,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "api"),
            ],
            true,
        )
    }

    pub(crate) fn ok_json(stream: u32, body: &str) -> Vec<u8> {
        let mut out = headers(
            stream,
            &[(":status", "200"), ("content-type", "application/json")],
            false,
        );
        out.extend(data(stream, body.as_bytes(), true));
        out
    }

    struct Run {
        conn: Connection,
        rules: Rules,
        counters: Counters,
        completed: Vec<CompletedPair>,
        flow: FlowBudget,
        total: TotalBudget,
        now_us: i64,
    }

    impl Run {
        fn new(config: WorkerConfig, from_start: bool) -> Run {
            let rules = Rules::from_config(&config);
            let mut run = Run {
                conn: Connection::new(
                    from_start.then_some(C),
                    [from_start; 2],
                    Limits::from_rules(&rules),
                ),
                rules,
                counters: Counters::default(),
                completed: Vec::new(),
                flow: FlowBudget::default(),
                total: TotalBudget::new(1 << 30),
                now_us: 1_000_000,
            };
            if from_start {
                run.feed(C, PREFACE);
            }
            run
        }

        fn with<R>(
            &mut self,
            f: impl FnOnce(&mut Connection, &mut Env<'_>, &mut Allowance<'_>) -> R,
        ) -> R {
            let mut env = Env {
                rules: &self.rules,
                counters: &mut self.counters,
                now_us: self.now_us,
                completed: &mut self.completed,
            };
            let mut allowance = Allowance {
                flow: &mut self.flow,
                total: &mut self.total,
                flow_limit: 1 << 24,
            };
            f(&mut self.conn, &mut env, &mut allowance)
        }

        fn feed(&mut self, dir: Direction, bytes: &[u8]) {
            self.with(|c, env, a| c.data(dir, bytes, env, a));
        }

        /// (method, path, status, request body, response body) of each pair.
        fn pairs(&self) -> Vec<(String, String, u16, String, String)> {
            self.completed
                .iter()
                .map(|p| {
                    let t = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    (
                        t(p.request.head.method()),
                        t(p.request.head.target()),
                        p.response.head.status().unwrap_or(0),
                        t(&p.request.body),
                        t(&p.response.body),
                    )
                })
                .collect()
        }

        fn drops(&self, reason: DropReason) -> u64 {
            self.counters.drops(reason)
        }

        fn close(&mut self) {
            self.with(|c, env, a| c.close(env, a));
            assert_eq!(self.flow.used(), 0, "everything released");
        }
    }

    fn open() -> WorkerConfig {
        let mut config = WorkerConfig::default();
        config.filters.content_types.clear();
        config
    }

    fn p(
        m: &str,
        path: &str,
        s: u16,
        req: &str,
        res: &str,
    ) -> (String, String, u16, String, String) {
        (m.into(), path.into(), s, req.into(), res.into())
    }

    #[test]
    fn a_post_with_body_and_its_response() {
        let mut r = Run::new(WorkerConfig::default(), true);
        r.feed(C, &frame(4, 0, 0, &[]));
        r.feed(S, &frame(4, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
        let mut req = headers(
            1,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/v1/users"),
                (":authority", "users"),
                ("content-type", "application/json"),
            ],
            false,
        );
        req.extend(data(1, b"{\"name\":", false));
        req.extend(frame(
            0,
            FLAG_END_STREAM | FLAG_PADDED,
            1,
            b"\x02\"a\"}\0\0",
        ));
        r.feed(C, &req);
        assert!(r.completed.is_empty());
        r.feed(S, &ok_json(1, "{\"id\":7}"));
        assert_eq!(
            r.pairs(),
            vec![p(
                "POST",
                "/v1/users",
                200,
                "{\"name\":\"a\"}",
                "{\"id\":7}"
            )]
        );
        let pair = &r.completed[0];
        assert_eq!(pair.request.head.header("host"), Some(&b"users"[..]));
        assert_eq!(pair.request.http2.as_ref().unwrap().stream_id, 1);
        assert_eq!(pair.request.wire_bytes, req.len() as u64);
        assert_eq!(r.counters.total_drops(), 0);
        assert_eq!((r.counters.requests, r.counters.responses), (1, 1));
        r.close();
    }

    #[test]
    fn interleaved_streams_pair_by_stream_in_any_order() {
        let mut r = Run::new(open(), true);
        let mut client = Vec::new();
        for s in [1, 3, 5, 7] {
            client.extend(get(s, &format!("/s{s}")));
        }
        r.feed(C, &client);
        // Responses in another order, their frames interleaved.
        let mut server = Vec::new();
        for s in [7, 3, 5, 1] {
            server.extend(headers(s, &[(":status", "200")], false));
        }
        for s in [5, 1, 7, 3] {
            server.extend(data(s, format!("body{s}").as_bytes(), true));
        }
        r.feed(S, &server);
        let mut pairs = r.pairs();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                p("GET", "/s1", 200, "", "body1"),
                p("GET", "/s3", 200, "", "body3"),
                p("GET", "/s5", 200, "", "body5"),
                p("GET", "/s7", 200, "", "body7"),
            ]
        );
        assert_eq!(r.counters.total_drops(), 0);
        r.close();
    }

    #[test]
    fn rst_stream_goaway_and_the_end_are_counted_drops() {
        let mut r = Run::new(open(), true);
        let mut client = Vec::new();
        for s in [1, 3, 5, 7] {
            client.extend(get(s, "/"));
        }
        r.feed(C, &client);
        r.feed(S, &frame(3, 0, 1, &[0, 0, 0, 8]));
        assert_eq!(r.drops(DropReason::Http2StreamReset), 1);
        // The server will process streams up to 3: 5 and 7 never will be.
        r.feed(S, &frame(7, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));
        assert_eq!(r.drops(DropReason::Http2GoAway), 2);
        r.feed(S, &headers(3, &[(":status", "200")], false));
        r.close();
        assert_eq!(
            r.drops(DropReason::StreamGap),
            1,
            "stream 3's response was cut"
        );
        assert!(r.completed.is_empty());
        // A request still waiting when the connection ends.
        let mut r = Run::new(open(), true);
        r.feed(C, &get(1, "/"));
        r.close();
        assert_eq!(r.drops(DropReason::Unanswered), 1);
        assert_eq!(r.counters.total_drops(), 1);
    }

    #[test]
    fn rules_apply_as_for_http1() {
        // The default content types: JSON kept, text dropped.
        let mut r = Run::new(WorkerConfig::default(), true);
        r.feed(C, &get(1, "/a"));
        r.feed(C, &get(3, "/healthz"));
        r.feed(S, &ok_json(1, "{}"));
        let mut text = headers(
            3,
            &[(":status", "200"), ("content-type", "text/plain")],
            false,
        );
        text.extend(data(3, b"x", true));
        r.feed(S, &text);
        r.feed(C, &get(5, "/b"));
        let mut plain = headers(
            5,
            &[(":status", "200"), ("content-type", "text/plain")],
            false,
        );
        plain.extend(data(5, b"x", true));
        r.feed(S, &plain);
        r.feed(C, &get(7, "/c"));
        r.feed(
            S,
            &headers(
                7,
                &[(":status", "404"), ("content-type", "application/json")],
                true,
            ),
        );
        assert_eq!(r.pairs(), vec![p("GET", "/a", 200, "", "{}")]);
        assert_eq!(r.drops(DropReason::ExcludedPath), 1);
        assert_eq!(r.drops(DropReason::ContentType), 1);
        assert_eq!(r.drops(DropReason::StatusCode), 1);
        r.close();
        // gRPC only when configured.
        let grpc = |r: &mut Run| {
            r.feed(
                C,
                &headers(
                    1,
                    &[
                        (":method", "POST"),
                        (":path", "/pkg.Svc/Call"),
                        ("content-type", "application/grpc"),
                    ],
                    false,
                ),
            );
            r.feed(C, &data(1, b"\0\0\0\0\x01\x08", true));
            let mut res = headers(
                1,
                &[(":status", "200"), ("content-type", "application/grpc")],
                false,
            );
            res.extend(data(1, b"\0\0\0\0\0", false));
            res.extend(headers(1, &[("grpc-status", "0")], true));
            r.feed(S, &res);
        };
        let mut r = Run::new(WorkerConfig::default(), true);
        grpc(&mut r);
        assert_eq!(r.drops(DropReason::ContentType), 1);
        let mut config = WorkerConfig::default();
        config.filters.content_types.push("application/grpc".into());
        let mut r = Run::new(config, true);
        grpc(&mut r);
        assert_eq!(r.completed.len(), 1);
        let extra = r.completed[0].response.http2.as_ref().unwrap();
        assert_eq!(
            extra.trailers,
            vec![(b"grpc-status".to_vec(), b"0".to_vec())]
        );
        r.close();
    }

    #[test]
    fn split_at_every_byte_boundary_gives_the_same_pairs() {
        let mut client = get(1, "/x");
        client.extend(headers(3, &[(":method", "PUT"), (":path", "/y")], false));
        client.extend(data(3, b"abc", true));
        let mut server = ok_json(3, "{\"y\":1}");
        server.extend(ok_json(1, "{\"x\":1}"));
        let mut whole = Run::new(open(), true);
        whole.feed(C, &client);
        whole.feed(S, &server);
        assert_eq!(whole.completed.len(), 2);
        for at in 0..client.len().max(server.len()) {
            let mut r = Run::new(open(), true);
            let (c1, c2) = client.split_at(at.min(client.len()));
            let (s1, s2) = server.split_at(at.min(server.len()));
            r.feed(C, c1);
            r.feed(C, c2);
            r.feed(S, s1);
            r.feed(S, s2);
            assert_eq!(r.pairs(), whole.pairs(), "split at {at}");
            assert_eq!(r.counters.total_drops(), 0);
            r.close();
        }
    }

    #[test]
    fn a_late_join_pairs_with_unknown_headers_never_invented() {
        // Joined after the preface and after the tables were filled.
        let mut r = Run::new(open(), false);
        // :method GET (static), :path from an entry before the join (index 62), a new indexed header.
        let mut blk = vec![0x82, 0xbe];
        blk.extend(literal("x-new", "1", true));
        r.feed(C, &frame(1, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &blk));
        // The response: :status 200 (static), content-type from before the join.
        r.feed(S, &frame(1, FLAG_END_HEADERS, 1, &[0x88, 0xbf]));
        r.feed(S, &data(1, b"{}", true));
        assert_eq!(r.counters.drops_json(), serde_json::Map::new());
        assert_eq!(r.pairs(), vec![p("GET", "", 200, "", "{}")]);
        let req = r.completed[0].request.http2.as_ref().unwrap();
        assert!(req.path_unknown);
        assert_eq!(
            r.completed[0]
                .response
                .http2
                .as_ref()
                .unwrap()
                .unknown_headers,
            vec![None]
        );
        // The next request references x-new (now index 62): known.
        r.feed(
            C,
            &frame(
                1,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                3,
                &[0x82, 0x84, 0xbe],
            ),
        );
        r.feed(S, &frame(1, FLAG_END_HEADERS | FLAG_END_STREAM, 3, &[0x88]));
        assert_eq!(r.completed[1].request.head.header("x-new"), Some(&b"1"[..]));
        // :method unknown: cannot be judged, dropped.
        r.feed(
            C,
            &frame(1, FLAG_END_HEADERS | FLAG_END_STREAM, 5, &[0xc0, 0x84]),
        );
        assert_eq!(r.drops(DropReason::Http2HeaderUnknown), 1);
        // A response to a request never seen.
        r.feed(S, &frame(1, FLAG_END_HEADERS | FLAG_END_STREAM, 9, &[0x88]));
        assert_eq!(r.drops(DropReason::UnmatchedResponse), 1);
        r.close();
    }

    #[test]
    fn oversized_and_malformed_frames_and_lost_blocks() {
        let mut config = open();
        config.limits.max_message_bytes = 20_000;
        let mut r = Run::new(config, true);
        r.feed(
            C,
            &headers(1, &[(":method", "POST"), (":path", "/")], false),
        );
        r.feed(C, &data(1, &vec![b'a'; 70_000], true));
        assert_eq!(r.drops(DropReason::Http2FrameTooLarge), 1);
        assert_eq!(r.pending(), 0);
        // Reading goes on at the next frame.
        r.feed(C, &get(3, "/ok"));
        r.feed(S, &ok_json(3, "{}"));
        assert_eq!(r.completed.len(), 1);
        // A header block interrupted by another frame: dropped, and the table is lost.
        r.feed(C, &frame(1, 0, 5, &block(&[(":method", "GET")])));
        r.feed(C, &frame(6, 0, 0, &[0; 8]));
        assert_eq!(r.drops(DropReason::Http2FrameError), 1);
        // A malformed frame of no stream (PING of 7 bytes): counted, reading goes on.
        r.feed(C, &frame(6, 0, 0, &[0; 7]));
        assert_eq!(r.drops(DropReason::Http2FrameError), 2);
        // A CONTINUATION out of nowhere.
        r.feed(C, &frame(9, FLAG_END_HEADERS, 7, b"\x82"));
        assert_eq!(r.drops(DropReason::Http2FrameError), 3);
        // Bad HPACK.
        r.feed(C, &frame(1, FLAG_END_HEADERS, 9, b"\x80"));
        assert_eq!(r.drops(DropReason::Http2HeaderError), 1);
        // A header block above maxHeaderBytes.
        let big = "v".repeat(100);
        let fields: Vec<(&str, &str)> = (0..700).map(|_| ("x-big", big.as_str())).collect();
        let mut blk = block(&[(":method", "GET"), (":path", "/")]);
        blk.extend(block(&fields));
        r.feed(C, &frame(1, 0, 11, &blk[..15_000]));
        r.feed(C, &frame(9, 0, 11, &blk[15_000..30_000]));
        r.feed(C, &frame(9, 0, 11, &blk[30_000..45_000]));
        r.feed(C, &frame(9, 0, 11, &blk[45_000..60_000]));
        r.feed(C, &frame(9, FLAG_END_HEADERS, 11, &blk[60_000..]));
        assert_eq!(r.drops(DropReason::HeaderTooLarge), 1);
        assert!(
            r.conn.parser_reserved() < 1024,
            "{}",
            r.conn.parser_reserved()
        );
        r.close();
    }

    #[test]
    fn lost_bytes_and_timeouts() {
        let mut r = Run::new(open(), true);
        r.feed(C, &get(1, "/"));
        r.feed(C, &get(3, "/"));
        r.feed(S, &headers(1, &[(":status", "200")], false));
        r.with(|c, env, a| c.gap(S, env, a));
        assert_eq!(r.drops(DropReason::StreamGap), 2);
        r.feed(C, &get(5, "/"));
        // The server's stream resumes mid-frame: skipped until a piece of it is whole frames.
        r.feed(S, &ok_json(5, "{}")[3..]);
        r.feed(S, &ok_json(5, "{\"five\":5}"));
        assert_eq!(r.pairs(), vec![p("GET", "/", 200, "", "{\"five\":5}")]);
        assert_eq!(r.counters.total_drops(), 2);
        r.close();
        let mut r = Run::new(open(), true);
        r.feed(C, &get(1, "/"));
        r.now_us += 11_000_000;
        r.with(|c, env, a| c.expire(env, a));
        assert_eq!(r.drops(DropReason::ResponseTimeout), 1);
        assert_eq!(r.pending(), 0);
        r.close();
    }

    #[test]
    fn too_many_streams() {
        let mut config = open();
        config.limits.max_pending_requests = 2;
        let mut r = Run::new(config, true);
        for s in 0..10 {
            r.feed(C, &get(2 * s + 1, "/"));
        }
        assert_eq!(r.drops(DropReason::TooManyPending), 8);
        assert_eq!(r.pending(), 8, "places kept up to four times the limit");
        r.feed(S, &get(1, "/")[..0]);
        r.close();
    }

    impl Run {
        fn pending(&self) -> usize {
            self.conn.pending()
        }
    }

    /// Frames of several streams, each stream's frames in order, merged in the order `keys` gives
    /// (a stable interleaving: frame j of stream i sorts by `keys[i][j]` among the others).
    fn interleave(streams: &[Vec<Vec<u8>>], keys: &[u64]) -> Vec<u8> {
        let mut tagged: Vec<(u64, usize, usize)> = Vec::new();
        let mut k = keys.iter().cycle();
        for (i, frames) in streams.iter().enumerate() {
            // Increasing keys within a stream keep its frames in order.
            let mut at = 0u64;
            for j in 0..frames.len() {
                at += k.next().copied().unwrap_or(1) % 1000 + 1;
                tagged.push((at, i, j));
            }
        }
        tagged.sort();
        tagged
            .into_iter()
            .flat_map(|(_, i, j)| streams[i][j].clone())
            .collect()
    }

    proptest::proptest! {
        /// Any interleaving of the streams' frames (each stream's own frames in order) gives the same
        /// pairs, each with its own response.
        #[test]
        fn any_interleaving_gives_the_same_pairs(
            n in 1usize..8,
            bodies in proptest::collection::vec(0usize..40_000, 8),
            keys in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..64),
            server_keys in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..64),
        ) {
            let mut client = Vec::new();
            let mut server = Vec::new();
            for (i, &len) in bodies.iter().enumerate().take(n) {
                let s = 2 * i as u32 + 1;
                let body = vec![b'a' + i as u8; len];
                let mut frames = vec![headers(s, &[(":method", "POST"), (":path", &format!("/{s}"))], false)];
                for piece in body.chunks(7_000) {
                    frames.push(data(s, piece, false));
                }
                frames.push(data(s, b"", true));
                client.push(frames);
                let answer = format!("answer {s}");
                server.push(vec![
                    headers(s, &[(":status", "200")], false),
                    data(s, &answer.as_bytes()[..3], false),
                    data(s, &answer.as_bytes()[3..], true),
                ]);
            }
            let mut r = Run::new(open(), true);
            r.feed(C, &interleave(&client, &keys));
            r.feed(S, &interleave(&server, &server_keys));
            let mut pairs = r.pairs();
            pairs.sort();
            let mut expected: Vec<_> = (0..n)
                .map(|i| {
                    let s = 2 * i + 1;
                    p("POST", &format!("/{s}"), 200, &String::from_utf8(vec![b'a' + i as u8; bodies[i]]).unwrap(), &format!("answer {s}"))
                })
                .collect();
            expected.sort();
            proptest::prop_assert_eq!(pairs, expected);
            proptest::prop_assert_eq!(r.counters.total_drops(), 0);
            r.close();
        }

        /// Hostile bytes on both sides: no panic, and everything is released at the end.
        #[test]
        fn any_bytes(client in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                     server in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                     prefix in proptest::prelude::any::<bool>()) {
            let mut r = Run::new(open(), false);
            let mut c = if prefix { get(1, "/") } else { Vec::new() };
            c.extend(client);
            r.feed(C, &c);
            r.feed(S, &server);
            r.close();
        }
    }
}
