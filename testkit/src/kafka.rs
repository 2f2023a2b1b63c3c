//! Shared by the Kafka tests: the broker to test against, pairs to send, and a consumer to read them back.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use node_worker::sink::OutgoingPair;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The test broker's address from `scripts/broker.sh start` (run by `make test`), or None when the tests
/// are run without it: then they are skipped, unless INTERCEPTOR_REQUIRE_KAFKA=1 makes that a failure.
pub fn test_broker(test: &str) -> Option<String> {
    match std::env::var("INTERCEPTOR_TEST_KAFKA") {
        Ok(address) if !address.is_empty() => Some(address),
        _ => {
            if std::env::var("INTERCEPTOR_REQUIRE_KAFKA").as_deref() == Ok("1") {
                panic!(
                    "{test}: INTERCEPTOR_REQUIRE_KAFKA=1 but INTERCEPTOR_TEST_KAFKA is not set: start the \
                     broker with `eval \"$(scripts/broker.sh start)\"` (make test does)"
                );
            }
            eprintln!(
                "{test}: skipped: INTERCEPTOR_TEST_KAFKA is not set (run `make test`, or \
                 `eval \"$(scripts/broker.sh start)\"` first)"
            );
            None
        }
    }
}

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn unique_topic(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pair message like the pipeline's, `size` bytes of body, with characters that need JSON escapes and
/// multi-byte UTF-8.
pub fn pair(key: &str, n: usize, size: usize) -> OutgoingPair {
    let body: String = "ünïcødé \\\"quoted\\\" tab\\t "
        .chars()
        .cycle()
        .take(size)
        .collect();
    let value = format!(
        "{{\"schema\":\"interceptor.pair/v1\",\"id\":\"{key}-{n}\",\"node\":\"test\",\
         \"request\":{{\"method\":\"POST\",\"path\":\"/v1/{n}\",\"body\":\"{body}\"}},\"latency_us\":{n}}}"
    );
    OutgoingPair {
        key: key.to_string(),
        value: value.into_bytes(),
    }
}

/// One message read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Read every message of `topic` from the beginning until `expected` have arrived (or `timeout` passes),
/// then keep reading a moment longer to catch any extra ones.
pub fn consume(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
    properties: &[(&str, &str)],
) -> Vec<Received> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_topic("reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "16777216")
        .set("reconnect.backoff.max.ms", "500");
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut received = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut linger_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline || linger_until.is_some_and(|t| now >= t) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                received.push(Received {
                    partition: message.partition(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
                if received.len() >= expected && linger_until.is_none() {
                    linger_until = Some(Instant::now() + Duration::from_millis(1500));
                }
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    received
}

/// Group messages by key, keeping their order (pairs of one key go to one partition, in order).
pub fn by_key(
    messages: impl IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut map: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (key, value) in messages {
        map.entry(key.unwrap_or_default()).or_default().push(value);
    }
    map
}

/// A broker of its own for a test that kills it: `scripts/broker.sh start DIR`; stopped when dropped.
pub struct OwnBroker {
    pub dir: tempfile::TempDir,
    pub address: String,
}

fn broker_script() -> String {
    format!("{}/../scripts/broker.sh", env!("CARGO_MANIFEST_DIR"))
}

/// `bash scripts/broker.sh`, with the tansu binary of the shared test broker when there is one.
fn script() -> Command {
    let mut command = Command::new("bash");
    command.arg(broker_script());
    if let Ok(tansu) = std::env::var("INTERCEPTOR_TEST_TANSU") {
        command.env("INTERCEPTOR_TANSU", tansu);
    }
    command
}

fn run_script(args: &[&str]) -> String {
    let output = script().args(args).output().expect("run scripts/broker.sh");
    assert!(
        output.status.success(),
        "scripts/broker.sh {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut broker = OwnBroker {
            dir,
            address: String::new(),
        };
        broker.address = broker.restart();
        broker
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// Start (again) on the same port and data directory; returns the address.
    pub fn restart(&self) -> String {
        let out = run_script(&["start", self.path()]);
        out.lines()
            .find_map(|l| l.strip_prefix("export INTERCEPTOR_TEST_KAFKA="))
            .expect("address in the output of broker.sh start")
            .to_string()
    }

    /// kill -9: an outage.
    pub fn kill(&self) {
        run_script(&["kill", self.path()]);
    }

    pub fn answers(&self) -> bool {
        script()
            .args(["status", self.path()])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = script().args(["stop", self.path()]).output();
    }
}
