//! Where encoded pairs go: stdout or a file (JSON Lines), or Kafka.
//!
//! A sink owns its accounting: every pair handed to [`Sink::send`] ends up in exactly one of
//! delivered, dropped because the buffer was full, purged, or failed ([`SinkStats`]).

pub mod kafka;
mod lines;

use std::time::Duration;

use serde::Serialize;

pub use lines::LinesSink;

use crate::stats::DropReason;

/// One pair ready to leave the node, as the pipeline hands it to a sink: borrowed, so that the
/// pipeline encodes every pair into the same buffer; a sink copies what it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairRef<'a> {
    /// Partitioning key: keeps one service's pairs in order (the destination pod, else its address).
    pub key: &'a str,
    /// The pair message of DESIGN.md, as compact JSON without a trailing newline.
    pub value: &'a [u8],
}

/// A pair a sink keeps (see [`PairRef`] for the fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingPair {
    pub key: String,
    pub value: Vec<u8>,
}

impl OutgoingPair {
    pub fn view(&self) -> PairRef<'_> {
        PairRef {
            key: &self.key,
            value: &self.value,
        }
    }
}

impl From<PairRef<'_>> for OutgoingPair {
    fn from(pair: PairRef<'_>) -> Self {
        OutgoingPair {
            key: pair.key.to_owned(),
            value: pair.value.to_vec(),
        }
    }
}

/// What happened to the pairs handed to a sink. `accepted` equals the sum of the other outcomes plus
/// what is still buffered (`buffered_pairs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    pub accepted: u64,
    pub delivered: u64,
    pub dropped_full: u64,
    pub purged: u64,
    pub failed: u64,
    pub buffered_pairs: u64,
    pub buffered_bytes: u64,
    /// For network sinks: whether the destination is reachable now.
    pub connected: Option<bool>,
    pub last_error: Option<String>,
}

impl SinkStats {
    /// Pairs whose fate is known.
    pub fn settled(&self) -> u64 {
        self.delivered + self.dropped_full + self.purged + self.failed
    }
}

/// Why a sink could not be created or flushed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("flush did not finish within {0:?}; {1} pairs still buffered")]
    FlushTimeout(Duration, u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("kafka: {0}")]
    Kafka(String),
}

/// A destination for pairs. Implementations never block the pipeline for long and never grow without
/// bound: when they cannot keep up they drop and count.
pub trait Sink: Send {
    /// Hand over one pair. Its fate is accounted for in [`Sink::stats`].
    fn send(&mut self, pair: PairRef<'_>);

    /// Hand over one pair that `encode` writes (appending to the buffer it is given), as
    /// [`Sink::send`] does; if `encode` fails, nothing is handed over and its error is returned. By
    /// default the pair is written into `scratch` (cleared first), then sent; a sink that keeps the
    /// bytes as they are may have them written where it keeps them, saving a copy of every pair.
    fn encode_and_send(
        &mut self,
        key: &str,
        scratch: &mut Vec<u8>,
        encode: &mut Encode<'_>,
    ) -> Result<(), DropReason> {
        encode_then_send(self, key, scratch, encode)
    }

    /// Housekeeping between packets (delivery reports, purge after an outage). Cheap when idle.
    fn poll(&mut self) {}

    /// Deliver what is buffered, waiting at most `timeout`.
    fn flush(&mut self, timeout: Duration) -> Result<(), SinkError>;

    fn stats(&self) -> SinkStats;
}

/// Writes one pair message into the buffer it is given, after what is there; an error drops the pair.
pub type Encode<'a> = dyn FnMut(&mut Vec<u8>) -> Result<(), DropReason> + 'a;

/// [`Sink::encode_and_send`] as every sink may do it: into `scratch`, then [`Sink::send`].
pub fn encode_then_send<S: Sink + ?Sized>(
    sink: &mut S,
    key: &str,
    scratch: &mut Vec<u8>,
    encode: &mut Encode<'_>,
) -> Result<(), DropReason> {
    scratch.clear();
    encode(scratch)?;
    sink.send(PairRef {
        key,
        value: scratch,
    });
    Ok(())
}

/// A sink that keeps pairs in memory: for tests and for embedding.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub pairs: Vec<OutgoingPair>,
}

impl Sink for MemorySink {
    fn send(&mut self, pair: PairRef<'_>) {
        self.pairs.push(pair.into());
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), SinkError> {
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        let n = self.pairs.len() as u64;
        SinkStats {
            accepted: n,
            delivered: n,
            ..SinkStats::default()
        }
    }
}
