//! Incremental HTTP/1.x parsing of one direction of a connection.
//!
//! The parser splits a reassembled byte stream into messages: it collects each head (bounded by
//! `max_header_bytes`), hands it to a [`MessageHandler`] which decides how the body is framed and whether
//! its bytes are worth keeping, then walks the body (Content-Length, chunked with trailers, or until the
//! connection closes) passing on de-chunked bytes only while the handler wants them. A gap in the stream
//! either skips inside a body of known length (the stream stays in step) or sends the parser looking for
//! the next message start (resynchronisation).

use memchr::{memchr, memmem};

use super::framing::Framing;
use super::head::{parse_request, parse_response};
use super::start::{classify_start, is_tchar, Start};
use crate::app::head::MessageHead;
use crate::app::streams::Role;
use crate::memory::Allowance;
use crate::stats::DropReason;
use crate::tcp::reassembly::Chunk;

/// Where a message starts in its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageStart {
    /// Sequence number of the message's first byte.
    pub seq: u32,
    /// Acknowledgment number of the segment carrying that byte.
    pub ack: u32,
}

/// How to read a body, as decided by the handler from the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyPlan {
    pub framing: Framing,
    /// Whether to pass body bytes on; false when the message is already known to be dropped.
    pub collect: bool,
}

/// Receives what the parser finds. Implemented by the connection, which pairs and filters.
pub trait MessageHandler {
    /// A head is complete. `None` means it is unusable: the parser looks for the next message start.
    fn on_head(
        &mut self,
        role: Role,
        head: MessageHead,
        start: MessageStart,
        allowance: &mut Allowance<'_>,
    ) -> Option<BodyPlan>;
    /// Body bytes (de-chunked). `wire_so_far` is the message's size on the wire so far. Returns whether
    /// to keep collecting.
    fn on_body(
        &mut self,
        role: Role,
        bytes: &[u8],
        wire_so_far: u64,
        allowance: &mut Allowance<'_>,
    ) -> bool;
    /// The message (head, and body if any) ended after `wire_bytes` on the wire, before sequence `end_seq`.
    fn on_end(&mut self, role: Role, wire_bytes: u64, end_seq: u32, allowance: &mut Allowance<'_>);
    /// The message in progress is lost for `reason` (a head was delivered for it, or it never got one).
    fn on_abort(
        &mut self,
        role: Role,
        reason: DropReason,
        had_head: bool,
        allowance: &mut Allowance<'_>,
    );
    /// The parser lost track of message boundaries: whole messages may have been missed.
    fn on_desync(&mut self, role: Role, allowance: &mut Allowance<'_>);
    /// The stream never carried an HTTP/1.x message start, however far it was searched.
    fn on_not_http(&mut self, allowance: &mut Allowance<'_>);
    /// What follows a CONNECT (or its `2xx`) in this stream is not HTTP/1.x: a tunnel (TLS, another
    /// protocol), of which nothing more is read.
    fn on_tunnel(&mut self, role: Role, allowance: &mut Allowance<'_>);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between messages, or collecting a head in `buf`.
    Head,
    /// Searching for the next message start after losing track.
    Resync,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// Not HTTP, a tunnel, or ended: bytes are ignored.
    Ignored,
}

/// Scanning for a message start gives up on a stream that never carried HTTP after this many bytes.
const GIVE_UP_SCANNING_AFTER: u64 = 4 * 1024 * 1024;
/// A chunk-size line longer than this is malformed.
const MAX_CHUNK_LINE: usize = 4096;
/// Resynchronisation keeps at most this much of the current line while scanning (and never more than
/// `max_header_bytes`).
const MAX_SCAN_LINE: usize = 8192;

#[derive(Debug)]
pub struct HalfParser {
    role: Option<Role>,
    phase: Phase,
    /// A head being collected, a chunk-size or trailer line, or the current line while resynchronising.
    buf: Vec<u8>,
    /// Bytes of `buf` reserved from the connection's budget.
    reserved: usize,
    /// While resynchronising: whether `buf` starts at the beginning of a line.
    line_start_known: bool,
    start: MessageStart,
    /// The current message: whether a head was delivered, its wire bytes so far, whether it is collected.
    in_message: bool,
    had_head: bool,
    wire: u64,
    collect: bool,
    /// Whether this stream ever carried an HTTP message (then scanning never gives up).
    seen_http: bool,
    /// The next message may be the first of a CONNECT tunnel: if it does not start as HTTP/1.x, or
    /// a gap comes before it, the stream is a tunnel and nothing more of it is read (no
    /// `http_parse_error`, no search through encrypted bytes for a message start).
    probing: bool,
    scanned: u64,
    max_header_bytes: usize,
}

impl HalfParser {
    /// A parser for a stream seen from its first byte (`from_start`: a message starts there), or
    /// caught mid-way (searching for the next message start).
    pub fn new(from_start: bool, max_header_bytes: usize) -> Self {
        HalfParser {
            role: None,
            phase: if from_start {
                Phase::Head
            } else {
                Phase::Resync
            },
            buf: Vec::new(),
            reserved: 0,
            line_start_known: false,
            start: MessageStart::default(),
            in_message: false,
            had_head: false,
            wire: 0,
            collect: false,
            seen_http: false,
            probing: false,
            scanned: 0,
            max_header_bytes,
        }
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    pub fn set_role(&mut self, role: Role) {
        self.role = Some(role);
    }

    pub fn is_ignoring(&self) -> bool {
        self.phase == Phase::Ignored
    }

    /// Stop parsing: the connection became a tunnel or is not HTTP.
    pub fn ignore_rest(&mut self, allowance: &mut Allowance<'_>) {
        self.clear_buf(allowance);
        self.phase = Phase::Ignored;
        self.in_message = false;
    }

    /// Bytes this parser keeps reserved (its buffer).
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Returns how many bytes at the end of the chunk were not read because parsing stopped in it
    /// (a protocol switch: what follows a `101 Switching Protocols` is the new protocol's).
    pub fn data<H: MessageHandler>(
        &mut self,
        chunk: Chunk<'_>,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        let mut bytes = chunk.bytes;
        let mut seq = chunk.seq;
        // Steps in a row that consumed nothing: a step may hand bytes to another phase unconsumed, but a
        // cycle of such steps would never end.
        let mut idle_steps = 0;
        while !bytes.is_empty() {
            let mut used = match self.phase {
                Phase::Ignored => return bytes.len(),
                Phase::Head => self.head_bytes(bytes, seq, chunk.ack, handler, allowance),
                Phase::Resync => self.resync_bytes(bytes, seq, chunk.ack, handler, allowance),
                Phase::Length(_) | Phase::Chunked(_) | Phase::UntilClose => {
                    self.body_bytes(bytes, seq, handler, allowance)
                }
            };
            if used == 0 {
                idle_steps += 1;
                if idle_steps > 3 && self.phase == Phase::Resync {
                    // Resynchronisation keeps finding a start the head parser refuses: skip a byte.
                    self.clear_buf(allowance);
                    self.line_start_known = false;
                    used = 1;
                    idle_steps = 0;
                }
            } else {
                idle_steps = 0;
            }
            bytes = &bytes[used.min(bytes.len())..];
            seq = seq.wrapping_add(used as u32);
        }
        0
    }

    /// `missing` bytes of the stream are lost; the stream resumes at sequence number `resume_seq`.
    pub fn gap<H: MessageHandler>(
        &mut self,
        missing: u64,
        resume_seq: u32,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        let role = self.role_or_request();
        if self.probing && self.phase == Phase::Head {
            // What the tunnel carries cannot be told past a hole.
            self.enter_tunnel(handler, allowance);
            return;
        }
        match self.phase {
            Phase::Ignored => {}
            // Inside a body of known length: skip the hole and stay in step.
            Phase::Length(rem) if missing <= rem => {
                self.abort_current(role, handler, allowance);
                self.wire += missing;
                self.phase = Phase::Length(rem - missing);
                if rem == missing {
                    self.phase = Phase::Head;
                    self.finish_message(role, resume_seq, handler, allowance);
                }
            }
            Phase::Chunked(Chunked::Data(rem)) if missing <= rem => {
                self.abort_current(role, handler, allowance);
                self.wire += missing;
                self.phase = Phase::Chunked(if rem == missing {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(rem - missing)
                });
            }
            Phase::UntilClose => {
                self.abort_current(role, handler, allowance);
            }
            _ => self.lose_track(handler, allowance),
        }
    }

    /// The stream ended (FIN, RST, or the connection was forgotten).
    pub fn end<H: MessageHandler>(
        &mut self,
        end_seq: u32,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        let role = self.role_or_request();
        if self.phase == Phase::UntilClose && self.in_message {
            self.finish_message(role, end_seq, handler, allowance);
        } else if self.in_message {
            self.abort_with(role, DropReason::StreamGap, handler, allowance);
        }
        self.ignore_rest(allowance);
    }

    fn role_or_request(&self) -> Role {
        self.role.unwrap_or(Role::Request)
    }

    /// A gap where message boundaries cannot be kept: the message in progress (if any) is lost to it.
    fn lose_track<H: MessageHandler>(&mut self, handler: &mut H, allowance: &mut Allowance<'_>) {
        let role = self.role_or_request();
        let lost = self.in_message || (self.phase == Phase::Head && !self.buf.is_empty());
        self.search_next_start(
            role,
            lost.then_some(DropReason::StreamGap),
            handler,
            allowance,
        );
        // Before any message said which side this is, nothing was paired that could be out of step.
        if self.role.is_some() {
            handler.on_desync(role, allowance);
        }
    }

    /// Gives up on the message in progress and searches for the next message start; the handler is
    /// told that messages may have been missed. `reason`: why the message is dropped, `None` when the
    /// handler has already accounted for it.
    fn resync<H: MessageHandler>(
        &mut self,
        role: Role,
        reason: Option<DropReason>,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        self.search_next_start(role, reason, handler, allowance);
        handler.on_desync(role, allowance);
    }

    /// [`HalfParser::resync`] without telling the handler about the desynchronisation.
    fn search_next_start<H: MessageHandler>(
        &mut self,
        role: Role,
        reason: Option<DropReason>,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        match reason {
            Some(reason) => self.abort_with(role, reason, handler, allowance),
            None => {
                self.in_message = false;
                self.had_head = false;
            }
        }
        self.clear_buf(allowance);
        self.phase = Phase::Resync;
        // What follows continues a line already begun, until a newline says otherwise.
        self.line_start_known = false;
    }

    /// Drops the current message but keeps walking its body.
    fn abort_current<H: MessageHandler>(
        &mut self,
        role: Role,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        if self.collect {
            handler.on_abort(role, DropReason::StreamGap, self.had_head, allowance);
            self.collect = false;
        }
    }

    fn abort_with<H: MessageHandler>(
        &mut self,
        role: Role,
        reason: DropReason,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        // A message whose collection already stopped was already accounted for by the handler.
        if self.collect || !self.had_head {
            handler.on_abort(role, reason, self.had_head, allowance);
        }
        self.collect = false;
        self.in_message = false;
        self.had_head = false;
    }

    fn clear_buf(&mut self, allowance: &mut Allowance<'_>) {
        allowance.release(self.reserved);
        self.reserved = 0;
        self.buf.clear();
        if self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        }
    }

    /// Appends to `buf` within the budget.
    fn buffer(&mut self, bytes: &[u8], allowance: &mut Allowance<'_>) -> Result<(), DropReason> {
        let needed = (self.buf.len() + bytes.len()).saturating_sub(self.reserved);
        if needed > 0 {
            allowance.reserve(needed)?;
            self.reserved += needed;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn head_bytes<H: MessageHandler>(
        &mut self,
        bytes: &[u8],
        seq: u32,
        ack: u32,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        if self.buf.is_empty() {
            // Tolerate empty lines between messages.
            let blank = bytes
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                return blank;
            }
            self.start = MessageStart { seq, ack };
            self.in_message = true;
            self.had_head = false;
            self.collect = true;
            self.wire = 0;
        }
        // Reject what cannot be a message start as early as possible.
        let guess = if self.buf.is_empty() {
            classify_start(bytes)
        } else if self.buf.len() < 40 {
            let mut probe = self.buf.clone();
            probe.extend_from_slice(&bytes[..bytes.len().min(40)]);
            classify_start(&probe)
        } else {
            Start::Unknown
        };
        let role = match (guess, self.role) {
            (Start::Not, _)
            | (Start::Request, Some(Role::Response))
            | (Start::Response, Some(Role::Request)) => {
                return self.not_a_start(handler, allowance);
            }
            (Start::Request, None) => Role::Request,
            (Start::Response, None) => Role::Response,
            (_, Some(role)) => role,
            (Start::Unknown, None) => Role::Request,
        };
        // Find the end of the head, in the new bytes alone when nothing is buffered (no copy).
        let (end, used) = if self.buf.is_empty() {
            match find_head_end(bytes, 0) {
                Some(end) => (Some(end), end),
                None => (None, bytes.len()),
            }
        } else {
            let old = self.buf.len();
            let room = (self.max_header_bytes + 4).saturating_sub(old);
            let take = bytes.len().min(room.max(1));
            let search_from = old.saturating_sub(3);
            let mut probe = self.buf[search_from..].to_vec();
            probe.extend_from_slice(&bytes[..take]);
            match find_head_end(&probe, 0) {
                Some(end) => {
                    let used = search_from + end - old;
                    (Some(old + used), used)
                }
                None => (None, take),
            }
        };
        let Some(head_len) = end else {
            if self.buf.len() + used > self.max_header_bytes {
                self.refuse_head(role, DropReason::HeaderTooLarge, handler, allowance);
                return used;
            }
            if let Err(reason) = self.buffer(&bytes[..used], allowance) {
                self.resync(role, Some(reason), handler, allowance);
            }
            return used;
        };
        if head_len > self.max_header_bytes {
            self.refuse_head(role, DropReason::HeaderTooLarge, handler, allowance);
            return used;
        }
        let mut raw = std::mem::take(&mut self.buf);
        raw.extend_from_slice(&bytes[..used]);
        allowance.release(self.reserved);
        self.reserved = 0;
        let parsed = match role {
            Role::Request => parse_request(raw),
            Role::Response => parse_response(raw),
        };
        let head = match parsed {
            Ok(head) => head,
            Err(_) => {
                self.refuse_head(role, DropReason::HttpParse, handler, allowance);
                return used;
            }
        };
        self.role = Some(role);
        self.seen_http = true;
        // A tunnel that starts with an HTTP/1.x message is read as HTTP/1.x.
        self.probing = false;
        self.had_head = true;
        self.wire = head.wire_len() as u64;
        let end_seq = seq.wrapping_add(used as u32);
        match handler.on_head(role, head, self.start, allowance) {
            // The handler refused the head and counted why.
            None => self.resync(role, None, handler, allowance),
            Some(plan) => {
                self.collect = plan.collect;
                match plan.framing {
                    Framing::None => {
                        self.phase = Phase::Head;
                        self.finish_message(role, end_seq, handler, allowance);
                    }
                    Framing::Length(n) => self.phase = Phase::Length(n),
                    Framing::Chunked => self.phase = Phase::Chunked(Chunked::Size),
                    Framing::UntilClose => self.phase = Phase::UntilClose,
                    Framing::Tunnel => {
                        self.finish_message(role, end_seq, handler, allowance);
                        self.phase = Phase::Ignored;
                    }
                    Framing::ConnectTunnel => {
                        self.phase = Phase::Head;
                        self.finish_message(role, end_seq, handler, allowance);
                        self.probing = true;
                    }
                }
            }
        }
        used
    }

    /// What was collected as a head cannot be one.
    fn not_a_start<H: MessageHandler>(
        &mut self,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        let role = self.role_or_request();
        self.refuse_head(role, DropReason::HttpParse, handler, allowance);
        0
    }

    /// The head being collected is not one (`reason`): a message lost, and the search for the next
    /// start; or, for the first bytes of a CONNECT tunnel, the sign that the tunnel is not HTTP/1.x.
    fn refuse_head<H: MessageHandler>(
        &mut self,
        role: Role,
        reason: DropReason,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        if self.probing {
            self.enter_tunnel(handler, allowance);
        } else {
            self.resync(role, Some(reason), handler, allowance);
        }
    }

    /// The stream is a tunnel that is not HTTP/1.x: nothing more of it is read, nothing is counted
    /// as a lost message (the handler counts the tunnel).
    fn enter_tunnel<H: MessageHandler>(&mut self, handler: &mut H, allowance: &mut Allowance<'_>) {
        self.probing = false;
        self.in_message = false;
        self.had_head = false;
        self.collect = false;
        self.ignore_rest(allowance);
        handler.on_tunnel(self.role_or_request(), allowance);
    }

    fn finish_message<H: MessageHandler>(
        &mut self,
        role: Role,
        end_seq: u32,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        handler.on_end(role, self.wire, end_seq, allowance);
        self.in_message = false;
        self.had_head = false;
        self.collect = false;
        if self.phase != Phase::Ignored && self.phase != Phase::UntilClose {
            self.phase = Phase::Head;
        }
    }

    fn deliver<H: MessageHandler>(
        &mut self,
        role: Role,
        bytes: &[u8],
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) {
        self.wire += bytes.len() as u64;
        if self.collect {
            self.collect = handler.on_body(role, bytes, self.wire, allowance);
        }
    }

    fn body_bytes<H: MessageHandler>(
        &mut self,
        bytes: &[u8],
        seq: u32,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        let role = self.role_or_request();
        match self.phase {
            Phase::Length(rem) => {
                let n = usize::try_from(rem).unwrap_or(usize::MAX).min(bytes.len());
                self.deliver(role, &bytes[..n], handler, allowance);
                let rem = rem - n as u64;
                self.phase = Phase::Length(rem);
                if rem == 0 {
                    self.phase = Phase::Head;
                    self.finish_message(role, seq.wrapping_add(n as u32), handler, allowance);
                }
                n
            }
            Phase::UntilClose => {
                self.deliver(role, bytes, handler, allowance);
                bytes.len()
            }
            Phase::Chunked(state) => {
                self.chunked_bytes(state, bytes, seq, role, handler, allowance)
            }
            _ => bytes.len(),
        }
    }

    fn chunked_bytes<H: MessageHandler>(
        &mut self,
        state: Chunked,
        bytes: &[u8],
        seq: u32,
        role: Role,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        match state {
            Chunked::Data(rem) => {
                let n = usize::try_from(rem).unwrap_or(usize::MAX).min(bytes.len());
                self.deliver(role, &bytes[..n], handler, allowance);
                let rem = rem - n as u64;
                self.phase = Phase::Chunked(if rem == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(rem)
                });
                n
            }
            Chunked::DataEnd => {
                // CRLF after the data; a bare LF is tolerated.
                match bytes[0] {
                    b'\r' => {
                        self.wire += 1;
                        1
                    }
                    b'\n' => {
                        self.wire += 1;
                        self.phase = Phase::Chunked(Chunked::Size);
                        1
                    }
                    _ => self.malformed(role, handler, allowance),
                }
            }
            Chunked::Size | Chunked::Trailer => {
                let (line_end, used) = match memchr(b'\n', bytes) {
                    Some(i) => (true, i + 1),
                    None => (false, bytes.len()),
                };
                self.wire += used as u64;
                if self.buf.len() + used
                    > MAX_CHUNK_LINE.max(if state == Chunked::Trailer {
                        self.max_header_bytes
                    } else {
                        0
                    })
                {
                    return self.malformed(role, handler, allowance).max(used);
                }
                if !line_end {
                    if self.buffer(&bytes[..used], allowance).is_err() {
                        return self.malformed(role, handler, allowance).max(used);
                    }
                    return used;
                }
                let line: Vec<u8>;
                let line_bytes: &[u8] = if self.buf.is_empty() {
                    &bytes[..used]
                } else {
                    line = [&self.buf[..], &bytes[..used]].concat();
                    self.clear_buf(allowance);
                    &line
                };
                let content = trim_line_end(line_bytes);
                if state == Chunked::Trailer {
                    if content.is_empty() {
                        self.phase = Phase::Head;
                        self.finish_message(
                            role,
                            seq.wrapping_add(used as u32),
                            handler,
                            allowance,
                        );
                    }
                    return used;
                }
                match parse_chunk_size(content) {
                    Some(0) => self.phase = Phase::Chunked(Chunked::Trailer),
                    Some(size) => self.phase = Phase::Chunked(Chunked::Data(size)),
                    None => return self.malformed(role, handler, allowance).max(used),
                }
                used
            }
        }
    }

    fn malformed<H: MessageHandler>(
        &mut self,
        role: Role,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        self.resync(role, Some(DropReason::HttpParse), handler, allowance);
        0
    }

    fn resync_bytes<H: MessageHandler>(
        &mut self,
        bytes: &[u8],
        seq: u32,
        ack: u32,
        handler: &mut H,
        allowance: &mut Allowance<'_>,
    ) -> usize {
        // Search the retained fragment of the current line and the new bytes together.
        let carried = self.buf.len();
        let joined: Vec<u8>;
        let haystack: &[u8] = if carried == 0 {
            bytes
        } else {
            joined = [&self.buf[..], bytes].concat();
            &joined
        };
        if let Some((at, role)) = find_message_start(haystack, self.role, self.line_start_known) {
            self.clear_buf(allowance);
            self.role = Some(role);
            self.phase = Phase::Head;
            self.in_message = false;
            if at >= carried {
                return at - carried;
            }
            // The start line began in the carried bytes: feed them again as the start of a head.
            let prefix = haystack[at..carried].to_vec();
            let prefix_seq = seq.wrapping_sub((carried - at) as u32);
            self.data(
                Chunk {
                    seq: prefix_seq,
                    ack,
                    bytes: &prefix,
                },
                handler,
                allowance,
            );
            return 0;
        }
        self.scanned += bytes.len() as u64;
        if !self.seen_http && self.scanned > GIVE_UP_SCANNING_AFTER {
            self.clear_buf(allowance);
            handler.on_not_http(allowance);
            self.phase = Phase::Ignored;
            return bytes.len();
        }
        // Keep only the current line (bounded), so that a start line split across segments is found.
        let (tail, known) = match memchr::memrchr(b'\n', haystack) {
            Some(i) => (&haystack[i + 1..], true),
            None => (haystack, self.line_start_known),
        };
        // Never more than a head may hold: a start line longer than that could not be parsed anyway.
        let max_line = MAX_SCAN_LINE.min(self.max_header_bytes).max(16);
        let (tail, known) = if tail.len() > max_line {
            (&tail[tail.len() - 16..], false)
        } else {
            (tail, known)
        };
        let tail = tail.to_vec();
        self.clear_buf(allowance);
        self.line_start_known = known;
        if self.buffer(&tail, allowance).is_err() {
            self.clear_buf(allowance);
            self.line_start_known = false;
        }
        bytes.len()
    }
}

/// The length of the head (up to and including the empty line) if it is complete in `buf`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr(b'\n', &buf[at..]) {
        let nl = at + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => at = nl + 1,
        }
    }
    None
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a chunk-size line (hex digits, optional `;extensions`). `None` if malformed or above 2^62.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc * 16 + u64::from(v))
    })
}

/// Methods trusted to start a request in the middle of a line (right after a body that did not end
/// with a newline); at the start of a line any token is accepted.
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"CONNECT", b"TRACE",
    b"QUERY",
];

/// Finds where the next message starts: a status line `HTTP/1.x DDD`, or a request line
/// `METHOD SP target SP HTTP/1.x`. Messages follow each other without separators (a body need not
/// end with a newline), so a start is recognised by its shape, not by a preceding newline.
/// `line_start_known` says whether `buf[0]` begins a line.
fn find_message_start(
    buf: &[u8],
    role: Option<Role>,
    line_start_known: bool,
) -> Option<(usize, Role)> {
    let finder = memmem::Finder::new(b"HTTP/1.");
    let mut from = 0;
    while let Some(i) = finder.find(&buf[from..]) {
        let p = from + i;
        from = p + 1;
        if role != Some(Role::Request) && is_status_line(&buf[p..]) {
            return Some((p, Role::Response));
        }
        let after = buf.get(p + 8).copied();
        if role != Some(Role::Response) && matches!(after, Some(b'\r') | Some(b'\n')) {
            if let Some(start) = request_line_start(buf, p, line_start_known) {
                return Some((start, Role::Request));
            }
        }
    }
    None
}

/// `HTTP/1.x DDD` followed by a space or the end of the line.
fn is_status_line(at: &[u8]) -> bool {
    at.len() >= 13
        && matches!(at[7], b'0' | b'1')
        && at[8] == b' '
        && at[9..12].iter().all(u8::is_ascii_digit)
        && matches!(at[12], b' ' | b'\r' | b'\n')
}

/// Where the request line ending in ` HTTP/1.x` at `version` starts, if it is one.
fn request_line_start(buf: &[u8], version: usize, line_start_known: bool) -> Option<usize> {
    if version < 4 || buf[version - 1] != b' ' {
        return None;
    }
    // The target: no spaces or control bytes, back to the space after the method.
    let target_end = version - 1;
    let space = buf[..target_end].iter().rposition(|&b| b <= b' ')?;
    if buf[space] != b' ' || space + 1 == target_end {
        return None;
    }
    let method_end = space;
    let token_start = buf[..method_end]
        .iter()
        .rposition(|&b| !is_tchar(b))
        .map_or(0, |i| i + 1);
    if token_start == method_end {
        return None;
    }
    let at_line_start = if token_start == 0 {
        line_start_known
    } else {
        buf[token_start - 1] == b'\n'
    };
    if at_line_start && classify_start(&buf[token_start..]) == Start::Request {
        return Some(token_start);
    }
    // Mid-line: the longest known method that ends the token (the body before it may end in letters).
    let token = &buf[token_start..method_end];
    KNOWN_METHODS
        .iter()
        .filter(|m| token.ends_with(m))
        .max_by_key(|m| m.len())
        .map(|m| method_end - m.len())
        // Only what the head parser will take for a request line (else the two would hand the same
        // bytes back and forth).
        .filter(|&start| classify_start(&buf[start..]) == Start::Request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_takes_only_starts_the_head_parser_takes() {
        // A known method mid-line before a target the head parser refuses (found by fuzzing: the two
        // handed the same bytes back and forth forever).
        let buf = b"xyzGET x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n";
        assert_eq!(find_message_start(buf, None, false), None);
        let buf = b"xyzGET /x HTTP/1.1\r\n\r\n";
        assert_eq!(
            find_message_start(buf, None, false),
            Some((3, Role::Request))
        );
    }

    #[test]
    fn head_ends() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"A;ext=1"), Some(10));
        assert_eq!(parse_chunk_size(b" 5 "), Some(5));
        assert_eq!(
            parse_chunk_size(b"10000000000000000"),
            None,
            "2^64 is refused"
        );
        assert_eq!(parse_chunk_size(b"zz"), None);
        assert_eq!(parse_chunk_size(b""), None);
    }

    #[test]
    fn message_starts_when_resynchronising() {
        let buf = b"garbage\r\nmore\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(
            find_message_start(buf, None, false),
            Some((15, Role::Response))
        );
        let buf = b"xx\nPOST /a HTTP/1.1\r\nHost: a\r\n";
        assert_eq!(
            find_message_start(buf, None, false),
            Some((3, Role::Request))
        );
        assert_eq!(find_message_start(buf, Some(Role::Response), false), None);
        // Right after a body that did not end with a newline.
        assert_eq!(
            find_message_start(b"{\"a\":1}HTTP/1.1 200 OK\r\n", None, false),
            Some((7, Role::Response))
        );
        assert_eq!(
            find_message_start(b"{\"a\":1}POST /x HTTP/1.1\r\n", None, false),
            Some((7, Role::Request))
        );
        assert_eq!(
            find_message_start(b"...xyzGET /x HTTP/1.1\r\n", None, false),
            Some((6, Role::Request))
        );
        // Not a status line: no code, or a version inside text.
        assert_eq!(
            find_message_start(b"say HTTP/1.1 rocks\n", Some(Role::Response), false),
            None
        );
        assert_eq!(
            find_message_start(b"HTTP/1.1 2XX OK\r\n", Some(Role::Response), false),
            None
        );
        assert_eq!(
            find_message_start(b"GET / HTTP/1.1\r\n", None, true),
            Some((0, Role::Request))
        );
        assert_eq!(
            find_message_start(b"GET / HTTP/1.1\r\n", None, false),
            Some((0, Role::Request))
        );
        assert_eq!(find_message_start(b"FOO / HTTP/1.1\r\n", None, false), None);
        assert_eq!(
            find_message_start(b"FOO / HTTP/1.1\r\n", None, true),
            Some((0, Role::Request))
        );
    }
}
