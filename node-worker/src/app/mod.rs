//! The application layer: what the TCP layer's reassembled streams carry, protocol by protocol.

pub mod head;
