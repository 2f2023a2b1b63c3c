//! The sink of the in-cluster worker: one whose producer can be replaced while pairs flow, so that a
//! change of the `kafka` section of the ConfigMap applies without a restart and without losing what is
//! buffered.
//!
//! The config watch builds the new producer (off the capture thread: building it can fail, and then the
//! config is refused) and installs it in the [`SinkSwitch`]; the capture thread's [`SwitchableSink`]
//! picks it up before its next pair. The old producer keeps delivering what it holds on a thread of its
//! own for a bounded time; what it could not deliver by then is counted as purged. The statistics add up
//! over every producer the worker had, so counters never go backwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use interceptor_crds::config::KafkaConfig;

use crate::sink::kafka::KafkaSink;
use crate::sink::{
    encode_then_send, Encode, LinesSink, MemorySink, PairRef, Sink, SinkError, SinkStats,
};
use crate::stats::DropReason;

/// A sink as the in-cluster worker uses it: [`Sink`], plus what the status reports about it.
pub trait ClusterSink: Sink {
    /// How many times the buffer was purged after an outage (Kafka); 0 for sinks that never purge.
    fn purges(&self) -> u64 {
        0
    }
}

impl ClusterSink for KafkaSink {
    fn purges(&self) -> u64 {
        KafkaSink::purges(self)
    }
}

impl ClusterSink for LinesSink {}

impl ClusterSink for MemorySink {}

/// Builds the sink for a `kafka` section.
pub trait SinkFactory: Send + Sync {
    fn build(&self, kafka: &KafkaConfig) -> Result<Box<dyn ClusterSink>, SinkError>;

    /// Whether a change of the `kafka` section needs a new sink (not for sinks that ignore it).
    fn follows_kafka_config(&self) -> bool {
        true
    }
}

/// The production sink: Kafka, with the credentials from the environment (`KafkaSink::new` merges
/// them into the properties and keeps them out of logs).
pub struct KafkaFactory {
    pub node: String,
}

impl SinkFactory for KafkaFactory {
    fn build(&self, kafka: &KafkaConfig) -> Result<Box<dyn ClusterSink>, SinkError> {
        Ok(Box::new(KafkaSink::new(kafka, &self.node)?))
    }
}

/// JSON Lines on stdout or in a file instead of Kafka (debugging a node; tests).
pub enum LinesFactory {
    Stdout,
    File(String),
}

impl SinkFactory for LinesFactory {
    fn build(&self, _kafka: &KafkaConfig) -> Result<Box<dyn ClusterSink>, SinkError> {
        Ok(match self {
            LinesFactory::Stdout => Box::new(LinesSink::stdout()),
            LinesFactory::File(path) => Box::new(LinesSink::file(path)?),
        })
    }

    fn follows_kafka_config(&self) -> bool {
        false
    }
}

/// Statistics and purges of one sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    stats: SinkStats,
    purges: u64,
}

#[derive(Default)]
struct Retired {
    /// Sums over the producers that are gone.
    finished: Tally,
    /// Producers still delivering what they held when they were replaced.
    draining: BTreeMap<u64, Tally>,
    next_id: u64,
    threads: Vec<JoinHandle<()>>,
}

/// Where the config watch leaves a new producer for the capture thread, and where replaced producers
/// account for themselves.
#[derive(Default)]
pub struct SinkSwitch {
    has_pending: AtomicBool,
    /// The current producer's purges, kept by the capture thread's sink (for the status).
    current_purges: AtomicU64,
    pending: Mutex<Option<Box<dyn ClusterSink>>>,
    retired: Mutex<Retired>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters behind a poisoned lock are still the best there is.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `into += from`, for the counters; the gauges (buffered) add up too: each producer holds its own.
fn add(into: &mut SinkStats, from: &SinkStats) {
    into.accepted += from.accepted;
    into.delivered += from.delivered;
    into.dropped_full += from.dropped_full;
    into.purged += from.purged;
    into.failed += from.failed;
    into.buffered_pairs += from.buffered_pairs;
    into.buffered_bytes += from.buffered_bytes;
}

impl SinkSwitch {
    pub fn new() -> Arc<SinkSwitch> {
        Arc::new(SinkSwitch::default())
    }

    /// Hand a new producer to the capture thread (it replaces one installed but not yet picked up).
    pub fn install(&self, sink: Box<dyn ClusterSink>) {
        let replaced = lock(&self.pending).replace(sink);
        self.has_pending.store(true, Ordering::Release);
        // A producer that never received a pair has nothing to deliver.
        drop(replaced);
    }

    fn take(&self) -> Option<Box<dyn ClusterSink>> {
        if !self.has_pending.swap(false, Ordering::Acquire) {
            return None;
        }
        lock(&self.pending).take()
    }

    /// Purges of the buffer over every producer so far.
    pub fn purges(&self) -> u64 {
        self.retired_tally().purges + self.current_purges.load(Ordering::Relaxed)
    }

    /// Producers replaced and still delivering.
    pub fn draining(&self) -> usize {
        lock(&self.retired).draining.len()
    }

    fn retired_tally(&self) -> Tally {
        let retired = lock(&self.retired);
        let mut sum = retired.finished.clone();
        for t in retired.draining.values() {
            add(&mut sum.stats, &t.stats);
            sum.purges += t.purges;
        }
        sum
    }

    /// Let `old` deliver what it holds for at most `timeout` on a thread of its own.
    fn retire(self: &Arc<Self>, old: Box<dyn ClusterSink>, timeout: Duration) {
        let id = {
            let mut retired = lock(&self.retired);
            let id = retired.next_id;
            retired.next_id += 1;
            retired.draining.insert(
                id,
                Tally {
                    stats: old.stats(),
                    purges: old.purges(),
                },
            );
            id
        };
        let switch = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("sink-drain".into())
            .spawn(move || switch.drain(id, old, timeout));
        match spawned {
            Ok(handle) => lock(&self.retired).threads.push(handle),
            Err(e) => {
                // No thread: the producer (moved into the failed closure) is dropped; its buffer is lost.
                tracing::warn!(error = %e, "cannot start a thread to drain the replaced sink");
                let mut retired = lock(&self.retired);
                if let Some(mut lost) = retired.draining.remove(&id) {
                    lost.stats.purged += lost.stats.buffered_pairs;
                    lost.stats.buffered_pairs = 0;
                    lost.stats.buffered_bytes = 0;
                    add(&mut retired.finished.stats, &lost.stats);
                    retired.finished.purges += lost.purges;
                }
            }
        }
    }

    fn drain(&self, id: u64, mut old: Box<dyn ClusterSink>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let done = old.flush(remaining.min(Duration::from_millis(250))).is_ok();
            let tally = Tally {
                stats: old.stats(),
                purges: old.purges(),
            };
            lock(&self.retired).draining.insert(id, tally);
            if done || remaining.is_zero() {
                break;
            }
        }
        let mut last = Tally {
            stats: old.stats(),
            purges: old.purges(),
        };
        if last.stats.buffered_pairs > 0 {
            tracing::warn!(
                pairs = last.stats.buffered_pairs,
                "the replaced sink could not deliver everything in time; the rest is purged"
            );
        }
        // Dropping the producer discards what it still holds: count it as purged.
        last.stats.purged += last.stats.buffered_pairs;
        last.stats.buffered_pairs = 0;
        last.stats.buffered_bytes = 0;
        drop(old);
        let mut retired = lock(&self.retired);
        retired.draining.remove(&id);
        add(&mut retired.finished.stats, &last.stats);
        retired.finished.purges += last.purges;
    }

    /// Wait until every replaced producer has finished, at most until `deadline`.
    fn wait_drained(&self, deadline: Instant) -> bool {
        loop {
            if self.draining() == 0 {
                let threads: Vec<_> = lock(&self.retired).threads.drain(..).collect();
                for t in threads {
                    let _ = t.join();
                }
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The capture thread's sink: delegates to the current producer and swaps in a new one when the switch
/// holds one.
pub struct SwitchableSink {
    current: Option<Box<dyn ClusterSink>>,
    switch: Arc<SinkSwitch>,
    /// How long a replaced producer may take to deliver what it holds.
    drain_timeout: Duration,
    /// Pairs that arrived while there was no producer at all (never, in practice: the loop starts with
    /// one).
    orphans: SinkStats,
}

impl SwitchableSink {
    pub fn new(switch: Arc<SinkSwitch>, drain_timeout: Duration) -> SwitchableSink {
        let mut sink = SwitchableSink {
            current: None,
            switch,
            drain_timeout,
            orphans: SinkStats::default(),
        };
        sink.pick_up();
        sink
    }

    fn pick_up(&mut self) {
        if let Some(new) = self.switch.take() {
            self.switch
                .current_purges
                .store(new.purges(), Ordering::Relaxed);
            if let Some(old) = self.current.replace(new) {
                tracing::info!("sink replaced; the previous one delivers what it holds");
                self.switch.retire(old, self.drain_timeout);
            }
        }
    }

    /// Purges over every producer so far.
    pub fn purges(&self) -> u64 {
        self.switch.retired_tally().purges + self.current.as_ref().map_or(0, |c| c.purges())
    }
}

impl Sink for SwitchableSink {
    fn send(&mut self, pair: PairRef<'_>) {
        self.pick_up();
        match self.current.as_mut() {
            Some(sink) => sink.send(pair),
            None => {
                self.orphans.accepted += 1;
                self.orphans.failed += 1;
                self.orphans.last_error = Some("no sink configured".into());
            }
        }
    }

    /// Through the current producer, which may encode the pair where it keeps it.
    fn encode_and_send(
        &mut self,
        key: &str,
        scratch: &mut Vec<u8>,
        encode: &mut Encode<'_>,
    ) -> Result<(), DropReason> {
        self.pick_up();
        match self.current.as_mut() {
            Some(sink) => sink.encode_and_send(key, scratch, encode),
            None => encode_then_send(self, key, scratch, encode),
        }
    }

    fn poll(&mut self) {
        self.pick_up();
        if let Some(sink) = self.current.as_mut() {
            sink.poll();
            self.switch
                .current_purges
                .store(sink.purges(), Ordering::Relaxed);
        }
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        let result = match self.current.as_mut() {
            Some(sink) => sink.flush(timeout),
            None => Ok(()),
        };
        if !self.switch.wait_drained(deadline) {
            let buffered = self.switch.retired_tally().stats.buffered_pairs;
            return Err(SinkError::FlushTimeout(timeout, buffered));
        }
        result
    }

    fn stats(&self) -> SinkStats {
        let mut sum = self.switch.retired_tally().stats;
        add(&mut sum, &self.orphans);
        match self.current.as_ref() {
            Some(sink) => {
                let now = sink.stats();
                add(&mut sum, &now);
                sum.connected = now.connected;
                sum.last_error = now.last_error;
            }
            None => sum.last_error = self.orphans.last_error.clone(),
        }
        sum
    }
}

impl ClusterSink for SwitchableSink {
    fn purges(&self) -> u64 {
        SwitchableSink::purges(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutgoingPair;

    /// A sink that holds pairs until told to deliver them, shared with the test.
    #[derive(Clone, Default)]
    struct Held(Arc<Mutex<HeldState>>);

    #[derive(Default)]
    struct HeldState {
        held: Vec<OutgoingPair>,
        delivered: Vec<OutgoingPair>,
        accepted: u64,
        deliver_on_flush: bool,
    }

    impl Sink for Held {
        fn send(&mut self, pair: PairRef<'_>) {
            let mut s = self.0.lock().unwrap();
            s.accepted += 1;
            s.held.push(pair.into());
        }
        fn flush(&mut self, _timeout: Duration) -> Result<(), SinkError> {
            let mut s = self.0.lock().unwrap();
            if s.deliver_on_flush {
                let held: Vec<_> = s.held.drain(..).collect();
                s.delivered.extend(held);
                Ok(())
            } else {
                Err(SinkError::FlushTimeout(Duration::ZERO, s.held.len() as u64))
            }
        }
        fn stats(&self) -> SinkStats {
            let s = self.0.lock().unwrap();
            SinkStats {
                accepted: s.accepted,
                delivered: s.delivered.len() as u64,
                buffered_pairs: s.held.len() as u64,
                connected: Some(true),
                ..SinkStats::default()
            }
        }
    }

    impl ClusterSink for Held {
        fn purges(&self) -> u64 {
            1
        }
    }

    fn pair(n: u32) -> OutgoingPair {
        OutgoingPair {
            key: "k".into(),
            value: format!("{n}").into_bytes(),
        }
    }

    #[test]
    fn a_replaced_producer_delivers_what_it_held_and_counts_add_up() {
        let switch = SinkSwitch::new();
        let first = Held::default();
        switch.install(Box::new(first.clone()));
        let mut sink = SwitchableSink::new(Arc::clone(&switch), Duration::from_secs(5));
        sink.send(pair(1).view());
        sink.send(pair(2).view());
        assert_eq!(sink.stats().buffered_pairs, 2);

        let second = Held::default();
        second.0.lock().unwrap().deliver_on_flush = true;
        first.0.lock().unwrap().deliver_on_flush = true;
        switch.install(Box::new(second.clone()));
        sink.send(pair(3).view());
        assert_eq!(
            second.0.lock().unwrap().held.len(),
            1,
            "new pairs go to the new producer"
        );
        sink.flush(Duration::from_secs(5)).unwrap();
        assert_eq!(switch.draining(), 0);
        let delivered: Vec<_> = first.0.lock().unwrap().delivered.clone();
        assert_eq!(
            delivered,
            vec![pair(1), pair(2)],
            "nothing buffered was lost"
        );
        let stats = sink.stats();
        assert_eq!(
            (
                stats.accepted,
                stats.delivered,
                stats.buffered_pairs,
                stats.purged
            ),
            (3, 3, 0, 0)
        );
        assert_eq!(sink.purges(), 2, "purges add up over producers");
    }

    #[test]
    fn what_a_replaced_producer_cannot_deliver_in_time_is_counted_as_purged() {
        let switch = SinkSwitch::new();
        let stuck = Held::default();
        switch.install(Box::new(stuck.clone()));
        let mut sink = SwitchableSink::new(Arc::clone(&switch), Duration::from_millis(50));
        sink.send(pair(1).view());
        switch.install(Box::new(Held::default()));
        sink.poll();
        assert!(switch.wait_drained(Instant::now() + Duration::from_secs(5)));
        let stats = sink.stats();
        assert_eq!(
            (stats.accepted, stats.purged, stats.buffered_pairs),
            (1, 1, 0)
        );
        assert_eq!(stats.settled() + stats.buffered_pairs, stats.accepted);
    }

    #[test]
    fn without_any_producer_pairs_fail_and_are_counted() {
        let mut sink = SwitchableSink::new(SinkSwitch::new(), Duration::from_secs(1));
        sink.send(pair(1).view());
        let stats = sink.stats();
        assert_eq!((stats.accepted, stats.failed), (1, 1));
        assert!(stats.last_error.is_some());
    }
}
