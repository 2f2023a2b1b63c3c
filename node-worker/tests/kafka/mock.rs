//! Fast fault injection with librdkafka's mock cluster: broker down and up, request errors, latency.
//! (The real-broker tests are `broker` and `outage`.)

use std::time::{Duration, Instant};

use interceptor_crds::config::{KafkaConfig, MIB};
use node_worker::sink::kafka::{KafkaSink, TopicState};
use node_worker::sink::{Sink, SinkError, SinkStats};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use testkit::kafka::{consume, pair};
use testkit::wait::wait_until;

const TOPIC: &str = "pairs";

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 2, 1).unwrap();
    mock
}

fn sink(
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    purge_after: u64,
) -> KafkaSink {
    let mut config = KafkaConfig {
        brokers: vec![mock.bootstrap_servers()],
        topic: TOPIC.into(),
        purge_after_seconds: purge_after,
        buffer_bytes: MIB,
        ..KafkaConfig::default()
    };
    for (k, v) in [
        ("reconnect.backoff.ms", "50"),
        ("reconnect.backoff.max.ms", "500"),
        ("retry.backoff.ms", "50"),
        ("retry.backoff.max.ms", "200"),
    ] {
        config.properties.insert(k.into(), v.into());
    }
    KafkaSink::new(&config, "node-a").unwrap()
}

fn adds_up(stats: &SinkStats) -> bool {
    stats.accepted == stats.settled() + stats.buffered_pairs
}

#[test]
fn delivers_to_the_mock_cluster_with_key_and_headers() {
    let _isolated = testkit::isolate::module(module_path!());
    let mock = cluster();
    let mut sink = sink(&mock, 60);
    assert_eq!(
        sink.ensure_topic(Duration::from_secs(10)).unwrap(),
        TopicState::Exists
    );
    let sent: Vec<_> = (0..40).map(|n| pair("shop/web-1", n, 500)).collect();
    for p in &sent {
        sink.send(p.view());
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let stats = sink.stats();
    assert_eq!((stats.accepted, stats.delivered), (40, 40), "{stats:?}");
    let received = consume(
        &mock.bootstrap_servers(),
        TOPIC,
        40,
        Duration::from_secs(20),
        &[],
    );
    let values: Vec<_> = received.iter().map(|r| r.value.clone()).collect();
    let expected: Vec<_> = sent.iter().map(|p| p.value.clone()).collect();
    assert_eq!(values, expected, "one key: one partition, in order");
    assert!(received
        .iter()
        .all(|r| r.key.as_deref() == Some(&b"shop/web-1"[..])));
    assert_eq!(
        received[0].headers[0],
        ("schema".into(), b"interceptor.pair/v1".to_vec())
    );
}

#[test]
fn broker_down_purges_after_purge_after_and_broker_up_resumes() {
    let _isolated = testkit::isolate::module(module_path!());
    let mock = cluster();
    let mut sink = sink(&mock, 1);
    sink.ensure_topic(Duration::from_secs(10)).unwrap();
    sink.send(pair("a", 0, 100).view());
    sink.flush(Duration::from_secs(10)).unwrap();

    mock.broker_down(1).unwrap();
    let down = Instant::now();
    for n in 1..=20 {
        sink.send(pair("a", n, 100).view());
    }
    assert!(
        wait_until(Duration::from_secs(10), || sink.stats().purged == 20),
        "{:?}",
        sink.stats()
    );
    assert!(down.elapsed() >= Duration::from_secs(1));
    let stats = sink.stats();
    assert_eq!(
        (stats.delivered, stats.buffered_pairs, stats.failed),
        (1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(sink.purges(), 1);

    mock.broker_up(1).unwrap();
    for n in 21..31 {
        sink.send(pair("a", n, 100).view());
    }
    sink.flush(Duration::from_secs(20)).unwrap();
    let stats = sink.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.purged),
        (31, 11, 20),
        "{stats:?}"
    );
    assert!(adds_up(&stats));
}

#[test]
fn a_full_buffer_drops_and_counts_and_stays_within_its_bound() {
    let _isolated = testkit::isolate::module(module_path!());
    let mock = cluster();
    let mut sink = sink(&mock, 60);
    sink.ensure_topic(Duration::from_secs(10)).unwrap();
    mock.broker_down(1).unwrap();
    // 100 pairs of about 50 KB into a 1 MiB buffer: about 20 fit.
    for n in 0..100 {
        sink.send(pair("a", n, 50_000).view());
        assert!(sink.stats().buffered_bytes <= MIB);
    }
    let stats = sink.stats();
    assert_eq!(stats.accepted, 100);
    assert!((15..=21).contains(&stats.buffered_pairs), "{stats:?}");
    assert_eq!(stats.dropped_full, 100 - stats.buffered_pairs);
    assert!(
        stats.buffered_bytes > MIB - 60_000 && stats.buffered_bytes <= MIB,
        "{stats:?}"
    );

    // A short flush times out and says how much is left; after the broker is back, all of it is delivered.
    match sink.flush(Duration::from_millis(200)) {
        Err(SinkError::FlushTimeout(_, left)) => assert_eq!(left, stats.buffered_pairs),
        other => panic!("expected a flush timeout, got {other:?}"),
    }
    mock.broker_up(1).unwrap();
    sink.flush(Duration::from_secs(20)).unwrap();
    let after = sink.stats();
    assert_eq!(after.delivered, stats.buffered_pairs);
    assert!(adds_up(&after) && after.buffered_bytes == 0, "{after:?}");
}

#[test]
fn retriable_errors_are_retried_and_fatal_ones_fail_with_the_kafka_error() {
    let _isolated = testkit::isolate::module(module_path!());
    let mock = cluster();
    let mut sink = sink(&mock, 60);
    sink.ensure_topic(Duration::from_secs(10)).unwrap();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    sink.send(pair("a", 0, 100).view());
    sink.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(sink.stats().delivered, 1, "{:?}", sink.stats());

    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    sink.send(pair("a", 1, 100).view());
    sink.flush(Duration::from_secs(10)).unwrap();
    let stats = sink.stats();
    assert_eq!((stats.delivered, stats.failed), (1, 1), "{stats:?}");
    let error = stats.last_error.unwrap_or_default();
    assert!(
        error.contains("not authorized to write to topic \"pairs\""),
        "{error}"
    );
    assert!(adds_up(&sink.stats()));
}

#[test]
fn latency_delays_but_loses_nothing() {
    let _isolated = testkit::isolate::module(module_path!());
    let mock = cluster();
    let mut sink = sink(&mock, 5);
    sink.ensure_topic(Duration::from_secs(10)).unwrap();
    mock.broker_round_trip_time(1, Duration::from_millis(700))
        .unwrap();
    let started = Instant::now();
    for n in 0..10 {
        sink.send(pair("a", n, 100).view());
    }
    sink.flush(Duration::from_secs(20)).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let stats = sink.stats();
    assert_eq!(
        (stats.delivered, stats.purged, stats.failed),
        (10, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn shutdown_settles_every_pair() {
    let _isolated = testkit::isolate::module(module_path!());
    let mock = cluster();
    let mut sink = sink(&mock, 60);
    sink.ensure_topic(Duration::from_secs(10)).unwrap();
    sink.send(pair("a", 0, 100).view());
    sink.flush(Duration::from_secs(10)).unwrap();
    mock.broker_down(1).unwrap();
    for n in 1..6 {
        sink.send(pair("a", n, 100).view());
    }
    let stats = sink.shutdown(Duration::from_millis(300));
    assert_eq!(
        (stats.accepted, stats.delivered, stats.purged),
        (6, 1, 5),
        "{stats:?}"
    );
    assert_eq!(stats.buffered_pairs, 0);
}

#[test]
fn a_missing_topic_is_reported_by_name_and_its_pairs_fail() {
    let _isolated = testkit::isolate::module(module_path!());
    // (Creating it is tested against tansu: the mock cluster has no controller for CreateTopics.)
    let mock = MockCluster::new(1).unwrap();
    let mut config = KafkaConfig {
        brokers: vec![mock.bootstrap_servers()],
        topic: "nobody-created-this".into(),
        ..KafkaConfig::default()
    };
    config
        .properties
        .insert("topic.metadata.propagation.max.ms".into(), "1000".into());
    let mut sink = KafkaSink::new(&config, "node-a").unwrap();
    let error = sink
        .ensure_topic(Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"nobody-created-this\" does not exist"),
        "{error}"
    );
    assert_eq!(sink.topic_state(), TopicState::Missing);
    sink.send(pair("a", 0, 100).view());
    sink.send(pair("a", 1, 100).view());
    sink.flush(Duration::from_secs(20)).unwrap();
    let stats = sink.stats();
    assert_eq!((stats.failed, stats.delivered), (2, 0), "{stats:?}");
    let last = stats.last_error.unwrap_or_default();
    assert!(last.contains("nobody-created-this"), "{last}");
    // Asking did not create it.
    assert!(sink.ensure_topic(Duration::from_secs(5)).is_err());
}
