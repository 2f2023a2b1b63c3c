//! A direction's first bytes, held until detection can tell what the connection carries.
//!
//! Most streams say what they are in their first segment. When one starts with fewer bytes than
//! detection needs (at most [`WINDOW`]), they are held here, reserved from the connection's budget as
//! a protocol collecting a message head would reserve them, and handed on, in one piece, to the
//! protocol detection picks. Holding them changes nothing a protocol would have done with them: it
//! would only have buffered them too (such short starts hold no complete HTTP/1 head), and when it
//! would have refused them (budget, head size) they are handed to it at once to refuse.

use super::detect::{detect, Detected, WINDOW};
use super::streams::Role;
use crate::memory::Allowance;
use crate::tcp::reassembly::Chunk;

/// Bytes held, with where the first of them lies in the stream.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    bytes: [u8; WINDOW],
    len: u8,
    /// Sequence number of the first byte, and the acknowledgment of the segment that carried it.
    seq: u32,
    ack: u32,
}

impl Held {
    const EMPTY: Held = Held {
        bytes: [0; WINDOW],
        len: 0,
        seq: 0,
        ack: 0,
    };

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The held bytes as one chunk of the stream.
    pub fn chunk(&self) -> Chunk<'_> {
        Chunk {
            seq: self.seq,
            ack: self.ack,
            bytes: self.as_slice(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum FirstBytes {
    /// Seen from its first byte, and not told yet. What is held is boxed, allocated only when a
    /// stream starts with fewer bytes than detection needs (rare): every connection has two of these.
    Pending {
        role: Option<Role>,
        held: Option<Box<Held>>,
    },
    /// Told, or handed to a protocol without a verdict.
    Told,
    /// Caught mid-way: its first bytes were never seen.
    MidStream,
}

/// What becomes of a chunk offered while a direction's first bytes are pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Held (or only empty lines, which protocols skip): nothing to pass on yet.
    Held,
    /// Detection told (never [`Detected::NeedMore`]). The chunk is not taken.
    Told(Detected),
    /// Detection needs more, but the chunk cannot be held: the default protocol (HTTP/1) takes over.
    /// The chunk is not taken.
    CannotHold,
}

impl FirstBytes {
    /// A direction that carries `role` (if known), seen from its first byte or not.
    pub fn new(from_start: bool, role: Option<Role>) -> FirstBytes {
        if from_start {
            FirstBytes::Pending { role, held: None }
        } else {
            FirstBytes::MidStream
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(self, FirstBytes::Pending { .. })
    }

    /// Whether the direction was seen from its first byte.
    pub fn from_start(&self) -> bool {
        !matches!(self, FirstBytes::MidStream)
    }

    /// Bytes held now.
    pub fn held_len(&self) -> usize {
        match self {
            FirstBytes::Pending {
                held: Some(held), ..
            } => usize::from(held.len),
            _ => 0,
        }
    }

    /// The next chunk of a pending direction: held (its bytes reserved from `allowance`), or the
    /// verdict. `max_header_bytes`: a protocol collecting a head would refuse more.
    pub fn offer(
        &mut self,
        chunk: &Chunk<'_>,
        max_header_bytes: usize,
        allowance: &mut Allowance<'_>,
    ) -> Offer {
        let FirstBytes::Pending { role, held } = self else {
            return Offer::CannotHold;
        };
        let mut bytes = chunk.bytes;
        // Where the held bytes start (a box holds bytes only once there are some).
        let (mut seq, mut ack) = (0, 0);
        let old = match held {
            Some(h) => usize::from(h.len),
            None => {
                // HTTP/1 tolerates empty lines before a message; detection looks at what follows them.
                let blank = bytes
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                bytes = &bytes[blank..];
                if bytes.is_empty() {
                    return Offer::Held;
                }
                seq = chunk.seq.wrapping_add(blank as u32);
                ack = chunk.ack;
                0
            }
        };
        let mut probe = [0u8; WINDOW];
        let add = bytes.len().min(WINDOW - old);
        if let Some(h) = held {
            probe[..old].copy_from_slice(h.as_slice());
        }
        probe[old..old + add].copy_from_slice(&bytes[..add]);
        match detect(&probe[..old + add], *role) {
            Detected::NeedMore => {}
            told => return Offer::Told(told),
        }
        let total = old + bytes.len();
        if total >= WINDOW || total > max_header_bytes || allowance.reserve(bytes.len()).is_err() {
            return Offer::CannotHold;
        }
        let held = held.get_or_insert_with(|| {
            Box::new(Held {
                seq,
                ack,
                ..Held::EMPTY
            })
        });
        held.bytes[old..total].copy_from_slice(bytes);
        // `total < WINDOW`, which fits.
        held.len = u8::try_from(total).unwrap_or(u8::MAX);
        Offer::Held
    }

    /// Ends the wait: the held bytes, if any, their reservation released for the protocol that takes
    /// them to reserve again.
    pub fn take(&mut self, allowance: &mut Allowance<'_>) -> Option<Held> {
        if !self.is_pending() {
            return None;
        }
        let FirstBytes::Pending {
            held: Some(held), ..
        } = std::mem::replace(self, FirstBytes::Told)
        else {
            return None;
        };
        allowance.release(usize::from(held.len));
        Some(*held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{FlowBudget, TotalBudget};

    fn chunk(seq: u32, ack: u32, bytes: &[u8]) -> Chunk<'_> {
        Chunk { seq, ack, bytes }
    }

    /// Runs `test` with a connection budget of `flow_limit` bytes.
    fn with_budget(flow_limit: usize, test: impl FnOnce(&mut Allowance<'_>)) {
        let (mut flow, mut total) = (FlowBudget::default(), TotalBudget::new(1000));
        test(&mut Allowance {
            flow: &mut flow,
            total: &mut total,
            flow_limit,
        });
    }

    #[test]
    fn short_starts_are_held_and_reserved_until_told() {
        with_budget(1000, |a| {
            let mut f = FirstBytes::new(true, Some(Role::Request));
            assert_eq!(f.offer(&chunk(10, 7, b"\r\n"), 256, a), Offer::Held);
            assert_eq!(a.flow.used(), 0, "empty lines are skipped, not held");
            assert_eq!(f.offer(&chunk(12, 8, b"\r\nPO"), 256, a), Offer::Held);
            assert_eq!(f.offer(&chunk(16, 9, b"ST"), 256, a), Offer::Held);
            assert_eq!((f.held_len(), a.flow.used()), (4, 4));
            assert_eq!(
                f.offer(&chunk(18, 9, b" /x HTTP/1.1\r\n\r\n"), 256, a),
                Offer::Told(Detected::Http1)
            );
            assert_eq!(f.held_len(), 4, "the told chunk is not taken");
            let held = f.take(a).unwrap();
            assert_eq!(
                held.chunk(),
                chunk(14, 8, b"POST"),
                "where the first byte after the empty lines lies"
            );
            assert_eq!(a.flow.used(), 0);
            assert!(!f.is_pending() && f.from_start());
            assert!(f.take(a).is_none());
        });
    }

    #[test]
    fn what_cannot_be_held_goes_on() {
        with_budget(3, |a| {
            let mut f = FirstBytes::new(true, None);
            assert_eq!(f.offer(&chunk(0, 0, b"GE"), 256, a), Offer::Held);
            assert_eq!(f.offer(&chunk(2, 0, b"TT"), 256, a), Offer::CannotHold);
            assert_eq!(a.flow.used(), 2, "refused: nothing more reserved");
            assert_eq!(f.offer(&chunk(2, 0, b"T"), 2, a), Offer::CannotHold);
            assert_eq!(f.take(a).unwrap().chunk().bytes, b"GE");
            let mut mid = FirstBytes::new(false, None);
            assert!(!mid.is_pending() && !mid.from_start());
            assert_eq!(mid.offer(&chunk(0, 0, b"GET"), 256, a), Offer::CannotHold);
        });
    }

    #[test]
    fn verdicts() {
        with_budget(1000, |a| {
            let mut f = FirstBytes::new(true, Some(Role::Request));
            assert_eq!(f.offer(&chunk(0, 0, b"PRI * HTTP/2"), 256, a), Offer::Held);
            assert_eq!(
                f.offer(&chunk(12, 0, b".0\r\n\r\nSM\r\n\r\n"), 256, a),
                Offer::Told(Detected::Http2)
            );
            // A server's SETTINGS frame (its preface) says HTTP/2 once its header is whole.
            let mut f = FirstBytes::new(true, Some(Role::Response));
            assert_eq!(
                f.offer(&chunk(0, 0, b"\x00\x00\x12\x04"), 256, a),
                Offer::Held
            );
            assert_eq!(
                f.offer(&chunk(4, 0, b"\x00\x00\x00\x00\x00\x00\x03"), 256, a),
                Offer::Told(Detected::Http2)
            );
            let mut f = FirstBytes::new(true, Some(Role::Response));
            assert_eq!(
                f.offer(
                    &chunk(0, 0, b"\x00\x00\x12\x01\x00\x00\x00\x00\x01"),
                    256,
                    a
                ),
                Offer::Told(Detected::Other)
            );
        });
    }
}
