//! HTTP/1.x: message heads, body framing, and the incremental per-direction parser.

pub mod framing;
pub mod head;
pub mod parser;
