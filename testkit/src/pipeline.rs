//! The pipeline tests' way in: frames written to a capture file, read back with libpcap, run through
//! the real pipeline, and what came out.

use std::net::SocketAddr;
use std::time::Duration;

use interceptor_crds::config::WorkerConfig;
use node_worker::pipeline::{Identity, Pipeline};
use node_worker::source::file::{FileEnd, FileSource};
use node_worker::source::{CaptureMode, InterfaceInfo};
use node_worker::stats::Counters;
use node_worker::synth::{write_pcap_file, Conversation, Frame};

use crate::sink::TestSink;

pub struct Outcome {
    pub pairs: Vec<serde_json::Value>,
    pub keys: Vec<String>,
    pub counters: Counters,
    pub peak_buffered: usize,
    pub end: FileEnd,
}

impl Outcome {
    pub fn drops(&self, reason: &str) -> u64 {
        self.counters
            .drops_by_reason()
            .find(|(r, _)| r.as_str() == reason)
            .map_or(0, |(_, n)| n)
    }

    /// (method, target, status) of each pair.
    pub fn summary(&self) -> Vec<(String, String, u64)> {
        self.pairs
            .iter()
            .map(|p| {
                (
                    p["request"]["method"].as_str().unwrap().to_string(),
                    p["request"]["path"].as_str().unwrap().to_string(),
                    p["response"]["status"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// The product defaults with every content filter off (so tests can focus on one rule).
pub fn open_config() -> WorkerConfig {
    let mut c = WorkerConfig::default();
    c.filters.content_types.clear();
    c.filters.exclude_user_agent_prefixes.clear();
    c.filters.exclude_headers.clear();
    c.filters.exclude_status_codes.clear();
    c.filters.exclude_paths.clear();
    c.redaction.mask_headers.clear();
    c
}

/// Writes the frames to a pcap file, reads it back with libpcap, and runs the pipeline on it.
pub fn run(frames: &[Frame], config: &WorkerConfig) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.pcap");
    write_pcap_file(&path, frames).unwrap();
    run_file(&path, config)
}

pub fn run_file(path: &std::path::Path, config: &WorkerConfig) -> Outcome {
    let sink = TestSink::new();
    let identity = Identity {
        node: "test-node".into(),
        interceptor: "test/interceptor".into(),
    };
    let mut pipeline = Pipeline::new(config, identity, Box::new(sink.clone()));
    let iface = pipeline.add_interface(InterfaceInfo {
        name: "test.pcap".into(),
        netns: None,
        mode: CaptureMode::File,
    });
    let mut source = FileSource::open(path).unwrap();
    let end = source.for_each(|p| pipeline.handle(iface, p));
    pipeline.finish(Duration::from_secs(1)).unwrap();
    let (left, peak_buffered) = pipeline.buffered_bytes();
    assert_eq!(left, 0, "every buffered byte is released at the end");
    Outcome {
        pairs: sink.values(),
        keys: sink.pairs().into_iter().map(|p| p.key).collect(),
        counters: pipeline.counters(),
        peak_buffered,
        end,
    }
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A new conversation between a client and a server in 10.0.0.0/8.
pub fn conversation(n: u16) -> Conversation {
    let mut c = Conversation::new(
        addr(&format!("10.0.0.1:{}", 40000 + n)),
        addr("10.0.0.2:8080"),
        1_700_000_000_000_000,
    );
    c.handshake();
    c
}

pub const JSON: (&str, &str) = ("Content-Type", "application/json");
