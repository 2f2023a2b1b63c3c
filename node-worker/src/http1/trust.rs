//! Whether a request can be trusted to pair with the next response, after request bytes were lost.
//!
//! A lost request may still be answered: its response then arrives where the next request we saw
//! expects its own. So after request bytes are lost, requests are not trusted (nor queued) until one
//! comes whose client had received more of the response stream than the last request before the loss
//! had. A client that waits for each response before sending the next request (most do) had by then
//! received the responses to whatever was lost.

use crate::tcp::reassembly::seq_diff;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// Nothing lost since the last trusted request.
    #[default]
    Trusted,
    /// Requests are trusted again from the first whose acknowledgment of the response stream goes
    /// beyond this one (that of the last request before the loss).
    AfterAck(u32),
    /// No request came before the loss: the next one is not trusted either, and its acknowledgment
    /// becomes the mark.
    MarkAtNextRequest,
}

impl Trust {
    /// Request bytes were lost; `last_request_ack` is the acknowledgment of the latest request seen.
    pub fn after_loss(last_request_ack: Option<u32>) -> Trust {
        match last_request_ack {
            Some(ack) => Trust::AfterAck(ack),
            None => Trust::MarkAtNextRequest,
        }
    }

    /// A request whose first segment acknowledged `ack` of the response stream: whether it is
    /// trusted. Trust, once regained, stays until the next loss.
    pub fn admit(&mut self, ack: u32) -> bool {
        match *self {
            Trust::Trusted => true,
            Trust::AfterAck(mark) if seq_diff(ack, mark) > 0 => {
                *self = Trust::Trusted;
                true
            }
            Trust::AfterAck(_) => false,
            Trust::MarkAtNextRequest => {
                *self = Trust::AfterAck(ack);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_comes_back_with_a_request_that_saw_more_responses() {
        let mut t = Trust::after_loss(Some(1000));
        assert!(
            !t.admit(1000),
            "the same acknowledgment: maybe answered by what was lost"
        );
        assert!(!t.admit(900));
        assert!(t.admit(1001));
        assert_eq!(t, Trust::Trusted);
        assert!(t.admit(0), "trusted until the next loss");
    }

    #[test]
    fn with_no_request_before_the_loss_the_next_one_sets_the_mark() {
        let mut t = Trust::after_loss(None);
        assert!(!t.admit(500));
        assert_eq!(t, Trust::AfterAck(500));
        assert!(!t.admit(500));
        assert!(t.admit(501));
    }

    #[test]
    fn acknowledgments_wrap_around() {
        let mut t = Trust::after_loss(Some(u32::MAX - 1));
        assert!(t.admit(3));
    }
}
