//! What every protocol knows about a connection's two TCP streams: which one carries requests, and
//! how far each has been delivered.

use crate::tcp::Direction;

/// Which kind of messages a direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The client's direction: requests.
    Request,
    /// The server's direction: responses.
    Response,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streams {
    /// The direction carrying requests, once known (the SYN's, or learned from the first message).
    pub client: Option<Direction>,
    /// Next expected sequence number per direction ([`Direction::index`]), once known.
    pub next_seq: [Option<u32>; 2],
}

impl Streams {
    pub fn new(client: Option<Direction>) -> Streams {
        Streams {
            client,
            next_seq: [None, None],
        }
    }

    /// What `dir` carries, if the client is known.
    pub fn role(&self, dir: Direction) -> Option<Role> {
        self.client.map(|client| {
            if client == dir {
                Role::Request
            } else {
                Role::Response
            }
        })
    }

    /// `dir`'s stream starts at `next_seq` (its SYN was seen): positions are known from then on, before
    /// any payload.
    pub fn started(&mut self, dir: Direction, next_seq: u32) {
        let pos = &mut self.next_seq[dir.index()];
        if pos.is_none() {
            *pos = Some(next_seq);
        }
    }

    /// `len` bytes starting at `seq` were delivered on `dir`.
    pub fn delivered(&mut self, dir: Direction, seq: u32, len: usize) {
        self.next_seq[dir.index()] = Some(seq.wrapping_add(len as u32));
    }

    /// `missing` bytes of `dir` will never come.
    pub fn skipped(&mut self, dir: Direction, missing: u64) {
        if let Some(pos) = self.next_seq[dir.index()].as_mut() {
            *pos = pos.wrapping_add(missing as u32);
        }
    }

    /// Where `dir` has got to (0 when never known).
    pub fn position(&self, dir: Direction) -> u32 {
        self.next_seq[dir.index()].unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_deliveries_and_gaps() {
        let mut s = Streams::new(Some(Direction::HighToLow));
        assert_eq!(s.role(Direction::HighToLow), Some(Role::Request));
        assert_eq!(s.role(Direction::LowToHigh), Some(Role::Response));
        s.skipped(Direction::LowToHigh, 10);
        assert_eq!(
            s.position(Direction::LowToHigh),
            0,
            "a gap before any position"
        );
        s.started(Direction::LowToHigh, u32::MAX);
        s.started(Direction::LowToHigh, 7);
        assert_eq!(
            s.position(Direction::LowToHigh),
            u32::MAX,
            "the first start stays"
        );
        s.delivered(Direction::LowToHigh, u32::MAX, 3);
        assert_eq!(s.position(Direction::LowToHigh), 2);
        s.skipped(Direction::LowToHigh, 5);
        assert_eq!(s.position(Direction::LowToHigh), 7);
        assert_eq!(Streams::new(None).role(Direction::LowToHigh), None);
    }
}
