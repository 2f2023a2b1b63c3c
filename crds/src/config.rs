//! The worker's configuration, `config.yaml` (contract, see DESIGN.md).
//!
//! The operator renders it into the ConfigMap from an `InterceptorConfig` spec; `node-worker --config FILE`
//! reads the same file. Every key is optional and defaults to the rules of the product description. An
//! empty list switches its filter off; a size limit or timeout of `0` switches that rule off (memory stays
//! bounded by the `limits.max*Buffer*` safety limits, which cannot be switched off).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status_cadence::StatusCadence;

/// One MiB, the product description's size limit for a message and for a pair.
pub const MIB: u64 = 1024 * 1024;

/// The whole `config.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerConfig {
    pub limits: Limits,
    pub filters: Filters,
    pub redaction: Redaction,
    pub kafka: KafkaConfig,
    pub capture: CaptureConfig,
    /// How often the worker writes its InterceptorStatus. Not part of the InterceptorConfig: the
    /// operator chooses it from the number of nodes (see [`crate::status_cadence`]).
    pub status: StatusCadence,
}

/// Size limits and timeouts. The first three are product rules; the rest are safety bounds that keep the
/// worker small under any traffic (exceeding one is a counted drop, never unbounded memory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    /// A request or response (head + body as sent on the wire) larger than this is dropped. 0: no limit.
    pub max_message_bytes: u64,
    /// A pair whose request and response together are larger than this is dropped. 0: no limit.
    pub max_pair_bytes: u64,
    /// A request whose response has not started within this many seconds is dropped. 0: wait until the
    /// connection ends or goes idle.
    pub response_timeout_seconds: u64,
    /// A decoded (gunzipped, ...) body larger than this is dropped as a decompression bomb.
    pub max_decoded_body_bytes: u64,
    /// A message head (start line and headers) larger than this is dropped.
    pub max_header_bytes: u64,
    /// Connections tracked at once; a new one beyond this is not tracked and counted.
    pub max_flows: u64,
    /// Bytes buffered per connection (out-of-order segments and message bodies being collected).
    pub max_flow_buffer_bytes: u64,
    /// Bytes buffered across all connections.
    pub max_total_buffer_bytes: u64,
    /// Requests waiting for their responses on one connection (pipelining depth).
    pub max_pending_requests: u64,
    /// A connection without packets for this long is forgotten.
    pub flow_idle_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: MIB,
            max_pair_bytes: MIB,
            response_timeout_seconds: 10,
            max_decoded_body_bytes: MIB,
            max_header_bytes: 64 * 1024,
            max_flows: 65_536,
            max_flow_buffer_bytes: 4 * MIB,
            max_total_buffer_bytes: 32 * MIB,
            max_pending_requests: 64,
            flow_idle_timeout_seconds: 300,
        }
    }
}

/// What is kept and what is excluded. An empty list switches its rule off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Filters {
    /// Keep a pair only if at least one half has one of these media types (parameters such as
    /// `; charset=utf-8` allowed, compared case-insensitively). Empty: keep every content type.
    pub content_types: Vec<String>,
    /// Drop requests whose User-Agent starts with one of these (case-insensitive).
    pub exclude_user_agent_prefixes: Vec<String>,
    /// Drop pairs whose request or response carries one of these headers (name, case-insensitive).
    pub exclude_headers: Vec<String>,
    /// Drop pairs whose response status matches: an exact code (`"301"`) or a class (`"4xx"`).
    pub exclude_status_codes: Vec<String>,
    /// Drop requests to these paths (exact match, query string ignored).
    pub exclude_paths: Vec<String>,
    /// Do not capture pods in these Kubernetes namespaces (in-cluster mode).
    pub exclude_namespaces: Vec<String>,
}

impl Default for Filters {
    fn default() -> Self {
        Filters {
            content_types: strings(&["application/json", "application/x-www-form-urlencoded"]),
            exclude_user_agent_prefixes: strings(&["kube-probe"]),
            exclude_headers: strings(&["X-Soveren-Request"]),
            exclude_status_codes: strings(&["301", "308", "4xx", "5xx"]),
            exclude_paths: strings(&[
                "/metrics",
                "/healthz",
                "/api/health",
                "/api/v2/alive",
                "/api/v2/detect",
            ]),
            exclude_namespaces: Vec::new(),
        }
    }
}

/// Masking of sensitive header values before pairs leave the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Redaction {
    /// Replace the values of these headers (case-insensitive) with `[REDACTED]`. Empty: keep them all.
    pub mask_headers: Vec<String>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            mask_headers: strings(&[
                "Authorization",
                "Proxy-Authorization",
                "Cookie",
                "Set-Cookie",
            ]),
        }
    }
}

/// Where pairs go. Its `Debug` output masks the values of secret `properties` (passwords, keys, tokens).
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    /// When Kafka has been unreachable this long, the buffer is purged and the loss counted.
    pub purge_after_seconds: u64,
    /// Bytes of pairs buffered for Kafka; beyond it new pairs are dropped and counted.
    pub buffer_bytes: u64,
    /// librdkafka properties passed through as they are (TLS, SASL, compression, acks, ...).
    pub properties: BTreeMap<String, String>,
    /// The Kafka client id. Default: `interceptor-<node name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Compression of message batches: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// Acknowledgements a produce request waits for: `all` (or `-1`), `1` or `0`.
    pub acks: String,
    /// Create the topic when it does not exist (with `topicPartitions` and `topicReplicationFactor`).
    /// When false, a missing topic is reported as an error naming the topic and pairs fail until it exists.
    pub create_topic: bool,
    /// Partitions of a topic created because of `createTopic`.
    pub topic_partitions: u32,
    /// Replication factor of a topic created because of `createTopic`; `-1`: the broker's default.
    pub topic_replication_factor: i32,
}

/// What makes a librdkafka property's value a secret, on its name in lower case: one of these words in it,
/// one of these prefixes, or one of these names. The CRD's CEL rule on `kafka.properties` is generated
/// from the same lists (`interceptor_config`), so admission and [`is_secret_kafka_property`] agree.
pub(crate) const SECRET_KEY_WORDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "credential",
    "sasl.oauthbearer.config",
    "sasl.jaas.config",
];
pub(crate) const SECRET_KEY_PREFIXES: &[&str] = &["ssl.key.", "ssl_key"];
pub(crate) const SECRET_KEYS: &[&str] = &["sasl.username"];

/// Whether the value of a librdkafka property is a secret that must never appear in logs or status
/// (SASL user names and passwords, private keys and their passwords, OAuth configuration and tokens).
/// The operator keeps these keys out of ConfigMaps.
pub fn is_secret_kafka_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_WORDS.iter().any(|word| key.contains(word))
        || SECRET_KEY_PREFIXES
            .iter()
            .any(|prefix| key.starts_with(prefix))
        || SECRET_KEYS.contains(&key.as_str())
}

/// librdkafka properties `kafka.properties` may not set: the worker counts every pair by its delivery
/// report (delivered, purged, failed), and these switch reports off or leave successes unreported, so
/// pairs would stay counted as buffered for ever. Refused by [`KafkaConfig::validate`] and by the CRD's
/// CEL rule on `kafka.properties`, with [`WORKER_OWNED_KAFKA_PROPERTY_REASON`].
pub const WORKER_OWNED_KAFKA_PROPERTIES: &[&str] =
    &["delivery.report.only.error", "enable.delivery.reports"];

/// Why a property of [`WORKER_OWNED_KAFKA_PROPERTIES`] is refused (the CEL rule's message ends the same).
pub const WORKER_OWNED_KAFKA_PROPERTY_REASON: &str =
    "cannot be set: the worker needs every delivery report";

impl KafkaConfig {
    /// `properties` with secret values replaced by `[redacted]`: safe to log.
    pub fn redacted_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_kafka_property(key) {
                    "[redacted]"
                } else {
                    value.as_str()
                };
                (key.clone(), shown.to_string())
            })
            .collect()
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("purge_after_seconds", &self.purge_after_seconds)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("properties", &self.redacted_properties())
            .field("client_id", &self.client_id)
            .field("compression", &self.compression)
            .field("acks", &self.acks)
            .field("create_topic", &self.create_topic)
            .field("topic_partitions", &self.topic_partitions)
            .field("topic_replication_factor", &self.topic_replication_factor)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: strings(&["kafka.kafka:9092"]),
            topic: "interceptor-pairs".to_string(),
            purge_after_seconds: 60,
            buffer_bytes: 64 * MIB,
            properties: BTreeMap::new(),
            client_id: None,
            compression: "lz4".to_string(),
            acks: "all".to_string(),
            create_topic: false,
            topic_partitions: 3,
            topic_replication_factor: -1,
        }
    }
}

/// What is captured, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CaptureConfig {
    /// Tap a pod's loopback instead of its external interface when a service-mesh sidecar runs in it.
    pub mesh_detection: bool,
    /// Interface names never tapped (exact names, or prefixes ending in `*`).
    pub skip_interfaces: Vec<String>,
    /// Bytes captured per packet.
    pub snaplen: u32,
    /// Seconds between rescans of the host's network namespaces.
    pub rescan_seconds: u64,
    /// Kernel capture buffer per interface, in bytes.
    pub buffer_bytes: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mesh_detection: true,
            skip_interfaces: Vec::new(),
            snaplen: 262_144,
            rescan_seconds: 10,
            buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The largest size limit (`limits.maxMessageBytes`, `limits.maxPairBytes`); other bounds go to 4 times it.
const MAX_LIMIT: u64 = 1 << 30;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid YAML for config.yaml: {0}")]
    Syntax(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A status-code rule: an exact code or a whole class such as `4xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMatcher {
    Exact(u16),
    Class(u16),
}

impl StatusMatcher {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bytes = t.as_bytes();
        if bytes.len() == 3
            && bytes[1..].eq_ignore_ascii_case(b"xx")
            && (b'1'..=b'5').contains(&bytes[0])
        {
            return Ok(StatusMatcher::Class(u16::from(bytes[0] - b'0')));
        }
        match t.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(StatusMatcher::Exact(code)),
            _ => Err(format!(
                "{text:?} is neither a status code (100-599) nor a class such as \"4xx\""
            )),
        }
    }

    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatcher::Exact(code) => status == code,
            StatusMatcher::Class(class) => status / 100 == class,
        }
    }
}

/// A config together with the keys it contained that this version does not know (a newer operator may
/// write keys an older worker does not understand yet: warn, do not refuse).
#[derive(Debug)]
pub struct Loaded {
    pub config: WorkerConfig,
    pub unknown_keys: Vec<String>,
}

impl WorkerConfig {
    /// Parse and validate `config.yaml` text.
    pub fn from_yaml(text: &str) -> Result<Loaded, ConfigError> {
        let mut unknown_keys = Vec::new();
        let config: WorkerConfig = if text.trim().is_empty() {
            WorkerConfig::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_ignored::deserialize(de, |path| unknown_keys.push(path.to_string()))
                .map_err(|e| ConfigError::Syntax(e.to_string()))?
        };
        config.validate()?;
        Ok(Loaded {
            config,
            unknown_keys,
        })
    }

    /// The YAML the operator writes into the ConfigMap.
    pub fn to_yaml(&self) -> String {
        // Serialising plain structs, maps and strings cannot fail.
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// Refuse what must never reach a worker. The same rules are CEL validations on the CRD.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (field, value) in [
            ("limits.maxMessageBytes", l.max_message_bytes),
            ("limits.maxPairBytes", l.max_pair_bytes),
        ] {
            if value > MAX_LIMIT {
                return Err(invalid(
                    field,
                    format!("{value} is above the ceiling of {MAX_LIMIT} (1 GiB)"),
                ));
            }
        }
        for (field, value) in [
            ("limits.maxDecodedBodyBytes", l.max_decoded_body_bytes),
            ("limits.maxHeaderBytes", l.max_header_bytes),
            ("limits.maxFlows", l.max_flows),
            ("limits.maxFlowBufferBytes", l.max_flow_buffer_bytes),
            ("limits.maxTotalBufferBytes", l.max_total_buffer_bytes),
            ("limits.maxPendingRequests", l.max_pending_requests),
            ("limits.flowIdleTimeoutSeconds", l.flow_idle_timeout_seconds),
        ] {
            if value == 0 {
                return Err(invalid(
                    field,
                    "must be positive (it is a safety bound and cannot be switched off)",
                ));
            }
            if value > MAX_LIMIT * 4 {
                return Err(invalid(field, format!("{value} is unreasonably large")));
            }
        }
        if l.max_header_bytes < 256 {
            return Err(invalid("limits.maxHeaderBytes", "must be at least 256"));
        }
        if l.max_flow_buffer_bytes > l.max_total_buffer_bytes {
            return Err(invalid(
                "limits.maxFlowBufferBytes",
                "must not exceed limits.maxTotalBufferBytes",
            ));
        }
        if l.response_timeout_seconds > 3600 {
            return Err(invalid(
                "limits.responseTimeoutSeconds",
                "must be at most 3600",
            ));
        }
        for ct in &self.filters.content_types {
            if ct.trim().is_empty() || !ct.contains('/') {
                return Err(invalid(
                    "filters.contentTypes",
                    format!("{ct:?} is not a media type such as application/json"),
                ));
            }
        }
        for code in &self.filters.exclude_status_codes {
            StatusMatcher::parse(code).map_err(|r| invalid("filters.excludeStatusCodes", r))?;
        }
        for path in &self.filters.exclude_paths {
            if !path.starts_with('/') {
                return Err(invalid(
                    "filters.excludePaths",
                    format!("{path:?} must start with '/'"),
                ));
            }
        }
        for (field, list) in [
            ("filters.excludeHeaders", &self.filters.exclude_headers),
            ("redaction.maskHeaders", &self.redaction.mask_headers),
        ] {
            if let Some(bad) = list.iter().find(|h| !is_token(h)) {
                return Err(invalid(
                    field,
                    format!("{bad:?} is not a valid header name"),
                ));
            }
        }
        self.kafka.validate()?;
        let c = &self.capture;
        if !(64..=262_144).contains(&c.snaplen) {
            return Err(invalid("capture.snaplen", "must be between 64 and 262144"));
        }
        if c.rescan_seconds == 0 {
            return Err(invalid("capture.rescanSeconds", "must be positive"));
        }
        if !(65_536..=1 << 30).contains(&c.buffer_bytes) {
            return Err(invalid(
                "capture.bufferBytes",
                "must be between 64 KiB and 1 GiB",
            ));
        }
        self.status
            .check()
            .map_err(|(field, reason)| invalid(field, reason))?;
        Ok(())
    }
}

impl KafkaConfig {
    /// Refuse what must never reach a producer: the `kafka` part of [`WorkerConfig::validate`], and the
    /// only place brokers, topic and properties are checked (the sink builds its producer from a config
    /// that passed it). The same rules are CEL validations on the CRD.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(invalid("kafka.brokers", "at least one broker is required"));
        }
        if let Some(bad) = self.brokers.iter().find(|b| !is_host_port(b)) {
            return Err(invalid(
                "kafka.brokers",
                format!("{bad:?} is not host:port"),
            ));
        }
        if !is_topic_name(&self.topic) {
            return Err(invalid(
                "kafka.topic",
                format!(
                    "{:?} is not a legal topic name (1-249 of [a-zA-Z0-9._-])",
                    self.topic
                ),
            ));
        }
        if self.buffer_bytes < 1024 * 1024 || self.buffer_bytes > MAX_LIMIT * 4 {
            return Err(invalid(
                "kafka.bufferBytes",
                "must be between 1 MiB and 4 GiB",
            ));
        }
        if self.purge_after_seconds == 0 {
            return Err(invalid("kafka.purgeAfterSeconds", "must be positive"));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return Err(invalid(
                "kafka.compression",
                format!(
                    "{:?} is not one of none, gzip, snappy, lz4, zstd",
                    self.compression
                ),
            ));
        }
        if !["all", "-1", "0", "1"].contains(&self.acks.as_str()) {
            return Err(invalid(
                "kafka.acks",
                format!("{:?} is not one of all, -1, 0, 1", self.acks),
            ));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "kafka.clientId",
                    "must be 1-255 printable ASCII characters",
                ));
            }
        }
        if !(1..=10_000).contains(&self.topic_partitions) {
            return Err(invalid(
                "kafka.topicPartitions",
                "must be between 1 and 10000",
            ));
        }
        if self.topic_replication_factor == 0
            || self.topic_replication_factor < -1
            || self.topic_replication_factor > 32
        {
            return Err(invalid(
                "kafka.topicReplicationFactor",
                "must be -1 (broker default) or 1-32",
            ));
        }
        if let Some(key) = self
            .properties
            .keys()
            .find(|key| WORKER_OWNED_KAFKA_PROPERTIES.contains(&key.as_str()))
        {
            return Err(invalid(
                "kafka.properties",
                format!("{key:?} {WORKER_OWNED_KAFKA_PROPERTY_REASON}"),
            ));
        }
        Ok(())
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn is_host_port(broker: &str) -> bool {
    match broker.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_the_product_defaults() {
        let loaded = WorkerConfig::from_yaml("").unwrap();
        assert_eq!(loaded.config, WorkerConfig::default());
        assert_eq!(loaded.config.limits.max_message_bytes, 1_048_576);
        assert_eq!(loaded.config.limits.response_timeout_seconds, 10);
        assert_eq!(loaded.config.kafka.purge_after_seconds, 60);
    }

    #[test]
    fn the_design_example_parses() {
        let text = r#"
limits:   {maxMessageBytes: 1048576, maxPairBytes: 1048576, responseTimeoutSeconds: 10}
filters:
  contentTypes: [application/json, application/x-www-form-urlencoded]
  excludeUserAgentPrefixes: [kube-probe]
  excludeHeaders: [X-Soveren-Request]
  excludeStatusCodes: ["301", "308", "4xx", "5xx"]
  excludePaths: [/metrics, /healthz, /api/health, /api/v2/alive, /api/v2/detect]
kafka:
  brokers: ["kafka.kafka:9092"]
  topic: interceptor-pairs
  purgeAfterSeconds: 60
  bufferBytes: 67108864
  properties: {}
capture:  {meshDetection: true, skipInterfaces: [], snaplen: 262144, rescanSeconds: 10}
"#;
        let loaded = WorkerConfig::from_yaml(text).unwrap();
        assert_eq!(loaded.config, WorkerConfig::default());
        assert!(loaded.unknown_keys.is_empty());
    }

    #[test]
    fn empty_lists_switch_rules_off_and_unknown_keys_are_reported() {
        let loaded = WorkerConfig::from_yaml(
            "filters: {contentTypes: [], excludePaths: []}\nfuture: {x: 1}\n",
        )
        .unwrap();
        assert!(loaded.config.filters.content_types.is_empty());
        assert!(loaded.config.filters.exclude_paths.is_empty());
        assert_eq!(
            loaded.config.filters.exclude_user_agent_prefixes,
            vec!["kube-probe"]
        );
        assert_eq!(loaded.unknown_keys, vec!["future".to_string()]);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        for (yaml, field) in [
            (
                "filters: {excludeStatusCodes: [\"6xx\"]}",
                "filters.excludeStatusCodes",
            ),
            (
                "filters: {excludeStatusCodes: [\"abc\"]}",
                "filters.excludeStatusCodes",
            ),
            ("filters: {excludePaths: [metrics]}", "filters.excludePaths"),
            ("kafka: {brokers: []}", "kafka.brokers"),
            ("kafka: {brokers: [\"nohost\"]}", "kafka.brokers"),
            ("kafka: {topic: \"bad topic\"}", "kafka.topic"),
            ("kafka: {compression: brotli}", "kafka.compression"),
            ("kafka: {acks: \"2\"}", "kafka.acks"),
            ("kafka: {clientId: \"has space\"}", "kafka.clientId"),
            ("kafka: {topicPartitions: 0}", "kafka.topicPartitions"),
            (
                "kafka: {properties: {delivery.report.only.error: \"true\"}}",
                "kafka.properties",
            ),
            (
                "kafka: {properties: {enable.delivery.reports: \"false\"}}",
                "kafka.properties",
            ),
            (
                "kafka: {topicReplicationFactor: 0}",
                "kafka.topicReplicationFactor",
            ),
            ("limits: {maxFlows: 0}", "limits.maxFlows"),
            (
                "limits: {maxMessageBytes: 99999999999}",
                "limits.maxMessageBytes",
            ),
            ("capture: {snaplen: 10}", "capture.snaplen"),
            (
                "redaction: {maskHeaders: [\"bad header\"]}",
                "redaction.maskHeaders",
            ),
        ] {
            match WorkerConfig::from_yaml(yaml) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{yaml}"),
                other => panic!("{yaml}: expected an error on {field}, got {other:?}"),
            }
        }
        assert!(matches!(
            WorkerConfig::from_yaml("limits: [1, 2"),
            Err(ConfigError::Syntax(_))
        ));
        assert!(matches!(
            WorkerConfig::from_yaml("limits: {maxMessageBytes: -1}"),
            Err(ConfigError::Syntax(_))
        ));
    }

    #[test]
    fn properties_the_worker_owns_are_refused_and_credentials_are_not() {
        for key in WORKER_OWNED_KAFKA_PROPERTIES {
            let yaml = format!("kafka: {{properties: {{{key}: \"true\"}}}}");
            let error = WorkerConfig::from_yaml(&yaml).unwrap_err().to_string();
            assert_eq!(
                error,
                format!("kafka.properties: {key:?} {WORKER_OWNED_KAFKA_PROPERTY_REASON}")
            );
        }
        // Outside Kubernetes, `--config` may carry SASL credentials (in-cluster the operator keeps them
        // out of the ConfigMap: they come from the Secret as environment variables).
        let loaded = WorkerConfig::from_yaml(
            "kafka: {properties: {sasl.username: svc, sasl.password: pw, linger.ms: \"5\"}}",
        )
        .unwrap();
        assert_eq!(loaded.config.kafka.properties.len(), 3);
    }

    #[test]
    fn status_matchers() {
        assert!(StatusMatcher::parse("4xx").unwrap().matches(404));
        assert!(StatusMatcher::parse("4XX").unwrap().matches(499));
        assert!(!StatusMatcher::parse("4xx").unwrap().matches(399));
        assert!(StatusMatcher::parse("301").unwrap().matches(301));
        assert!(!StatusMatcher::parse("301").unwrap().matches(302));
        assert!(StatusMatcher::parse("600").is_err());
    }

    #[test]
    fn kafka_debug_masks_secret_properties() {
        let mut kafka = KafkaConfig::default();
        for (key, value) in [
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "keypass"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("sasl.oauthbearer.client.secret", "oauth-secret"),
            ("sasl.username", "alice"),
            ("security.protocol", "SASL_SSL"),
        ] {
            kafka.properties.insert(key.to_string(), value.to_string());
        }
        let shown = format!(
            "{kafka:?} {:?}",
            WorkerConfig {
                kafka: kafka.clone(),
                ..WorkerConfig::default()
            }
        );
        for secret in ["hunter2", "keypass", "BEGIN PRIVATE KEY", "oauth-secret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(
            !shown.contains("alice"),
            "sasl.username is masked as the operator treats it"
        );
        assert!(shown.contains("SASL_SSL") && shown.contains("[redacted]"));
        assert_eq!(kafka.properties["sasl.password"], "hunter2");
        for key in [
            "sasl.password",
            "sasl.username",
            "ssl.key.pem",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret_kafka_property(key), "{key}");
        }
        for key in [
            "security.protocol",
            "ssl.ca.pem",
            "ssl.certificate.pem",
            "acks",
        ] {
            assert!(!is_secret_kafka_property(key), "{key}");
        }
    }

    #[test]
    fn kafka_additions_parse() {
        let loaded = WorkerConfig::from_yaml(
            "kafka: {clientId: worker-a, compression: zstd, acks: \"1\", createTopic: true, topicPartitions: 6}",
        )
        .unwrap();
        let k = loaded.config.kafka;
        assert_eq!(k.client_id.as_deref(), Some("worker-a"));
        assert_eq!((k.compression.as_str(), k.acks.as_str()), ("zstd", "1"));
        assert!(k.create_topic);
        assert_eq!((k.topic_partitions, k.topic_replication_factor), (6, -1));
        assert!(loaded.unknown_keys.is_empty());
    }

    #[test]
    fn yaml_round_trips() {
        let config = WorkerConfig::default();
        let back = WorkerConfig::from_yaml(&config.to_yaml()).unwrap();
        assert_eq!(back.config, config);
    }
}
