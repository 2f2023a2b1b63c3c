//! `InterceptorStatus` (short name `icst`): one per InterceptorConfig and node, written by that node's
//! worker with server-side apply and owned by its InterceptorConfig. The operator reads them (heartbeat,
//! counters) into the InterceptorConfig's status and deletes those of nodes that are gone.
//!
//! How a worker writes it (field manager [`crate::worker_env::STATUS_FIELD_MANAGER`], `force: true`):
//! ```no_run
//! # use interceptor_crds::interceptor_status::*;
//! let owner = OwnerConfig { namespace: "interceptor-system".into(), name: "default".into(), uid: "1234".into() };
//! // 1. once: apply the object itself (name, labels, ownerReference, spec) to
//! //    PATCH .../interceptorstatuses/{name}?fieldManager=interceptor-worker&force=true
//! let object = InterceptorStatus::for_node(&owner, "node-a");
//! // 2. every heartbeat (at most every 20 s): apply the report to the status subresource
//! //    PATCH .../interceptorstatuses/{name}/status?fieldManager=interceptor-worker&force=true
//! let mut report = NodeReport::default();
//! report.set_drops([("response_timeout".to_string(), 3)].into_iter().collect());
//! let patch = report.apply_patch(&InterceptorStatus::object_name("default", "node-a"));
//! ```

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::interceptor_config::{GROUP, VERSION};

/// Label carrying the InterceptorConfig's name on every object made for it.
pub const LABEL_CONFIG: &str = "interceptor.dev/config";
/// Label carrying the node's name on an InterceptorStatus.
pub const LABEL_NODE: &str = "interceptor.dev/node";

/// Which worker this is: the InterceptorConfig and the node.
// kube's repeated `printcolumn(name = .., type_ = ..)` entries are not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "interceptor.dev",
    version = "v1alpha1",
    kind = "InterceptorStatus",
    plural = "interceptorstatuses",
    shortname = "icst",
    category = "interceptor",
    namespaced,
    status = "NodeReport",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.podsTapped",
        description = "Pods with a tapped interface"
    ),
    printcolumn(
        name = "Pairs",
        type_ = "integer",
        json_path = ".status.counters.pairsEmitted"
    ),
    printcolumn(
        name = "Drops",
        type_ = "integer",
        json_path = ".status.counters.dropsTotal"
    ),
    printcolumn(
        name = "Kafka",
        type_ = "boolean",
        json_path = ".status.kafka.connected",
        description = "Connected to Kafka"
    ),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.lastHeartbeat",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorStatusSpec {
    /// Name of the InterceptorConfig (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub interceptor: String,
    /// Name of the node.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
}

/// What a worker reports about its node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeReport {
    /// When the worker last wrote this report. The operator counts a node as reporting while this is
    /// recent (its `--heartbeat-timeout`, 60 s by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<NodePhase>,
    /// Why the phase is what it is (human readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `resourceVersion` of the ConfigMap whose `config.yaml` the worker runs with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// Pods with at least one interface in state `Active` (kept by [`NodeReport::set_interfaces`]).
    pub pods_tapped: u32,
    /// Interfaces being tapped, or that failed.
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub interfaces: Vec<TappedInterface>,
    pub counters: NodeCounters,
    pub kafka: KafkaState,
}

/// The state of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NodePhase {
    /// Started, not capturing yet.
    Starting,
    /// Capturing, and Kafka is reachable.
    Running,
    /// Capturing with trouble (Kafka unreachable, interfaces failing, drops by the kernel, ...).
    Degraded,
    /// Shutting down.
    Stopping,
}

/// One interface the worker taps (or tried to).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TappedInterface {
    /// `namespace/name` of the pod the interface belongs to.
    pub pod: String,
    /// Interface name inside the pod's network namespace (`eth0`, `lo`).
    pub interface: String,
    pub mode: TapMode,
    pub state: TapState,
    /// Why a tap failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The service mesh detected in the pod, which made this a loopback tap (absent: no mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshMode>,
    /// What the mesh was detected by (`annotation ambient.istio.io/redirection=enabled`,
    /// `native sidecar istio-proxy`, `process envoy`, `listeners 15001, 15006, 15008 ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_reason: Option<String>,
}

/// The service mesh of a tapped pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MeshMode {
    /// An Istio sidecar (classic or native): the app and the sidecar on the pod's loopback.
    #[serde(rename = "istio")]
    Istio,
    /// Istio's ambient mode: the app and ztunnel's listeners in the pod's namespace, on its loopback.
    #[serde(rename = "istio-ambient")]
    IstioAmbient,
    /// A Linkerd proxy (classic or native sidecar): the app and the proxy on the pod's loopback.
    #[serde(rename = "linkerd")]
    Linkerd,
}

/// Which interface of a pod is tapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TapMode {
    /// The pod's external interface (no service mesh).
    #[default]
    External,
    /// The pod's loopback (service mesh: plaintext between sidecar and app).
    Loopback,
}

/// Whether a tap works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TapState {
    /// Capturing.
    #[default]
    Active,
    /// Could not be opened or broke (see `message`).
    Failed,
    /// The pod or interface went away.
    Closed,
}

/// Counters since the worker started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Pairs handed to Kafka.
    pub pairs_emitted: u64,
    /// Drops by reason (`message_too_large`, `response_timeout`, `content_type`, ...).
    pub drops: BTreeMap<String, u64>,
    /// The sum of `drops` (kept by [`NodeReport::set_drops`]).
    pub drops_total: u64,
    /// Packets the kernel dropped before the worker read them.
    pub kernel_drops: u64,
}

/// The worker's connection to Kafka.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KafkaState {
    pub connected: bool,
    /// Bytes of pairs waiting to be produced.
    pub buffered_bytes: u64,
    /// Times the buffer was purged because Kafka stayed unreachable longer than `purgeAfter`.
    pub purges: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The InterceptorConfig a worker belongs to (from its environment, see [`crate::worker_env`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerConfig {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl InterceptorStatus {
    /// The object name for a config and a node: `<config>-<node>`, shortened with a hash when longer than
    /// the 253 characters a name may have.
    pub fn object_name(config: &str, node: &str) -> String {
        let full = format!("{config}-{node}");
        if full.len() <= 253 {
            return full;
        }
        let hash = format!("{:016x}", fnv1a(full.as_bytes()));
        let keep = 253 - hash.len() - 1;
        // Names are ASCII (DNS subdomains), so byte slicing is on a char boundary; stay safe anyway.
        let prefix: String = full.chars().take(keep).collect();
        format!("{}-{hash}", prefix.trim_end_matches(['-', '.']))
    }

    /// The object a worker applies once (without status): name, namespace, labels, the ownerReference to its
    /// InterceptorConfig (so it is deleted with it) and the spec.
    pub fn for_node(owner: &OwnerConfig, node: &str) -> InterceptorStatus {
        let labels = BTreeMap::from([
            (LABEL_CONFIG.to_string(), owner.name.clone()),
            (LABEL_NODE.to_string(), label_value(node)),
        ]);
        InterceptorStatus {
            metadata: ObjectMeta {
                name: Some(Self::object_name(&owner.name, node)),
                namespace: Some(owner.namespace.clone()),
                labels: Some(labels),
                owner_references: Some(vec![OwnerReference {
                    api_version: format!("{GROUP}/{VERSION}"),
                    kind: "InterceptorConfig".to_string(),
                    name: owner.name.clone(),
                    uid: owner.uid.clone(),
                    controller: Some(false),
                    block_owner_deletion: Some(false),
                }]),
                ..ObjectMeta::default()
            },
            spec: InterceptorStatusSpec {
                interceptor: owner.name.clone(),
                node: node.to_string(),
            },
            status: None,
        }
    }
}

impl NodeReport {
    /// Replace the interfaces and recount `podsTapped`.
    pub fn set_interfaces(&mut self, interfaces: Vec<TappedInterface>) {
        let mut pods: Vec<&str> = interfaces
            .iter()
            .filter(|i| i.state == TapState::Active)
            .map(|i| i.pod.as_str())
            .collect();
        pods.sort_unstable();
        pods.dedup();
        self.pods_tapped = u32::try_from(pods.len()).unwrap_or(u32::MAX);
        self.interfaces = interfaces;
    }

    /// Replace the drops by reason and recompute `dropsTotal`.
    pub fn set_drops(&mut self, drops: BTreeMap<String, u64>) {
        self.counters.drops_total = drops.values().fold(0u64, |a, b| a.saturating_add(*b));
        self.counters.drops = drops;
    }

    /// The body of a server-side apply to `interceptorstatuses/{name}/status`.
    pub fn apply_patch(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "InterceptorStatus",
            "metadata": {"name": name},
            "status": self,
        })
    }
}

/// A label value (at most 63 characters): node names longer than that are cut and hashed.
fn label_value(value: &str) -> String {
    if value.len() <= 63 {
        return value.to_string();
    }
    let hash = format!("{:08x}", fnv1a(value.as_bytes()) as u32);
    let prefix: String = value.chars().take(63 - 9).collect();
    format!("{}-{hash}", prefix.trim_end_matches(['-', '.', '_']))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_within_limits() {
        assert_eq!(
            InterceptorStatus::object_name("default", "node-a"),
            "default-node-a"
        );
        let long_node = "n".repeat(250);
        let name = InterceptorStatus::object_name("default", &long_node);
        assert_eq!(name.len(), 253);
        assert_ne!(
            name,
            InterceptorStatus::object_name("default", &"m".repeat(250))
        );
        assert_eq!(label_value(&long_node).len(), 63);
    }

    #[test]
    fn for_node_sets_owner_labels_and_spec() {
        let owner = OwnerConfig {
            namespace: "ns".into(),
            name: "cfg".into(),
            uid: "u-1".into(),
        };
        let obj = InterceptorStatus::for_node(&owner, "node-a");
        assert_eq!(obj.metadata.name.as_deref(), Some("cfg-node-a"));
        assert_eq!(obj.metadata.namespace.as_deref(), Some("ns"));
        let owners = obj.metadata.owner_references.unwrap();
        assert_eq!(owners[0].uid, "u-1");
        assert_eq!(owners[0].kind, "InterceptorConfig");
        assert_eq!(obj.spec.node, "node-a");
        let labels = obj.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_CONFIG], "cfg");
        assert_eq!(labels[LABEL_NODE], "node-a");
    }

    #[test]
    fn helpers_keep_derived_counts() {
        let mut report = NodeReport::default();
        report.set_drops(BTreeMap::from([("a".into(), 2), ("b".into(), 3)]));
        assert_eq!(report.counters.drops_total, 5);
        let tap = |pod: &str, state| TappedInterface {
            pod: pod.into(),
            interface: "eth0".into(),
            mode: TapMode::External,
            state,
            message: None,
            mesh: (pod == "b/z").then_some(MeshMode::IstioAmbient),
            mesh_reason: None,
        };
        report.set_interfaces(vec![
            tap("a/x", TapState::Active),
            tap("a/x", TapState::Active),
            tap("a/y", TapState::Failed),
            tap("b/z", TapState::Active),
        ]);
        assert_eq!(report.pods_tapped, 2);
        let patch = report.apply_patch("cfg-node-a");
        assert_eq!(patch["kind"], "InterceptorStatus");
        assert_eq!(patch["status"]["counters"]["dropsTotal"], 5);
        assert_eq!(patch["status"]["interfaces"][0]["mode"], "external");
        assert_eq!(patch["status"]["interfaces"][2]["state"], "failed");
        assert_eq!(patch["status"]["interfaces"][3]["mesh"], "istio-ambient");
        assert!(patch["status"]["interfaces"][0].get("mesh").is_none());
    }
}
