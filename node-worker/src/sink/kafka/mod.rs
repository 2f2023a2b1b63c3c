//! Pairs to a Kafka topic through librdkafka (`rdkafka`), with a buffer bounded in bytes, a purge after an
//! outage, and delivery accounting.
//!
//! - The buffer is librdkafka's own queue, bounded by our accounting: a pair whose bytes (key, value,
//!   headers and librdkafka's bookkeeping) would take the queued total over `kafka.bufferBytes` is dropped and counted
//!   (`dropped_full`); so is a pair librdkafka refuses because its queue is full.
//! - Kafka counts as unreachable while pairs are waiting and none has been delivered: when that lasts
//!   `kafka.purgeAfterSeconds`, the producer's queue (and what is in flight) is purged and the pairs are
//!   counted as `purged`. librdkafka keeps reconnecting, so delivery resumes when Kafka comes back.
//! - Every pair handed to [`Sink::send`] ends in exactly one of delivered, dropped_full, purged or failed
//!   (the Kafka error is kept in `last_error`); until then it is counted in `buffered_pairs`.
//! - A background thread serves delivery reports and purges, so accounting stays current even when the
//!   pipeline is idle; [`Sink::poll`] is cheap.
//! - A missing topic is reported as an error naming it; with `kafka.createTopic` it is created.
//! - Secret properties (passwords, keys, tokens) never appear in logs, errors or `Debug` output.
//!
//! This module is the sink itself (producing, flushing, the polling and topic threads). The rest is in
//! `config` (the librdkafka configuration, pure), `delivery` (the accounting and the purge clock, pure),
//! `topic` (the topic check and creation) and `context` (what librdkafka's callbacks share with the sink).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use interceptor_crds::config::KafkaConfig;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};

use super::{PairRef, Sink, SinkError, SinkStats};
use config::{admin_config, client_config, description, redact, secret_values, with_credentials};
use context::{Shared, SinkContext};
use delivery::Outcome;
use topic::{NewTopicSpec, TopicChecker};

mod config;
mod context;
mod delivery;
mod log_limit;
mod topic;

pub use topic::TopicState;

/// Message header naming the schema of the value.
pub const SCHEMA_HEADER: &str = "schema";
/// The schema of the message value (DESIGN.md, pair message).
pub const SCHEMA: &str = "interceptor.pair/v1";
/// Message header with the media type of the value.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const CONTENT_TYPE: &str = "application/json";

/// Bytes a message's headers add to its size in the buffer.
const HEADER_BYTES: u64 =
    (SCHEMA_HEADER.len() + SCHEMA.len() + CONTENT_TYPE_HEADER.len() + CONTENT_TYPE.len()) as u64;

/// What librdkafka holds for each waiting message beside its bytes: the message (`rd_kafka_msg_t`,
/// about 200 bytes, with the payload copied into the same allocation), the header list and its two
/// headers (four allocations), and the allocator's own overhead. Counted in the buffer so that
/// `kafka.bufferBytes` bounds the memory waiting pairs really take: without it, a full 64 MiB buffer of
/// small pairs took the worker's RSS past 100 MiB (`make bench`, Kafka at 10 000 pairs/s).
const BOOKKEEPING_BYTES: u64 = 512;

/// How long one `poll` of the background thread lasts: delivery reports are served as they come
/// within it; between two, the thread checks for a due purge and for the sink stopping.
///
/// Long, and not a whole number of milliseconds, on purpose: rdkafka's `poll(d)` waits in librdkafka for
/// the time left truncated to whole milliseconds, then polls without waiting, in a loop, until `d` has
/// passed; so each `poll` ends by spinning for the fraction of a millisecond the truncation left. With
/// exactly 50 ms, an idle worker spun the last millisecond of every 50: 1.7 % of a core (`make bench`,
/// BENCH_NODE). The 20 µs over a whole millisecond leave nothing to spin on when no report came; when
/// one came mid-way the spin is at most a millisecond per `poll`, 0.4 % of a core at 250 ms. A purge is
/// still due within a quarter of a second, and stopping waits as long at most.
const POLL_INTERVAL: Duration = Duration::from_micros(250_020);

/// Sends pairs to Kafka. See the module documentation.
pub struct KafkaSink {
    producer: Arc<BaseProducer<SinkContext>>,
    shared: Arc<Shared>,
    create_topic: Option<NewTopicSpec>,
    admin_config: ClientConfig,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Brokers, topic, client id and properties with secrets masked: for `Debug` and logs.
    description: String,
}

impl KafkaSink {
    /// A sink producing to `config.topic` on `config.brokers`. `node` names this worker: the client id is
    /// `config.client_id`, else `interceptor-<node>`. Credentials the operator passes in environment
    /// variables (`INTERCEPTOR_KAFKA_SASL_PASSWORD`, ...; see `worker_env`) are added to the properties.
    /// A config that `KafkaConfig::validate` refuses is refused here too (`SinkError::Config`).
    ///
    /// Does not wait for Kafka: the worker starts while Kafka is down and pairs wait in the buffer. A
    /// background check reports a missing topic (or creates it with `config.create_topic`); call
    /// [`KafkaSink::ensure_topic`] to wait for that answer.
    pub fn new(config: &KafkaConfig, node: &str) -> Result<KafkaSink, SinkError> {
        let config = with_credentials(config, |name| std::env::var(name).ok());
        Self::build(&config, node)
    }

    fn build(config: &KafkaConfig, node: &str) -> Result<KafkaSink, SinkError> {
        let client_config = client_config(config, node)?;
        let secrets = secret_values(config);
        let shared = Arc::new(Shared::new(
            &config.topic,
            secrets.clone(),
            config.buffer_bytes,
            Duration::from_secs(config.purge_after_seconds.max(1)),
        ));
        let context = SinkContext {
            shared: Arc::clone(&shared),
        };
        let producer: BaseProducer<SinkContext> = client_config
            .create_with_context(context)
            .map_err(|e| SinkError::Kafka(redact(&e.to_string(), &secrets)))?;
        let create_topic = config.create_topic.then(|| NewTopicSpec {
            partitions: i32::try_from(config.topic_partitions).unwrap_or(i32::MAX),
            replication: config.topic_replication_factor,
        });
        let mut sink = KafkaSink {
            producer: Arc::new(producer),
            shared,
            create_topic,
            admin_config: admin_config(config, node),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            description: description(config, node),
        };
        sink.spawn_threads()?;
        tracing::info!("kafka sink: {}", sink.description);
        Ok(sink)
    }

    fn spawn_threads(&mut self) -> Result<(), SinkError> {
        let (producer, shared, stop) = (
            Arc::clone(&self.producer),
            Arc::clone(&self.shared),
            Arc::clone(&self.stop),
        );
        let poller = thread::Builder::new()
            .name("kafka-poll".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    producer.poll(POLL_INTERVAL);
                    purge_if_due(&producer, &shared);
                }
            })?;
        self.threads.push(poller);

        let checker = self.topic_checker();
        let stop = Arc::clone(&self.stop);
        let topic_thread = thread::Builder::new()
            .name("kafka-topic".into())
            .spawn(move || checker.run_until_known(&stop))?;
        // Not joined on drop: it may be waiting for a Kafka that does not answer (at most a few seconds),
        // and shutdown must not wait for that. It stops at its next look at `stop`.
        drop(topic_thread);
        Ok(())
    }

    fn topic_checker(&self) -> TopicChecker {
        TopicChecker {
            producer: Arc::clone(&self.producer),
            shared: Arc::clone(&self.shared),
            create: self.create_topic,
            admin_config: self.admin_config.clone(),
        }
    }

    /// Wait (at most `timeout`) until it is known whether the topic exists, creating it when
    /// `kafka.createTopic` is set. A missing topic is an error naming it; so is a Kafka that does not
    /// answer in time.
    pub fn ensure_topic(&self, timeout: Duration) -> Result<TopicState, SinkError> {
        self.topic_checker().wait_until_known(timeout)
    }

    /// What is known about the topic so far.
    pub fn topic_state(&self) -> TopicState {
        self.shared.lock().topic.unwrap_or(TopicState::Unknown)
    }

    /// The topic pairs go to.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// How many times the buffer was purged after an outage.
    pub fn purges(&self) -> u64 {
        self.shared.lock().ledger.purges
    }

    /// Messages in librdkafka's queues (waiting, in flight, or with a delivery report not yet served).
    pub fn producer_queue_len(&self) -> u64 {
        u64::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }

    /// Flush, then purge what could not be delivered within `timeout` (counted as purged), so that every
    /// accepted pair is settled. For the end of the process.
    pub fn shutdown(&mut self, timeout: Duration) -> SinkStats {
        if let Err(e) = self.flush(timeout) {
            tracing::warn!("kafka: {e}; purging the rest");
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            // The purge's delivery reports are served by the polling thread.
            wait_until(Instant::now() + Duration::from_secs(2), || {
                self.shared.lock().ledger.stats.buffered_pairs == 0
            });
        }
        self.stats()
    }
}

fn purge_if_due(producer: &BaseProducer<SinkContext>, shared: &Shared) {
    let due = shared
        .lock()
        .ledger
        .purge_due(Instant::now(), shared.purge_after);
    if let Some(due) = due {
        tracing::warn!(
            topic = %shared.topic,
            "kafka: nothing delivered for {}s; purging {} buffered pairs ({} bytes)",
            due.waited.as_secs(),
            due.pairs,
            due.bytes
        );
        // Purged messages come back as delivery reports (PurgeQueue, PurgeInflight), counted as purged.
        producer.purge(PurgeConfig::default().queue().inflight());
    }
}

impl Sink for KafkaSink {
    fn send(&mut self, pair: PairRef<'_>) {
        let bytes = (pair.key.len() + pair.value.len()) as u64 + HEADER_BYTES + BOOKKEEPING_BYTES;
        let admitted =
            self.shared
                .lock()
                .ledger
                .accept(bytes, self.shared.buffer_limit, Instant::now());
        if !admitted {
            return;
        }
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: SCHEMA_HEADER,
                value: Some(SCHEMA),
            })
            .insert(Header {
                key: CONTENT_TYPE_HEADER,
                value: Some(CONTENT_TYPE),
            });
        // `bytes` fits in usize: it was computed from lengths of data in memory.
        let record =
            BaseRecord::<str, [u8], usize>::with_opaque_to(&self.shared.topic, bytes as usize)
                .payload(pair.value)
                .headers(headers);
        // No key: librdkafka spreads the pairs over the partitions.
        let record = if pair.key.is_empty() {
            record
        } else {
            record.key(pair.key)
        };
        if let Err((error, _)) = self.producer.send(record) {
            let shared = &self.shared;
            let mut state = shared.lock();
            shared.settle_error(&mut state, bytes, Outcome::of_refusal(&error), &error);
        }
    }

    fn poll(&mut self) {
        // Delivery reports and purges are served by the polling thread; this only makes a due purge
        // happen without waiting for its next turn.
        purge_if_due(&self.producer, &self.shared);
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        // Returns once librdkafka's queue is empty, delivery reports included; their callbacks may still
        // be running on the polling thread, hence the wait for our own accounting.
        let _ = self.producer.flush(timeout);
        let buffered = || self.shared.lock().ledger.stats.buffered_pairs;
        if wait_until(deadline, || buffered() == 0) {
            Ok(())
        } else {
            Err(SinkError::FlushTimeout(timeout, buffered()))
        }
    }

    fn stats(&self) -> SinkStats {
        self.shared.lock().ledger.stats.clone()
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        // Dropping the producer purges what is left (rdkafka waits at most 500 ms for the reports).
    }
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// Poll `done` until it holds or `deadline` passes.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::config::config_with;
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output_and_errors() {
        let config = config_with(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "alice"),
            ("sasl.password", "hunter2-secret"),
            ("ssl.key.password", "key-pass-123"),
        ]);
        let sink = KafkaSink::new(&config, "n").unwrap();
        let shown = format!("{sink:?}");
        assert!(shown.contains("SASL_PLAINTEXT"), "{shown}");
        for secret in ["alice", "hunter2-secret", "key-pass-123"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        drop(sink);

        // librdkafka refuses the value and quotes the configuration: the secret is masked.
        let config = config_with(&[("compression.type", "brotli"), ("sasl.password", "pw-987")]);
        match KafkaSink::new(&config, "n") {
            Err(SinkError::Kafka(reason)) => {
                assert!(reason.contains("compression"), "{reason}");
                assert!(!reason.contains("pw-987"), "{reason}");
            }
            other => panic!("expected a kafka error, got {other:?}"),
        }
    }

    #[test]
    fn credentials_added_from_the_environment_stay_out_of_debug_output() {
        let with = with_credentials(
            &config_with(&[("sasl.mechanism", "PLAIN")]),
            |name| match name {
                "INTERCEPTOR_KAFKA_SASL_USERNAME" => Some("svc".to_string()),
                "INTERCEPTOR_KAFKA_SASL_PASSWORD" => Some("pw".to_string()),
                _ => None,
            },
        );
        let sink = KafkaSink::build(&with, "n").unwrap();
        let shown = format!("{sink:?}");
        assert!(
            !shown.contains("\"pw\"") && !shown.contains("\"svc\""),
            "{shown}"
        );
    }
}
