//! interceptor's node worker: capture -> decode -> TCP reassembly -> application layer (detection, then
//! HTTP/1 parsing and pairing) -> filters -> pair message -> sink. Each stage is a module with pure
//! logic; I/O (capture, sinks) sits at the edges. docs/DESIGN.md has the module map.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod body;
pub mod capture_loop;
pub mod cluster;
pub mod decode;
pub mod discovery;
pub mod filters;
pub mod http1;
pub mod http2;
pub mod json;
pub mod memory;
pub mod message;
pub mod pair_id;
pub mod pipeline;
pub mod redirect;
pub mod sink;
pub mod source;
pub mod stats;
pub mod synth;
pub mod tcp;
