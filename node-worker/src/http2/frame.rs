//! HTTP/2 frames (RFC 9113 section 4 and 6), read incrementally from one direction's stream.
//!
//! Bytes arrive in pieces of any size. The reader keeps no heap buffer: a frame header (9 bytes), the
//! few fixed bytes before a frame's content (pad length, priority, promised stream) and a control
//! frame's small payload are held inline; DATA and header-block content is handed on piece by piece
//! as it arrives (padding removed), so what a frame costs is what its consumer decides to keep.
//!
//! The length field is authoritative: a frame that is malformed (a bad size for its type, padding
//! longer than the frame, a stream id not allowed for its type) or longer than our limit is skipped
//! whole and reported, and reading goes on at the next frame. Only a client stream that does not start
//! with the connection preface is unreadable.

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The size of a frame header.
pub const HEADER_LEN: usize = 9;

/// The largest frame the protocol can express (a 24-bit length).
pub const MAX_FRAME_LEN: u32 = (1 << 24) - 1;

/// The largest frame every peer must accept (SETTINGS_MAX_FRAME_SIZE's initial value): our limit is
/// never below it.
pub const MIN_MAX_FRAME_LEN: u32 = 1 << 14;

/// A control frame's payload kept whole (SETTINGS with this many bytes holds 42 settings; only six
/// are defined). A longer SETTINGS frame is skipped; GOAWAY's debug data past its first 8 bytes is
/// skipped, never kept.
const CONTROL_MAX: usize = 252;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// SETTINGS_HEADER_TABLE_SIZE: the largest HPACK dynamic table the sender's decoder accepts.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// Extension frames: ignored, as RFC 9113 section 4.1 requires.
    Unknown(u8),
}

impl Kind {
    pub fn of(code: u8) -> Kind {
        match code {
            0x0 => Kind::Data,
            0x1 => Kind::Headers,
            0x2 => Kind::Priority,
            0x3 => Kind::RstStream,
            0x4 => Kind::Settings,
            0x5 => Kind::PushPromise,
            0x6 => Kind::Ping,
            0x7 => Kind::GoAway,
            0x8 => Kind::WindowUpdate,
            0x9 => Kind::Continuation,
            other => Kind::Unknown(other),
        }
    }

    /// Whether the frame's content is handed on piece by piece (not a control frame).
    fn streams_content(self) -> bool {
        matches!(
            self,
            Kind::Data | Kind::Headers | Kind::PushPromise | Kind::Continuation
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: Kind,
    pub flags: u8,
    /// The stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: Kind::of(b[3]),
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// How many bytes precede the content: pad length, priority fields, promised stream id.
    fn prefix_len(&self) -> u32 {
        let padded = u32::from(self.has(FLAG_PADDED));
        match self.kind {
            Kind::Data => padded,
            Kind::Headers => padded + if self.has(FLAG_PRIORITY) { 5 } else { 0 },
            Kind::PushPromise => padded + 4,
            _ => 0,
        }
    }

    /// What RFC 9113 section 6 says is wrong with this header alone, if anything.
    fn check(&self) -> Result<(), FrameError> {
        let on_stream = self.stream != 0;
        let ok = match self.kind {
            Kind::Data | Kind::Headers | Kind::PushPromise | Kind::Continuation => on_stream,
            Kind::Priority => on_stream && self.len == 5,
            Kind::RstStream => on_stream && self.len == 4,
            Kind::Settings => {
                !on_stream && self.len.is_multiple_of(6) && !(self.has(FLAG_ACK) && self.len != 0)
            }
            Kind::Ping => !on_stream && self.len == 8,
            Kind::GoAway => !on_stream && self.len >= 8,
            Kind::WindowUpdate => self.len == 4,
            Kind::Unknown(_) => true,
        };
        if !ok {
            return Err(FrameError::Malformed);
        }
        if self.prefix_len() > self.len {
            return Err(FrameError::BadPadding);
        }
        Ok(())
    }
}

/// Why a frame was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame larger than the configured limit")]
    TooLarge,
    #[error("frame malformed for its type")]
    Malformed,
    #[error("padding longer than the frame")]
    BadPadding,
}

/// What a control frame said (what pairing needs of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// SETTINGS: the header table size it sets, if it does (the last one wins).
    Settings {
        ack: bool,
        header_table_size: Option<u32>,
    },
    RstStream {
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
    /// PING, PRIORITY, WINDOW_UPDATE: valid, nothing to act on.
    Other,
}

/// What the reader found, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A DATA, HEADERS, PUSH_PROMISE or CONTINUATION frame begins (with PUSH_PROMISE's promised
    /// stream).
    Start {
        header: FrameHeader,
        promised: Option<u32>,
    },
    /// A piece of the begun frame's content (padding, priority and promised stream removed).
    Content(&'a [u8]),
    /// The begun frame is complete.
    End(FrameHeader),
    /// A control frame, complete and valid.
    Control {
        header: FrameHeader,
        control: Control,
    },
    /// A frame skipped whole (a begun frame is never skipped: its padding is checked before it begins).
    Skipped {
        header: FrameHeader,
        why: FrameError,
    },
}

/// The client's stream did not start with the connection preface: nothing of it can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the HTTP/2 connection preface")]
pub struct BadPreface;

// The largest variant is a control frame's payload, held inline so that reading never allocates; the
// reader lives in a boxed connection.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum State {
    /// Matching the connection preface; this many bytes matched.
    Preface(usize),
    /// Collecting a frame header.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Collecting the bytes before a content frame's content.
    Prefix {
        header: FrameHeader,
        buf: [u8; 10],
        have: usize,
    },
    /// Handing on content, then skipping `pad` bytes of padding.
    Content {
        header: FrameHeader,
        left: u32,
        pad: u32,
    },
    /// Collecting a control frame's payload (up to [`CONTROL_MAX`] bytes kept, the rest skipped).
    Control {
        header: FrameHeader,
        buf: [u8; CONTROL_MAX],
        have: usize,
        left: u32,
    },
    /// Skipping a frame's payload.
    Skip(u32),
}

/// One direction's frames.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    max_frame_len: u32,
}

impl FrameReader {
    /// A reader for a stream that starts with the connection preface (`preface`, the client's when
    /// seen from its first byte) or at a frame boundary. Frames longer than `max_frame_len` are
    /// skipped (it is raised to the protocol's minimum and capped at its maximum).
    pub fn new(preface: bool, max_frame_len: u32) -> FrameReader {
        FrameReader {
            state: if preface {
                State::Preface(0)
            } else {
                State::Header {
                    buf: [0; HEADER_LEN],
                    have: 0,
                }
            },
            max_frame_len: max_frame_len.clamp(MIN_MAX_FRAME_LEN, MAX_FRAME_LEN),
        }
    }

    /// Whether the reader is between frames (nothing of a frame read yet).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Reads `bytes`, calling `on` for each event.
    pub fn read<'b>(
        &mut self,
        mut bytes: &'b [u8],
        on: &mut impl FnMut(Event<'b>),
    ) -> Result<(), BadPreface> {
        while !bytes.is_empty() {
            bytes = self.step(bytes, on)?;
        }
        // A frame with nothing left to read ends now, not with the next bytes.
        self.finish_empty(on);
        Ok(())
    }

    fn next_header() -> State {
        State::Header {
            buf: [0; HEADER_LEN],
            have: 0,
        }
    }

    /// Consumes some of `bytes`, returning the rest.
    fn step<'b>(
        &mut self,
        bytes: &'b [u8],
        on: &mut impl FnMut(Event<'b>),
    ) -> Result<&'b [u8], BadPreface> {
        match &mut self.state {
            State::Preface(matched) => {
                let n = bytes.len().min(PREFACE.len() - *matched);
                if bytes[..n] != PREFACE[*matched..*matched + n] {
                    return Err(BadPreface);
                }
                *matched += n;
                if *matched == PREFACE.len() {
                    self.state = Self::next_header();
                }
                Ok(&bytes[n..])
            }
            State::Header { buf, have } => {
                let n = bytes.len().min(HEADER_LEN - *have);
                buf[*have..*have + n].copy_from_slice(&bytes[..n]);
                *have += n;
                if *have == HEADER_LEN {
                    let header = FrameHeader::parse(buf);
                    self.begin(header, on);
                }
                Ok(&bytes[n..])
            }
            State::Prefix { header, buf, have } => {
                let header = *header;
                let need = header.prefix_len() as usize;
                let n = bytes.len().min(need - *have);
                buf[*have..*have + n].copy_from_slice(&bytes[..n]);
                *have += n;
                if *have == need {
                    let buf = *buf;
                    self.after_prefix(header, &buf[..need], on);
                }
                Ok(&bytes[n..])
            }
            State::Content { header, left, pad } => {
                let header = *header;
                let n = bytes.len().min(*left as usize);
                *left -= n as u32;
                let pad = *pad;
                let done = *left == 0;
                if n > 0 {
                    on(Event::Content(&bytes[..n]));
                }
                if done {
                    on(Event::End(header));
                    self.state = if pad > 0 {
                        State::Skip(pad)
                    } else {
                        Self::next_header()
                    };
                }
                Ok(&bytes[n..])
            }
            State::Control {
                header,
                buf,
                have,
                left,
            } => {
                let n = bytes.len().min(*left as usize);
                let keep = n.min(CONTROL_MAX - *have);
                buf[*have..*have + keep].copy_from_slice(&bytes[..keep]);
                *have += keep;
                *left -= n as u32;
                if *left == 0 {
                    let header = *header;
                    let control = parse_control(&header, &buf[..*have]);
                    on(Event::Control { header, control });
                    self.state = Self::next_header();
                }
                Ok(&bytes[n..])
            }
            State::Skip(left) => {
                let n = bytes.len().min(*left as usize);
                *left -= n as u32;
                if *left == 0 {
                    self.state = Self::next_header();
                }
                Ok(&bytes[n..])
            }
        }
    }

    /// A frame header was read: what comes next.
    fn begin<'b>(&mut self, header: FrameHeader, on: &mut impl FnMut(Event<'b>)) {
        let checked = if header.len > self.max_frame_len {
            Err(FrameError::TooLarge)
        } else {
            header.check()
        };
        if let Err(why) = checked {
            on(Event::Skipped { header, why });
            self.state = State::Skip(header.len);
            return;
        }
        self.state = match header.kind {
            Kind::Unknown(_) => State::Skip(header.len),
            kind if kind.streams_content() => {
                if header.prefix_len() == 0 {
                    on(Event::Start {
                        header,
                        promised: None,
                    });
                    State::Content {
                        header,
                        left: header.len,
                        pad: 0,
                    }
                } else {
                    State::Prefix {
                        header,
                        buf: [0; 10],
                        have: 0,
                    }
                }
            }
            Kind::Settings if header.len as usize > CONTROL_MAX => {
                on(Event::Skipped {
                    header,
                    why: FrameError::TooLarge,
                });
                State::Skip(header.len)
            }
            _ => State::Control {
                header,
                buf: [0; CONTROL_MAX],
                have: 0,
                left: header.len,
            },
        };
        if matches!(self.state, State::Skip(0)) {
            self.state = Self::next_header();
        }
    }

    /// A content frame's prefix was read: its padding is checked, and its content begins.
    fn after_prefix<'b>(
        &mut self,
        header: FrameHeader,
        prefix: &[u8],
        on: &mut impl FnMut(Event<'b>),
    ) {
        let mut rest = prefix;
        let mut pad = 0u32;
        if header.has(FLAG_PADDED) {
            pad = u32::from(rest.first().copied().unwrap_or(0));
            rest = rest.get(1..).unwrap_or_default();
        }
        let after = header.len - header.prefix_len();
        if pad > after {
            on(Event::Skipped {
                header,
                why: FrameError::BadPadding,
            });
            self.state = State::Skip(after);
            if after == 0 {
                self.state = Self::next_header();
            }
            return;
        }
        let promised = match (header.kind, rest) {
            (Kind::PushPromise, [a, b, c, d, ..]) => {
                Some(u32::from_be_bytes([*a, *b, *c, *d]) & 0x7fff_ffff)
            }
            _ => None,
        };
        on(Event::Start { header, promised });
        self.state = State::Content {
            header,
            left: after - pad,
            pad,
        };
    }

    /// Ends a content frame whose content is empty (it would otherwise wait for the next byte).
    fn finish_empty<'b>(&mut self, on: &mut impl FnMut(Event<'b>)) {
        if let State::Content {
            header,
            left: 0,
            pad,
        } = self.state
        {
            on(Event::End(header));
            self.state = if pad > 0 {
                State::Skip(pad)
            } else {
                Self::next_header()
            };
        }
        if let State::Control {
            header, left: 0, ..
        } = self.state
        {
            let control = parse_control(&header, &[]);
            on(Event::Control { header, control });
            self.state = Self::next_header();
        }
    }
}

/// The flags RFC 9113 defines for each frame type: undefined ones are sent as zero.
fn defined_flags(kind: Kind) -> u8 {
    match kind {
        Kind::Data => FLAG_END_STREAM | FLAG_PADDED,
        Kind::Headers => FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
        Kind::PushPromise => FLAG_END_HEADERS | FLAG_PADDED,
        Kind::Continuation => FLAG_END_HEADERS,
        Kind::Settings | Kind::Ping => FLAG_ACK,
        Kind::Priority | Kind::RstStream | Kind::GoAway | Kind::WindowUpdate | Kind::Unknown(_) => {
            0
        }
    }
}

/// Whether `bytes`, a piece of a stream caught mid-way, is a whole number of sane HTTP/2 frames: each
/// header valid for a known type (RFC 9113 section 6), no undefined flag, no longer than the default
/// maximum frame size, padding within the frame, and the last frame ending exactly where the bytes
/// end. This is how a connection the capture joined late is recognised as HTTP/2 (never by port),
/// and where a direction that lost bytes finds frame boundaries again. Text (HTTP/1) never passes:
/// its first bytes read as a length far above the maximum.
pub fn looks_like_frames(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let mut frames = 0;
    while !rest.is_empty() {
        let Some(head) = rest.first_chunk::<HEADER_LEN>() else {
            return false;
        };
        let header = FrameHeader::parse(head);
        let sane = !matches!(header.kind, Kind::Unknown(_))
            && header.len <= MIN_MAX_FRAME_LEN
            && header.flags & !defined_flags(header.kind) == 0
            && header.check().is_ok()
            && head[5] & 0x80 == 0;
        let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + header.len as usize) else {
            return false;
        };
        if !sane {
            return false;
        }
        if header.has(FLAG_PADDED)
            && matches!(header.kind, Kind::Data | Kind::Headers | Kind::PushPromise)
        {
            let pad = u32::from(payload.first().copied().unwrap_or(0));
            if pad > header.len - header.prefix_len() {
                return false;
            }
        }
        rest = &rest[HEADER_LEN + header.len as usize..];
        frames += 1;
    }
    frames > 0
}

fn be32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// A complete (already validated) control frame's meaning.
fn parse_control(header: &FrameHeader, payload: &[u8]) -> Control {
    match header.kind {
        Kind::Settings => Control::Settings {
            ack: header.has(FLAG_ACK),
            header_table_size: payload
                .chunks_exact(6)
                .filter(|s| u16::from_be_bytes([s[0], s[1]]) == SETTINGS_HEADER_TABLE_SIZE)
                .map(|s| be32(&s[2..]))
                .next_back(),
        },
        Kind::RstStream => Control::RstStream {
            code: be32(payload),
        },
        Kind::GoAway => Control::GoAway {
            last_stream: be32(payload) & 0x7fff_ffff,
            code: be32(payload.get(4..).unwrap_or_default()),
        },
        _ => Control::Other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::synth::h2::frame;

    /// An event with its borrowed content copied, for comparisons.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum Owned {
        Start(FrameHeader, Option<u32>),
        Content(Vec<u8>),
        End(FrameHeader),
        Control(FrameHeader, Control),
        Skipped(FrameHeader, FrameError),
    }

    /// Reads `chunks` one after the other; contents merged per frame so that splits do not matter.
    fn read_all(reader: &mut FrameReader, chunks: &[&[u8]]) -> Result<Vec<Owned>, BadPreface> {
        let mut out: Vec<Owned> = Vec::new();
        for chunk in chunks {
            reader.read(chunk, &mut |e| {
                let owned = match e {
                    Event::Start { header, promised } => Owned::Start(header, promised),
                    Event::Content(c) => {
                        if let Some(Owned::Content(prev)) = out.last_mut() {
                            prev.extend_from_slice(c);
                            return;
                        }
                        Owned::Content(c.to_vec())
                    }
                    Event::End(h) => Owned::End(h),
                    Event::Control { header, control } => Owned::Control(header, control),
                    Event::Skipped { header, why } => Owned::Skipped(header, why),
                };
                out.push(owned);
            })?;
        }
        Ok(out)
    }

    fn header(len: u32, kind: Kind, flags: u8, stream: u32) -> FrameHeader {
        FrameHeader {
            len,
            kind,
            flags,
            stream,
        }
    }

    fn sample() -> Vec<u8> {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(4, 0, 0, &[0, 1, 0, 0, 0x10, 0, 0, 3, 0, 0, 0, 100]));
        wire.extend(frame(4, 1, 0, &[]));
        // HEADERS, padded (2) with priority.
        let mut h = vec![2, 0x80, 0, 0, 0, 15];
        h.extend_from_slice(b"\x82\x86");
        h.extend_from_slice(&[0, 0]);
        wire.extend(frame(1, FLAG_PADDED | FLAG_PRIORITY, 1, &h));
        wire.extend(frame(9, FLAG_END_HEADERS, 1, b"\x84"));
        wire.extend(frame(0xfa, 0, 0, b"extension"));
        wire.extend(frame(0, FLAG_PADDED | FLAG_END_STREAM, 1, b"\x03{}\0\0\0"));
        wire.extend(frame(0, 0, 3, b""));
        wire.extend(frame(8, 0, 0, &[0, 0, 1, 0]));
        wire.extend(frame(6, 0, 0, &[1; 8]));
        wire.extend(frame(2, 0, 3, &[0, 0, 0, 1, 9]));
        wire.extend(frame(5, FLAG_END_HEADERS, 1, &[0, 0, 0, 2, 0x82]));
        wire.extend(frame(3, 0, 3, &[0, 0, 0, 8]));
        wire.extend(frame(7, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 2, b'b', b'y', b'e']));
        wire
    }

    fn expected() -> Vec<Owned> {
        vec![
            Owned::Control(
                header(12, Kind::Settings, 0, 0),
                Control::Settings {
                    ack: false,
                    header_table_size: Some(0x1000),
                },
            ),
            Owned::Control(
                header(0, Kind::Settings, 1, 0),
                Control::Settings {
                    ack: true,
                    header_table_size: None,
                },
            ),
            Owned::Start(
                header(10, Kind::Headers, FLAG_PADDED | FLAG_PRIORITY, 1),
                None,
            ),
            Owned::Content(b"\x82\x86".to_vec()),
            Owned::End(header(10, Kind::Headers, FLAG_PADDED | FLAG_PRIORITY, 1)),
            Owned::Start(header(1, Kind::Continuation, FLAG_END_HEADERS, 1), None),
            Owned::Content(b"\x84".to_vec()),
            Owned::End(header(1, Kind::Continuation, FLAG_END_HEADERS, 1)),
            Owned::Start(
                header(6, Kind::Data, FLAG_PADDED | FLAG_END_STREAM, 1),
                None,
            ),
            Owned::Content(b"{}".to_vec()),
            Owned::End(header(6, Kind::Data, FLAG_PADDED | FLAG_END_STREAM, 1)),
            Owned::Start(header(0, Kind::Data, 0, 3), None),
            Owned::End(header(0, Kind::Data, 0, 3)),
            Owned::Control(header(4, Kind::WindowUpdate, 0, 0), Control::Other),
            Owned::Control(header(8, Kind::Ping, 0, 0), Control::Other),
            Owned::Control(header(5, Kind::Priority, 0, 3), Control::Other),
            Owned::Start(header(5, Kind::PushPromise, FLAG_END_HEADERS, 1), Some(2)),
            Owned::Content(b"\x82".to_vec()),
            Owned::End(header(5, Kind::PushPromise, FLAG_END_HEADERS, 1)),
            Owned::Control(
                header(4, Kind::RstStream, 0, 3),
                Control::RstStream { code: 8 },
            ),
            Owned::Control(
                header(11, Kind::GoAway, 0, 0),
                Control::GoAway {
                    last_stream: 3,
                    code: 2,
                },
            ),
        ]
    }

    #[test]
    fn every_frame_type_whole() {
        let wire = sample();
        let mut r = FrameReader::new(true, 1 << 14);
        assert_eq!(read_all(&mut r, &[&wire]).unwrap(), expected());
        assert!(r.at_boundary());
    }

    #[test]
    fn split_at_every_byte_boundary_and_byte_by_byte() {
        let wire = sample();
        for at in 0..=wire.len() {
            let mut r = FrameReader::new(true, 1 << 14);
            let events = read_all(&mut r, &[&wire[..at], &wire[at..]]).unwrap();
            assert_eq!(events, expected(), "split at {at}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let mut r = FrameReader::new(true, 1 << 14);
        assert_eq!(read_all(&mut r, &bytes).unwrap(), expected());
    }

    #[test]
    fn a_bad_preface_is_unreadable() {
        let mut r = FrameReader::new(true, 1 << 14);
        assert_eq!(
            read_all(&mut r, &[b"PRI * HTTP/2.0\r\n\r\nSX"]),
            Err(BadPreface)
        );
        let mut r = FrameReader::new(true, 1 << 14);
        assert!(read_all(&mut r, &[b"PRI * HTTP/2.0\r\n"])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_and_oversized_frames_are_skipped_and_reading_goes_on() {
        let ping = frame(6, 0, 0, &[0; 8]);
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (frame(0, 0, 0, b"data on stream 0"), FrameError::Malformed),
            (frame(6, 0, 1, &[0; 8]), FrameError::Malformed),
            (frame(6, 0, 0, &[0; 7]), FrameError::Malformed),
            (frame(3, 0, 1, &[0; 5]), FrameError::Malformed),
            (frame(4, 0, 0, &[0; 7]), FrameError::Malformed),
            (frame(4, 1, 0, &[0; 6]), FrameError::Malformed),
            (frame(7, 0, 0, &[0; 7]), FrameError::Malformed),
            (frame(8, 0, 0, &[0; 5]), FrameError::Malformed),
            (frame(2, 0, 1, &[0; 4]), FrameError::Malformed),
            (frame(0, FLAG_PADDED, 1, &[5, 1, 2]), FrameError::BadPadding),
            (frame(0, FLAG_PADDED, 1, &[]), FrameError::BadPadding),
            (
                frame(1, FLAG_PADDED | FLAG_PRIORITY, 1, &[1, 0, 0, 0, 0, 0]),
                FrameError::BadPadding,
            ),
            (frame(5, 0, 1, &[0, 0, 0]), FrameError::BadPadding),
            (frame(0, 0, 1, &vec![0; 20_000]), FrameError::TooLarge),
            (frame(4, 0, 0, &vec![0; 258]), FrameError::TooLarge),
        ];
        for (bad, why) in cases {
            let mut wire = bad.clone();
            wire.extend_from_slice(&ping);
            let mut r = FrameReader::new(false, 1 << 14);
            let events = read_all(&mut r, &[&wire]).unwrap();
            let bad_header = FrameHeader::parse(bad[..9].try_into().unwrap());
            assert_eq!(
                events,
                vec![
                    Owned::Skipped(bad_header, why),
                    Owned::Control(header(8, Kind::Ping, 0, 0), Control::Other)
                ],
                "{bad:?}"
            );
            assert!(r.at_boundary());
        }
        // The limit is ours: a larger one lets the same frame through.
        let big = frame(0, 0, 1, &vec![7; 20_000]);
        let mut r = FrameReader::new(false, 1 << 15);
        let events = read_all(&mut r, &[&big]).unwrap();
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn goaway_debug_data_is_skipped_not_kept() {
        let mut payload = vec![0, 0, 0, 9, 0, 0, 0, 0];
        payload.extend(vec![b'x'; 10_000]);
        let wire = frame(7, 0, 0, &payload);
        let mut r = FrameReader::new(false, 1 << 14);
        assert_eq!(
            read_all(&mut r, &[&wire]).unwrap(),
            vec![Owned::Control(
                header(10_008, Kind::GoAway, 0, 0),
                Control::GoAway {
                    last_stream: 9,
                    code: 0
                }
            )]
        );
    }

    #[test]
    fn frames_recognised_mid_stream() {
        let frames = &[
            frame(4, 0, 0, &[0, 1, 0, 0, 0x10, 0]),
            frame(1, FLAG_END_HEADERS | FLAG_PADDED, 3, b"\x01\x82\x00"),
            frame(0, FLAG_END_STREAM, 3, b"{}"),
            frame(8, 0, 0, &[0, 0, 1, 0]),
            frame(3, 0, 5, &[0, 0, 0, 8]),
        ]
        .concat();
        assert!(looks_like_frames(frames));
        assert!(looks_like_frames(&frame(0, FLAG_END_STREAM, 7, b"{}")));
        // Cut inside a frame, at either end.
        assert!(!looks_like_frames(&frames[..frames.len() - 1]));
        assert!(!looks_like_frames(&frames[1..]));
        assert!(!looks_like_frames(b""));
        for text in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"{\"a\":1}",
            b"\x16\x03\x01\x00\x05hello",
        ] {
            assert!(!looks_like_frames(text), "{text:?}");
        }
        // Undefined flags, unknown types, reserved bit, oversized, bad padding.
        assert!(!looks_like_frames(&frame(0, 0x2, 1, b"x")));
        assert!(!looks_like_frames(&frame(0xfa, 0, 0, b"")));
        let mut reserved = frame(0, 0, 1, b"x");
        reserved[5] |= 0x80;
        assert!(!looks_like_frames(&reserved));
        assert!(!looks_like_frames(&frame(0, 0, 1, &vec![0; 16_385])));
        assert!(!looks_like_frames(&frame(0, FLAG_PADDED, 1, &[9, 0])));
    }

    proptest::proptest! {
        /// Any bytes in any pieces: no panic, and the reader is as far as after reading them whole.
        #[test]
        fn any_bytes_any_split(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
                              cut in 0usize..600) {
            let cut = cut.min(bytes.len());
            let mut a = FrameReader::new(false, 1 << 14);
            let whole = read_all(&mut a, &[&bytes]);
            let mut b = FrameReader::new(false, 1 << 14);
            let split = read_all(&mut b, &[&bytes[..cut], &bytes[cut..]]);
            proptest::prop_assert_eq!(whole, split);
        }
    }
}
