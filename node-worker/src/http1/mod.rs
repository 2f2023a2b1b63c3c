//! HTTP/1.x: one implementation of the application layer (`crate::app`).
//!
//! [`Connection`] reads a connection's two streams with a [`parser::HalfParser`] each (message
//! starts, heads, body framing) and pairs their messages in order ([`pairing`]).

pub mod connection;
pub mod framing;
pub mod head;
pub mod pairing;
pub mod parser;
pub mod start;
pub mod trust;

pub use connection::Connection;
