//! Pairs to a Kafka topic through librdkafka (`rdkafka`), with a buffer bounded in bytes, a purge after an
//! outage, and delivery accounting.
//!
//! - The buffer is librdkafka's own queue, bounded by our accounting: a pair whose bytes (key, value and
//!   headers) would take the queued total over `kafka.bufferBytes` is dropped and counted
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

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use interceptor_crds::config::{is_secret_kafka_property, KafkaConfig};
use interceptor_crds::worker_env::KAFKA_CREDENTIAL_PROPERTIES;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use serde::Deserialize;

use super::{PairRef, Sink, SinkError, SinkStats};

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

/// Largest message the producer accepts. A pair of 1 MiB (the default limit) can take more than 1 MiB as
/// JSON (escapes, base64), above librdkafka's default of 1,000,000. The broker's and the topic's limits
/// (`message.max.bytes`, `max.message.bytes`) still apply; a refused pair is counted as failed.
const MESSAGE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// How often the background thread serves delivery reports and checks for a purge.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Properties the sink relies on and that must not be overridden.
const REFUSED_PROPERTIES: &[&str] = &["delivery.report.only.error", "enable.delivery.reports"];

/// Our settings that a user property may replace under another name (librdkafka aliases): when the user
/// sets the alias, ours is left out, so that which one wins never depends on the order they are applied.
const ALIASES: &[(&str, &str)] = &[
    ("bootstrap.servers", "metadata.broker.list"),
    ("acks", "request.required.acks"),
    ("compression.type", "compression.codec"),
    ("message.timeout.ms", "delivery.timeout.ms"),
    ("queue.buffering.max.ms", "linger.ms"),
];

/// What is known about the topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicState {
    /// Not checked yet, or Kafka has not answered.
    Unknown,
    /// It exists.
    Exists,
    /// It did not exist and the sink created it (`kafka.createTopic`).
    Created,
    /// It does not exist and `kafka.createTopic` is off: pairs fail until someone creates it.
    Missing,
}

/// Sends pairs to Kafka. See the module documentation.
pub struct KafkaSink {
    producer: Arc<BaseProducer<SinkContext>>,
    shared: Arc<Shared>,
    topic: String,
    create_topic: Option<NewTopicSpec>,
    admin_config: ClientConfig,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Brokers, topic, client id and properties with secrets masked: for `Debug` and logs.
    description: String,
}

#[derive(Clone, Copy, Debug)]
struct NewTopicSpec {
    partitions: i32,
    replication: i32,
}

/// State shared with librdkafka's callbacks (on the polling thread).
struct Shared {
    topic: String,
    /// Values of secret properties, masked in every message we record or return.
    secrets: Vec<String>,
    buffer_limit: u64,
    purge_after: Duration,
    state: Mutex<State>,
    /// Held while the topic is checked or created.
    checking: Mutex<()>,
}

#[derive(Default)]
struct State {
    stats: SinkStats,
    /// Since when pairs have been waiting without any delivery (None when nothing is buffered).
    waiting_since: Option<Instant>,
    purges: u64,
    topic: Option<TopicState>,
    last_logged_error: Option<(String, Instant)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still meaningful: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record_error(&self, state: &mut State, message: String) {
        let message = redact(&message, &self.secrets);
        // librdkafka repeats errors while Kafka is down: log a message again only after a while.
        let repeat = state
            .last_logged_error
            .as_ref()
            .is_some_and(|(last, at)| *last == message && at.elapsed() < Duration::from_secs(60));
        if !repeat {
            tracing::warn!(topic = %self.topic, "kafka: {message}");
            state.last_logged_error = Some((message.clone(), Instant::now()));
        }
        state.stats.last_error = Some(message);
    }

    /// One pair left the buffer.
    fn settle(&self, state: &mut State, bytes: u64) {
        state.stats.buffered_pairs = state.stats.buffered_pairs.saturating_sub(1);
        state.stats.buffered_bytes = state.stats.buffered_bytes.saturating_sub(bytes);
        if state.stats.buffered_pairs == 0 {
            state.waiting_since = None;
        }
    }

    /// Explain an error, naming the topic when it is the problem.
    fn describe(&self, error: &KafkaError) -> String {
        let code = error.rdkafka_error_code();
        match code {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                format!(
                "topic {:?} does not exist (create it, or set kafka.createTopic: true): {error}",
                self.topic
            )
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                format!("not authorized to write to topic {:?}: {error}", self.topic)
            }
            _ => error.to_string(),
        }
    }
}

/// librdkafka's callbacks: delivery reports, errors, statistics and logs.
struct SinkContext {
    shared: Arc<Shared>,
}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: BTreeMap<String, BrokerStatistics>,
}

#[derive(Deserialize)]
struct BrokerStatistics {
    state: String,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // librdkafka's errors are mostly transient (a broker went away); our own error handling reports
        // what matters, so they are warnings here.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        // Connected when at least one broker connection is up.
        if let Ok(stats) = serde_json::from_slice::<Statistics>(statistics) {
            let up = stats.brokers.values().any(|b| b.state == "UP");
            self.shared.lock().stats.connected = Some(up);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut state = self.shared.lock();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            state.stats.connected = Some(false);
        }
        self.shared.record_error(
            &mut state,
            format!("{}: {reason}", self.shared.describe(&error)),
        );
    }
}

impl ProducerContext for SinkContext {
    /// The pair's size in the buffer.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, bytes: usize) {
        let shared = &self.shared;
        let mut state = shared.lock();
        shared.settle(&mut state, bytes as u64);
        match result {
            Ok(_) => {
                state.stats.delivered += 1;
                state.stats.connected = Some(true);
                // Progress: the clock for the remaining pairs starts again.
                if state.stats.buffered_pairs > 0 {
                    state.waiting_since = Some(Instant::now());
                }
            }
            Err((error, _)) => match error.rdkafka_error_code() {
                Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => {
                    state.stats.purged += 1;
                }
                _ => {
                    state.stats.failed += 1;
                    let message = shared.describe(error);
                    shared.record_error(&mut state, message);
                }
            },
        }
    }
}

impl KafkaSink {
    /// A sink producing to `config.topic` on `config.brokers`. `node` names this worker: the client id is
    /// `config.client_id`, else `interceptor-<node>`. Credentials the operator passes in environment
    /// variables (`INTERCEPTOR_KAFKA_SASL_PASSWORD`, ...; see `worker_env`) are added to the properties.
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
        let shared = Arc::new(Shared {
            topic: config.topic.clone(),
            secrets: secrets.clone(),
            buffer_limit: config.buffer_bytes,
            purge_after: Duration::from_secs(config.purge_after_seconds.max(1)),
            state: Mutex::new(State::default()),
            checking: Mutex::new(()),
        });
        let context = SinkContext {
            shared: Arc::clone(&shared),
        };
        let producer: BaseProducer<SinkContext> = client_config
            .create_with_context(context)
            .map_err(|e| SinkError::Kafka(redact(&e.to_string(), &secrets)))?;
        let producer = Arc::new(producer);
        let description = format!(
            "KafkaSink {{ brokers: {:?}, topic: {:?}, client_id: {:?}, properties: {:?} }}",
            config.brokers,
            config.topic,
            client_id(config, node),
            config.redacted_properties()
        );
        let create_topic = config.create_topic.then(|| NewTopicSpec {
            partitions: i32::try_from(config.topic_partitions).unwrap_or(i32::MAX),
            replication: config.topic_replication_factor,
        });
        let mut sink = KafkaSink {
            producer,
            shared,
            topic: config.topic.clone(),
            create_topic,
            admin_config: admin_config(config, node),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            description,
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

        let checker = TopicChecker {
            producer: Arc::clone(&self.producer),
            shared: Arc::clone(&self.shared),
            topic: self.topic.clone(),
            create: self.create_topic,
            admin_config: self.admin_config.clone(),
        };
        let stop = Arc::clone(&self.stop);
        let topic_thread = thread::Builder::new()
            .name("kafka-topic".into())
            .spawn(move || checker.run_until_known(&stop))?;
        // Not joined on drop: it may be waiting for a Kafka that does not answer (at most a few seconds),
        // and shutdown must not wait for that. It stops at its next look at `stop`.
        drop(topic_thread);
        Ok(())
    }

    /// Wait (at most `timeout`) until it is known whether the topic exists, creating it when
    /// `kafka.createTopic` is set. A missing topic is an error naming it; so is a Kafka that does not
    /// answer in time.
    pub fn ensure_topic(&self, timeout: Duration) -> Result<TopicState, SinkError> {
        let checker = TopicChecker {
            producer: Arc::clone(&self.producer),
            shared: Arc::clone(&self.shared),
            topic: self.topic.clone(),
            create: self.create_topic,
            admin_config: self.admin_config.clone(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match checker.check(remaining.min(Duration::from_secs(5))) {
                Ok(TopicState::Missing) => {
                    return Err(SinkError::Kafka(format!(
                    "topic {:?} does not exist on {} (create it, or set kafka.createTopic: true)",
                    self.topic,
                    self.brokers()
                )))
                }
                Ok(TopicState::Unknown) | Err(_) if !remaining.is_zero() => {
                    thread::sleep(Duration::from_millis(200).min(remaining))
                }
                Ok(known) => return Ok(known),
                Err(e) => {
                    let message = format!(
                        "cannot check topic {:?} on {} within {timeout:?}: {e}",
                        self.topic,
                        self.brokers()
                    );
                    return Err(SinkError::Kafka(redact(&message, &self.shared.secrets)));
                }
            }
        }
    }

    fn brokers(&self) -> String {
        self.admin_config
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_string()
    }

    /// What is known about the topic so far.
    pub fn topic_state(&self) -> TopicState {
        self.shared.lock().topic.unwrap_or(TopicState::Unknown)
    }

    /// The topic pairs go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many times the buffer was purged after an outage.
    pub fn purges(&self) -> u64 {
        self.shared.lock().purges
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
                self.shared.lock().stats.buffered_pairs == 0
            });
        }
        self.stats()
    }
}

fn purge_if_due(producer: &BaseProducer<SinkContext>, shared: &Shared) {
    let waited = {
        let mut state = shared.lock();
        match state.waiting_since {
            Some(since)
                if state.stats.buffered_pairs > 0 && since.elapsed() >= shared.purge_after =>
            {
                // The clock starts again, so the next purge is one more purgeAfter away.
                state.waiting_since = Some(Instant::now());
                state.purges += 1;
                Some((
                    since.elapsed(),
                    state.stats.buffered_pairs,
                    state.stats.buffered_bytes,
                ))
            }
            _ => None,
        }
    };
    if let Some((waited, pairs, bytes)) = waited {
        tracing::warn!(
            topic = %shared.topic,
            "kafka: nothing delivered for {}s; purging {pairs} buffered pairs ({bytes} bytes)",
            waited.as_secs()
        );
        // Purged messages come back as delivery reports (PurgeQueue, PurgeInflight), counted as purged.
        producer.purge(PurgeConfig::default().queue().inflight());
    }
}

/// Checks whether the topic exists, and creates it when configured.
struct TopicChecker {
    producer: Arc<BaseProducer<SinkContext>>,
    shared: Arc<Shared>,
    topic: String,
    create: Option<NewTopicSpec>,
    admin_config: ClientConfig,
}

impl TopicChecker {
    /// In the background: check until the answer is known, then report it.
    fn run_until_known(&self, stop: &AtomicBool) {
        let mut reported_missing = false;
        while !stop.load(Ordering::Relaxed) {
            let retry = match self.check(Duration::from_secs(2)) {
                Ok(TopicState::Exists | TopicState::Created) => return,
                Ok(TopicState::Missing) => {
                    if !reported_missing {
                        tracing::error!(
                            "kafka: topic {:?} does not exist; pairs fail until it is created \
                             (create it, or set kafka.createTopic: true)",
                            self.topic
                        );
                        reported_missing = true;
                    }
                    Duration::from_secs(10)
                }
                Ok(TopicState::Unknown) | Err(_) => Duration::from_secs(2),
            };
            let until = Instant::now() + retry;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn check(&self, timeout: Duration) -> Result<TopicState, KafkaError> {
        // One check at a time (the background one and `ensure_topic`), so that a creation in progress
        // is seen finished rather than raced.
        let _one_at_a_time = self
            .shared
            .checking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = match self.exists(timeout)? {
            true => TopicState::Exists,
            false if self.create.is_some() => self.create_topic(timeout)?,
            false => TopicState::Missing,
        };
        let mut shared = self.shared.lock();
        // Created by this sink (by the background check or an earlier call): say so, not just Exists.
        let state = if state == TopicState::Exists && shared.topic == Some(TopicState::Created) {
            TopicState::Created
        } else {
            state
        };
        match state {
            TopicState::Missing => {
                let message = format!(
                    "topic {:?} does not exist (create it, or set kafka.createTopic: true)",
                    self.topic
                );
                self.shared.record_error(&mut shared, message);
            }
            TopicState::Created => {
                tracing::info!("kafka: created topic {:?}", self.topic);
            }
            _ => {}
        }
        shared.topic = Some(state);
        Ok(state)
    }

    fn exists(&self, timeout: Duration) -> Result<bool, KafkaError> {
        // The metadata of all topics: asking for one missing topic can create it on brokers that
        // auto-create, or go unanswered (librdkafka's mock cluster).
        let metadata = self.producer.client().fetch_metadata(None, timeout)?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(false);
        };
        match topic.error().map(RDKafkaErrorCode::from) {
            None => Ok(!topic.partitions().is_empty()),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                Ok(false)
            }
            Some(code) => Err(KafkaError::MetadataFetch(code)),
        }
    }

    fn create_topic(&self, timeout: Duration) -> Result<TopicState, KafkaError> {
        let Some(spec) = self.create else {
            return Ok(TopicState::Missing);
        };
        let admin: AdminClient<DefaultClientContext> = self.admin_config.create()?;
        let topic = NewTopic::new(
            &self.topic,
            spec.partitions,
            TopicReplication::Fixed(spec.replication),
        );
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let results = block_on(admin.create_topics([&topic], &options), timeout)
            .ok_or(KafkaError::AdminOp(RDKafkaErrorCode::RequestTimedOut))??;
        // One topic asked for, one result.
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(TopicState::Created),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(TopicState::Exists),
            Some(Err((_, code))) => Err(KafkaError::AdminOp(code)),
            None => Err(KafkaError::AdminOp(RDKafkaErrorCode::Fail)),
        }
    }
}

impl Sink for KafkaSink {
    fn send(&mut self, pair: PairRef<'_>) {
        let bytes = (pair.key.len() + pair.value.len()) as u64 + HEADER_BYTES;
        {
            let mut state = self.shared.lock();
            state.stats.accepted += 1;
            if state.stats.buffered_bytes + bytes > self.shared.buffer_limit {
                state.stats.dropped_full += 1;
                return;
            }
            state.stats.buffered_pairs += 1;
            state.stats.buffered_bytes += bytes;
            if state.waiting_since.is_none() {
                state.waiting_since = Some(Instant::now());
            }
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
        let record = BaseRecord::<str, [u8], usize>::with_opaque_to(&self.topic, bytes as usize)
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
            shared.settle(&mut state, bytes);
            if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) {
                state.stats.dropped_full += 1;
            } else {
                state.stats.failed += 1;
                let message = shared.describe(&error);
                shared.record_error(&mut state, message);
            }
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
        let done = wait_until(deadline, || self.shared.lock().stats.buffered_pairs == 0);
        if done {
            Ok(())
        } else {
            let buffered = self.shared.lock().stats.buffered_pairs;
            Err(SinkError::FlushTimeout(timeout, buffered))
        }
    }

    fn stats(&self) -> SinkStats {
        self.shared.lock().stats.clone()
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

/// `config` with the credentials found by `lookup` (environment variables named in
/// `worker_env::KAFKA_CREDENTIAL_PROPERTIES`) set as librdkafka properties.
fn with_credentials(config: &KafkaConfig, lookup: impl Fn(&str) -> Option<String>) -> KafkaConfig {
    let mut config = config.clone();
    for (variable, property) in KAFKA_CREDENTIAL_PROPERTIES {
        if let Some(value) = lookup(variable).filter(|v| !v.is_empty()) {
            config.properties.insert(property.to_string(), value);
        }
    }
    config
}

fn client_id(config: &KafkaConfig, node: &str) -> String {
    match &config.client_id {
        Some(id) => id.clone(),
        None if node.is_empty() => "interceptor".to_string(),
        None => format!("interceptor-{node}"),
    }
}

/// The producer's librdkafka configuration: our settings, then the user's `properties` (which win).
fn client_config(config: &KafkaConfig, node: &str) -> Result<ClientConfig, SinkError> {
    if config.brokers.is_empty() {
        return Err(SinkError::Config(
            "kafka.brokers: at least one broker is required".into(),
        ));
    }
    if config.topic.is_empty() {
        return Err(SinkError::Config("kafka.topic: a topic is required".into()));
    }
    if let Some(refused) = config
        .properties
        .keys()
        .find(|k| REFUSED_PROPERTIES.contains(&k.as_str()))
    {
        return Err(SinkError::Config(format!(
            "kafka.properties: {refused:?} cannot be set: the sink needs every delivery report"
        )));
    }
    let purge_after_ms = config.purge_after_seconds.max(1).saturating_mul(1000);
    let buffer_kbytes = (config.buffer_bytes / 1024).saturating_add(1024);
    let ours: Vec<(&str, String)> = vec![
        ("bootstrap.servers", config.brokers.join(",")),
        ("client.id", client_id(config, node)),
        ("compression.type", config.compression.clone()),
        ("acks", config.acks.clone()),
        ("message.max.bytes", MESSAGE_MAX_BYTES.to_string()),
        // Our byte accounting is the bound; librdkafka's own limits sit just above it.
        (
            "queue.buffering.max.kbytes",
            buffer_kbytes.min(i32::MAX as u64).to_string(),
        ),
        (
            "queue.buffering.max.messages",
            (config.buffer_bytes / 128)
                .clamp(100_000, 10_000_000)
                .to_string(),
        ),
        // A pair that cannot be delivered for twice purgeAfter fails (a partition without a leader
        // while others work); a whole outage is purged before that.
        (
            "message.timeout.ms",
            purge_after_ms
                .saturating_mul(2)
                .clamp(10_000, i32::MAX as u64)
                .to_string(),
        ),
        ("queue.buffering.max.ms", "20".to_string()),
        ("statistics.interval.ms", "1000".to_string()),
        // A missing topic is created by kafka.createTopic, not as a side effect of asking for metadata.
        ("allow.auto.create.topics", "false".to_string()),
    ];
    let mut client_config = ClientConfig::new();
    for (key, value) in ours {
        let replaced = ALIASES
            .iter()
            .any(|(ours, alias)| *ours == key && config.properties.contains_key(*alias));
        if !replaced {
            client_config.set(key, value);
        }
    }
    for (key, value) in &config.properties {
        client_config.set(key, value);
    }
    Ok(client_config)
}

/// The admin client's configuration: connection and security settings only.
fn admin_config(config: &KafkaConfig, node: &str) -> ClientConfig {
    let mut admin = ClientConfig::new();
    admin.set("bootstrap.servers", config.brokers.join(","));
    admin.set("client.id", format!("{}-admin", client_id(config, node)));
    for (key, value) in &config.properties {
        let producer_only = key.starts_with("queue.")
            || key.starts_with("compression.")
            || key.starts_with("batch.")
            || [
                "acks",
                "request.required.acks",
                "linger.ms",
                "message.timeout.ms",
                "delivery.timeout.ms",
                "enable.idempotence",
                "retries",
                "partitioner",
                "transactional.id",
                "message.send.max.retries",
            ]
            .contains(&key.as_str());
        if !producer_only {
            admin.set(key, value);
        }
    }
    admin
}

/// The values of the secret properties of `config`.
fn secret_values(config: &KafkaConfig) -> Vec<String> {
    config
        .properties
        .iter()
        .filter(|(key, value)| is_secret_kafka_property(key) && !value.is_empty())
        .map(|(_, value)| value.clone())
        .collect()
}

/// `text` with secret values replaced (librdkafka's configuration errors quote values).
fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text
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

/// Run a future to completion on this thread, waiting at most `timeout` (rdkafka's admin API is async;
/// its own thread completes the futures).
fn block_on<F: Future>(future: F, timeout: Duration) -> Option<F::Output> {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return None;
        }
        thread::park_timeout(remaining.min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config_with(properties: &[(&str, &str)]) -> KafkaConfig {
        let mut config = KafkaConfig::default();
        for (k, v) in properties {
            config.properties.insert(k.to_string(), v.to_string());
        }
        config
    }

    #[test]
    fn our_settings_then_the_users_properties() {
        let config = config_with(&[("linger.ms", "100"), ("security.protocol", "plaintext")]);
        let client = client_config(&config, "node-a").unwrap();
        assert_eq!(client.get("bootstrap.servers"), Some("kafka.kafka:9092"));
        assert_eq!(client.get("client.id"), Some("interceptor-node-a"));
        assert_eq!(client.get("compression.type"), Some("lz4"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("message.max.bytes"), Some("8388608"));
        assert_eq!(client.get("queue.buffering.max.kbytes"), Some("66560"));
        assert_eq!(client.get("message.timeout.ms"), Some("120000"));
        // The alias replaces our setting instead of racing with it.
        assert_eq!(client.get("linger.ms"), Some("100"));
        assert_eq!(client.get("queue.buffering.max.ms"), None);
        assert_eq!(client.get("security.protocol"), Some("plaintext"));

        let config = KafkaConfig {
            client_id: Some("custom".into()),
            ..config_with(&[("compression.codec", "zstd"), ("acks", "1")])
        };
        let client = client_config(&config, "node-a").unwrap();
        assert_eq!(client.get("client.id"), Some("custom"));
        assert_eq!(client.get("compression.type"), None);
        assert_eq!(client.get("compression.codec"), Some("zstd"));
        assert_eq!(client.get("acks"), Some("1"));
    }

    #[test]
    fn properties_that_break_accounting_are_refused() {
        let config = config_with(&[("delivery.report.only.error", "true")]);
        match client_config(&config, "n") {
            Err(SinkError::Config(reason)) => {
                assert!(reason.contains("delivery.report.only.error"))
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

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

        // librdkafka quotes a refused value in its error: the secret is masked there too.
        let config = config_with(&[
            ("sasl.password", "hunter2-secret"),
            ("ssl.key.password", ""),
        ]);
        let text = redact(
            "Invalid value \"hunter2-secret\" for configuration property \"sasl.password\"",
            &secret_values(&config),
        );
        assert_eq!(
            text,
            "Invalid value \"[redacted]\" for configuration property \"sasl.password\""
        );
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
    fn credentials_from_the_operators_environment_variables_become_properties() {
        let config = config_with(&[("sasl.mechanism", "PLAIN")]);
        let with = with_credentials(&config, |name| match name {
            "INTERCEPTOR_KAFKA_SASL_USERNAME" => Some("svc".to_string()),
            "INTERCEPTOR_KAFKA_SASL_PASSWORD" => Some("pw".to_string()),
            "INTERCEPTOR_KAFKA_SSL_CA_PEM" => Some(String::new()),
            _ => None,
        });
        assert_eq!(
            with.properties.get("sasl.username").map(String::as_str),
            Some("svc")
        );
        assert_eq!(
            with.properties.get("sasl.password").map(String::as_str),
            Some("pw")
        );
        assert_eq!(
            with.properties.get("sasl.mechanism").map(String::as_str),
            Some("PLAIN")
        );
        assert!(
            !with.properties.contains_key("ssl.ca.pem"),
            "empty variables are ignored"
        );
        let sink = KafkaSink::build(&with, "n").unwrap();
        let shown = format!("{sink:?}");
        assert!(
            !shown.contains("\"pw\"") && !shown.contains("\"svc\""),
            "{shown}"
        );
    }

    #[test]
    fn block_on_waits_for_a_future_woken_by_another_thread() {
        let (sender, receiver) = std::sync::mpsc::channel::<Waker>();
        let done = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>, std::sync::mpsc::Sender<Waker>);
        impl Future for Flag {
            type Output = u8;
            fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
                if self.0.load(Ordering::SeqCst) {
                    Poll::Ready(7)
                } else {
                    let _ = self.1.send(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
        let flag = Arc::clone(&done);
        let helper = thread::spawn(move || {
            let waker = receiver.recv().unwrap();
            thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
            waker.wake();
        });
        assert_eq!(
            block_on(Flag(done, sender), Duration::from_secs(5)),
            Some(7)
        );
        helper.join().unwrap();
        assert_eq!(
            block_on(std::future::pending::<()>(), Duration::from_millis(20)),
            None
        );
    }
}
