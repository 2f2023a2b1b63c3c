//! End to end: the pairs of real captures (testdata/corpus), through the pipeline, into KafkaSink, on a
//! real broker; a consumer reads back exactly the emitted pairs, byte for byte.

use std::path::{Path, PathBuf};
use std::time::Duration;

use interceptor_crds::config::{KafkaConfig, WorkerConfig};
use node_worker::pipeline::{Identity, Pipeline};
use node_worker::sink::kafka::KafkaSink;
use node_worker::sink::Sink;
use node_worker::source::file::FileSource;
use node_worker::source::{CaptureMode, InterfaceInfo};
use testkit::kafka::{by_key, consume, test_broker, unique_topic};
use testkit::sink::TestSink;

fn captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/captures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    files
}

#[test]
fn pairs_of_real_captures_reach_the_topic_byte_for_byte() {
    let _isolated = testkit::isolate::module(module_path!());
    let Some(brokers) = test_broker("pairs_of_real_captures_reach_the_topic") else {
        return;
    };
    let topic = unique_topic("interceptor-e2e");
    let mut kafka_config = KafkaConfig {
        brokers: vec![brokers.clone()],
        topic: topic.clone(),
        create_topic: true,
        ..KafkaConfig::default()
    };
    kafka_config
        .properties
        .insert("reconnect.backoff.max.ms".into(), "1000".into());
    let kafka = KafkaSink::new(&kafka_config, "e2e-node").unwrap();
    kafka.ensure_topic(Duration::from_secs(30)).unwrap();
    // One producer for every capture: each pipeline gets a clone of the tee in front of it, which
    // remembers what the pipeline emitted.
    let tee = TestSink::new().tee(Box::new(kafka));

    // Every content rule off, so that most of the corpus's exchanges become pairs.
    let mut config = WorkerConfig::default();
    config.filters.content_types.clear();
    config.filters.exclude_status_codes.clear();
    config.filters.exclude_paths.clear();
    config.filters.exclude_user_agent_prefixes.clear();
    for capture in captures() {
        let identity = Identity {
            node: "e2e-node".into(),
            interceptor: "test/interceptor".into(),
        };
        let mut pipeline = Pipeline::new(&config, identity, Box::new(tee.clone()));
        let interface = pipeline.add_interface(InterfaceInfo {
            name: capture.file_name().unwrap().to_string_lossy().into_owned(),
            netns: None,
            mode: CaptureMode::File,
        });
        let mut source = FileSource::open(&capture).unwrap();
        source.for_each(|packet| pipeline.handle(interface, packet));
        pipeline.finish(Duration::from_secs(30)).unwrap();
    }

    let emitted = tee.pairs();
    assert!(
        emitted.len() >= 20,
        "the corpus gives pairs: {}",
        emitted.len()
    );
    let stats = tee.stats();
    assert_eq!(stats.accepted, emitted.len() as u64);
    assert_eq!(stats.delivered, emitted.len() as u64, "{stats:?}");

    let received = consume(
        &brokers,
        &topic,
        emitted.len(),
        Duration::from_secs(60),
        &[],
    );
    assert_eq!(received.len(), emitted.len(), "exactly the emitted pairs");
    let mut expected = by_key(emitted.iter().map(|p| {
        let key = (!p.key.is_empty()).then(|| p.key.as_bytes().to_vec());
        (key, p.value.clone())
    }));
    let mut got = by_key(received.into_iter().map(|r| (r.key, r.value)));
    // Pairs without a key are spread over the partitions: their order across them is not kept.
    for map in [&mut expected, &mut got] {
        if let Some(keyless) = map.get_mut(&Vec::new()) {
            keyless.sort();
        }
    }
    eprintln!(
        "{} pairs with {} keys went through the topic",
        emitted.len(),
        expected.len()
    );
    assert!(
        got == expected,
        "the topic holds other bytes than the emitted pairs (per key, in order)"
    );
    for value in got.values().flatten() {
        let pair: serde_json::Value = serde_json::from_slice(value).unwrap();
        assert_eq!(pair["schema"], "interceptor.pair/v1");
    }
}
