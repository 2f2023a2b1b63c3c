//! The ConfigMap watch against a mocked API server: the list and watch requests (namespace, field
//! selector, RBAC), the first config applied with a new producer, changes applied without a restart
//! (filters at once; a Kafka change builds a new producer that the running sink picks up), invalid
//! configs and producers that cannot be built refused with the reason while the last good config stays,
//! and a deleted ConfigMap reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use interceptor_crds::config::{KafkaConfig, WorkerConfig};
use kube::Api;
use node_worker::cluster::config::{ConfigTracker, ConfigWatch};
use node_worker::cluster::sink::{ClusterSink, SinkFactory, SinkSwitch, SwitchableSink};
use node_worker::cluster::state::{ConfigState, Shared};
use node_worker::sink::{OutgoingPair, Sink, SinkError};
use testkit::cluster::*;
use testkit::sink::TestSink;
use testkit::wait::eventually;
use tokio::sync::watch;

/// Builds recording sinks; refuses the topic "unbuildable" as librdkafka refuses a bad property.
#[derive(Default)]
struct Factory {
    builds: Mutex<Vec<String>>,
    /// Every sink built records here, labelled with its topic.
    pairs: TestSink,
}

impl SinkFactory for Factory {
    fn build(&self, kafka: &KafkaConfig) -> Result<Box<dyn ClusterSink>, SinkError> {
        if kafka.topic == "unbuildable" {
            return Err(SinkError::Kafka(
                "Invalid value for configuration property (test)".into(),
            ));
        }
        self.builds.lock().unwrap().push(kafka.topic.clone());
        Ok(Box::new(self.pairs.labelled(&kafka.topic)))
    }
}

fn pair(n: u32) -> OutgoingPair {
    OutgoingPair {
        key: "k".into(),
        value: format!("{n}").into_bytes(),
    }
}

#[tokio::test]
async fn config_changes_apply_live_and_invalid_ones_are_refused_and_reported() {
    let (client, mut handle) = mock_client();
    let shared = Shared::new();
    let switch = SinkSwitch::new();
    let factory = Arc::new(Factory::default());
    let (applied_tx, applied) = watch::channel::<Option<Arc<WorkerConfig>>>(None);
    let task = tokio::spawn(
        ConfigWatch {
            api: Api::namespaced(client, NAMESPACE),
            display: format!("{NAMESPACE}/{CONFIG_MAP}"),
            name: CONFIG_MAP.into(),
            factory: factory.clone(),
            switch: Arc::clone(&switch),
            shared: Arc::clone(&shared),
            applied: applied_tx,
            tracker: ConfigTracker::default(),
        }
        .run(),
    );
    let current = || applied.borrow().clone();

    // The list: only our ConfigMap, in our namespace.
    let (seen, send) = next(&mut handle).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/api/v1/namespaces/interceptor-system/configmaps")
    );
    assert_eq!(
        seen.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=default-config")
    );
    assert!(!seen.is_watch());
    let first = "limits: {maxMessageBytes: 2048}\nkafka: {brokers: ['k:9092'], topic: first}\n";
    send.send_response(json_response(
        200,
        &list(
            "ConfigMapList",
            "v1",
            "10",
            vec![config_map("1", Some(first))],
        ),
    ));
    eventually("the first config applied", Duration::from_secs(5), || {
        current().is_some()
    })
    .await;
    assert_eq!(current().unwrap().limits.max_message_bytes, 2048);
    assert_eq!(*factory.builds.lock().unwrap(), vec!["first"]);
    assert_eq!(
        shared.config(),
        ConfigState {
            version: Some("1".into()),
            refused: None
        }
    );
    // The capture thread's sink starts with the producer built for it.
    let mut sink = SwitchableSink::new(Arc::clone(&switch), Duration::from_secs(1));
    sink.send(pair(1).view());

    // The watch resumes from the list's resourceVersion.
    let (seen, send) = next(&mut handle).await;
    assert!(seen.is_watch());
    assert_eq!(
        seen.path,
        "/api/v1/namespaces/interceptor-system/configmaps"
    );
    assert_eq!(
        seen.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=default-config")
    );
    assert_eq!(
        seen.query.get("resourceVersion").map(String::as_str),
        Some("10")
    );
    let (response, events) = watch_response();
    send.send_response(response);

    // Filters change: applied at once, same producer.
    let filters = format!("{first}filters: {{excludePaths: []}}\n");
    events.send("MODIFIED", &config_map("2", Some(&filters)));
    eventually("the filter change applied", Duration::from_secs(5), || {
        current().is_some_and(|c| c.filters.exclude_paths.is_empty())
    })
    .await;
    assert_eq!(factory.builds.lock().unwrap().len(), 1);
    assert_eq!(shared.config().version.as_deref(), Some("2"));

    // Invalid: refused with the reason; the last good config stays.
    events.send(
        "MODIFIED",
        &config_map("3", Some("limits: {maxMessageBytes: lots}\n")),
    );
    eventually(
        "the invalid config reported",
        Duration::from_secs(5),
        || shared.config().refused.is_some(),
    )
    .await;
    let state = shared.config();
    assert_eq!(state.version.as_deref(), Some("2"));
    let reason = state.refused.unwrap();
    assert!(
        reason.starts_with("config.yaml of resourceVersion 3 refused: ")
            && reason.ends_with("; running with resourceVersion 2"),
        "{reason}"
    );
    assert!(current().unwrap().filters.exclude_paths.is_empty());
    events.send("MODIFIED", &config_map("4", None));
    eventually(
        "a ConfigMap without config.yaml reported",
        Duration::from_secs(5),
        || {
            shared.config().refused.is_some_and(|r| {
                r.contains("resourceVersion 4") && r.contains("no config.yaml key")
            })
        },
    )
    .await;

    // Kafka changes: a new producer; the running sink switches to it, nothing buffered is lost.
    let second = "kafka: {brokers: ['k:9092'], topic: second}\n";
    events.send("MODIFIED", &config_map("5", Some(second)));
    eventually("the kafka change applied", Duration::from_secs(5), || {
        current().is_some_and(|c| c.kafka.topic == "second")
    })
    .await;
    assert_eq!(*factory.builds.lock().unwrap(), vec!["first", "second"]);
    assert_eq!(
        shared.config(),
        ConfigState {
            version: Some("5".into()),
            refused: None
        }
    );
    sink.send(pair(2).view());
    sink.flush(Duration::from_secs(5)).unwrap();
    let topics: Vec<String> = factory
        .pairs
        .labelled_pairs()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(topics, vec!["first", "second"]);

    // A producer that cannot be built refuses the config: the last good one (and producer) stays.
    let bad_kafka = "kafka: {brokers: ['k:9092'], topic: unbuildable}\n";
    events.send("MODIFIED", &config_map("6", Some(bad_kafka)));
    eventually(
        "the unbuildable producer reported",
        Duration::from_secs(5),
        || {
            shared.config().refused.is_some_and(|r| {
                r.contains("resourceVersion 6 refused: kafka: ")
                    && r.contains("running with resourceVersion 5")
            })
        },
    )
    .await;
    assert_eq!(current().unwrap().kafka.topic, "second");

    // Deleted: reported; capture goes on with the last good config.
    events.send("DELETED", &config_map("7", Some(second)));
    eventually("the deletion reported", Duration::from_secs(5), || {
        shared.config().refused.is_some_and(|r| {
            r == "ConfigMap interceptor-system/default-config not found; running with resourceVersion 5"
        })
    })
    .await;
    assert_eq!(current().unwrap().kafka.topic, "second");
    task.abort();
}

#[tokio::test]
async fn without_a_configmap_nothing_is_applied_until_it_appears() {
    let (client, mut handle) = mock_client();
    let shared = Shared::new();
    let factory = Arc::new(Factory::default());
    let (applied_tx, applied) = watch::channel::<Option<Arc<WorkerConfig>>>(None);
    let task = tokio::spawn(
        ConfigWatch {
            api: Api::namespaced(client, NAMESPACE),
            display: format!("{NAMESPACE}/{CONFIG_MAP}"),
            name: CONFIG_MAP.into(),
            factory: factory.clone(),
            switch: SinkSwitch::new(),
            shared: Arc::clone(&shared),
            applied: applied_tx,
            tracker: ConfigTracker::default(),
        }
        .run(),
    );
    let (_, send) = next(&mut handle).await;
    send.send_response(json_response(
        200,
        &list("ConfigMapList", "v1", "3", vec![]),
    ));
    eventually("the missing ConfigMap reported", Duration::from_secs(5), || {
        shared.config().refused.is_some_and(|r| {
            r == "ConfigMap interceptor-system/default-config not found; not capturing until a valid config arrives"
        })
    })
    .await;
    assert!(applied.borrow().is_none());

    let (seen, send) = next(&mut handle).await;
    assert!(seen.is_watch());
    let (response, events) = watch_response();
    send.send_response(response);
    events.send("ADDED", &config_map("4", Some("")));
    eventually("the new ConfigMap applied", Duration::from_secs(5), || {
        applied.borrow().is_some()
    })
    .await;
    assert_eq!(
        **applied.borrow().as_ref().unwrap(),
        WorkerConfig::default()
    );
    assert_eq!(
        shared.config(),
        ConfigState {
            version: Some("4".into()),
            refused: None
        }
    );
    assert_eq!(factory.builds.lock().unwrap().len(), 1);
    task.abort();
}
