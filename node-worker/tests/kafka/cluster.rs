//! A change of the `kafka` section swaps the producer under a running sink: against the real test broker
//! (INTERCEPTOR_TEST_KAFKA; skipped without it unless INTERCEPTOR_REQUIRE_KAFKA=1), the pairs sent before
//! the change reach the old topic, those after it the new one, none is lost, and the counts add up.

use std::time::Duration;

use interceptor_crds::config::KafkaConfig;
use node_worker::cluster::sink::{SinkSwitch, SwitchableSink};
use node_worker::sink::kafka::KafkaSink;
use node_worker::sink::Sink;
use testkit::kafka::{consume, pair, test_broker, unique_topic};

fn producer(broker: &str, topic: &str) -> KafkaSink {
    let config = KafkaConfig {
        brokers: vec![broker.to_string()],
        topic: topic.to_string(),
        create_topic: true,
        topic_partitions: 1,
        ..KafkaConfig::default()
    };
    let sink = KafkaSink::new(&config, "node-a").unwrap();
    sink.ensure_topic(Duration::from_secs(30)).unwrap();
    sink
}

#[test]
fn a_kafka_change_swaps_the_producer_and_the_old_one_delivers_what_it_held() {
    let _isolated = testkit::isolate::module(module_path!());
    let Some(broker) = test_broker("a_kafka_change_swaps_the_producer") else {
        return;
    };
    let (old_topic, new_topic) = (unique_topic("swap-old"), unique_topic("swap-new"));
    let switch = SinkSwitch::new();
    switch.install(Box::new(producer(&broker, &old_topic)));
    let mut sink = SwitchableSink::new(switch.clone(), Duration::from_secs(30));
    for n in 0..200 {
        sink.send(pair("old", n, 300).view());
    }
    // The config watch installs the new producer; the capture thread's sink picks it up at its next
    // pair, while the old one still holds most of what it was given.
    switch.install(Box::new(producer(&broker, &new_topic)));
    for n in 0..100 {
        sink.send(pair("new", n, 300).view());
    }
    sink.flush(Duration::from_secs(60)).unwrap();
    let stats = sink.stats();
    assert_eq!(
        (
            stats.accepted,
            stats.delivered,
            stats.buffered_pairs,
            stats.purged,
            stats.failed
        ),
        (300, 300, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(switch.draining(), 0);

    let old = consume(&broker, &old_topic, 200, Duration::from_secs(30), &[]);
    assert_eq!(old.len(), 200);
    assert!(old
        .iter()
        .all(|m| m.key.as_deref() == Some(b"old".as_slice())));
    let new = consume(&broker, &new_topic, 100, Duration::from_secs(30), &[]);
    assert_eq!(new.len(), 100);
    assert!(new
        .iter()
        .all(|m| m.key.as_deref() == Some(b"new".as_slice())));
}
