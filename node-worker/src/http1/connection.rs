//! One TCP connection read as HTTP/1: a parser per direction, and the pairing of their messages.

use super::pairing::Pairing;
use super::parser::{BodyPlan, HalfParser, MessageHandler, MessageStart};
use crate::app::exchange::{Env, Queue};
use crate::app::head::MessageHead;
use crate::app::streams::{Role, Streams};
use crate::app::Opaque;
use crate::memory::Allowance;
use crate::stats::DropReason;
use crate::tcp::reassembly::Chunk;
use crate::tcp::Direction;

#[derive(Debug)]
pub struct Connection {
    parsers: [HalfParser; 2],
    pairing: Pairing,
}

/// A connection's handler for one direction, for the duration of one call into its parser.
struct Handler<'e, 'a> {
    pairing: &'e mut Pairing,
    streams: &'e mut Streams,
    dir: Direction,
    env: &'e mut Env<'a>,
}

impl MessageHandler for Handler<'_, '_> {
    fn on_head(
        &mut self,
        role: Role,
        head: MessageHead,
        start: MessageStart,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan> {
        let expected = match self.streams.role(self.dir) {
            Some(expected) => expected,
            None => {
                // The first message says which side is the client.
                self.streams.client = Some(match role {
                    Role::Request => self.dir,
                    Role::Response => self.dir.reverse(),
                });
                role
            }
        };
        if role != expected {
            self.env.counters.count_drop(DropReason::HttpParse);
            return None;
        }
        match role {
            Role::Request => self
                .pairing
                .on_request_head(head, start, self.env, allowance),
            Role::Response => {
                self.pairing
                    .on_response_head(head, start, self.streams, self.env, allowance)
            }
        }
    }

    fn on_body(
        &mut self,
        role: Role,
        bytes: &[u8],
        wire_so_far: u64,
        allowance: &mut Allowance<'_>,
    ) -> bool {
        self.pairing
            .on_body(role, bytes, wire_so_far, self.env, allowance)
    }

    fn on_end(&mut self, role: Role, wire_bytes: u64, end_seq: u32, allowance: &mut Allowance<'_>) {
        self.pairing
            .on_end(role, wire_bytes, end_seq, self.env, allowance);
    }

    fn on_abort(
        &mut self,
        role: Role,
        reason: DropReason,
        had_head: bool,
        allowance: &mut Allowance<'_>,
    ) {
        self.pairing
            .on_abort(role, reason, had_head, self.env, allowance);
    }

    fn on_desync(&mut self, role: Role, allowance: &mut Allowance<'_>) {
        self.pairing.desync(role, self.streams, self.env, allowance);
    }

    fn on_not_http(&mut self, _allowance: &mut Allowance<'_>) {
        self.pairing.stop(Opaque::NotHttp);
    }

    fn on_tunnel(&mut self, role: Role, _allowance: &mut Allowance<'_>) {
        self.pairing.tunnel(role);
    }
}

impl Connection {
    /// A connection whose client is `streams.client` (when the handshake was seen). A direction seen
    /// from its first byte starts with a message; one caught mid-way searches for the next message
    /// start.
    pub fn new(streams: &Streams, from_start: [bool; 2], max_header_bytes: usize) -> Self {
        let mut parsers = [
            HalfParser::new(from_start[0], max_header_bytes),
            HalfParser::new(from_start[1], max_header_bytes),
        ];
        if let Some(client) = streams.client {
            parsers[client.index()].set_role(Role::Request);
            parsers[client.reverse().index()].set_role(Role::Response);
        }
        Connection {
            parsers,
            pairing: Pairing::default(),
        }
    }

    /// Why the connection is no longer read as HTTP/1, once it is not: the caller then makes it
    /// opaque with [`Connection::into_waiting`].
    pub fn stopped(&self) -> Option<Opaque> {
        self.pairing.stopped()
    }

    /// Whether the connection switched to HTTP/2 in clear text (`101 Switching Protocols` with
    /// `Upgrade: h2c`, RFC 7540 section 3.2).
    pub fn upgraded_to_h2c(&self) -> bool {
        self.pairing.upgraded_to_h2c()
    }

    /// Stops parsing (freeing the parsers' buffers) and gives up what still waits for a response, for
    /// the connection's remaining life as an opaque one.
    pub fn into_waiting(mut self, allowance: &mut Allowance<'_>) -> Queue<()> {
        for p in &mut self.parsers {
            if !p.is_ignoring() {
                p.ignore_rest(allowance);
            }
        }
        self.pairing.into_waiting()
    }

    /// Whether nothing more of this connection will be parsed.
    pub fn is_ignored(&self) -> bool {
        self.parsers.iter().all(HalfParser::is_ignoring)
    }

    /// Requests waiting for responses.
    pub fn pending(&self) -> usize {
        self.pairing.pending()
    }

    /// Bytes the parsers hold in their own buffers.
    pub fn parser_reserved(&self) -> usize {
        self.parsers.iter().map(HalfParser::reserved).sum()
    }

    /// `dir`'s parser, and the handler that pairs what it finds, for one call.
    fn parser<'e, 'a>(
        &'e mut self,
        dir: Direction,
        streams: &'e mut Streams,
        env: &'e mut Env<'a>,
    ) -> (&'e mut HalfParser, Handler<'e, 'a>) {
        let handler = Handler {
            pairing: &mut self.pairing,
            streams,
            dir,
            env,
        };
        (&mut self.parsers[dir.index()], handler)
    }

    /// Bytes of `dir`'s stream (`streams` already counts them delivered). Returns how many at the
    /// end of the chunk were not read because the connection switched protocol in it.
    pub fn data(
        &mut self,
        dir: Direction,
        chunk: Chunk<'_>,
        streams: &mut Streams,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        let (parser, mut handler) = self.parser(dir, streams, env);
        parser.data(chunk, &mut handler, allowance)
    }

    /// `missing` bytes of `dir`'s stream are lost (`streams` already skipped them).
    pub fn gap(
        &mut self,
        dir: Direction,
        missing: u64,
        streams: &mut Streams,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let resume = streams.position(dir);
        let (parser, mut handler) = self.parser(dir, streams, env);
        parser.gap(missing, resume, &mut handler, allowance);
    }

    /// `dir`'s stream ended.
    pub fn end(
        &mut self,
        dir: Direction,
        streams: &mut Streams,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        let end = streams.position(dir);
        let (parser, mut handler) = self.parser(dir, streams, env);
        parser.end(end, &mut handler, allowance);
    }

    pub fn expire(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        self.pairing.expire(env, allowance);
    }

    /// The connection is being forgotten: give up on what waits (its streams were ended first).
    pub fn close(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        self.pairing.close(env, allowance);
    }
}
