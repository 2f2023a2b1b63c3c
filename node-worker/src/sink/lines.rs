//! JSON Lines on stdout or in a file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::{Encode, PairRef, Sink, SinkError, SinkStats};
use crate::stats::DropReason;

/// Pairs are written in batches of about this many bytes...
const BATCH_BYTES: usize = 256 * 1024;

/// A batch that grew past this (a rare large pair) gives its memory back once written.
const BATCH_KEEP_BYTES: usize = 4 << 20;

/// ...or once the oldest pair of a batch has waited this long (live capture on a quiet node: someone
/// may be watching stdout).
const BATCH_MAX_WAIT: Duration = Duration::from_millis(200);

/// Writes one pair per line. A write error (a full disk, a closed pipe) fails the pairs not yet written
/// in full and is counted; it never stops the pipeline. Pairs are batched, and each is counted as
/// delivered only once its whole line has reached the destination, so that after a full disk the file
/// holds exactly `delivered` complete lines (and at most one cut line, which is closed before anything
/// else is written).
pub struct LinesSink {
    out: Box<dyn Write + Send>,
    batch: Vec<u8>,
    /// Where each pair of the batch ends in it.
    ends: VecDeque<usize>,
    /// A line was cut by a failed write: the next write first ends it.
    cut_line: bool,
    /// When the first pair of the current batch came.
    batch_since: Option<Instant>,
    max_wait: Duration,
    stats: SinkStats,
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
            out,
            batch: Vec::with_capacity(BATCH_BYTES),
            ends: VecDeque::new(),
            cut_line: false,
            batch_since: None,
            max_wait: BATCH_MAX_WAIT,
            stats: SinkStats::default(),
        }
    }

    /// How long a pair may wait in the batch before [`Sink::poll`] writes it out.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Writes the batch out, counting each pair as delivered once its line is written in full, and
    /// the rest of the batch as failed when a write fails.
    fn write_batch(&mut self) -> Result<(), io::Error> {
        let result = self.try_write_batch();
        if let Err(e) = &result {
            self.stats.failed += self.ends.len() as u64;
            self.stats.last_error = Some(e.to_string());
        }
        self.batch.clear();
        if self.batch.capacity() > BATCH_KEEP_BYTES {
            self.batch = Vec::with_capacity(BATCH_BYTES);
        }
        self.ends.clear();
        self.batch_since = None;
        result
    }

    /// Accounts for the line just appended to the batch at `start` (its newline included), and
    /// writes the batch out once full.
    fn line_added(&mut self, start: usize) {
        self.stats.accepted += 1;
        if start == 0 {
            self.batch_since = Some(Instant::now());
        }
        self.ends.push_back(self.batch.len());
        if self.batch.len() >= BATCH_BYTES {
            // A failure is counted; the next batch tries again (the disk may have room by then).
            let _ = self.write_batch();
        }
    }

    fn try_write_batch(&mut self) -> Result<(), io::Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if self.cut_line {
            self.out.write_all(b"\n")?;
            self.cut_line = false;
        }
        let mut written = 0;
        while written < self.batch.len() {
            match self.out.write(&self.batch[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    while self.ends.front().is_some_and(|&end| end <= written) {
                        self.ends.pop_front();
                        self.stats.delivered += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let at_line_start = written == 0 || self.batch[written - 1] == b'\n';
                    self.cut_line = !at_line_start;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl Sink for LinesSink {
    fn send(&mut self, pair: PairRef<'_>) {
        let start = self.batch.len();
        self.batch.extend_from_slice(pair.value);
        self.batch.push(b'\n');
        self.line_added(start);
    }

    /// The pair written straight into the batch: no copy of it (a copy cost a tenth of the
    /// instructions per pair).
    fn encode_and_send(
        &mut self,
        _key: &str,
        _scratch: &mut Vec<u8>,
        encode: &mut Encode<'_>,
    ) -> Result<(), DropReason> {
        let start = self.batch.len();
        if let Err(reason) = encode(&mut self.batch) {
            // Nothing of a dropped pair stays in the batch.
            self.batch.truncate(start);
            return Err(reason);
        }
        self.batch.push(b'\n');
        self.line_added(start);
        Ok(())
    }

    fn poll(&mut self) {
        if self
            .batch_since
            .is_some_and(|since| since.elapsed() >= self.max_wait)
        {
            // A failure is counted, as in `send`.
            let _ = self.write_batch();
        }
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), SinkError> {
        self.write_batch().map_err(SinkError::Io)?;
        self.out.flush().map_err(|e| {
            self.stats.last_error = Some(e.to_string());
            SinkError::Io(e)
        })
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            buffered_pairs: self.ends.len() as u64,
            buffered_bytes: self.batch.len() as u64,
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutgoingPair;

    fn pair(text: &str) -> OutgoingPair {
        OutgoingPair {
            key: "k".into(),
            value: text.as_bytes().to_vec(),
        }
    }

    /// Flushes `sink`, then checks what its file holds and its (accepted, delivered, failed) counts.
    fn flushed_as(
        sink: &mut LinesSink,
        path: &std::path::Path,
        text: &str,
        counts: (u64, u64, u64),
    ) {
        sink.flush(Duration::from_secs(1)).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), text);
        let stats = sink.stats();
        assert_eq!((stats.accepted, stats.delivered, stats.failed), counts);
    }

    #[test]
    fn writes_one_line_per_pair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = LinesSink::file(path.to_str().unwrap()).unwrap();
        sink.send(pair("{\"a\":1}").view());
        sink.send(pair("{\"b\":2}").view());
        flushed_as(&mut sink, &path, "{\"a\":1}\n{\"b\":2}\n", (2, 2, 0));
    }

    #[test]
    fn pairs_encoded_into_the_batch_are_lines_and_a_failed_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = LinesSink::file(path.to_str().unwrap()).unwrap();
        let mut scratch = Vec::new();
        let mut ok = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"{\"a\":1}");
            Ok(())
        };
        sink.encode_and_send("k", &mut scratch, &mut ok).unwrap();
        let mut fails = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"{\"partial\":");
            Err(DropReason::DecodedTooLarge)
        };
        assert_eq!(
            sink.encode_and_send("k", &mut scratch, &mut fails),
            Err(DropReason::DecodedTooLarge)
        );
        sink.send(pair("{\"b\":2}").view());
        flushed_as(&mut sink, &path, "{\"a\":1}\n{\"b\":2}\n", (2, 2, 0));
        assert!(
            scratch.is_empty(),
            "written into the batch, not the scratch buffer"
        );
    }

    #[test]
    fn a_batch_is_written_once_its_first_pair_has_waited_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let read = || std::fs::read_to_string(&path).unwrap();
        let mut patient = LinesSink::file(path.to_str().unwrap())
            .unwrap()
            .with_max_wait(Duration::from_secs(3600));
        patient.send(pair("{\"a\":1}").view());
        patient.poll();
        assert_eq!(read(), "", "written before its time");
        assert_eq!(patient.stats().buffered_pairs, 1);

        let mut eager = LinesSink::file(path.to_str().unwrap())
            .unwrap()
            .with_max_wait(Duration::ZERO);
        eager.poll();
        assert_eq!(read(), "");
        eager.send(pair("{\"b\":2}").view());
        eager.poll();
        assert_eq!(read(), "{\"b\":2}\n");
        let stats = eager.stats();
        assert_eq!((stats.delivered, stats.buffered_pairs), (1, 0));
    }

    #[test]
    fn a_full_disk_fails_pairs_and_counts_them() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let Ok(mut sink) = LinesSink::file("/dev/full") else {
            return;
        };
        let big = "x".repeat(300 * 1024);
        sink.send(pair(&big).view());
        sink.send(pair("{}").view());
        assert!(sink.flush(Duration::from_secs(1)).is_err());
        let stats = sink.stats();
        assert_eq!(stats.accepted, 2);
        assert_eq!(stats.delivered, 0);
        assert_eq!(stats.failed, 2);
        assert!(stats.last_error.unwrap().contains("space"));
    }

    /// Accepts `room` bytes, then fails every write with ENOSPC until given more room.
    struct Small {
        data: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        room: std::sync::Arc<std::sync::Mutex<usize>>,
    }

    impl Write for Small {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(*room);
            *room -= n;
            self.data.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_disk_that_fills_part_way_delivers_whole_lines_only() {
        let data = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let room = std::sync::Arc::new(std::sync::Mutex::new(20));
        let mut sink = LinesSink::new(Box::new(Small {
            data: data.clone(),
            room: room.clone(),
        }));
        for _ in 0..4 {
            sink.send(pair("{\"abcdef\":1}").view()); // 12 bytes and a newline
        }
        assert!(sink.flush(Duration::from_secs(1)).is_err());
        let stats = sink.stats();
        assert_eq!((stats.accepted, stats.delivered, stats.failed), (4, 1, 3));
        // Room again: the cut line is ended before the next pair.
        *room.lock().unwrap() = 1000;
        sink.send(pair("{}").view());
        sink.flush(Duration::from_secs(1)).unwrap();
        let stats = sink.stats();
        assert_eq!((stats.accepted, stats.delivered, stats.failed), (5, 2, 3));
        let text = String::from_utf8(data.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "{\"abcdef\":1}\n{\"abcde\n{}\n");
    }
}
