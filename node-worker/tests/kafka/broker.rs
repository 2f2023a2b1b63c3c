//! KafkaSink against a real Kafka-protocol broker (tansu, started by `make test`; see scripts/broker.sh).

use std::time::Duration;

use interceptor_crds::config::KafkaConfig;
use node_worker::sink::kafka::{KafkaSink, TopicState, CONTENT_TYPE, SCHEMA};
use node_worker::sink::{OutgoingPair, Sink};
use testkit::kafka::{by_key, consume, pair, test_broker, unique_topic};

fn config(brokers: &str, topic: &str) -> KafkaConfig {
    let mut config = KafkaConfig {
        brokers: vec![brokers.to_string()],
        topic: topic.to_string(),
        create_topic: true,
        ..KafkaConfig::default()
    };
    config
        .properties
        .insert("reconnect.backoff.max.ms".into(), "1000".into());
    config
}

#[test]
fn pairs_are_read_back_byte_for_byte_with_their_keys_and_headers() {
    let _isolated = testkit::isolate::module(module_path!());
    let Some(brokers) = test_broker("pairs_are_read_back_byte_for_byte") else {
        return;
    };
    let topic = unique_topic("interceptor-roundtrip");
    let mut sink = KafkaSink::new(&config(&brokers, &topic), "node-a").unwrap();
    assert_eq!(
        sink.ensure_topic(Duration::from_secs(30)).unwrap(),
        TopicState::Created
    );
    let services = [
        "shop/web-1",
        "shop/cart-0",
        "10.1.0.9:8080",
        "users/api-2",
        "",
    ];
    let mut sent: Vec<OutgoingPair> = Vec::new();
    for n in 0..300 {
        sent.push(pair(services[n % services.len()], n, 40 + (n * 37) % 5000));
    }
    // A pair near the 1 MiB limit, whose JSON is larger than librdkafka's default message.max.bytes.
    sent.push(pair("shop/web-1", 1000, 1_100_000));
    for p in &sent {
        sink.send(p.view());
    }
    sink.flush(Duration::from_secs(60)).unwrap();
    let stats = sink.stats();
    assert_eq!(stats.accepted, sent.len() as u64);
    assert_eq!(stats.delivered, sent.len() as u64, "{stats:?}");
    assert_eq!(stats.buffered_pairs, 0);
    assert_eq!(stats.buffered_bytes, 0);
    assert_eq!(stats.connected, Some(true));

    let received = consume(&brokers, &topic, sent.len(), Duration::from_secs(60), &[]);
    assert_eq!(
        received.len(),
        sent.len(),
        "exactly the emitted pairs, no more, no less"
    );
    for r in &received {
        assert_eq!(
            r.headers,
            vec![
                ("schema".to_string(), SCHEMA.as_bytes().to_vec()),
                ("content-type".to_string(), CONTENT_TYPE.as_bytes().to_vec()),
            ]
        );
    }
    // Byte for byte, and in order for each key (one key, one partition).
    let expected = by_key(sent.iter().map(|p| {
        let key = (!p.key.is_empty()).then(|| p.key.as_bytes().to_vec());
        (key, p.value.clone())
    }));
    let got = by_key(received.iter().map(|r| (r.key.clone(), r.value.clone())));
    let keyless = |m: &std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>>| {
        let mut v = m.get(&Vec::new()).cloned().unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        keyless(&got),
        keyless(&expected),
        "keyless pairs (spread over partitions)"
    );
    for (key, values) in &expected {
        if !key.is_empty() {
            assert_eq!(
                got.get(key),
                Some(values),
                "pairs of key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
    // A key stays on one partition.
    for key in services.iter().filter(|k| !k.is_empty()) {
        let mut partitions: Vec<i32> = received
            .iter()
            .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
            .map(|r| r.partition)
            .collect();
        partitions.dedup();
        assert_eq!(
            partitions.len(),
            1,
            "key {key} on partitions {partitions:?}"
        );
    }
}

#[test]
fn compressed_batches_are_read_back_intact() {
    let _isolated = testkit::isolate::module(module_path!());
    let Some(brokers) = test_broker("compressed_batches_are_read_back_intact") else {
        return;
    };
    // Not snappy: tansu 0.6.0 stores snappy batches but cannot read them back ("UnexpectedType(Snappy)" in
    // its fetch); Kafka itself serves them.
    for codec in ["none", "gzip", "lz4", "zstd"] {
        let topic = unique_topic(&format!("interceptor-{codec}"));
        let mut config = config(&brokers, &topic);
        config.compression = codec.to_string();
        config.topic_partitions = 1;
        let mut sink = KafkaSink::new(&config, "node-a").unwrap();
        sink.ensure_topic(Duration::from_secs(30)).unwrap();
        let sent: Vec<OutgoingPair> = (0..20).map(|n| pair("svc", n, 3000)).collect();
        for p in &sent {
            sink.send(p.view());
        }
        sink.flush(Duration::from_secs(30)).unwrap();
        assert_eq!(sink.stats().delivered, 20, "{codec}: {:?}", sink.stats());
        let received = consume(&brokers, &topic, 20, Duration::from_secs(30), &[]);
        let values: Vec<Vec<u8>> = received.into_iter().map(|r| r.value).collect();
        let expected: Vec<Vec<u8>> = sent.into_iter().map(|p| p.value).collect();
        assert_eq!(values, expected, "{codec}");
    }
}

#[test]
fn a_missing_topic_is_an_error_naming_it_and_its_pairs_fail() {
    let _isolated = testkit::isolate::module(module_path!());
    let Some(brokers) = test_broker("a_missing_topic_is_an_error_naming_it") else {
        return;
    };
    let topic = unique_topic("interceptor-missing");
    let mut config = config(&brokers, &topic);
    config.create_topic = false;
    // Fail pairs for an unknown topic after 2 s instead of librdkafka's 30 s.
    config
        .properties
        .insert("topic.metadata.propagation.max.ms".into(), "2000".into());
    let mut sink = KafkaSink::new(&config, "node-a").unwrap();
    let error = sink.ensure_topic(Duration::from_secs(30)).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&topic) && text.contains("does not exist"),
        "{text}"
    );
    assert_eq!(sink.topic_state(), TopicState::Missing);
    for n in 0..3 {
        sink.send(pair("svc", n, 100).view());
    }
    sink.flush(Duration::from_secs(30)).unwrap();
    let stats = sink.stats();
    assert_eq!(
        (stats.accepted, stats.failed, stats.delivered),
        (3, 3, 0),
        "{stats:?}"
    );
    let last_error = stats.last_error.unwrap_or_default();
    assert!(last_error.contains(&topic), "{last_error}");
}
