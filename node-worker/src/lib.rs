//! interceptor's node worker: capture -> decode -> TCP reassembly -> HTTP parsing -> pairing -> filters
//! -> pair message -> sink. Each stage is a module with pure logic; I/O (capture, sinks) sits at the edges.

pub mod discovery;
pub mod sink;
pub mod source;
pub mod stats;
