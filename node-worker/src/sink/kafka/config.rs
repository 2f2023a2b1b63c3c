//! The producer's and the admin client's librdkafka configuration, made from the `kafka` section and the
//! credentials the operator passes in environment variables. Pure: testable without a broker.
//!
//! What a `kafka` section may hold is decided once, by [`KafkaConfig::validate`] in `crds` (the worker
//! at load and reload, the operator when it renders, and [`client_config`] here for callers that built
//! a `KafkaConfig` themselves): brokers, topic, and the librdkafka properties the sink needs for itself.

use interceptor_crds::config::{is_secret_kafka_property, KafkaConfig};
use interceptor_crds::worker_env::KAFKA_CREDENTIAL_PROPERTIES;
use rdkafka::config::ClientConfig;

use crate::sink::SinkError;

/// Largest message the producer accepts. A pair of 1 MiB (the default limit) can take more than 1 MiB as
/// JSON (escapes, base64), above librdkafka's default of 1,000,000. The broker's and the topic's limits
/// (`message.max.bytes`, `max.message.bytes`) still apply; a refused pair is counted as failed.
const MESSAGE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Our settings that a user property may replace under another name (librdkafka aliases): when the user
/// sets the alias, ours is left out, so that which one wins never depends on the order they are applied.
const ALIASES: &[(&str, &str)] = &[
    ("bootstrap.servers", "metadata.broker.list"),
    ("acks", "request.required.acks"),
    ("compression.type", "compression.codec"),
    ("message.timeout.ms", "delivery.timeout.ms"),
    ("queue.buffering.max.ms", "linger.ms"),
    ("max.in.flight.requests.per.connection", "max.in.flight"),
];

/// Properties that only mean something to a producer, left out of the admin client's configuration.
const PRODUCER_ONLY_PREFIXES: &[&str] = &["queue.", "compression.", "batch."];
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "request.required.acks",
    "linger.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "enable.idempotence",
    "retries",
    "partitioner",
    "transactional.id",
    "message.send.max.retries",
];

/// `config` with the credentials found by `lookup` (environment variables named in
/// `worker_env::KAFKA_CREDENTIAL_PROPERTIES`) set as librdkafka properties.
pub(super) fn with_credentials(
    config: &KafkaConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> KafkaConfig {
    let mut config = config.clone();
    for (variable, property) in KAFKA_CREDENTIAL_PROPERTIES {
        if let Some(value) = lookup(variable).filter(|v| !v.is_empty()) {
            config.properties.insert(property.to_string(), value);
        }
    }
    config
}

pub(super) fn client_id(config: &KafkaConfig, node: &str) -> String {
    match &config.client_id {
        Some(id) => id.clone(),
        None if node.is_empty() => "interceptor".to_string(),
        None => format!("interceptor-{node}"),
    }
}

/// The producer's librdkafka configuration: our settings, then the user's `properties` (which win).
/// Refuses, with the field named, whatever [`KafkaConfig::validate`] refuses.
pub(super) fn client_config(config: &KafkaConfig, node: &str) -> Result<ClientConfig, SinkError> {
    config
        .validate()
        .map_err(|e| SinkError::Config(e.to_string()))?;
    let purge_after_ms = config.purge_after_seconds.max(1).saturating_mul(1000);
    let buffer_kbytes = (config.buffer_bytes / 1024).saturating_add(1024);
    let ours: Vec<(&str, String)> = vec![
        ("bootstrap.servers", config.brokers.join(",")),
        ("client.id", client_id(config, node)),
        ("compression.type", config.compression.clone()),
        ("acks", config.acks.clone()),
        ("message.max.bytes", MESSAGE_MAX_BYTES.to_string()),
        // Our byte accounting is the bound; librdkafka's own limits sit just above it.
        (
            "queue.buffering.max.kbytes",
            buffer_kbytes.min(i32::MAX as u64).to_string(),
        ),
        (
            "queue.buffering.max.messages",
            (config.buffer_bytes / 128)
                .clamp(100_000, 10_000_000)
                .to_string(),
        ),
        // A pair that cannot be delivered for twice purgeAfter fails (a partition without a leader
        // while others work); a whole outage is purged before that.
        (
            "message.timeout.ms",
            purge_after_ms
                .saturating_mul(2)
                .clamp(10_000, i32::MAX as u64)
                .to_string(),
        ),
        // How long a pair may wait for others to share its batch (librdkafka's linger.ms). Fuller batches
        // mean fewer produce requests, better lz4 and less work on both sides: 100 ms instead of 20 took
        // the worker's cost per pair into Kafka down by 29 % at 2 000 pairs/s and 25 % at 5 000/s, and the
        // broker's too (`make bench`, BENCHMARKS.md). A pair reaches Kafka at most a tenth of a second
        // later; nothing downstream needs it sooner.
        ("queue.buffering.max.ms", "100".to_string()),
        // Each produce request in flight holds its batch (and a compressed copy) beside the pairs our
        // accounting bounds. With librdkafka's default (1 000 000 per connection) a broker that could not
        // keep up took the worker to 177 MiB of RSS with a 64 MiB buffer (`make bench`, Kafka at 10 000
        // pairs/s); with the Java client's default of 5 it stayed at 87 MiB and delivered every pair.
        ("max.in.flight.requests.per.connection", "5".to_string()),
        ("statistics.interval.ms", "1000".to_string()),
        // A missing topic is created by kafka.createTopic, not as a side effect of asking for metadata.
        ("allow.auto.create.topics", "false".to_string()),
    ];
    let mut client_config = ClientConfig::new();
    for (key, value) in ours {
        let replaced = ALIASES
            .iter()
            .any(|(ours, alias)| *ours == key && config.properties.contains_key(*alias));
        if !replaced {
            client_config.set(key, value);
        }
    }
    for (key, value) in &config.properties {
        client_config.set(key, value);
    }
    Ok(client_config)
}

/// The admin client's configuration: connection and security settings only.
pub(super) fn admin_config(config: &KafkaConfig, node: &str) -> ClientConfig {
    let mut admin = ClientConfig::new();
    admin.set("bootstrap.servers", config.brokers.join(","));
    admin.set("client.id", format!("{}-admin", client_id(config, node)));
    for (key, value) in &config.properties {
        let producer_only = PRODUCER_ONLY_PREFIXES
            .iter()
            .any(|prefix| key.starts_with(prefix))
            || PRODUCER_ONLY.contains(&key.as_str());
        if !producer_only {
            admin.set(key, value);
        }
    }
    admin
}

/// Brokers, topic, client id and properties with secrets masked: the sink's `Debug` output and log line.
pub(super) fn description(config: &KafkaConfig, node: &str) -> String {
    format!(
        "KafkaSink {{ brokers: {:?}, topic: {:?}, client_id: {:?}, properties: {:?} }}",
        config.brokers,
        config.topic,
        client_id(config, node),
        config.redacted_properties()
    )
}

/// The values of the secret properties of `config`.
pub(super) fn secret_values(config: &KafkaConfig) -> Vec<String> {
    config
        .properties
        .iter()
        .filter(|(key, value)| is_secret_kafka_property(key) && !value.is_empty())
        .map(|(_, value)| value.clone())
        .collect()
}

/// `text` with secret values replaced (librdkafka's configuration errors quote values).
pub(super) fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text
}

/// The default `kafka` section with these `properties`: for the tests of the sink's modules.
#[cfg(test)]
pub(super) fn config_with(properties: &[(&str, &str)]) -> KafkaConfig {
    let mut config = KafkaConfig::default();
    for (k, v) in properties {
        config.properties.insert(k.to_string(), v.to_string());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_settings_then_the_users_properties() {
        let config = config_with(&[("linger.ms", "100"), ("security.protocol", "plaintext")]);
        let client = client_config(&config, "node-a").unwrap();
        assert_eq!(client.get("bootstrap.servers"), Some("kafka.kafka:9092"));
        assert_eq!(client.get("client.id"), Some("interceptor-node-a"));
        assert_eq!(client.get("compression.type"), Some("lz4"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("message.max.bytes"), Some("8388608"));
        assert_eq!(client.get("queue.buffering.max.kbytes"), Some("66560"));
        assert_eq!(client.get("message.timeout.ms"), Some("120000"));
        assert_eq!(
            client.get("max.in.flight.requests.per.connection"),
            Some("5")
        );
        // The alias replaces our setting instead of racing with it.
        assert_eq!(client.get("linger.ms"), Some("100"));
        assert_eq!(client.get("queue.buffering.max.ms"), None);
        assert_eq!(client.get("security.protocol"), Some("plaintext"));
        let defaults = client_config(&config_with(&[]), "node-a").unwrap();
        assert_eq!(defaults.get("queue.buffering.max.ms"), Some("100"));

        let config = KafkaConfig {
            client_id: Some("custom".into()),
            ..config_with(&[("compression.codec", "zstd"), ("acks", "1")])
        };
        let client = client_config(&config, "node-a").unwrap();
        assert_eq!(client.get("client.id"), Some("custom"));
        assert_eq!(client.get("compression.type"), None);
        assert_eq!(client.get("compression.codec"), Some("zstd"));
        assert_eq!(client.get("acks"), Some("1"));
    }

    #[test]
    fn the_admin_client_gets_connection_settings_only() {
        let config = config_with(&[
            ("security.protocol", "SASL_SSL"),
            ("linger.ms", "100"),
            ("queue.buffering.max.ms", "5"),
            ("acks", "1"),
        ]);
        let admin = admin_config(&config, "node-a");
        assert_eq!(admin.get("bootstrap.servers"), Some("kafka.kafka:9092"));
        assert_eq!(admin.get("client.id"), Some("interceptor-node-a-admin"));
        assert_eq!(admin.get("security.protocol"), Some("SASL_SSL"));
        for producer_only in ["linger.ms", "queue.buffering.max.ms", "acks"] {
            assert_eq!(admin.get(producer_only), None, "{producer_only}");
        }
    }

    #[test]
    fn properties_that_break_accounting_are_refused() {
        for key in ["delivery.report.only.error", "enable.delivery.reports"] {
            let config = config_with(&[(key, "true")]);
            match client_config(&config, "n") {
                Err(SinkError::Config(reason)) => {
                    assert!(reason.starts_with("kafka.properties: "), "{reason}");
                    assert!(reason.contains(key), "{reason}");
                }
                other => panic!("expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_config_the_worker_would_refuse_builds_no_producer() {
        // The checks of crds' KafkaConfig::validate, not a copy of them.
        for (config, field) in [
            (
                KafkaConfig {
                    brokers: Vec::new(),
                    ..KafkaConfig::default()
                },
                "kafka.brokers",
            ),
            (
                KafkaConfig {
                    brokers: vec!["no-port".into()],
                    ..KafkaConfig::default()
                },
                "kafka.brokers",
            ),
            (
                KafkaConfig {
                    topic: String::new(),
                    ..KafkaConfig::default()
                },
                "kafka.topic",
            ),
        ] {
            match client_config(&config, "n") {
                Err(SinkError::Config(reason)) => {
                    assert!(reason.starts_with(&format!("{field}: ")), "{reason}")
                }
                other => panic!("expected a config error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn secrets_are_masked_in_messages_and_the_description() {
        // librdkafka quotes a refused value in its error: the secret is masked there too.
        let config = config_with(&[
            ("sasl.password", "hunter2-secret"),
            ("ssl.key.password", ""),
        ]);
        let text = redact(
            "Invalid value \"hunter2-secret\" for configuration property \"sasl.password\"",
            &secret_values(&config),
        );
        assert_eq!(
            text,
            "Invalid value \"[redacted]\" for configuration property \"sasl.password\""
        );
        let shown = description(&config, "n");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("interceptor-n"), "{shown}");
    }

    #[test]
    fn credentials_from_the_operators_environment_variables_become_properties() {
        let config = config_with(&[("sasl.mechanism", "PLAIN")]);
        let with = with_credentials(&config, |name| match name {
            "INTERCEPTOR_KAFKA_SASL_USERNAME" => Some("svc".to_string()),
            "INTERCEPTOR_KAFKA_SASL_PASSWORD" => Some("pw".to_string()),
            "INTERCEPTOR_KAFKA_SSL_CA_PEM" => Some(String::new()),
            _ => None,
        });
        assert_eq!(
            with.properties.get("sasl.username").map(String::as_str),
            Some("svc")
        );
        assert_eq!(
            with.properties.get("sasl.password").map(String::as_str),
            Some("pw")
        );
        assert_eq!(
            with.properties.get("sasl.mechanism").map(String::as_str),
            Some("PLAIN")
        );
        assert!(
            !with.properties.contains_key("ssl.ca.pem"),
            "empty variables are ignored"
        );
        // The worker's own validation accepts what the credentials add.
        client_config(&with, "n").unwrap();
    }
}
