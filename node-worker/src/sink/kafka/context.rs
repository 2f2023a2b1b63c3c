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
use super::log_limit::{suppressed_note, LogLimiter, Verdict};
use super::topic::TopicState;

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
    /// Which warnings were logged when, per kind: while Kafka is unreachable librdkafka repeats its
    /// errors every second or faster. A lock of its own, taken last and never held while calling out, so
    /// that librdkafka's logging threads never wait on the state.
    logged: Mutex<LogLimiter<String>>,
}

#[derive(Default)]
pub(super) struct State {
    pub ledger: Ledger,
    pub topic: Option<TopicState>,
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
            logged: Mutex::new(LogLimiter::default()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still meaningful: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether to log a warning of `kind` now: `Some(note)` to log it with `note` appended (how many of
    /// its kind were not logged since the last), `None` for a repeat within the interval.
    fn should_log(&self, kind: String) -> Option<String> {
        let verdict = self
            .logged
            .lock()
            // Poisoned: the windows are still meaningful.
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(kind, Instant::now());
        match verdict {
            Verdict::Log { suppressed } => Some(suppressed_note(suppressed)),
            Verdict::Suppress => None,
        }
    }

    /// Keep `message` (secrets masked) as the last error (always: metrics and InterceptorStatus show
    /// it), and log it unless one of its `kind` was logged less than a minute ago.
    pub fn record_error(&self, state: &mut State, kind: String, message: String) {
        let message = redact(&message, &self.secrets);
        if let Some(note) = self.should_log(kind) {
            tracing::warn!(topic = %self.topic, "kafka: {message}{note}");
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
            self.record_error(state, kind_of(error), message);
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

/// The kind of an error, for rate limiting its log lines: its code (a message differs from the last of
/// its kind by counts and timings only, "1/1 brokers are down" then "0/1 ...").
pub(super) fn kind_of(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("error {code:?}"),
        None => "error".to_string(),
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
        // what matters, so they are warnings here. Both repeat for as long as a broker is unreachable
        // ("Connect to ... failed", "Failed to resolve ..."): limited per facility, whose messages differ
        // by broker, timings and counts only.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                if let Some(note) = self.shared.should_log(format!("log error {fac}")) {
                    tracing::error!(target: "librdkafka", "{fac} {message}{note}")
                }
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                if let Some(note) = self.shared.should_log(format!("log warning {fac}")) {
                    tracing::warn!(target: "librdkafka", "{fac} {message}{note}")
                }
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
            kind_of(&error),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_not_logged_is_still_the_last_error_the_status_shows() {
        let shared = Shared::new("t", vec!["hunter2".into()], 1024, Duration::from_secs(60));
        let mut state = shared.lock();
        for n in 0..3 {
            shared.record_error(
                &mut state,
                "error AllBrokersDown".into(),
                format!("{n}/1 brokers are down, password hunter2"),
            );
        }
        let last = state.ledger.stats.last_error.clone();
        drop(state);
        assert_eq!(
            last.as_deref(),
            Some("2/1 brokers are down, password [redacted]")
        );
        // The first was logged, the two after it counted: the next of the kind within the minute is not.
        assert_eq!(shared.should_log("error AllBrokersDown".into()), None);
        assert_eq!(
            shared.should_log("error BrokerTransportFailure".into()),
            Some(String::new())
        );
    }
}
