//! One HTTP connection: its two parsers, and the pairing of each request with its response.
//!
//! Requests queue in order (pipelining); each response completes the oldest request still waiting. The
//! product's rules are applied as soon as the information exists: a request's head decides user agent,
//! headers and path; a response's head decides status and content type; sizes are checked as bytes
//! arrive. Once a pair is known to be dropped its slot stays in the queue (to keep later responses in
//! step) but no more of its bytes are buffered.
//!
//! Pairing across lost data: a response pairs with a request only if the server had received the whole
//! request when it sent the response (the response's ACK covers the request's end). After the parser
//! loses track of message boundaries, waiting requests are dropped, and a later request is only trusted
//! if the client had received everything the server sent before the loss when it sent the request.

use std::collections::VecDeque;

use crate::app::head::MessageHead;
use crate::filters::Rules;
use crate::http1::framing::{request_framing, response_framing, Framing};
use crate::http1::parser::{BodyPlan, HalfParser, MessageHandler, MessageStart, Role};
use crate::memory::Allowance;
use crate::stats::{Counters, DropReason};
use crate::tcp::reassembly::{seq_diff, Chunk, StreamConsumer};
use crate::tcp::Direction;

/// A complete request or response.
#[derive(Debug)]
pub struct HttpMessage {
    pub head: MessageHead,
    /// The body with transfer coding removed (still content-encoded).
    pub body: Vec<u8>,
    /// Head plus body as sent on the wire.
    pub wire_bytes: u64,
    /// Capture time of the first and last byte, microseconds since the epoch.
    pub first_us: i64,
    pub last_us: i64,
}

/// A request with its response, both complete and past every head and size rule.
#[derive(Debug)]
pub struct CompletedPair {
    pub request: HttpMessage,
    pub response: HttpMessage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MethodKind {
    Head,
    Connect,
    Other,
}

#[derive(Debug)]
struct Half {
    message: Option<HttpMessage>,
    done: bool,
    wire: u64,
}

#[derive(Debug)]
struct Exchange {
    id: u64,
    method: MethodKind,
    request: Half,
    /// Where the request started: its sequence number, and how much of the response stream the client
    /// had received when it sent it (the ack of its first segment).
    request_start: MessageStart,
    request_end_seq: u32,
    /// When the request was complete (for the response timeout).
    request_done_us: i64,
    request_content_type_ok: bool,
    response: Option<Half>,
    /// Why this pair is dropped, once known (already counted).
    dropped: Option<DropReason>,
    /// Bytes reserved for this exchange's heads and bodies.
    reserved: usize,
}

impl Exchange {
    fn is_complete(&self) -> bool {
        self.request.done && self.response.as_ref().is_some_and(|r| r.done)
    }

    fn pair_wire(&self) -> u64 {
        self.request.wire + self.response.as_ref().map_or(0, |r| r.wire)
    }
}

/// Everything the handler needs from outside the connection while one packet is processed.
pub struct Env<'a> {
    pub rules: &'a Rules,
    pub counters: &'a mut Counters,
    pub now_us: i64,
    pub completed: &'a mut Vec<CompletedPair>,
}

/// Pairing state of a connection.
#[derive(Debug, Default)]
struct Pairing {
    queue: VecDeque<Exchange>,
    next_id: u64,
    /// The exchange whose request is being parsed.
    current_request: Option<u64>,
    /// The exchange whose response is being parsed (`None` for an interim or unmatched response).
    current_response: Option<u64>,
    /// After losing track: requests are trusted only if they acknowledge this much of the response stream.
    barrier: Option<u32>,
    /// A response came that the server sent after receiving client bytes we never saw (lost, or not
    /// captured yet): it answered a request we cannot know. A request starting before this point of the
    /// client stream, seen later, was already answered: it is dropped instead of waiting for (and
    /// taking) the next response.
    answered_up_to: Option<u32>,
    /// The direction carrying requests, once known.
    client: Option<Direction>,
    /// Next expected sequence number per direction.
    stream_pos: [Option<u32>; 2],
    switched_protocol: bool,
    not_http: bool,
    /// The connection is beyond keeping in step (far too deep a pipeline): the rest is ignored.
    gave_up: bool,
    /// The ack of the latest request: how much of the response stream its client had received.
    last_request_ack: Option<u32>,
    /// Where the latest response seen ended in the response stream: acknowledgments up to here are
    /// explained by responses the capture saw.
    responses_seen_to: Option<u32>,
    /// After request bytes were lost (`Some`): requests are not trusted, and not queued, until one
    /// comes whose client had received more of the response stream than the last request before the
    /// loss (`Some(Some(ack))`; `Some(None)`: no request came before it, the first one sets the mark).
    /// A client that waits for each response before sending the next request (most do) had by then
    /// received the responses to whatever was lost; until then, a response may answer a lost request.
    untrusted: Option<Option<u32>>,
}

impl Pairing {
    fn find(&mut self, id: Option<u64>) -> Option<&mut Exchange> {
        let id = id?;
        self.queue.iter_mut().rev().find(|e| e.id == id)
    }

    fn drop_exchange(counters: &mut Counters, ex: &mut Exchange, reason: DropReason) {
        if ex.dropped.is_none() {
            counters.count_drop(reason);
            ex.dropped = Some(reason);
        }
    }

    /// Releases an exchange's buffers when it is known to be dropped.
    fn shed(ex: &mut Exchange, allowance: &mut Allowance<'_>) {
        allowance.release(ex.reserved);
        ex.reserved = 0;
        ex.request.message = None;
        if let Some(r) = ex.response.as_mut() {
            r.message = None;
        }
    }

    fn doom(
        &mut self,
        id: Option<u64>,
        reason: DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        if let Some(ex) = self.find(id) {
            Self::drop_exchange(env.counters, ex, reason);
            Self::shed(ex, allowance);
        }
    }

    /// Pops complete exchanges from the front, handing kept pairs on.
    fn emit_ready(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        while self.queue.front().is_some_and(Exchange::is_complete) {
            let Some(mut ex) = self.queue.pop_front() else {
                break;
            };
            allowance.release(ex.reserved);
            ex.reserved = 0;
            if ex.dropped.is_some() {
                continue;
            }
            if let Err(reason) = env.rules.check_sizes(0, ex.pair_wire()) {
                env.counters.count_drop(reason);
                continue;
            }
            let request = ex.request.message.take();
            let response = ex.response.and_then(|mut r| r.message.take());
            if let (Some(request), Some(response)) = (request, response) {
                env.completed.push(CompletedPair { request, response });
            }
        }
    }

    /// Everything waiting is lost; later requests must prove they were sent after the loss.
    fn desync(&mut self, role: Role, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        if role == Role::Request {
            self.untrusted = Some(self.last_request_ack);
        }
        for mut ex in self.queue.drain(..) {
            Self::drop_exchange(env.counters, &mut ex, DropReason::StreamGap);
            allowance.release(ex.reserved);
        }
        self.current_request = None;
        self.current_response = None;
        if let Some(client) = self.client {
            self.barrier = self.stream_pos[client.reverse().index()];
        }
    }

    fn on_request_head(
        &mut self,
        head: MessageHead,
        start: MessageStart,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan> {
        env.counters.requests += 1;
        let framing = match request_framing(&head) {
            Ok(f) => f,
            Err(_) => {
                env.counters.count_drop(DropReason::HttpParse);
                return None;
            }
        };
        if self.gave_up {
            env.counters.count_drop(DropReason::TooManyPending);
            return Some(BodyPlan {
                framing,
                collect: false,
            });
        }
        if let Some(mark) = self.untrusted {
            match mark {
                Some(ack) if seq_diff(start.ack, ack) > 0 => self.untrusted = None,
                _ => {
                    if mark.is_none() {
                        self.untrusted = Some(Some(start.ack));
                    }
                    env.counters.count_drop(DropReason::PairingUncertain);
                    self.current_request = None;
                    return Some(BodyPlan {
                        framing,
                        collect: false,
                    });
                }
            }
        }
        self.last_request_ack = Some(start.ack);
        if self.queue.len() >= env.rules.max_pending_requests {
            // Too deep to keep: dropped, but it keeps its place so that later responses stay in step
            // (a place costs no buffer). A connection far deeper than that is given up on.
            env.counters.count_drop(DropReason::TooManyPending);
            if self.queue.len() >= env.rules.max_pending_requests.saturating_mul(4) {
                for mut ex in self.queue.drain(..) {
                    Self::drop_exchange(env.counters, &mut ex, DropReason::TooManyPending);
                    allowance.release(ex.reserved);
                }
                self.current_request = None;
                self.current_response = None;
                self.gave_up = true;
                return Some(BodyPlan {
                    framing,
                    collect: false,
                });
            }
            let id = self.next_id;
            self.next_id += 1;
            self.current_request = Some(id);
            self.queue.push_back(Exchange {
                id,
                method: MethodKind::Other,
                request: Half {
                    message: None,
                    done: false,
                    wire: head.wire_len() as u64,
                },
                request_start: start,
                request_end_seq: start.seq,
                request_done_us: env.now_us,
                request_content_type_ok: false,
                response: None,
                dropped: Some(DropReason::TooManyPending),
                reserved: 0,
            });
            return Some(BodyPlan {
                framing,
                collect: false,
            });
        }
        let method = if head.method().eq_ignore_ascii_case(b"HEAD") {
            MethodKind::Head
        } else if head.method().eq_ignore_ascii_case(b"CONNECT") {
            MethodKind::Connect
        } else {
            MethodKind::Other
        };
        let head_len = head.wire_len() as u64;
        let declared = match framing {
            Framing::Length(n) => head_len.saturating_add(n),
            _ => head_len,
        };
        if let Some(answered) = self.answered_up_to {
            if seq_diff(start.seq, answered) < 0 {
                env.counters.count_drop(DropReason::PairingUncertain);
                self.current_request = None;
                return Some(BodyPlan {
                    framing,
                    collect: false,
                });
            }
            self.answered_up_to = None;
        }
        let mut dropped = None;
        if let Some(barrier) = self.barrier {
            if seq_diff(start.ack, barrier) < 0 {
                dropped = Some(DropReason::StreamGap);
            } else {
                self.barrier = None;
            }
        }
        let dropped = dropped
            .or_else(|| env.rules.check_request(&head).err())
            .or_else(|| env.rules.check_sizes(declared, declared).err());
        let content_type_ok = env.rules.content_type_allowed(&head);
        let mut reserved = 0;
        let dropped = dropped.or_else(|| match allowance.reserve(head.memory_size()) {
            Ok(()) => {
                reserved = head.memory_size();
                None
            }
            Err(reason) => Some(reason),
        });
        if let Some(reason) = dropped {
            env.counters.count_drop(reason);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.current_request = Some(id);
        let collect = dropped.is_none();
        self.queue.push_back(Exchange {
            id,
            method,
            request: Half {
                message: collect.then(|| HttpMessage {
                    head,
                    body: Vec::new(),
                    wire_bytes: head_len,
                    first_us: env.now_us,
                    last_us: env.now_us,
                }),
                done: false,
                wire: head_len,
            },
            request_start: start,
            request_end_seq: start.seq,
            request_done_us: env.now_us,
            request_content_type_ok: content_type_ok,
            response: None,
            dropped,
            reserved,
        });
        Some(BodyPlan { framing, collect })
    }

    /// Whether the server had received client bytes that were not captured (yet) when it sent the
    /// response starting at `start`.
    fn response_follows_unseen_request_bytes(&self, start: MessageStart) -> bool {
        let Some(client) = self.client else {
            return false;
        };
        match self.stream_pos[client.index()] {
            Some(seen) => seq_diff(start.ack, seen) > 0,
            None => false,
        }
    }

    /// Gives up on waiting requests whose responses must have been lost: a request whose client had
    /// received more of the response stream when it sent the next request, while the response now
    /// starting begins after that point, was answered by something the capture missed. (A client that
    /// pipelines sends the next request without receiving anything in between: untouched.)
    fn skip_lost_responses(
        &mut self,
        start: MessageStart,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        loop {
            let Some(i) = self.queue.iter().position(|e| e.response.is_none()) else {
                return;
            };
            let Some(next) = self.queue.get(i + 1) else {
                return;
            };
            let front = &self.queue[i];
            // The client had received more between the two requests, and more than the responses we
            // saw: a retransmitted request carries the ack of its retransmission, which responses seen
            // since the original explain (pipelined requests under loss).
            let acked_more = seq_diff(next.request_start.ack, front.request_start.ack) > 0;
            let explained = self
                .responses_seen_to
                .is_some_and(|end| seq_diff(next.request_start.ack, end) <= 0);
            let client_saw_a_response = acked_more && !explained;
            let this_came_later = seq_diff(start.seq, next.request_start.ack) >= 0;
            if !(client_saw_a_response && this_came_later) {
                return;
            }
            let ex = &mut self.queue[i];
            Self::drop_exchange(env.counters, ex, DropReason::StreamGap);
            Self::shed(ex, allowance);
            ex.response = Some(Half {
                message: None,
                done: true,
                wire: 0,
            });
            self.emit_ready(env, allowance);
        }
    }

    fn on_response_head(
        &mut self,
        head: MessageHead,
        start: MessageStart,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan> {
        env.counters.responses += 1;
        self.current_response = None;
        let status = head.status().unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // Interim (100 Continue, 103 Early Hints): the final response follows.
            return Some(BodyPlan {
                framing: Framing::None,
                collect: false,
            });
        }
        self.skip_lost_responses(start, env, allowance);
        if self.response_follows_unseen_request_bytes(start) {
            // Which request this answers cannot be known: it takes the oldest waiting one's place, and
            // both are dropped; requests seen later that it may have answered are dropped as they come,
            // and, as after lost request bytes, later ones are trusted again only once their client has
            // received new response data (the unseen bytes may hold several pipelined requests).
            self.answered_up_to = Some(match self.answered_up_to {
                Some(a) if seq_diff(a, start.ack) > 0 => a,
                _ => start.ack,
            });
            if self.untrusted.is_none() {
                self.untrusted = Some(self.last_request_ack);
            }
            let framing = response_framing(&head, None).ok();
            match self.queue.iter_mut().find(|e| e.response.is_none()) {
                Some(ex) => {
                    Self::drop_exchange(env.counters, ex, DropReason::PairingUncertain);
                    Self::shed(ex, allowance);
                    ex.response = Some(Half {
                        message: None,
                        done: false,
                        wire: head.wire_len() as u64,
                    });
                    self.current_response = Some(ex.id);
                }
                None => env.counters.count_drop(DropReason::UnmatchedResponse),
            }
            return framing.map(|framing| BodyPlan {
                framing,
                collect: false,
            });
        }
        // The oldest request without a response, if the server had received all of it.
        let target = self.queue.iter_mut().find(|e| e.response.is_none());
        let target = match target {
            Some(ex) if !ex.request.done || seq_diff(start.ack, ex.request_end_seq) >= 0 => {
                Some(ex)
            }
            _ => None,
        };
        let Some(ex) = target else {
            env.counters.count_drop(DropReason::UnmatchedResponse);
            return match response_framing(&head, None) {
                Ok(framing) => Some(BodyPlan {
                    framing,
                    collect: false,
                }),
                Err(_) => None,
            };
        };
        let method: &[u8] = match ex.method {
            MethodKind::Head => b"HEAD",
            MethodKind::Connect => b"CONNECT",
            MethodKind::Other => b"GET",
        };
        let framing = match response_framing(&head, Some(method)) {
            Ok(f) => f,
            Err(_) => {
                Self::drop_exchange(env.counters, ex, DropReason::HttpParse);
                Self::shed(ex, allowance);
                return None;
            }
        };
        if framing == Framing::Tunnel {
            self.switched_protocol = true;
        }
        let head_len = head.wire_len() as u64;
        let declared = match framing {
            Framing::Length(n) => head_len.saturating_add(n),
            _ => head_len,
        };
        let mut response = Half {
            message: None,
            done: false,
            wire: head_len,
        };
        if ex.dropped.is_none() {
            let verdict = env
                .rules
                .check_response(&head)
                .and_then(|()| {
                    if ex.request_content_type_ok || env.rules.content_type_allowed(&head) {
                        Ok(())
                    } else {
                        Err(DropReason::ContentType)
                    }
                })
                .and_then(|()| {
                    env.rules
                        .check_sizes(declared, ex.request.wire.saturating_add(declared))
                })
                .and_then(|()| allowance.reserve(head.memory_size()));
            match verdict {
                Ok(()) => {
                    ex.reserved += head.memory_size();
                    response.message = Some(HttpMessage {
                        head,
                        body: Vec::new(),
                        wire_bytes: head_len,
                        first_us: env.now_us,
                        last_us: env.now_us,
                    });
                }
                Err(reason) => {
                    Self::drop_exchange(env.counters, ex, reason);
                    Self::shed(ex, allowance);
                }
            }
        }
        let collect = ex.dropped.is_none();
        ex.response = Some(response);
        self.current_response = Some(ex.id);
        Some(BodyPlan { framing, collect })
    }

    fn on_body(
        &mut self,
        role: Role,
        bytes: &[u8],
        wire_so_far: u64,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> bool {
        let id = match role {
            Role::Request => self.current_request,
            Role::Response => self.current_response,
        };
        let Some(ex) = self.find(id) else {
            return false;
        };
        if ex.dropped.is_some() {
            return false;
        }
        let (half, other_wire) = match role {
            Role::Request => (Some(&mut ex.request), 0),
            Role::Response => (ex.response.as_mut(), ex.request.wire),
        };
        let Some(half) = half else { return false };
        half.wire = wire_so_far;
        let verdict = env
            .rules
            .check_sizes(wire_so_far, wire_so_far.saturating_add(other_wire))
            .and_then(|()| allowance.reserve(bytes.len()));
        match (verdict, half.message.as_mut()) {
            (Ok(()), Some(message)) => {
                message.body.extend_from_slice(bytes);
                message.wire_bytes = wire_so_far;
                message.last_us = env.now_us;
                ex.reserved += bytes.len();
                true
            }
            (Ok(()), None) => {
                allowance.release(bytes.len());
                false
            }
            (Err(reason), _) => {
                Self::drop_exchange(env.counters, ex, reason);
                Self::shed(ex, allowance);
                false
            }
        }
    }

    fn on_end(
        &mut self,
        role: Role,
        wire: u64,
        end_seq: u32,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        match role {
            Role::Request => {
                let id = self.current_request.take();
                if let Some(ex) = self.find(id) {
                    ex.request.done = true;
                    ex.request.wire = wire;
                    ex.request_end_seq = end_seq;
                    ex.request_done_us = env.now_us;
                    if let Some(m) = ex.request.message.as_mut() {
                        m.wire_bytes = wire;
                        m.last_us = env.now_us;
                    }
                    if ex.dropped.is_none() {
                        if let Err(reason) = env.rules.check_sizes(wire, wire) {
                            Self::drop_exchange(env.counters, ex, reason);
                            Self::shed(ex, allowance);
                        }
                    }
                }
            }
            Role::Response => {
                if self
                    .responses_seen_to
                    .is_none_or(|seen| seq_diff(seen, end_seq) < 0)
                {
                    self.responses_seen_to = Some(end_seq);
                }
                let id = self.current_response.take();
                if let Some(ex) = self.find(id) {
                    let request_wire = ex.request.wire;
                    if let Some(r) = ex.response.as_mut() {
                        r.done = true;
                        r.wire = wire;
                        if let Some(m) = r.message.as_mut() {
                            m.wire_bytes = wire;
                            m.last_us = env.now_us;
                        }
                    }
                    if ex.dropped.is_none() {
                        if let Err(reason) = env
                            .rules
                            .check_sizes(wire, wire.saturating_add(request_wire))
                        {
                            Self::drop_exchange(env.counters, ex, reason);
                            Self::shed(ex, allowance);
                        }
                    }
                }
            }
        }
        self.emit_ready(env, allowance);
    }

    fn on_abort(
        &mut self,
        role: Role,
        reason: DropReason,
        had_head: bool,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        if !had_head {
            env.counters.count_drop(reason);
            return;
        }
        let id = match role {
            Role::Request => self.current_request,
            Role::Response => self.current_response,
        };
        self.doom(id, reason, env, allowance);
    }

    /// Applies the response timeout: called periodically with the current time.
    fn expire(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        let Some(timeout) = env.rules.response_timeout_us else {
            return;
        };
        let now = env.now_us;
        let late =
            |ex: &Exchange| ex.request.done && now.saturating_sub(ex.request_done_us) > timeout;
        // A late request whose response never started: it and every request behind it (responses come in
        // order, so none of theirs can have started either) are given up.
        if let Some(pos) = self
            .queue
            .iter()
            .position(|ex| ex.response.is_none() && late(ex))
        {
            for mut ex in self.queue.drain(pos..) {
                Self::drop_exchange(env.counters, &mut ex, DropReason::ResponseTimeout);
                allowance.release(ex.reserved);
            }
            if self
                .current_request
                .is_some_and(|id| !self.queue.iter().any(|e| e.id == id))
            {
                self.current_request = None;
            }
        }
        // A response still arriving after the timeout: dropped, its slot kept until it ends.
        for ex in self.queue.iter_mut() {
            if ex.response.as_ref().is_some_and(|r| !r.done) && late(ex) && ex.dropped.is_none() {
                Self::drop_exchange(env.counters, ex, DropReason::ResponseTimeout);
                Self::shed(ex, allowance);
            }
        }
    }

    /// The connection is over: whatever still waits is unanswered.
    fn close(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        for mut ex in self.queue.drain(..) {
            let reason = if ex.response.is_some() {
                DropReason::StreamGap
            } else {
                DropReason::Unanswered
            };
            Self::drop_exchange(env.counters, &mut ex, reason);
            allowance.release(ex.reserved);
        }
        self.current_request = None;
        self.current_response = None;
    }
}

/// One TCP connection at the HTTP level.
#[derive(Debug)]
pub struct Connection {
    parsers: [HalfParser; 2],
    pairing: Pairing,
}

/// A connection's handler for one direction, for the duration of one call into its parser.
struct Handler<'e, 'a> {
    pairing: &'e mut Pairing,
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
        let expected = match self.pairing.client {
            Some(client) if client == self.dir => Role::Request,
            Some(_) => Role::Response,
            None => {
                let client = if role == Role::Request {
                    self.dir
                } else {
                    self.dir.reverse()
                };
                self.pairing.client = Some(client);
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
            Role::Response => self
                .pairing
                .on_response_head(head, start, self.env, allowance),
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
        self.pairing.desync(role, self.env, allowance);
    }

    fn on_not_http(&mut self, _allowance: &mut Allowance<'_>) {
        self.pairing.not_http = true;
    }
}

impl Connection {
    /// `client`: the direction of the SYN, when the handshake was seen. A direction seen from its first
    /// byte is parsed strictly (not HTTP at once means not HTTP at all); otherwise the parser searches for
    /// the next message start.
    pub fn new(client: Option<Direction>, from_start: [bool; 2], max_header_bytes: usize) -> Self {
        let mut parsers = [
            HalfParser::new(from_start[0], max_header_bytes),
            HalfParser::new(from_start[1], max_header_bytes),
        ];
        if let Some(client) = client {
            parsers[client.index()].set_role(Role::Request);
            parsers[client.reverse().index()].set_role(Role::Response);
        }
        Connection {
            parsers,
            pairing: Pairing {
                client,
                ..Pairing::default()
            },
        }
    }

    /// A direction's stream starts at `next_seq` (its SYN was seen): positions are known from then on,
    /// before any payload.
    pub fn stream_started(&mut self, dir: Direction, next_seq: u32) {
        let pos = &mut self.pairing.stream_pos[dir.index()];
        if pos.is_none() {
            *pos = Some(next_seq);
        }
    }

    /// The direction that carries requests, once known.
    pub fn client(&self) -> Option<Direction> {
        self.pairing.client
    }

    /// Whether nothing more of this connection will be parsed (not HTTP, or switched protocol).
    pub fn is_ignored(&self) -> bool {
        self.parsers.iter().all(HalfParser::is_ignoring)
    }

    pub fn was_not_http(&self) -> bool {
        self.pairing.not_http
    }

    pub fn switched_protocol(&self) -> bool {
        self.pairing.switched_protocol
    }

    /// Requests waiting for responses.
    pub fn pending(&self) -> usize {
        self.pairing.queue.len()
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

    pub fn expire(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        self.pairing.expire(env, allowance);
    }

    /// The connection is being forgotten: end both streams and give up on what waits.
    pub fn close(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        for dir in [Direction::LowToHigh, Direction::HighToLow] {
            let end = self.pairing.stream_pos[dir.index()].unwrap_or(0);
            let mut handler = Handler {
                pairing: &mut self.pairing,
                dir,
                env,
            };
            self.parsers[dir.index()].end(end, &mut handler, allowance);
        }
        self.pairing.close(env, allowance);
    }

    /// Bytes the parsers hold in their own buffers.
    pub fn parser_reserved(&self) -> usize {
        self.parsers.iter().map(HalfParser::reserved).sum()
    }

    fn after_call(&mut self, allowance: &mut Allowance<'_>) {
        if self.pairing.switched_protocol || self.pairing.not_http || self.pairing.gave_up {
            for p in &mut self.parsers {
                if !p.is_ignoring() {
                    p.ignore_rest(allowance);
                }
            }
        }
    }
}

/// One direction of a connection, as the reassembler's consumer.
pub struct Side<'c, 'e, 'a> {
    conn: &'c mut Connection,
    dir: Direction,
    env: &'e mut Env<'a>,
}

impl StreamConsumer for Side<'_, '_, '_> {
    fn data(&mut self, chunk: Chunk<'_>, allowance: &mut Allowance<'_>) {
        let i = self.dir.index();
        self.conn.pairing.stream_pos[i] = Some(chunk.seq.wrapping_add(chunk.bytes.len() as u32));
        let mut handler = Handler {
            pairing: &mut self.conn.pairing,
            dir: self.dir,
            env: self.env,
        };
        self.conn.parsers[i].data(chunk, &mut handler, allowance);
        self.conn.after_call(allowance);
    }

    fn gap(&mut self, missing: u64, allowance: &mut Allowance<'_>) {
        let i = self.dir.index();
        if let Some(pos) = self.conn.pairing.stream_pos[i].as_mut() {
            *pos = pos.wrapping_add(missing as u32);
        }
        let resume = self.conn.pairing.stream_pos[i].unwrap_or(0);
        let mut handler = Handler {
            pairing: &mut self.conn.pairing,
            dir: self.dir,
            env: self.env,
        };
        self.conn.parsers[i].gap(missing, resume, &mut handler, allowance);
        self.conn.after_call(allowance);
    }

    fn end(&mut self, allowance: &mut Allowance<'_>) {
        let i = self.dir.index();
        let end = self.conn.pairing.stream_pos[i].unwrap_or(0);
        let mut handler = Handler {
            pairing: &mut self.conn.pairing,
            dir: self.dir,
            env: self.env,
        };
        self.conn.parsers[i].end(end, &mut handler, allowance);
        self.conn.after_call(allowance);
    }
}
