//! Whether the topic exists, and its creation when `kafka.createTopic` is set: checked in the background
//! from the start (a missing topic is logged once and kept in `last_error`), and on demand
//! ([`super::KafkaSink::ensure_topic`]). The sink never asks the broker to auto-create topics.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};

use super::config::redact;
use super::context::{Shared, SinkContext};
use crate::sink::SinkError;

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

/// The topic to create when it is missing (`kafka.topicPartitions`, `kafka.topicReplicationFactor`).
#[derive(Clone, Copy, Debug)]
pub(super) struct NewTopicSpec {
    pub partitions: i32,
    pub replication: i32,
}

/// How often the background check asks again while the answer is unknown, and once the topic is missing.
const RETRY_UNKNOWN: Duration = Duration::from_secs(2);
const RETRY_MISSING: Duration = Duration::from_secs(10);

/// Checks whether the topic exists, and creates it when configured.
pub(super) struct TopicChecker {
    pub producer: Arc<BaseProducer<SinkContext>>,
    pub shared: Arc<Shared>,
    pub create: Option<NewTopicSpec>,
    pub admin_config: ClientConfig,
}

impl TopicChecker {
    fn topic(&self) -> &str {
        &self.shared.topic
    }

    fn brokers(&self) -> &str {
        self.admin_config
            .get("bootstrap.servers")
            .unwrap_or_default()
    }

    /// In the background: check until the answer is known, then report it.
    pub fn run_until_known(&self, stop: &AtomicBool) {
        let mut reported_missing = false;
        while !stop.load(Ordering::Relaxed) {
            let retry = match self.check(RETRY_UNKNOWN) {
                Ok(TopicState::Exists | TopicState::Created) => return,
                Ok(TopicState::Missing) => {
                    if !reported_missing {
                        tracing::error!(
                            "kafka: topic {:?} does not exist; pairs fail until it is created \
                             (create it, or set kafka.createTopic: true)",
                            self.topic()
                        );
                        reported_missing = true;
                    }
                    RETRY_MISSING
                }
                Ok(TopicState::Unknown) | Err(_) => RETRY_UNKNOWN,
            };
            let until = Instant::now() + retry;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Wait (at most `timeout`) until it is known whether the topic exists, creating it when configured.
    /// A missing topic is an error naming it; so is a Kafka that does not answer in time.
    pub fn wait_until_known(&self, timeout: Duration) -> Result<TopicState, SinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.check(remaining.min(Duration::from_secs(5))) {
                Ok(TopicState::Missing) => {
                    return Err(SinkError::Kafka(format!(
                    "topic {:?} does not exist on {} (create it, or set kafka.createTopic: true)",
                    self.topic(),
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
                        self.topic(),
                        self.brokers()
                    );
                    return Err(SinkError::Kafka(redact(&message, &self.shared.secrets)));
                }
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
                    self.topic()
                );
                self.shared
                    .record_error(&mut shared, "topic missing".to_string(), message);
            }
            TopicState::Created => {
                tracing::info!("kafka: created topic {:?}", self.topic());
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
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic()) else {
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
            self.topic(),
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
mod tests {
    use super::*;

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
