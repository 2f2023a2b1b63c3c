//! The one test sink: it keeps a copy of every pair it is handed, so the test can look at what the
//! pipeline emitted while it runs and after, and passes the pair on to a real sink when it has one (a
//! Kafka producer, the sink a factory built). Clones share everything: give one to the pipeline, keep
//! one to read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node_worker::cluster::sink::ClusterSink;
use node_worker::sink::{OutgoingPair, PairRef, Sink, SinkError, SinkStats};

/// A recording sink; see the module documentation.
#[derive(Clone, Default)]
pub struct TestSink {
    /// Written next to each pair (the topic a factory built the sink for, say).
    label: String,
    /// Every pair of this sink and of the sinks made from it, in the order they came.
    log: Arc<Mutex<Vec<(String, OutgoingPair)>>>,
    /// The pairs this sink (and its clones) took: its statistics when it has no inner sink.
    sent: Arc<AtomicU64>,
    /// Shared by the clones, so that several pipelines can feed one producer in turn.
    inner: Option<Arc<Mutex<Box<dyn ClusterSink>>>>,
}

impl TestSink {
    pub fn new() -> TestSink {
        TestSink::default()
    }

    /// A new sink that records into the same log, each pair tagged `label`.
    pub fn labelled(&self, label: &str) -> TestSink {
        TestSink {
            label: label.to_string(),
            log: Arc::clone(&self.log),
            sent: Arc::default(),
            inner: None,
        }
    }

    /// A new sink that records into the same log and passes every pair on to `inner`, whose statistics
    /// it reports.
    pub fn tee(&self, inner: Box<dyn ClusterSink>) -> TestSink {
        TestSink {
            label: self.label.clone(),
            log: Arc::clone(&self.log),
            sent: Arc::default(),
            inner: Some(Arc::new(Mutex::new(inner))),
        }
    }

    /// The pairs so far.
    pub fn pairs(&self) -> Vec<OutgoingPair> {
        let log = self.log.lock().unwrap();
        log.iter().map(|(_, pair)| pair.clone()).collect()
    }

    /// The pairs so far with the label of the sink that took each.
    pub fn labelled_pairs(&self) -> Vec<(String, OutgoingPair)> {
        self.log.lock().unwrap().clone()
    }

    /// The pair messages so far, parsed.
    pub fn values(&self) -> Vec<serde_json::Value> {
        let log = self.log.lock().unwrap();
        log.iter()
            .map(|(_, pair)| serde_json::from_slice(&pair.value).unwrap())
            .collect()
    }
}

impl Sink for TestSink {
    fn send(&mut self, pair: PairRef<'_>) {
        self.log
            .lock()
            .unwrap()
            .push((self.label.clone(), pair.into()));
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(inner) = &self.inner {
            inner.lock().unwrap().send(pair);
        }
    }

    fn poll(&mut self) {
        if let Some(inner) = &self.inner {
            inner.lock().unwrap().poll();
        }
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), SinkError> {
        match &self.inner {
            Some(inner) => inner.lock().unwrap().flush(timeout),
            None => Ok(()),
        }
    }

    /// The inner sink's; without one, every pair taken counts as delivered.
    fn stats(&self) -> SinkStats {
        match &self.inner {
            Some(inner) => inner.lock().unwrap().stats(),
            None => {
                let n = self.sent.load(Ordering::Relaxed);
                SinkStats {
                    accepted: n,
                    delivered: n,
                    ..SinkStats::default()
                }
            }
        }
    }
}

impl ClusterSink for TestSink {
    fn purges(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.lock().unwrap().purges())
    }
}
