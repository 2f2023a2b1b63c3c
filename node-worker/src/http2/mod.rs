//! HTTP/2 with prior knowledge (h2c): one implementation of the application layer (`crate::app`),
//! beside HTTP/1.
//!
//! Layers, each pure and tested on its own: [`frame`] reads one direction's frames incrementally;
//! [`hpack`] (with [`huffman`]) decodes header blocks with a dynamic table per direction, tolerating
//! a capture that joined the connection late; [`head`] turns a decoded block into the
//! [`crate::app::head::MessageHead`] the rules and the pair message read; [`connection`] pairs each
//! stream's request and response in the application layer's exchange slots.

pub mod connection;
pub mod frame;
pub mod grpc;
pub mod head;
pub mod hpack;
pub mod huffman;
mod huffman_table;

pub use connection::Connection;
