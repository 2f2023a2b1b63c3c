//! The pairing slot every protocol fills: a request and its response, collected as their bytes
//! arrive, and what becomes of slots once complete, late or abandoned.
//!
//! A protocol decides which response belongs to which request (HTTP/1: `http1::pairing`, in order on
//! one connection) and feeds the slots, applying the product's rules as soon as the information exists.
//! A slot known to be dropped keeps its place in its queue (the protocol may need it to stay in step)
//! but no more of its bytes are buffered. The protocol's own bookkeeping for a slot rides along in
//! [`Exchange::protocol`].

use std::collections::VecDeque;

use super::head::MessageHead;
use crate::filters::Rules;
use crate::http2::head::Http2Extra;
use crate::memory::Allowance;
use crate::stats::{Counters, DropReason};

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
    /// What an HTTP/2 message carries beside its head (stream, trailers, what a late-joining
    /// decoder could not know); `None` for HTTP/1.x. Boxed: HTTP/1 messages pay one pointer.
    pub http2: Option<Box<Http2Extra>>,
}

impl HttpMessage {
    /// A message of which only the head has arrived, at `now_us`.
    pub fn started(head: MessageHead, now_us: i64) -> HttpMessage {
        HttpMessage {
            wire_bytes: head.wire_len() as u64,
            head,
            body: Vec::new(),
            first_us: now_us,
            last_us: now_us,
            http2: None,
        }
    }
}

/// A request with its response, both complete and past every head and size rule.
#[derive(Debug)]
pub struct CompletedPair {
    pub request: HttpMessage,
    pub response: HttpMessage,
}

/// Everything a connection needs from outside itself while one packet (or one timer) is processed.
pub struct Env<'a> {
    pub rules: &'a Rules,
    pub counters: &'a mut Counters,
    pub now_us: i64,
    pub completed: &'a mut Vec<CompletedPair>,
}

/// A request or a response of an exchange.
#[derive(Debug)]
pub struct Half {
    /// What is collected of it; `None` once the exchange is known to be dropped (or never collected).
    pub message: Option<HttpMessage>,
    pub done: bool,
    /// Its size on the wire so far.
    pub wire: u64,
}

/// A request and its response, as far as they have come. `P` is what the protocol keeps per exchange.
#[derive(Debug)]
pub struct Exchange<P> {
    /// Unique on its connection, in the order requests came.
    pub id: u64,
    pub request: Half,
    /// When the request was complete (for the response timeout).
    pub request_done_us: i64,
    /// Whether the request's Content-Type is one the rules keep (then the response's does not matter).
    pub request_content_type_ok: bool,
    /// Boxed: a request waiting for its response (what a connection mostly holds, and what a flood
    /// of unanswered requests is made of) does not pay for the response's room (~140 bytes).
    pub response: Option<Box<Half>>,
    /// Why this pair is dropped, once known (already counted).
    pub dropped: Option<DropReason>,
    /// Bytes reserved for this exchange's heads and bodies.
    pub reserved: usize,
    pub protocol: P,
}

/// Exchanges in the order their requests came.
pub type Queue<P> = VecDeque<Exchange<P>>;

impl<P> Exchange<P> {
    pub fn is_complete(&self) -> bool {
        self.request.done && self.response.as_ref().is_some_and(|r| r.done)
    }

    pub fn pair_wire(&self) -> u64 {
        self.request.wire + self.response.as_ref().map_or(0, |r| r.wire)
    }

    /// The pair is dropped for `reason`: counted once, whatever else later drops it again.
    pub fn drop_for(&mut self, reason: DropReason, counters: &mut Counters) {
        if self.dropped.is_none() {
            counters.count_drop(reason);
            self.dropped = Some(reason);
        }
    }

    /// Releases the exchange's buffers, once it is known to be dropped.
    pub fn shed(&mut self, allowance: &mut Allowance<'_>) {
        allowance.release(self.reserved);
        self.reserved = 0;
        self.request.message = None;
        if let Some(r) = self.response.as_mut() {
            r.message = None;
        }
    }

    /// Dropped for `reason`, and nothing more of it is kept.
    pub fn doom(
        &mut self,
        reason: DropReason,
        counters: &mut Counters,
        allowance: &mut Allowance<'_>,
    ) {
        self.drop_for(reason, counters);
        self.shed(allowance);
    }

    /// Whether a response with `head` joins this exchange to be collected: the response rules, the
    /// pair's content type (either half's will do), the message and pair sizes as far as known
    /// (`wire`), and `size` bytes of the budget, which stay reserved for it. A refusal dooms the
    /// exchange. One verdict for every protocol.
    pub fn admit_response(
        &mut self,
        head: &MessageHead,
        wire: u64,
        size: usize,
        env: &mut Env<'_>,
        allowance: &mut Allowance<'_>,
    ) -> bool {
        let verdict = env
            .rules
            .check_response(head)
            .and_then(|()| {
                if self.request_content_type_ok || env.rules.content_type_allowed(head) {
                    Ok(())
                } else {
                    Err(DropReason::ContentType)
                }
            })
            .and_then(|()| {
                env.rules
                    .check_sizes(wire, self.request.wire.saturating_add(wire))
            })
            .and_then(|()| allowance.reserve(size));
        match verdict {
            Ok(()) => {
                self.reserved += size;
                true
            }
            Err(reason) => {
                self.doom(reason, env.counters, allowance);
                false
            }
        }
    }

    /// The same exchange without the protocol's bookkeeping (for a connection no longer parsed).
    pub fn without_protocol(self) -> Exchange<()> {
        Exchange {
            id: self.id,
            request: self.request,
            request_done_us: self.request_done_us,
            request_content_type_ok: self.request_content_type_ok,
            response: self.response,
            dropped: self.dropped,
            reserved: self.reserved,
            protocol: (),
        }
    }
}

/// Pops complete exchanges from the front, handing kept pairs on.
pub fn emit_ready<P>(queue: &mut Queue<P>, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
    while queue.front().is_some_and(Exchange::is_complete) {
        let Some(ex) = queue.pop_front() else {
            break;
        };
        emit(ex, env, allowance);
    }
}

/// A complete exchange leaves its connection: its budget is released, and its pair handed on unless
/// it was dropped or the pair as a whole is too large.
pub fn emit<P>(mut ex: Exchange<P>, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
    allowance.release(ex.reserved);
    ex.reserved = 0;
    if ex.dropped.is_some() {
        return;
    }
    if let Err(reason) = env.rules.check_sizes(0, ex.pair_wire()) {
        env.counters.count_drop(reason);
        return;
    }
    let request = ex.request.message.take();
    let response = ex.response.and_then(|mut r| r.message.take());
    if let (Some(request), Some(response)) = (request, response) {
        env.completed.push(CompletedPair { request, response });
    }
}

/// Gives up on every exchange from `from` on, each dropped for `reason(exchange)`.
pub fn abandon<P>(
    queue: &mut Queue<P>,
    from: usize,
    reason: impl Fn(&Exchange<P>) -> DropReason,
    counters: &mut Counters,
    allowance: &mut Allowance<'_>,
) {
    for mut ex in queue.drain(from..) {
        let why = reason(&ex);
        ex.drop_for(why, counters);
        allowance.release(ex.reserved);
    }
}

/// Applies the response timeout: called periodically with the current time. Returns whether
/// exchanges were removed from the queue.
pub fn expire<P>(queue: &mut Queue<P>, env: &mut Env<'_>, allowance: &mut Allowance<'_>) -> bool {
    let Some(timeout) = env.rules.response_timeout_us else {
        return false;
    };
    let now = env.now_us;
    let late =
        |ex: &Exchange<P>| ex.request.done && now.saturating_sub(ex.request_done_us) > timeout;
    // A late request whose response never started: it and every request behind it (responses come in
    // order, so none of theirs can have started either) are given up.
    let removed = match queue
        .iter()
        .position(|ex| ex.response.is_none() && late(ex))
    {
        Some(pos) => {
            abandon(
                queue,
                pos,
                |_| DropReason::ResponseTimeout,
                env.counters,
                allowance,
            );
            true
        }
        None => false,
    };
    // A response still arriving after the timeout: dropped, its slot kept until it ends.
    for ex in queue.iter_mut() {
        if ex.response.as_ref().is_some_and(|r| !r.done) && late(ex) && ex.dropped.is_none() {
            ex.doom(DropReason::ResponseTimeout, env.counters, allowance);
        }
    }
    removed
}

/// The connection is over: whatever still waits is unanswered (or, with its response begun, lost).
pub fn close<P>(queue: &mut Queue<P>, env: &mut Env<'_>, allowance: &mut Allowance<'_>) {
    abandon(queue, 0, close_reason, env.counters, allowance);
}

/// Why an exchange still waiting when its connection ends is dropped.
pub fn close_reason<P>(ex: &Exchange<P>) -> DropReason {
    match ex.response {
        Some(_) => DropReason::StreamGap,
        None => DropReason::Unanswered,
    }
}
