//! HTTP/1 pairing: which response answers which request on one connection.
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

use super::framing::{request_framing, response_framing, Framing};
use super::parser::{BodyPlan, MessageStart};
use super::trust::Trust;
use crate::app::exchange::{self, Env, Exchange, Half, HttpMessage, Queue};
use crate::app::head::MessageHead;
use crate::app::streams::{Role, Streams};
use crate::app::Opaque;
use crate::memory::Allowance;
use crate::stats::DropReason;
use crate::tcp::reassembly::seq_diff;

/// What a response's framing needs to know of its request's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MethodKind {
    Head,
    Connect,
    Other,
}

impl MethodKind {
    fn of(head: &MessageHead) -> MethodKind {
        if head.method().eq_ignore_ascii_case(b"HEAD") {
            MethodKind::Head
        } else if head.method().eq_ignore_ascii_case(b"CONNECT") {
            MethodKind::Connect
        } else {
            MethodKind::Other
        }
    }

    fn name(self) -> &'static [u8] {
        match self {
            MethodKind::Head => b"HEAD",
            MethodKind::Connect => b"CONNECT",
            MethodKind::Other => b"GET",
        }
    }
}

/// What HTTP/1 keeps of each request beside its slot: its method (for its response's framing) and
/// where it lies in the client's stream (pairing across lost data compares TCP positions).
#[derive(Debug)]
pub struct Http1Request {
    method: MethodKind,
    /// Where the request started: its sequence number, and how much of the response stream the client
    /// had received when it sent it (the ack of its first segment).
    start: MessageStart,
    end_seq: u32,
    /// Whether it came after the latest loss of request bytes (see `Pairing::requests_lost`).
    after_loss: bool,
}

type Slot = Exchange<Http1Request>;

/// How to read a body that is walked but not kept.
fn skip(framing: Framing) -> Option<BodyPlan> {
    Some(BodyPlan {
        framing,
        collect: false,
    })
}

/// Pairing state of a connection.
#[derive(Debug, Default)]
pub(super) struct Pairing {
    queue: Queue<Http1Request>,
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
    /// The ack of the latest request: how much of the response stream its client had received.
    last_request_ack: Option<u32>,
    /// Where the latest response seen ended in the response stream: acknowledgments up to here are
    /// explained by responses the capture saw.
    responses_seen_to: Option<u32>,
    /// Whether requests are trusted after request bytes were lost (see [`Trust`]).
    trust: Trust,
    /// Requests already counted as dropped that have no slot in the queue, whose responses may still
    /// come: such a response is the rest of an exchange already counted, not a drop of its own (one
    /// loss, one count). Bounded by the requests seen; at most one response is absorbed per request.
    /// (Small counters, saturating: every connection carries them, and a flow must stay small.)
    counted_without_slot: u8,
    /// Request bytes were lost, and no response has paired since with a request that came after the
    /// loss: a response without a request to pair with answers a lost one, and is counted as that
    /// loss (`stream_gap`), not as unmatched.
    requests_lost: bool,
    /// Responses to client bytes the capture had not seen, counted as lost exchanges before the loss
    /// showed in the client stream: the request lost there (or seen late) is that exchange, counted.
    responses_ahead: u8,
    /// Why the connection is no longer read as HTTP/1, once it is not.
    stopped: Option<Opaque>,
    /// The tunnel is HTTP/2 in clear text (a 101 answering `Upgrade: h2c`).
    h2c: bool,
    /// The client's bytes after a CONNECT are not HTTP/1.x, and the CONNECT's response has not come
    /// yet (a client that does not wait for it, or a capture that shows the tunnel's first bytes
    /// first): the connection becomes an opaque tunnel once that response is seen.
    tunnel_pending: bool,
}

impl Pairing {
    pub(super) fn stopped(&self) -> Option<Opaque> {
        self.stopped
    }

    pub(super) fn upgraded_to_h2c(&self) -> bool {
        self.h2c && self.stopped == Some(Opaque::Upgraded)
    }

    /// The connection stops being read as HTTP/1 (after the call in progress). The first reason stays.
    pub(super) fn stop(&mut self, why: Opaque) {
        self.stopped.get_or_insert(why);
    }

    /// `role`'s bytes after a CONNECT are not HTTP/1.x: a tunnel, not read. The server's (after its
    /// `2xx`) make the connection opaque at once; the client's wait until the CONNECT's response is
    /// seen, so that the CONNECT itself is still paired.
    pub(super) fn tunnel(&mut self, role: Role) {
        let connect_waiting = self
            .queue
            .iter()
            .any(|e| e.protocol.method == MethodKind::Connect && e.response.is_none());
        if role == Role::Request && connect_waiting {
            self.tunnel_pending = true;
        } else {
            self.stop(Opaque::Tunnel);
        }
    }

    /// Requests waiting for responses.
    pub(super) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// What still waits, for a connection that is no longer parsed.
    pub(super) fn into_waiting(self) -> Queue<()> {
        self.queue
            .into_iter()
            .map(Exchange::without_protocol)
            .collect()
    }

    fn find(&mut self, id: Option<u64>) -> Option<&mut Slot> {
        let id = id?;
        self.queue.iter_mut().rev().find(|e| e.id == id)
    }

    fn doom(
        &mut self,
        id: Option<u64>,
        reason: DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        if let Some(ex) = self.find(id) {
            ex.doom(reason, env.counters, allowance);
        }
    }

    /// Queues a new exchange for a request whose head just came; it becomes the current request.
    fn push(&mut self, request: Half, protocol: Http1Request, now_us: i64) -> &mut Slot {
        let id = self.next_id;
        self.next_id += 1;
        self.current_request = Some(id);
        if self.queue.capacity() == 0 {
            // Room for one: a first push would make room for four (~1.4 KiB), and most connections
            // never pipeline; a queue that needs more grows as usual.
            self.queue.reserve_exact(1);
        }
        self.queue.push_back(Exchange {
            id,
            request,
            request_done_us: now_us,
            request_content_type_ok: false,
            response: None,
            dropped: None,
            reserved: 0,
            protocol,
        });
        let last = self.queue.len() - 1;
        &mut self.queue[last]
    }

    /// Everything waiting is lost; later requests must prove they were sent after the loss.
    pub(super) fn desync(
        &mut self,
        role: Role,
        streams: &Streams,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        // Lost request bytes cost only what they held: requests complete before them were sent first,
        // so their responses come first, and a response pairs only with a request the server had
        // received whole (its ACK covers the request's end). Lost response bytes leave no telling which
        // waiting request they answered: every waiting one is given up.
        let from = match role {
            Role::Request => {
                self.trust = Trust::after_loss(self.last_request_ack);
                self.requests_lost = true;
                // Requests waiting now were sent before this loss: a response pairing with one of
                // them says nothing of the responses to what this loss hid.
                for e in self.queue.iter_mut() {
                    e.protocol.after_loss = false;
                }
                self.queue
                    .iter()
                    .position(|e| !e.request.done)
                    .unwrap_or(self.queue.len())
            }
            Role::Response => 0,
        };
        self.abandon_from(from, |_| DropReason::StreamGap, env, allowance);
        if let Some(client) = streams.client {
            self.barrier = streams.next_seq[client.reverse().index()];
        }
    }

    pub(super) fn on_request_head(
        &mut self,
        head: MessageHead,
        start: MessageStart,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan> {
        env.counters.requests += 1;
        let framing = match request_framing(&head) {
            // What the client sends next may already be the tunnel's (before the 2xx is seen).
            Ok(Framing::None) if MethodKind::of(&head) == MethodKind::Connect => {
                Framing::ConnectTunnel
            }
            Ok(f) => f,
            Err(_) => {
                env.counters.count_drop(DropReason::HttpParse);
                self.counted_without_slot = self.counted_without_slot.saturating_add(1);
                return None;
            }
        };
        if self.stopped == Some(Opaque::GaveUp) {
            // The rest of the packet that gave up, still being parsed.
            env.counters.count_drop(DropReason::TooManyPending);
            return skip(framing);
        }
        // Trust is evaluated for every request (the first after a loss sets the mark), but a request
        // already answered is dealt with first: its exchange may have been counted by its response.
        let trusted = self.trust.admit(start.ack);
        if let Some(answered) = self.answered_up_to {
            if seq_diff(start.seq, answered) < 0 {
                if self.responses_ahead > 0 {
                    // Its response came first and was counted as this exchange.
                    self.responses_ahead -= 1;
                } else {
                    // The response that showed it sent took another request's place; its own
                    // response may still come, and is this drop too.
                    env.counters.count_drop(DropReason::PairingUncertain);
                    self.counted_without_slot = self.counted_without_slot.saturating_add(1);
                }
                self.current_request = None;
                return skip(framing);
            }
            self.answered_up_to = None;
        }
        if !trusted {
            env.counters.count_drop(DropReason::PairingUncertain);
            // Its response will come, and is this drop too.
            self.counted_without_slot = self.counted_without_slot.saturating_add(1);
            self.current_request = None;
            return skip(framing);
        }
        self.last_request_ack = Some(start.ack);
        if self.queue.len() >= env.rules.max_pending_requests {
            return self.too_many_pending(&head, start, framing, env, allowance);
        }
        let head_len = head.wire_len() as u64;
        let declared = match framing {
            Framing::Length(n) => head_len.saturating_add(n),
            _ => head_len,
        };
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
        let collect = dropped.is_none();
        let protocol = Http1Request {
            method: MethodKind::of(&head),
            start,
            end_seq: start.seq,
            after_loss: self.requests_lost,
        };
        let request = Half {
            done: false,
            wire: head_len,
            message: collect.then(|| HttpMessage::started(head, env.now_us)),
        };
        let ex = self.push(request, protocol, env.now_us);
        ex.request_content_type_ok = content_type_ok;
        ex.dropped = dropped;
        ex.reserved = reserved;
        Some(BodyPlan { framing, collect })
    }

    /// A request beyond `maxPendingRequests`: dropped, but it keeps its place so that later responses
    /// stay in step (a place costs no buffer). A connection far deeper than that is given up on.
    fn too_many_pending(
        &mut self,
        head: &MessageHead,
        start: MessageStart,
        framing: Framing,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan> {
        env.counters.count_drop(DropReason::TooManyPending);
        if self.queue.len() >= env.rules.max_pending_requests.saturating_mul(4) {
            self.abandon_all(|_| DropReason::TooManyPending, env, allowance);
            self.stop(Opaque::GaveUp);
            return skip(framing);
        }
        let request = Half {
            message: None,
            done: false,
            wire: head.wire_len() as u64,
        };
        let protocol = Http1Request {
            method: MethodKind::Other,
            start,
            end_seq: start.seq,
            after_loss: self.requests_lost,
        };
        self.push(request, protocol, env.now_us).dropped = Some(DropReason::TooManyPending);
        skip(framing)
    }

    /// Whether the server had received client bytes that were not captured (yet) when it sent the
    /// response starting at `start`.
    fn response_follows_unseen_request_bytes(
        &self,
        start: MessageStart,
        streams: &Streams,
    ) -> bool {
        let Some(client) = streams.client else {
            return false;
        };
        match streams.next_seq[client.index()] {
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
            let (front, next) = (&self.queue[i].protocol, &next.protocol);
            // The client had received more between the two requests, and more than the responses we
            // saw: a retransmitted request carries the ack of its retransmission, which responses seen
            // since the original explain (pipelined requests under loss).
            let acked_more = seq_diff(next.start.ack, front.start.ack) > 0;
            let explained = self
                .responses_seen_to
                .is_some_and(|end| seq_diff(next.start.ack, end) <= 0);
            let client_saw_a_response = acked_more && !explained;
            let this_came_later = seq_diff(start.seq, next.start.ack) >= 0;
            if !(client_saw_a_response && this_came_later) {
                return;
            }
            let ex = &mut self.queue[i];
            ex.doom(DropReason::StreamGap, env.counters, allowance);
            ex.response = Some(Box::new(Half {
                message: None,
                done: true,
                wire: 0,
            }));
            exchange::emit_ready(&mut self.queue, env, allowance);
        }
    }

    pub(super) fn on_response_head(
        &mut self,
        head: MessageHead,
        start: MessageStart,
        streams: &Streams,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan> {
        env.counters.responses += 1;
        self.current_response = None;
        let status = head.status().unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // Interim (100 Continue, 103 Early Hints): the final response follows.
            return skip(Framing::None);
        }
        self.skip_lost_responses(start, env, allowance);
        if self.response_follows_unseen_request_bytes(start, streams) {
            return self.answers_an_unseen_request(&head, start, env, allowance);
        }
        // The oldest request without a response, if the server had received all of it (or, for one
        // still arriving, at least its start: a server may answer early). A response sent before the
        // server had any of it answers an earlier request, one the capture lost (seen when a
        // response is captured late, after the next request's first segment).
        let target = self.queue.iter_mut().find(|e| e.response.is_none());
        let target = match target {
            Some(ex)
                if seq_diff(start.ack, ex.protocol.start.seq) > 0
                    && (!ex.request.done || seq_diff(start.ack, ex.protocol.end_seq) >= 0) =>
            {
                Some(ex)
            }
            _ => None,
        };
        let Some(ex) = target else {
            self.count_unmatched(DropReason::UnmatchedResponse, env);
            let framing = response_framing(&head, None).ok();
            self.stop_if_switching(framing);
            return framing.and_then(skip);
        };
        if ex.protocol.after_loss {
            self.requests_lost = false;
        }
        if self.tunnel_pending && ex.protocol.method == MethodKind::Connect {
            // The client is already in its tunnel: whatever the answer, nothing more is HTTP/1.x.
            self.stopped.get_or_insert(Opaque::Tunnel);
        }
        let framing = match response_framing(&head, Some(ex.protocol.method.name())) {
            Ok(f) => f,
            Err(_) => {
                ex.doom(DropReason::HttpParse, env.counters, allowance);
                return None;
            }
        };
        if framing == Framing::Tunnel
            && self.stopped.is_none()
            && head.status() == Some(101)
            && head.header_lists("upgrade", "h2c")
        {
            // HTTP/2 follows (RFC 7540 section 3.2), and the request's response comes as HTTP/2 on
            // stream 1: the request keeps waiting for it, and the 101 is not its response.
            self.h2c = true;
            self.stopped = Some(Opaque::Upgraded);
            return skip(Framing::Tunnel);
        }
        if framing == Framing::Tunnel {
            self.stopped.get_or_insert(Opaque::Upgraded);
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
            let size = head.memory_size();
            if ex.admit_response(&head, declared, size, env, allowance) {
                response.message = Some(HttpMessage::started(head, env.now_us));
            }
        }
        let collect = ex.dropped.is_none();
        ex.response = Some(Box::new(response));
        self.current_response = Some(ex.id);
        Some(BodyPlan { framing, collect })
    }

    /// A response the server sent after receiving client bytes the capture never saw. Which request
    /// it answers cannot be known: it takes the oldest waiting one's place, and both are dropped;
    /// requests seen later that it may have answered are dropped as they come, and, as after lost
    /// request bytes, later ones are trusted again only once their client has received new response
    /// data (the unseen bytes may hold several pipelined requests).
    fn answers_an_unseen_request(
        &mut self,
        head: &MessageHead,
        start: MessageStart,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan> {
        self.answered_up_to = Some(match self.answered_up_to {
            Some(a) if seq_diff(a, start.ack) > 0 => a,
            _ => start.ack,
        });
        if self.trust == Trust::Trusted {
            self.trust = Trust::after_loss(self.last_request_ack);
        }
        let framing = response_framing(head, None).ok();
        self.stop_if_switching(framing);
        match self.queue.iter_mut().find(|e| e.response.is_none()) {
            Some(ex) => {
                ex.doom(DropReason::PairingUncertain, env.counters, allowance);
                ex.response = Some(Box::new(Half {
                    message: None,
                    done: false,
                    wire: head.wire_len() as u64,
                }));
                self.current_response = Some(ex.id);
            }
            // It answers client bytes the capture lost or has not seen yet (captured out of order):
            // which, cannot be told yet, so its exchange is counted as uncertain, unless its request
            // was counted already.
            None => {
                if self.counted_without_slot > 0 {
                    self.counted_without_slot -= 1;
                } else {
                    env.counters.count_drop(DropReason::PairingUncertain);
                    self.responses_ahead = self.responses_ahead.saturating_add(1);
                }
            }
        }
        framing.and_then(skip)
    }

    /// After a `101 Switching Protocols` (WebSocket, anything but h2c) the connection is no longer
    /// HTTP/1.x, whichever request it answered.
    fn stop_if_switching(&mut self, framing: Option<Framing>) {
        if framing == Some(Framing::Tunnel) {
            self.stop(Opaque::Upgraded);
        }
    }

    /// A response without a request to pair with, of which `reason` would say why: nothing when it
    /// answers a request already counted, a loss when request bytes were lost.
    fn count_unmatched(&mut self, reason: DropReason, env: &mut Env<'_>) {
        if self.counted_without_slot > 0 {
            self.counted_without_slot -= 1;
        } else if self.requests_lost {
            env.counters.count_drop(DropReason::StreamGap);
        } else {
            env.counters.count_drop(reason);
        }
    }

    pub(super) fn on_body(
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
            Role::Response => (ex.response.as_deref_mut(), ex.request.wire),
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
                ex.doom(reason, env.counters, allowance);
                false
            }
        }
    }

    pub(super) fn on_end(
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
                    ex.protocol.end_seq = end_seq;
                    ex.request_done_us = env.now_us;
                    if let Some(m) = ex.request.message.as_mut() {
                        m.wire_bytes = wire;
                        m.last_us = env.now_us;
                    }
                    if ex.dropped.is_none() {
                        if let Err(reason) = env.rules.check_sizes(wire, wire) {
                            ex.doom(reason, env.counters, allowance);
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
                            ex.doom(reason, env.counters, allowance);
                        }
                    }
                }
            }
        }
        exchange::emit_ready(&mut self.queue, env, allowance);
    }

    pub(super) fn on_abort(
        &mut self,
        role: Role,
        reason: DropReason,
        had_head: bool,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        if !had_head {
            match role {
                // A request lost before its head was whole: its response, if it comes, is this loss;
                // if it came already, it was counted as this exchange.
                Role::Request if self.responses_ahead > 0 => self.responses_ahead -= 1,
                Role::Request => {
                    env.counters.count_drop(reason);
                    self.counted_without_slot = self.counted_without_slot.saturating_add(1);
                }
                // A response lost before its head was whole answered the oldest request waiting: that
                // exchange is what is lost (the desynchronisation or the end that follows gives it up
                // without counting it again).
                Role::Response => match self.queue.iter_mut().find(|e| e.response.is_none()) {
                    Some(ex) => ex.doom(reason, env.counters, allowance),
                    None => self.count_unmatched(reason, env),
                },
            }
            return;
        }
        let id = match role {
            Role::Request => self.current_request,
            Role::Response => self.current_response,
        };
        self.doom(id, reason, env, allowance);
    }

    /// Applies the response timeout: called periodically with the current time.
    pub(super) fn expire(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        if exchange::expire(&mut self.queue, env, allowance)
            && self
                .current_request
                .is_some_and(|id| !self.queue.iter().any(|e| e.id == id))
        {
            self.current_request = None;
        }
    }

    /// The connection is over: whatever still waits is unanswered.
    pub(super) fn close(&mut self, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
        self.abandon_all(exchange::close_reason, env, allowance);
    }

    /// Gives up on every exchange waiting, each dropped for `reason(exchange)`; no message is current.
    fn abandon_all(
        &mut self,
        reason: impl Fn(&Slot) -> DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        self.abandon_from(0, reason, env, allowance);
    }

    /// Gives up on the exchanges from the `from`th on, each dropped for `reason(exchange)`; the
    /// current messages are those of exchanges kept, if any.
    fn abandon_from(
        &mut self,
        from: usize,
        reason: impl Fn(&Slot) -> DropReason,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) {
        // Responses not begun may still come (after a desynchronisation): they belong to these
        // exchanges, counted here.
        let unanswered = self
            .queue
            .iter()
            .skip(from)
            .filter(|e| e.response.is_none())
            .count();
        let unanswered = u8::try_from(unanswered).unwrap_or(u8::MAX);
        self.counted_without_slot = self.counted_without_slot.saturating_add(unanswered);
        exchange::abandon(&mut self.queue, from, reason, env.counters, allowance);
        let kept = |id: Option<u64>, queue: &Queue<Http1Request>| {
            id.filter(|id| queue.iter().any(|e| e.id == *id))
        };
        self.current_request = kept(self.current_request, &self.queue);
        self.current_response = kept(self.current_response, &self.queue);
    }
}
