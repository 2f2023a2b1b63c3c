//! The application layer: what a TCP connection's two reassembled streams carry, and the protocol that
//! reads them.
//!
//! Each direction seen from its first byte is detected ([`detect`]): the first verdict picks the
//! protocol, and a direction whose first bytes are not what the connection speaks makes it opaque.
//! A [`Connection`] dispatches every call to its protocol by matching on [`Protocol`]: HTTP/1
//! ([`crate::http1`]), HTTP/2 with prior knowledge ([`crate::http2`]), or nothing for an opaque
//! connection (not HTTP, TLS, a tunnel), whose bytes are skipped cheaply. Whatever the protocol, requests and responses meet
//! in the same pairing slots ([`exchange`]) and are judged by the same rules, on the same
//! [`head::MessageHead`].

pub mod detect;
pub mod exchange;
pub mod first_bytes;
pub mod head;
pub mod streams;

pub use exchange::{CompletedPair, Env, HttpMessage};

use detect::Detected;
use exchange::Queue;
use first_bytes::{FirstBytes, Offer};
use streams::{Role, Streams};

use crate::http1;
use crate::http2;
use crate::memory::Allowance;
use crate::tcp::reassembly::{Chunk, StreamConsumer};
use crate::tcp::Direction;

/// Why a connection's bytes are not read (any more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opaque {
    /// Its first bytes are not HTTP, or no HTTP/1 message start was found in a long search.
    NotHttp,
    /// TLS: encrypted.
    Tls,
    /// HTTP/2 that is not decoded. (HTTP/2 with prior knowledge is decoded: detection's HTTP/2
    /// verdict selects [`crate::http2`]; this remains for what it cannot read.)
    Http2,
    /// A CONNECT tunnel whose bytes are not HTTP/1.x (TLS, another protocol). (A tunnel carrying
    /// plain HTTP/1.x stays HTTP/1 and is read.)
    Tunnel,
    /// It switched protocol with `101 Switching Protocols` (WebSocket, ...; h2c is decoded as
    /// HTTP/2 instead).
    Upgraded,
    /// Far too many requests pipelined to keep in step.
    GaveUp,
}

impl Opaque {
    /// Whether the connection never carried HTTP/1.x (what `flows_not_http` counts).
    pub fn is_not_http(self) -> bool {
        matches!(self, Opaque::NotHttp | Opaque::Tls | Opaque::Http2)
    }

    fn of(detected: Detected) -> Opaque {
        match detected {
            Detected::Http2 => Opaque::Http2,
            Detected::Tls => Opaque::Tls,
            Detected::Http1 | Detected::Other | Detected::NeedMore => Opaque::NotHttp,
        }
    }
}

/// The protocol reading a connection, matched on every call. Both protocols' state is boxed and
/// allocated when the first payload picks it: a connection that carries nothing (a SYN, a handshake
/// never followed by data: what a flood is made of) costs only this enum's few words in its flow.
/// HTTP/1's state (two parsers, the pairing) is ~300 bytes, HTTP/2's (two frame readers, two HPACK
/// tables) more; one allocation per connection that speaks is cheap beside parsing what it says.
#[derive(Debug)]
enum Protocol {
    /// No direction has said what it carries yet.
    Detecting,
    Http1(Box<http1::Connection>),
    Http2(Box<http2::Connection>),
    /// Not read: why, and what still waited for a response when reading stopped (it times out or
    /// ends with the connection, as it would have).
    Opaque(Opaque, Queue<()>),
}

/// One TCP connection at the application level.
#[derive(Debug)]
pub struct Connection {
    protocol: Protocol,
    streams: Streams,
    first: [FirstBytes; 2],
    /// The largest message head HTTP/1 collects (bytes held for detection stay within it too).
    /// `u32` (a larger limit is saturated: no head comes near it) so that a flow fits a smaller
    /// allocation.
    max_header_bytes: u32,
}

const DIRECTIONS: [Direction; 2] = [Direction::LowToHigh, Direction::HighToLow];

impl Connection {
    /// `client`: the direction of the SYN, when the handshake was seen. A direction seen from its first
    /// byte (`from_start`) is detected, and not HTTP at once means not HTTP at all; otherwise HTTP/1
    /// searches it for the next message start.
    pub fn new(client: Option<Direction>, from_start: [bool; 2], max_header_bytes: usize) -> Self {
        let streams = Streams::new(client);
        Connection {
            protocol: Protocol::Detecting,
            first: DIRECTIONS.map(|d| FirstBytes::new(from_start[d.index()], streams.role(d))),
            streams,
            max_header_bytes: u32::try_from(max_header_bytes).unwrap_or(u32::MAX),
        }
    }

    /// A direction's stream starts at `next_seq` (its SYN was seen): positions are known from then on,
    /// before any payload.
    pub fn stream_started(&mut self, dir: Direction, next_seq: u32) {
        self.streams.started(dir, next_seq);
    }

    /// The direction that carries requests, once known.
    pub fn client(&self) -> Option<Direction> {
        match &self.protocol {
            Protocol::Http2(h) => self.streams.client.or_else(|| h.client()),
            _ => self.streams.client,
        }
    }

    /// Why the connection is not read, once it is not.
    pub fn opaque(&self) -> Option<Opaque> {
        match self.protocol {
            Protocol::Opaque(why, _) => Some(why),
            Protocol::Detecting | Protocol::Http1(_) | Protocol::Http2(_) => None,
        }
    }

    /// Whether nothing more of this connection will be parsed (opaque, or both streams ended).
    pub fn is_ignored(&self) -> bool {
        match &self.protocol {
            Protocol::Detecting => false,
            Protocol::Http1(h) => h.is_ignored(),
            Protocol::Http2(h) => h.is_ignored(),
            Protocol::Opaque(..) => true,
        }
    }

    /// Requests waiting for responses.
    pub fn pending(&self) -> usize {
        match &self.protocol {
            Protocol::Detecting => 0,
            Protocol::Http1(h) => h.pending(),
            Protocol::Http2(h) => h.pending(),
            Protocol::Opaque(_, waiting) => waiting.len(),
        }
    }

    /// Bytes held by parsing itself (first bytes awaiting detection, heads being collected).
    pub fn parser_reserved(&self) -> usize {
        let held: usize = self.first.iter().map(FirstBytes::held_len).sum();
        match &self.protocol {
            Protocol::Http1(h) => held + h.parser_reserved(),
            Protocol::Http2(h) => held + h.parser_reserved(),
            Protocol::Detecting | Protocol::Opaque(..) => held,
        }
    }

    /// Feeding one direction: implements the reassembler's consumer.
    pub fn side<'c, 'e, 'a>(
        &'c mut self,
        dir: Direction,
        env: &'e mut Env<'a>,
    ) -> Side<'c, 'e, 'a> {
        Side {
            conn: self,
            dir,
            env,
        }
    }

    /// Applies the response timeout: called periodically with the current time.
    pub fn expire(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        match &mut self.protocol {
            Protocol::Detecting => {}
            Protocol::Http1(h) => h.expire(env, allowance),
            Protocol::Http2(h) => h.expire(env, allowance),
            Protocol::Opaque(_, waiting) => {
                exchange::expire(waiting, env, allowance);
            }
        }
    }

    /// The connection is being forgotten: end both streams and give up on what waits.
    pub fn close(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        for dir in DIRECTIONS {
            if self.first[dir.index()].held_len() > 0 {
                self.hand_over(dir, env, allowance);
            }
            if let Protocol::Http1(h) = &mut self.protocol {
                h.end(dir, &mut self.streams, env, allowance);
            }
        }
        match &mut self.protocol {
            Protocol::Detecting => {}
            Protocol::Http1(h) => h.close(env, allowance),
            Protocol::Http2(h) => h.close(env, allowance),
            Protocol::Opaque(_, waiting) => exchange::close(waiting, env, allowance),
        }
    }

    #[inline]
    fn data(
        &mut self,
        dir: Direction,
        chunk: Chunk<'_>,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        self.streams.delivered(dir, chunk.seq, chunk.bytes.len());
        if self.first[dir.index()].is_pending() && !self.first_bytes(dir, &chunk, env, allowance) {
            return;
        }
        if let Protocol::Detecting = self.protocol {
            if !self.first[dir.index()].from_start() && http2::frame::looks_like_frames(chunk.bytes)
            {
                self.start_http2_late(env);
            }
        }
        if let Protocol::Http2(h) = &mut self.protocol {
            h.data(dir, chunk.bytes, env, allowance);
            return;
        }
        if let (Some(h), streams) = self.http1() {
            let unread = h.data(dir, chunk, streams, env, allowance);
            let rest = &chunk.bytes[chunk.bytes.len().saturating_sub(unread)..];
            self.after_http1(dir, rest, env, allowance);
        }
    }

    /// A chunk of a direction whose first bytes are pending: whether it goes on to the protocol now.
    fn first_bytes(
        &mut self,
        dir: Direction,
        chunk: &Chunk<'_>,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> bool {
        if let Protocol::Http2(_) = self.protocol {
            // The other direction said HTTP/2: this one's first bytes are its peer's frames.
            self.hand_over(dir, env, allowance);
            return true;
        }
        match self.first[dir.index()].offer(chunk, self.max_header_bytes as usize, allowance) {
            Offer::Held => false,
            Offer::Told(Detected::Http1) | Offer::CannotHold => {
                self.hand_over(dir, env, allowance);
                true
            }
            Offer::Told(Detected::Http2) if matches!(self.protocol, Protocol::Detecting) => {
                self.start_http2(dir, env);
                self.hand_over(dir, env, allowance);
                true
            }
            Offer::Told(other) => {
                self.make_opaque(Opaque::of(other), allowance);
                false
            }
        }
    }

    fn gap(
        &mut self,
        dir: Direction,
        missing: u64,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        self.streams.skipped(dir, missing);
        if self.first[dir.index()].is_pending() {
            // Detection cannot look past a hole: HTTP/1 searches for a message start after it.
            self.hand_over(dir, env, allowance);
        }
        if let Protocol::Http2(h) = &mut self.protocol {
            h.gap(dir, env, allowance);
            return;
        }
        if let (Some(h), streams) = self.http1() {
            h.gap(dir, missing, streams, env, allowance);
            self.after_http1(dir, &[], env, allowance);
        }
    }

    fn end(&mut self, dir: Direction, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        if self.first[dir.index()].is_pending() {
            self.hand_over(dir, env, allowance);
        }
        if let Protocol::Http2(h) = &mut self.protocol {
            h.end(dir, env, allowance);
            return;
        }
        if let (Some(h), streams) = self.http1() {
            h.end(dir, streams, env, allowance);
            self.after_http1(dir, &[], env, allowance);
        }
    }

    /// HTTP/1, started now if no protocol was picked yet (it is the default: a stream caught mid-way,
    /// or whose first bytes could not be told, is searched for HTTP/1 messages); `None` when opaque.
    /// Borrows only the protocol, so that the streams can be handed to it.
    #[inline]
    fn http1(&mut self) -> (Option<&mut http1::Connection>, &mut Streams) {
        if let Protocol::Detecting = self.protocol {
            self.start_http1();
        }
        let h = match &mut self.protocol {
            Protocol::Http1(h) => Some(&mut **h),
            Protocol::Detecting | Protocol::Http2(_) | Protocol::Opaque(..) => None,
        };
        (h, &mut self.streams)
    }

    #[cold]
    fn start_http1(&mut self) {
        let from_start = self.first.each_ref().map(FirstBytes::from_start);
        self.protocol = Protocol::Http1(Box::new(http1::Connection::new(
            &self.streams,
            from_start,
            self.max_header_bytes as usize,
        )));
    }

    /// Detection said HTTP/2 on `dir`: its preface (a client's) or its SETTINGS (a server's).
    #[cold]
    fn start_http2(&mut self, dir: Direction, env: &Env<'_>) {
        let client = match self.streams.role(dir) {
            Some(Role::Response) => dir.reverse(),
            Some(Role::Request) | None => dir,
        };
        self.streams.client.get_or_insert(client);
        let from_start = self.first.each_ref().map(FirstBytes::from_start);
        let limits = http2::connection::Limits::from_rules(env.rules);
        self.protocol = Protocol::Http2(Box::new(http2::Connection::new(
            Some(client),
            from_start,
            limits,
        )));
    }

    /// A direction caught mid-way carries whole HTTP/2 frames: the capture joined an HTTP/2
    /// connection late (HTTP/1 text never passes the frame validation).
    #[cold]
    fn start_http2_late(&mut self, env: &Env<'_>) {
        let from_start = self.first.each_ref().map(FirstBytes::from_start);
        let limits = http2::connection::Limits::from_rules(env.rules);
        self.protocol = Protocol::Http2(Box::new(http2::Connection::new(
            self.streams.client,
            from_start,
            limits,
        )));
    }

    /// `dir`'s first bytes go to the protocol (HTTP/1 unless HTTP/2 was picked): what was held
    /// first, in one piece.
    fn hand_over(&mut self, dir: Direction, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        let held = self.first[dir.index()].take(allowance);
        if let Protocol::Http2(h) = &mut self.protocol {
            if let Some(held) = held {
                h.data(dir, held.chunk().bytes, env, allowance);
            }
            return;
        }
        if let (Some(held), (Some(h), streams)) = (held, self.http1()) {
            // Held first bytes are fewer than any head and what follows it: no switch happens in them.
            let _ = h.data(dir, held.chunk(), streams, env, allowance);
        }
    }

    /// HTTP/1 found the connection is no longer HTTP/1: it upgraded to h2c (then `rest`, what
    /// followed the `101` in `dir`'s chunk, is HTTP/2's), or it becomes opaque (another upgrade, a
    /// tunnel that is not HTTP/1, given up).
    #[inline]
    fn after_http1(
        &mut self,
        dir: Direction,
        rest: &[u8],
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        if let Protocol::Http1(h) = &self.protocol {
            if let Some(why) = h.stopped() {
                if h.upgraded_to_h2c() {
                    self.upgrade_to_http2(dir, rest, env, allowance);
                } else {
                    self.make_opaque(why, allowance);
                }
            }
        }
    }

    /// `101 Switching Protocols` to h2c (RFC 7540 section 3.2): the client's preface and the
    /// server's frames follow, with fresh HPACK tables. The upgrade request is stream 1: it waits
    /// for its response there. Anything else still waiting (nothing may be pipelined before an
    /// upgrade) ends here.
    #[cold]
    fn upgrade_to_http2(
        &mut self,
        dir: Direction,
        rest: &[u8],
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let Protocol::Http1(h) = std::mem::replace(&mut self.protocol, Protocol::Detecting) else {
            return;
        };
        let mut waiting = h.into_waiting(allowance);
        let upgrade_request = waiting
            .iter()
            .position(|ex| ex.response.is_none())
            .and_then(|i| waiting.remove(i));
        exchange::close(&mut waiting, env, allowance);
        for first in &mut self.first {
            first.take(allowance);
        }
        let client = self.streams.client.unwrap_or(dir.reverse());
        let limits = http2::connection::Limits::from_rules(env.rules);
        let mut h2 = http2::Connection::new(Some(client), [true; 2], limits);
        h2.upgraded(upgrade_request);
        h2.data(dir, rest, env, allowance);
        self.protocol = Protocol::Http2(Box::new(h2));
    }

    /// Nothing more is read: buffers are freed, and only what waits for a response is kept.
    #[cold]
    fn make_opaque(&mut self, why: Opaque, allowance: &mut Allowance<'_>) {
        for first in &mut self.first {
            first.take(allowance);
        }
        let waiting = match std::mem::replace(&mut self.protocol, Protocol::Detecting) {
            Protocol::Http1(h) => h.into_waiting(allowance),
            Protocol::Http2(h) => h.into_waiting(allowance),
            Protocol::Opaque(_, waiting) => waiting,
            Protocol::Detecting => Queue::new(),
        };
        self.protocol = Protocol::Opaque(why, waiting);
    }
}

/// One direction of a connection, as the reassembler's consumer.
pub struct Side<'c, 'e, 'a> {
    conn: &'c mut Connection,
    dir: Direction,
    env: &'e mut Env<'a>,
}

impl StreamConsumer for Side<'_, '_, '_> {
    #[inline]
    fn data(&mut self, chunk: Chunk<'_>, allowance: &mut Allowance<'_>) {
        self.conn.data(self.dir, chunk, self.env, allowance);
    }

    fn gap(&mut self, missing: u64, allowance: &mut Allowance<'_>) {
        self.conn.gap(self.dir, missing, self.env, allowance);
    }

    fn end(&mut self, allowance: &mut Allowance<'_>) {
        self.conn.end(self.dir, self.env, allowance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both protocols are boxed and allocated by the first payload: a connection that carries
    /// nothing (a flood's) stays a few words (96 bytes on x86-64; 424 with HTTP/1 inline, issue 15).
    #[test]
    fn a_connection_that_carries_nothing_is_small() {
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 96, "{size}");
        let c = Connection::new(Some(Direction::LowToHigh), [true; 2], 8192);
        assert!(matches!(c.protocol, Protocol::Detecting));
        assert!(c.first.iter().all(|f| f.held_len() == 0));
    }
}
