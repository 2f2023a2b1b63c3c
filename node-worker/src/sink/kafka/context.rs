//! What the sink shares with librdkafka's callbacks (served on the polling thread): the delivery
//! [`Ledger`], what is known about the topic, and the last error, with secrets masked in every message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use serde::Deserialize;

use super::config::redact;
use super::delivery::{Ledger, Outcome};
use super::topic::TopicState;

/// A repeated error is logged again only after this long (librdkafka repeats errors while Kafka is down).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// State shared by the sink, its threads and librdkafka's callbacks.
pub(super) struct Shared {
    pub topic: String,
    /// Values of secret properties, masked in every message we record or return.
    pub secrets: Vec<String>,
    pub buffer_limit: u64,
    pub purge_after: Duration,
    state: Mutex<State>,
    /// Held while the topic is checked or created.
    pub checking: Mutex<()>,
}

#[derive(Default)]
pub(super) struct State {
    pub ledger: Ledger,
    pub topic: Option<TopicState>,
    last_logged_error: Option<(String, Instant)>,
}

impl Shared {
    pub fn new(
        topic: &str,
        secrets: Vec<String>,
        buffer_limit: u64,
        purge_after: Duration,
    ) -> Self {
        Shared {
            topic: topic.to_string(),
            secrets,
            buffer_limit,
            purge_after,
            state: Mutex::new(State::default()),
            checking: Mutex::new(()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still meaningful: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep `message` (secrets masked) as the last error, and log it unless it was just logged.
    pub fn record_error(&self, state: &mut State, message: String) {
        let message = redact(&message, &self.secrets);
        let repeat = state
            .last_logged_error
            .as_ref()
            .is_some_and(|(last, at)| *last == message && at.elapsed() < ERROR_LOG_INTERVAL);
        if !repeat {
            tracing::warn!(topic = %self.topic, "kafka: {message}");
            state.last_logged_error = Some((message.clone(), Instant::now()));
        }
        state.ledger.stats.last_error = Some(message);
    }

    /// A buffered pair of `bytes` failed or was refused with `error` (recorded when it failed).
    pub fn settle_error(
        &self,
        state: &mut State,
        bytes: u64,
        outcome: Outcome,
        error: &KafkaError,
    ) {
        state.ledger.settle(bytes, outcome, Instant::now());
        if outcome == Outcome::Failed {
            let message = self.describe(error);
            self.record_error(state, message);
        }
    }

    /// Explain an error, naming the topic when it is the problem.
    pub fn describe(&self, error: &KafkaError) -> String {
        match error.rdkafka_error_code() {
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
pub(super) struct SinkContext {
    pub shared: Arc<Shared>,
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
            self.shared.lock().ledger.stats.connected = Some(up);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut state = self.shared.lock();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            state.ledger.stats.connected = Some(false);
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
        match result {
            Ok(_) => state
                .ledger
                .settle(bytes as u64, Outcome::Delivered, Instant::now()),
            Err((error, _)) => {
                shared.settle_error(&mut state, bytes as u64, Outcome::of_report(error), error)
            }
        }
    }
}
