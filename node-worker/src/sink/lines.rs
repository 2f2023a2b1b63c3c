//! JSON Lines on stdout or in a file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use super::{OutgoingPair, Sink, SinkError, SinkStats};

/// Writes one pair per line. A write error (a full disk, a closed pipe) fails that pair and is counted;
/// it never stops the pipeline.
pub struct LinesSink {
    out: BufWriter<Box<dyn Write + Send>>,
    stats: SinkStats,
    /// Pairs written into the buffer but not yet flushed to the destination.
    unflushed: u64,
}

impl LinesSink {
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    pub fn file(path: &str) -> Result<Self, SinkError> {
        let file = File::create(path).map_err(|source| SinkError::Open {
            path: path.to_string(),
            source,
        })?;
        Ok(Self::new(Box::new(file)))
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        LinesSink {
            out: BufWriter::with_capacity(256 * 1024, out),
            stats: SinkStats::default(),
            unflushed: 0,
        }
    }

    fn record_error(&mut self, error: &io::Error, pairs: u64) {
        self.stats.failed += pairs;
        self.stats.last_error = Some(error.to_string());
    }
}

impl Sink for LinesSink {
    fn send(&mut self, pair: OutgoingPair) {
        self.stats.accepted += 1;
        // A BufWriter write only fails when it had to flush; pairs already in the buffer then failed too.
        let written = self
            .out
            .write_all(&pair.value)
            .and_then(|()| self.out.write_all(b"\n"));
        match written {
            Ok(()) => self.unflushed += 1,
            Err(e) => {
                let lost = self.unflushed + 1;
                self.unflushed = 0;
                self.record_error(&e, lost);
            }
        }
        // Keep `delivered` roughly current without a syscall per pair: count what the buffer let through.
        if self.out.buffer().is_empty() {
            self.stats.delivered += self.unflushed;
            self.unflushed = 0;
        }
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), SinkError> {
        match self.out.flush() {
            Ok(()) => {
                self.stats.delivered += self.unflushed;
                self.unflushed = 0;
                Ok(())
            }
            Err(e) => {
                let lost = self.unflushed;
                self.unflushed = 0;
                self.record_error(&e, lost);
                Err(SinkError::Io(e))
            }
        }
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            buffered_pairs: self.unflushed,
            buffered_bytes: self.out.buffer().len() as u64,
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(text: &str) -> OutgoingPair {
        OutgoingPair {
            key: "k".into(),
            value: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn writes_one_line_per_pair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = LinesSink::file(path.to_str().unwrap()).unwrap();
        sink.send(pair("{\"a\":1}"));
        sink.send(pair("{\"b\":2}"));
        sink.flush(Duration::from_secs(1)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        let stats = sink.stats();
        assert_eq!((stats.accepted, stats.delivered, stats.failed), (2, 2, 0));
    }

    #[test]
    fn a_full_disk_fails_pairs_and_counts_them() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let Ok(mut sink) = LinesSink::file("/dev/full") else {
            return;
        };
        let big = "x".repeat(300 * 1024);
        sink.send(pair(&big));
        sink.send(pair("{}"));
        assert!(sink.flush(Duration::from_secs(1)).is_err());
        let stats = sink.stats();
        assert_eq!(stats.accepted, 2);
        assert_eq!(stats.delivered, 0);
        assert_eq!(stats.failed, 2);
        assert!(stats.last_error.unwrap().contains("space"));
    }
}
