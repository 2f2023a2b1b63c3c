//! `InterceptorConfig` (group `interceptor.dev`, version `v1alpha1`, short name `icfg`): what a user writes
//! to capture the traffic of the nodes it selects.
//!
//! Every field is optional and defaults to the product description's rules (the values come from
//! [`crate::config`], so the CRD's defaults and the worker's defaults cannot drift apart). CEL rules
//! (`x-kubernetes-validations`) refuse, at admission, every value that must never reach a worker; the
//! same rules are checked again by [`InterceptorConfigSpec::worker_config`] through
//! [`WorkerConfig::validate`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Duration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{
    is_secret_kafka_property, CaptureConfig, ConfigError, Filters, KafkaConfig, Limits, Redaction,
    WorkerConfig, SECRET_KEYS, SECRET_KEY_PREFIXES, SECRET_KEY_WORDS,
    WORKER_OWNED_KAFKA_PROPERTIES, WORKER_OWNED_KAFKA_PROPERTY_REASON,
};
use crate::status_cadence::StatusCadence;

/// The API group of every interceptor resource.
pub const GROUP: &str = "interceptor.dev";
/// The API version of every interceptor resource.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get interceptor` category both kinds belong to.
pub const CATEGORY: &str = "interceptor";
/// The ServiceAccount worker pods run as unless the spec names another (installed by `config/rbac`).
pub const DEFAULT_WORKER_SERVICE_ACCOUNT: &str = "interceptor-worker";

/// The desired state of one interceptor deployment: which nodes, which image, what to keep, where to send it.
// kube's repeated `printcolumn(name = .., type_ = ..)` entries are not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "interceptor.dev",
    version = "v1alpha1",
    kind = "InterceptorConfig",
    plural = "interceptorconfigs",
    shortname = "icfg",
    category = "interceptor",
    namespaced,
    status = "InterceptorConfigStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredNodes",
        description = "Nodes the worker DaemonSet should run on"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.readyNodes",
        description = "Worker pods ready"
    ),
    printcolumn(
        name = "Reporting",
        type_ = "integer",
        json_path = ".status.reportingNodes",
        description = "Workers with a fresh InterceptorStatus heartbeat"
    ),
    printcolumn(
        name = "Pairs",
        type_ = "integer",
        json_path = ".status.totals.pairsEmitted",
        description = "Request/response pairs produced, summed over reporting nodes"
    ),
    printcolumn(
        name = "Drops",
        type_ = "integer",
        json_path = ".status.totals.drops",
        priority = 1,
        description = "Messages and pairs dropped, all reasons, summed"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", default)]
pub struct InterceptorConfigSpec {
    /// Worker image. Default: the image the operator was built with (its `--worker-image` flag).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Worker image pull policy: `Always`, `IfNotPresent` or `Never`. Default: the Kubernetes default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets holding credentials for the worker image's registry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Run workers only on nodes with these labels. Default: every node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the worker pods. Default (unset): tolerate every taint, so that every node is covered.
    /// An empty list tolerates nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub tolerations: Option<Vec<Toleration>>,
    /// Requests and limits of the worker container. Default (unset): small requests (cpu 50m, memory 64Mi)
    /// and a memory limit of 512Mi.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// PriorityClass of the worker pods, e.g. `system-node-critical`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// ServiceAccount the worker pods run as. It needs the worker ClusterRole (see `config/rbac`).
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: String,
    /// Run the worker container fully privileged instead of with only the capabilities capture needs
    /// (NET_RAW, SYS_ADMIN, SYS_PTRACE). Only for nodes whose security profiles
    /// (AppArmor, SELinux) refuse those to a non-privileged container. Default: false.
    pub privileged: bool,
    /// Where pairs go.
    pub kafka: KafkaSpec,
    /// Size limits and timeouts.
    pub limits: LimitsSpec,
    /// What is kept and what is excluded.
    pub filters: FiltersSpec,
    /// Masking of sensitive header values before pairs leave the node.
    pub redaction: RedactionSpec,
    /// What is captured, and how.
    pub capture: CaptureSpec,
}

impl Default for InterceptorConfigSpec {
    fn default() -> Self {
        InterceptorConfigSpec {
            image: None,
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: None,
            resources: None,
            priority_class_name: None,
            service_account_name: DEFAULT_WORKER_SERVICE_ACCOUNT.to_string(),
            privileged: false,
            kafka: KafkaSpec::default(),
            limits: LimitsSpec::default(),
            filters: FiltersSpec::default(),
            redaction: RedactionSpec::default(),
            capture: CaptureSpec::default(),
        }
    }
}

/// Image pull policy of the worker container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Kafka: brokers, topic, client properties and credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KafkaSpec {
    /// Bootstrap brokers, `host:port`. At least one.
    #[schemars(length(max = 32), inner(length(max = 261)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "size(self) > 0", "message": "at least one broker is required"},
        {"rule": r"self.all(b, b.matches('^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):[1-9][0-9]{0,4}$') && int(b.substring(b.lastIndexOf(':') + 1)) <= 65535)",
         "message": "every broker must be host:port with a port between 1 and 65535"}
    ]))]
    pub brokers: Vec<String>,
    /// Topic the pairs are produced to.
    #[schemars(length(max = 249))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[a-zA-Z0-9._-]+$') && self != '.' && self != '..'",
         "message": "topic must be 1-249 characters of [a-zA-Z0-9._-], and neither '.' nor '..'"}
    ]))]
    pub topic: String,
    /// librdkafka properties passed through as they are (TLS, SASL mechanism, compression, acks, ...).
    /// Secrets (passwords, keys) are refused here: they come from `credentials`. So are the properties
    /// that would switch off the delivery reports the worker counts pairs by.
    #[schemars(extend("maxProperties" = 64))]
    #[schemars(extend("x-kubernetes-validations" = kafka_properties_rules()))]
    pub properties: BTreeMap<String, String>,
    /// Credentials from a Secret in the InterceptorConfig's namespace, given to the workers as
    /// environment variables (never written into the ConfigMap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<KafkaCredentials>,
    /// When Kafka has been unreachable this long, the worker purges its buffer and counts the loss.
    /// A duration such as `60s` or `2m`, between 1s and 24h.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1s') && duration(self) <= duration('24h')",
         "message": "purgeAfter must be a duration between 1s and 24h, such as 60s"}
    ]))]
    pub purge_after: Duration,
    /// Bytes of pairs buffered for Kafka on each node; beyond it new pairs are dropped and counted.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1048576 && self <= 4294967296", "message": "bufferBytes must be between 1 MiB and 4 GiB"}
    ]))]
    pub buffer_bytes: u64,
    /// The Kafka client id. Default: `interceptor-<node name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[!-~]+$')", "message": "clientId must be printable ASCII without spaces"}
    ]))]
    pub client_id: Option<String>,
    /// Compression of message batches: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self in ['none', 'gzip', 'snappy', 'lz4', 'zstd']", "message": "compression must be one of none, gzip, snappy, lz4, zstd"}
    ]))]
    pub compression: String,
    /// Acknowledgements a produce request waits for: `all` (or `-1`), `1` or `0`.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self in ['all', '-1', '0', '1']", "message": "acks must be one of all, -1, 0, 1"}
    ]))]
    pub acks: String,
    /// Create the topic when it does not exist (with `topicPartitions` and `topicReplicationFactor`).
    pub create_topic: bool,
    /// Partitions of a topic created because of `createTopic` (1-10000).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 10000", "message": "topicPartitions must be between 1 and 10000"}
    ]))]
    pub topic_partitions: u32,
    /// Replication factor of a topic created because of `createTopic`; `-1`: the broker's default.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == -1 || (self >= 1 && self <= 32)", "message": "topicReplicationFactor must be -1 (broker default) or 1-32"}
    ]))]
    pub topic_replication_factor: i32,
}

impl Default for KafkaSpec {
    fn default() -> Self {
        let k = KafkaConfig::default();
        KafkaSpec {
            brokers: k.brokers,
            topic: k.topic,
            properties: k.properties,
            credentials: None,
            purge_after: seconds(k.purge_after_seconds),
            buffer_bytes: k.buffer_bytes,
            client_id: k.client_id,
            compression: k.compression,
            acks: k.acks,
            create_topic: k.create_topic,
            topic_partitions: k.topic_partitions,
            topic_replication_factor: k.topic_replication_factor,
        }
    }
}

/// Keys of a Secret that hold Kafka credentials. Each key that is set becomes one environment variable of
/// the worker (see [`crate::worker_env`]); the worker maps it onto the librdkafka property named here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.usernameKey) || has(self.passwordKey) || has(self.caKey) || has(self.certificateKey) || has(self.keyKey)",
     "message": "name at least one key of the Secret"}
]))]
pub struct KafkaCredentials {
    /// Name of the Secret, in the InterceptorConfig's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key holding `sasl.username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: Option<String>,
    /// Key holding `sasl.password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: Option<String>,
    /// Key holding the CA certificate(s), PEM (`ssl.ca.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub ca_key: Option<String>,
    /// Key holding the client certificate, PEM (`ssl.certificate.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub certificate_key: Option<String>,
    /// Key holding the client private key, PEM (`ssl.key.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key_key: Option<String>,
}

/// Size limits and timeouts. `maxMessageBytes`, `maxPairBytes` and `responseTimeout` are the product
/// rules (0 switches one off); the others are safety bounds that keep a worker small under any traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.maxFlowBufferBytes <= self.maxTotalBufferBytes",
     "message": "maxFlowBufferBytes must not exceed maxTotalBufferBytes"}
]))]
pub struct LimitsSpec {
    /// A request or response (head + body as sent on the wire) larger than this is dropped. 0: no limit.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self <= 1073741824", "message": "maxMessageBytes must be at most 1 GiB"}
    ]))]
    pub max_message_bytes: u64,
    /// A pair whose request and response together are larger than this is dropped. 0: no limit.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self <= 1073741824", "message": "maxPairBytes must be at most 1 GiB"}
    ]))]
    pub max_pair_bytes: u64,
    /// A request whose response has not started within this long is dropped. `0s`: wait until the
    /// connection ends or goes idle. Otherwise between 1s and 1h.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) == duration('0s') || (duration(self) >= duration('1s') && duration(self) <= duration('1h'))",
         "message": "responseTimeout must be 0s or a duration between 1s and 1h, such as 10s"}
    ]))]
    pub response_timeout: Duration,
    /// A decoded (gunzipped, ...) body larger than this is dropped as a decompression bomb.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 4294967296", "message": "maxDecodedBodyBytes must be between 1 and 4 GiB"}
    ]))]
    pub max_decoded_body_bytes: u64,
    /// A message head (start line and headers) larger than this is dropped.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 256 && self <= 4294967296", "message": "maxHeaderBytes must be between 256 and 4 GiB"}
    ]))]
    pub max_header_bytes: u64,
    /// Connections tracked at once per node; a new one beyond this is not tracked, and counted.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 4294967296", "message": "maxFlows must be positive"}
    ]))]
    pub max_flows: u64,
    /// Bytes buffered per connection (out-of-order segments and bodies being collected).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 4294967296", "message": "maxFlowBufferBytes must be between 1 and 4 GiB"}
    ]))]
    pub max_flow_buffer_bytes: u64,
    /// Bytes buffered across all connections of a node.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 4294967296", "message": "maxTotalBufferBytes must be between 1 and 4 GiB"}
    ]))]
    pub max_total_buffer_bytes: u64,
    /// Requests waiting for their responses on one connection (pipelining depth).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1 && self <= 65536", "message": "maxPendingRequests must be between 1 and 65536"}
    ]))]
    pub max_pending_requests: u64,
    /// A connection without packets for this long is forgotten (between 1s and 24h).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1s') && duration(self) <= duration('24h')",
         "message": "flowIdleTimeout must be a duration between 1s and 24h, such as 5m"}
    ]))]
    pub flow_idle_timeout: Duration,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        let l = Limits::default();
        LimitsSpec {
            max_message_bytes: l.max_message_bytes,
            max_pair_bytes: l.max_pair_bytes,
            response_timeout: seconds(l.response_timeout_seconds),
            max_decoded_body_bytes: l.max_decoded_body_bytes,
            max_header_bytes: l.max_header_bytes,
            max_flows: l.max_flows,
            max_flow_buffer_bytes: l.max_flow_buffer_bytes,
            max_total_buffer_bytes: l.max_total_buffer_bytes,
            max_pending_requests: l.max_pending_requests,
            flow_idle_timeout: seconds(l.flow_idle_timeout_seconds),
        }
    }
}

/// What is kept and what is excluded. An empty list switches its rule off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct FiltersSpec {
    /// Keep a pair only if at least one half has one of these media types (parameters such as
    /// `; charset=utf-8` allowed, compared case-insensitively). Empty: keep every content type.
    #[schemars(length(max = 64), inner(length(max = 255)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(t, t.matches('^[^/ ;]+/[^/ ;]+$'))", "message": "every content type must be a media type such as application/json"}
    ]))]
    pub content_types: Vec<String>,
    /// Drop requests whose User-Agent starts with one of these (case-insensitive).
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub exclude_user_agent_prefixes: Vec<String>,
    /// Drop pairs whose request or response carries one of these headers (name, case-insensitive).
    #[schemars(length(max = 64), inner(length(max = 255)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": r"self.all(h, h.matches('^[!#$%&*+.^_`|~0-9A-Za-z\'-]+$'))", "message": "every entry must be an HTTP header name"}
    ]))]
    pub exclude_headers: Vec<String>,
    /// Drop pairs whose response status matches: an exact code (`"301"`) or a class (`"4xx"`).
    #[schemars(length(max = 64), inner(length(max = 3)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(c, c.matches('^[1-5]([0-9][0-9]|[xX][xX])$'))", "message": "every entry must be a status code (100-599) or a class such as 4xx"}
    ]))]
    pub exclude_status_codes: Vec<String>,
    /// Drop requests to these paths (exact match, query string ignored).
    #[schemars(length(max = 256), inner(length(max = 1024)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(p, p.startsWith('/'))", "message": "every path must start with '/'"}
    ]))]
    pub exclude_paths: Vec<String>,
    /// Do not capture pods in these Kubernetes namespaces.
    #[schemars(length(max = 256), inner(length(max = 63)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))", "message": "every entry must be a namespace name"}
    ]))]
    pub exclude_namespaces: Vec<String>,
}

impl Default for FiltersSpec {
    fn default() -> Self {
        let f = Filters::default();
        FiltersSpec {
            content_types: f.content_types,
            exclude_user_agent_prefixes: f.exclude_user_agent_prefixes,
            exclude_headers: f.exclude_headers,
            exclude_status_codes: f.exclude_status_codes,
            exclude_paths: f.exclude_paths,
            exclude_namespaces: f.exclude_namespaces,
        }
    }
}

/// Masking of sensitive header values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RedactionSpec {
    /// Replace the values of these headers (case-insensitive) with `[REDACTED]`. Empty: keep them all.
    #[schemars(length(max = 64), inner(length(max = 255)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": r"self.all(h, h.matches('^[!#$%&*+.^_`|~0-9A-Za-z\'-]+$'))", "message": "every entry must be an HTTP header name"}
    ]))]
    pub mask_headers: Vec<String>,
}

impl Default for RedactionSpec {
    fn default() -> Self {
        RedactionSpec {
            mask_headers: Redaction::default().mask_headers,
        }
    }
}

/// What is captured, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CaptureSpec {
    /// Tap a pod's loopback instead of its external interface when a service-mesh sidecar (Istio,
    /// Linkerd) runs in it.
    pub mesh_detection: bool,
    /// Interface names never tapped (exact names, or prefixes ending in `*`).
    #[schemars(length(max = 64), inner(length(min = 1, max = 16)))]
    pub skip_interfaces: Vec<String>,
    /// Bytes captured per packet (64-262144).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 64 && self <= 262144", "message": "snaplen must be between 64 and 262144"}
    ]))]
    pub snaplen: u32,
    /// How often the worker rescans the node's network namespaces for new pods (1s-1h).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1s') && duration(self) <= duration('1h')",
         "message": "rescanInterval must be a duration between 1s and 1h, such as 10s"}
    ]))]
    pub rescan_interval: Duration,
    /// Kernel capture buffer per interface, in bytes (64 KiB - 1 GiB).
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 65536 && self <= 1073741824", "message": "bufferBytes must be between 64 KiB and 1 GiB"}
    ]))]
    pub buffer_bytes: u32,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        let c = CaptureConfig::default();
        CaptureSpec {
            mesh_detection: c.mesh_detection,
            skip_interfaces: c.skip_interfaces,
            snaplen: c.snaplen,
            rescan_interval: seconds(c.rescan_seconds),
            buffer_bytes: c.buffer_bytes,
        }
    }
}

/// What the operator observed, written by the operator only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct InterceptorConfigStatus {
    /// The `metadata.generation` this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciled` and `Degraded`, with reasons and messages.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Nodes the worker DaemonSet should run on.
    pub desired_nodes: i32,
    /// Nodes running the current worker pod template.
    pub updated_nodes: i32,
    /// Nodes whose worker pod is ready.
    pub ready_nodes: i32,
    /// Nodes whose worker wrote an InterceptorStatus heartbeat recently.
    pub reporting_nodes: i32,
    /// Counters summed over the reporting nodes.
    pub totals: Totals,
    /// How often the workers were told to write their InterceptorStatus (chosen from the number of
    /// selected nodes); a heartbeat older than three of these does not count as reporting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_cadence: Option<StatusCadence>,
}

/// Counters summed over the nodes that report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Totals {
    /// Pods with at least one interface being tapped.
    pub pods_tapped: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Pairs handed to Kafka.
    pub pairs_emitted: u64,
    /// Drops of every reason.
    pub drops: u64,
    /// Packets the kernel dropped before the worker read them.
    pub kernel_drops: u64,
    /// Drops by reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub drops_by_reason: BTreeMap<String, u64>,
    /// Nodes whose worker is connected to Kafka.
    pub kafka_connected_nodes: u64,
}

/// A whole number of seconds as a Kubernetes duration.
pub fn seconds(secs: u64) -> Duration {
    Duration::from(std::time::Duration::from_secs(secs))
}

/// A duration as whole seconds for `config.yaml`, rounded up so that a positive duration never becomes 0
/// (which would switch a rule off).
fn whole_seconds(field: &'static str, d: &Duration) -> Result<u64, ConfigError> {
    if d.is_negative() {
        return Err(ConfigError::Invalid {
            field,
            reason: format!("{d} is negative"),
        });
    }
    let d: std::time::Duration = (*d).into();
    Ok(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

impl InterceptorConfigSpec {
    /// The worker's `config.yaml` for this spec: what the operator writes into the ConfigMap. Never holds
    /// credentials (they reach the worker as environment variables from the Secret reference). Refuses,
    /// with the field named, whatever [`WorkerConfig::validate`] refuses.
    pub fn worker_config(&self) -> Result<WorkerConfig, ConfigError> {
        let l = &self.limits;
        let k = &self.kafka;
        let c = &self.capture;
        let f = &self.filters;
        let config = WorkerConfig {
            limits: Limits {
                max_message_bytes: l.max_message_bytes,
                max_pair_bytes: l.max_pair_bytes,
                response_timeout_seconds: whole_seconds(
                    "limits.responseTimeout",
                    &l.response_timeout,
                )?,
                max_decoded_body_bytes: l.max_decoded_body_bytes,
                max_header_bytes: l.max_header_bytes,
                max_flows: l.max_flows,
                max_flow_buffer_bytes: l.max_flow_buffer_bytes,
                max_total_buffer_bytes: l.max_total_buffer_bytes,
                max_pending_requests: l.max_pending_requests,
                flow_idle_timeout_seconds: whole_seconds(
                    "limits.flowIdleTimeout",
                    &l.flow_idle_timeout,
                )?,
            },
            filters: Filters {
                content_types: f.content_types.clone(),
                exclude_user_agent_prefixes: f.exclude_user_agent_prefixes.clone(),
                exclude_headers: f.exclude_headers.clone(),
                exclude_status_codes: f.exclude_status_codes.clone(),
                exclude_paths: f.exclude_paths.clone(),
                exclude_namespaces: f.exclude_namespaces.clone(),
            },
            redaction: Redaction {
                mask_headers: self.redaction.mask_headers.clone(),
            },
            kafka: KafkaConfig {
                brokers: k.brokers.clone(),
                topic: k.topic.clone(),
                purge_after_seconds: whole_seconds("kafka.purgeAfter", &k.purge_after)?,
                buffer_bytes: k.buffer_bytes,
                properties: k.properties.clone(),
                client_id: k.client_id.clone(),
                compression: k.compression.clone(),
                acks: k.acks.clone(),
                create_topic: k.create_topic,
                topic_partitions: k.topic_partitions,
                topic_replication_factor: k.topic_replication_factor,
            },
            capture: CaptureConfig {
                mesh_detection: c.mesh_detection,
                skip_interfaces: c.skip_interfaces.clone(),
                snaplen: c.snaplen,
                rescan_seconds: whole_seconds("capture.rescanInterval", &c.rescan_interval)?,
                buffer_bytes: c.buffer_bytes,
            },
            // Not in the spec: the operator sets it from the number of nodes when it renders.
            status: StatusCadence::default(),
        };
        if let Some(key) = k
            .properties
            .keys()
            .find(|key| is_secret_kafka_property(key))
        {
            return Err(ConfigError::Invalid {
                field: "kafka.properties",
                reason: format!("{CREDENTIALS_IN_PROPERTIES} ({key:?})"),
            });
        }
        config.validate()?;
        Ok(config)
    }
}

/// Why a credential in `kafka.properties` is refused: the CEL rule's message, and the start of
/// [`InterceptorConfigSpec::worker_config`]'s.
const CREDENTIALS_IN_PROPERTIES: &str =
    "credentials must come from kafka.credentials (a Secret), never from kafka.properties";

/// The CEL rules on `kafka.properties`, generated from the lists the Rust checks use so that admission
/// and the operator refuse the same keys: no credential ([`is_secret_kafka_property`]: they would be
/// written into the ConfigMap), and none of [`WORKER_OWNED_KAFKA_PROPERTIES`] (as
/// [`KafkaConfig::validate`]).
fn kafka_properties_rules() -> serde_json::Value {
    // A CEL list literal: ['a', 'b'] (none of the items holds a quote).
    let list = |items: &[&str]| format!("['{}']", items.join("', '"));
    let secret = format!(
        "self.all(k, !({}.exists(w, k.lowerAscii().contains(w)) || \
         {}.exists(p, k.lowerAscii().startsWith(p)) || k.lowerAscii() in {}))",
        list(SECRET_KEY_WORDS),
        list(SECRET_KEY_PREFIXES),
        list(SECRET_KEYS),
    );
    // A lookup per key rather than a scan of the map: cheap in the API server's cost estimate.
    let owned = WORKER_OWNED_KAFKA_PROPERTIES
        .iter()
        .map(|key| format!("!('{key}' in self)"))
        .collect::<Vec<_>>()
        .join(" && ");
    let owned_message = format!(
        "{} {WORKER_OWNED_KAFKA_PROPERTY_REASON}",
        WORKER_OWNED_KAFKA_PROPERTIES.join(" and ")
    );
    serde_json::json!([
        {"rule": secret, "message": CREDENTIALS_IN_PROPERTIES},
        {"rule": owned, "message": owned_message},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_gives_the_default_worker_config() {
        let config = InterceptorConfigSpec::default().worker_config().unwrap();
        assert_eq!(config, WorkerConfig::default());
    }

    #[test]
    fn an_empty_spec_deserialises_to_the_defaults() {
        let spec: InterceptorConfigSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec, InterceptorConfigSpec::default());
        assert_eq!(spec.kafka.purge_after.to_string(), "60s");
        assert_eq!(spec.limits.response_timeout.to_string(), "10s");
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        let spec: InterceptorConfigSpec = serde_json::from_value(serde_json::json!({
            "limits": {"responseTimeout": "1500ms", "flowIdleTimeout": "2m"},
            "kafka": {"purgeAfter": "1h30m"},
            "capture": {"rescanInterval": "0.2s"}
        }))
        .unwrap();
        let config = spec.worker_config().unwrap();
        assert_eq!(config.limits.response_timeout_seconds, 2);
        assert_eq!(config.limits.flow_idle_timeout_seconds, 120);
        assert_eq!(config.kafka.purge_after_seconds, 5400);
        assert_eq!(config.capture.rescan_seconds, 1);
    }

    #[test]
    fn a_zero_response_timeout_switches_the_rule_off() {
        let spec: InterceptorConfigSpec =
            serde_json::from_value(serde_json::json!({"limits": {"responseTimeout": "0s"}}))
                .unwrap();
        assert_eq!(
            spec.worker_config()
                .unwrap()
                .limits
                .response_timeout_seconds,
            0
        );
    }

    #[test]
    fn credentials_in_properties_and_bad_values_are_refused() {
        let refusal = |key: &str| {
            let mut spec = InterceptorConfigSpec::default();
            spec.kafka.properties.insert(key.into(), "hunter2".into());
            spec.worker_config().unwrap_err().to_string()
        };
        assert_eq!(
            refusal("sasl.password"),
            format!("kafka.properties: {CREDENTIALS_IN_PROPERTIES} (\"sasl.password\")")
        );
        let owned = refusal("delivery.report.only.error");
        assert!(
            owned.starts_with("kafka.properties: \"delivery.report.only.error\" cannot be set"),
            "{owned}"
        );
        let mut spec = InterceptorConfigSpec::default();
        spec.kafka.brokers.clear();
        assert!(spec.worker_config().is_err());
        let mut spec = InterceptorConfigSpec::default();
        spec.kafka.purge_after = "-5s".parse().unwrap();
        match spec.worker_config() {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "kafka.purgeAfter"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_worker_config_never_holds_credentials() {
        let mut spec = InterceptorConfigSpec::default();
        spec.kafka.credentials = Some(KafkaCredentials {
            secret_name: "kafka-creds".into(),
            password_key: Some("password".into()),
            ..Default::default()
        });
        let yaml = spec.worker_config().unwrap().to_yaml();
        assert!(!yaml.contains("kafka-creds"));
        assert!(!yaml.contains("password"));
    }
}
