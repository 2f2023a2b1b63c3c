//! An outage of a real broker: kill -9 while producing, purge after purgeAfter, restart, delivery resumes.
//! The test runs its own tansu (scripts/broker.sh start DIR) so that killing it disturbs no other test.

use std::time::{Duration, Instant};

use interceptor_crds::config::{KafkaConfig, MIB};
use node_worker::sink::kafka::KafkaSink;
use node_worker::sink::{OutgoingPair, Sink};
use testkit::kafka::{consume, pair, test_broker, OwnBroker};
use testkit::wait::wait_until;

#[test]
fn kill_9_purges_after_purge_after_and_delivery_resumes_after_restart() {
    let _isolated = testkit::isolate::module(module_path!());
    if test_broker("kill_9_purges_after_purge_after").is_none() {
        return;
    }
    let broker = OwnBroker::start();
    let topic = "interceptor-outage".to_string();
    let mut config = KafkaConfig {
        brokers: vec![broker.address.clone()],
        topic: topic.clone(),
        create_topic: true,
        topic_partitions: 1,
        purge_after_seconds: 3,
        buffer_bytes: MIB,
        ..KafkaConfig::default()
    };
    for (k, v) in [
        ("reconnect.backoff.ms", "100"),
        ("reconnect.backoff.max.ms", "1000"),
    ] {
        config.properties.insert(k.into(), v.into());
    }
    let mut sink = KafkaSink::new(&config, "node-a").unwrap();
    sink.ensure_topic(Duration::from_secs(30)).unwrap();

    // Before: delivered.
    let mut delivered: Vec<OutgoingPair> = (0..50).map(|n| pair("svc", n, 2000)).collect();
    for p in &delivered {
        sink.send(p.view());
    }
    sink.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(sink.stats().delivered, 50);

    // Outage: kill -9, then keep producing 20 KB pairs for 1.5 s, far more than the 1 MiB buffer holds.
    broker.kill();
    let killed = Instant::now();
    let mut sent_during_outage = 0u64;
    let mut max_buffered = 0u64;
    while killed.elapsed() < Duration::from_millis(1500) {
        for _ in 0..10 {
            sink.send(pair("svc", 10_000 + sent_during_outage as usize, 20_000).view());
            sent_during_outage += 1;
        }
        sink.poll();
        let stats = sink.stats();
        max_buffered = max_buffered.max(stats.buffered_bytes);
        assert!(
            stats.buffered_bytes <= MIB,
            "buffer over its bound: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = sink.stats();
    eprintln!("outage, after 1.5 s: {stats:?}; max buffered {max_buffered} bytes");
    assert!(stats.dropped_full > 0, "a full buffer drops: {stats:?}");
    assert!(
        max_buffered > MIB / 2,
        "the buffer was used: {max_buffered}"
    );
    assert_eq!(stats.purged, 0, "no purge before purgeAfter: {stats:?}");
    assert_eq!(
        stats.delivered, 50,
        "nothing delivered while the broker is dead"
    );

    // After purgeAfter (3 s of no delivery), the buffer and the producer's queue are purged.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s = sink.stats();
            s.purged > 0 && s.buffered_pairs == 0
        }),
        "no purge: {:?}",
        sink.stats()
    );
    let purged_after = killed.elapsed();
    eprintln!(
        "purged {:?} after the kill: {:?}",
        purged_after,
        sink.stats()
    );
    assert!(
        purged_after >= Duration::from_secs(3),
        "purged after {purged_after:?}, before purgeAfter"
    );
    let stats = sink.stats();
    assert_eq!(stats.buffered_bytes, 0);
    assert_eq!(
        sink.producer_queue_len(),
        0,
        "librdkafka's queue is purged too"
    );
    assert!(sink.purges() >= 1);
    assert_eq!(stats.connected, Some(false), "{stats:?}");
    assert_eq!(
        stats.accepted,
        stats.delivered + stats.dropped_full + stats.purged + stats.failed,
        "{stats:?}"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");

    // Restart on the same port and data directory: delivery resumes without a new sink.
    broker.restart();
    let after: Vec<OutgoingPair> = (0..30).map(|n| pair("svc", 20_000 + n, 2000)).collect();
    for p in &after {
        sink.send(p.view());
    }
    sink.flush(Duration::from_secs(60)).unwrap();
    let stats = sink.stats();
    eprintln!("after the restart: {stats:?}");
    assert_eq!(stats.delivered, 80, "{stats:?}");
    assert_eq!(stats.connected, Some(true), "{stats:?}");
    assert_eq!(stats.accepted, 50 + sent_during_outage + 30);
    assert_eq!(
        stats.accepted,
        stats.delivered + stats.dropped_full + stats.purged + stats.failed,
        "{stats:?}"
    );
    assert_eq!(stats.buffered_pairs, 0);

    // The topic holds exactly the delivered pairs: those from before the kill survived it.
    delivered.extend(after);
    let received = consume(
        &broker.address,
        &topic,
        delivered.len(),
        Duration::from_secs(60),
        &[],
    );
    let values: Vec<Vec<u8>> = received.into_iter().map(|r| r.value).collect();
    let expected: Vec<Vec<u8>> = delivered.into_iter().map(|p| p.value).collect();
    assert_eq!(values.len(), expected.len());
    assert!(
        values == expected,
        "the topic holds other bytes than the delivered pairs"
    );
}
