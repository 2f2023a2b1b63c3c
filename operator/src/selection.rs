//! Which nodes an InterceptorConfig's workers run on, computed the way the DaemonSet controller schedules
//! them (node selector and taints), and which configs capture the same node twice.

use std::borrow::Borrow;
use std::collections::BTreeSet;

use interceptor_crds::InterceptorConfig;
use k8s_openapi::api::core::v1::{Node, Taint, Toleration};
use kube::ResourceExt;

use crate::render::{node_selector, tolerations};

/// Taints the DaemonSet controller tolerates on its own for every DaemonSet pod.
const DAEMONSET_TOLERATED: [&str; 7] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/network-unavailable",
];

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let exists = toleration.operator.as_deref() == Some("Exists");
    match toleration.key.as_deref().filter(|k| !k.is_empty()) {
        None => exists,
        Some(key) if key != taint.key => false,
        Some(_) if exists => true,
        Some(_) => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// Whether the worker DaemonSet of `icfg` runs a pod on `node`.
pub fn selects(icfg: &InterceptorConfig, node: &Node) -> bool {
    let labels = node.labels();
    if !node_selector(icfg)
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let tolerations = tolerations(icfg);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .filter(|t| !DAEMONSET_TOLERATED.contains(&t.key.as_str()))
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Names of the nodes `icfg` selects. Takes the reflector's `Arc<Node>`s as they are (a reconcile must not
/// copy every Node of a 5 000-node cluster) as well as plain Nodes.
pub fn selected_nodes<N: Borrow<Node>>(icfg: &InterceptorConfig, nodes: &[N]) -> BTreeSet<String> {
    nodes
        .iter()
        .map(Borrow::borrow)
        .filter(|n| selects(icfg, n))
        .map(|n| n.name_any())
        .collect()
}

/// Another config that captures some of the same nodes, and came first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// `namespace/name` of each older config that selects some of the same nodes.
    pub configs: Vec<String>,
    /// How many of this config's nodes are captured twice.
    pub nodes: usize,
}

/// Whether `a` is older than `b` (creation time, then namespace/name, so that exactly one of two is).
fn older(a: &InterceptorConfig, b: &InterceptorConfig) -> bool {
    let key = |c: &InterceptorConfig| {
        (
            c.creation_timestamp().map(|t| t.0),
            c.namespace().unwrap_or_default(),
            c.name_any(),
        )
    };
    key(a) < key(b)
}

/// The overlap of `icfg` with older configs, if any: the newer of two configs selecting the same node is
/// the one marked Degraded (double capture: every pair would be produced twice).
pub fn double_capture<C: Borrow<InterceptorConfig>, N: Borrow<Node>>(
    icfg: &InterceptorConfig,
    all: &[C],
    nodes: &[N],
) -> Option<Overlap> {
    let mine = selected_nodes(icfg, nodes);
    let mut twice = BTreeSet::new();
    let mut configs = Vec::new();
    for other in all.iter().map(Borrow::borrow) {
        let same = other.uid().is_some() && other.uid() == icfg.uid()
            || other.namespace() == icfg.namespace() && other.name_any() == icfg.name_any();
        if same || other.metadata.deletion_timestamp.is_some() || !older(other, icfg) {
            continue;
        }
        let shared: Vec<String> = selected_nodes(other, nodes)
            .intersection(&mine)
            .cloned()
            .collect();
        if !shared.is_empty() {
            configs.push(format!(
                "{}/{}",
                other.namespace().unwrap_or_default(),
                other.name_any()
            ));
            twice.extend(shared);
        }
    }
    let nodes = twice.len();
    (!configs.is_empty()).then_some(Overlap { configs, nodes })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use interceptor_crds::InterceptorConfigSpec;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("kubernetes.io/os".into(), "linux".into());
        n.metadata.labels = Some(l);
        n.spec = Some(NodeSpec {
            taints: Some(
                taints
                    .iter()
                    .map(|(k, e)| Taint {
                        key: k.to_string(),
                        effect: e.to_string(),
                        ..Taint::default()
                    })
                    .collect(),
            ),
            ..NodeSpec::default()
        });
        n
    }

    fn config(name: &str, created: i64, spec: InterceptorConfigSpec) -> InterceptorConfig {
        let mut c = InterceptorConfig::new(name, spec);
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some(format!("uid-{name}"));
        c.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        c
    }

    #[test]
    fn default_tolerations_cover_every_node() {
        let icfg = config("a", 0, InterceptorConfigSpec::default());
        assert!(selects(
            &icfg,
            &node(
                "n",
                &[],
                &[("node-role.kubernetes.io/control-plane", "NoSchedule")]
            )
        ));
        assert!(selects(
            &icfg,
            &node("n", &[], &[("dedicated", "NoExecute")])
        ));
    }

    #[test]
    fn node_selector_and_explicit_tolerations_are_honoured() {
        let spec = InterceptorConfigSpec {
            node_selector: BTreeMap::from([("pool".into(), "web".into())]),
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }]),
            ..InterceptorConfigSpec::default()
        };
        let icfg = config("a", 0, spec);
        assert!(selects(&icfg, &node("n", &[("pool", "web")], &[])));
        assert!(!selects(&icfg, &node("n", &[("pool", "db")], &[])));
        assert!(selects(
            &icfg,
            &node("n", &[("pool", "web")], &[("dedicated", "NoSchedule")])
        ));
        assert!(!selects(
            &icfg,
            &node("n", &[("pool", "web")], &[("dedicated", "NoExecute")])
        ));
        assert!(!selects(
            &icfg,
            &node("n", &[("pool", "web")], &[("gpu", "NoSchedule")])
        ));
        // PreferNoSchedule does not keep a DaemonSet pod away, nor do the taints DaemonSets always tolerate.
        assert!(selects(
            &icfg,
            &node("n", &[("pool", "web")], &[("gpu", "PreferNoSchedule")])
        ));
        assert!(selects(
            &icfg,
            &node(
                "n",
                &[("pool", "web")],
                &[("node.kubernetes.io/not-ready", "NoExecute")]
            )
        ));
        let no_tolerations = config(
            "b",
            0,
            InterceptorConfigSpec {
                tolerations: Some(vec![]),
                ..InterceptorConfigSpec::default()
            },
        );
        assert!(!selects(
            &no_tolerations,
            &node("n", &[], &[("gpu", "NoSchedule")])
        ));
    }

    #[test]
    fn the_newer_of_two_overlapping_configs_is_the_double_capture() {
        let nodes = vec![
            node("n1", &[("pool", "web")], &[]),
            node("n2", &[("pool", "db")], &[]),
        ];
        let old = config("old", 100, InterceptorConfigSpec::default());
        let new = config("new", 200, InterceptorConfigSpec::default());
        let web_only = config(
            "web",
            300,
            InterceptorConfigSpec {
                node_selector: BTreeMap::from([("pool".into(), "web".into())]),
                ..InterceptorConfigSpec::default()
            },
        );
        let all = vec![old.clone(), new.clone(), web_only.clone()];
        assert_eq!(double_capture(&old, &all, &nodes), None);
        assert_eq!(
            double_capture(&new, &all, &nodes),
            Some(Overlap {
                configs: vec!["ns/old".into()],
                nodes: 2
            })
        );
        assert_eq!(
            double_capture(&web_only, &all, &nodes),
            Some(Overlap {
                configs: vec!["ns/old".into(), "ns/new".into()],
                nodes: 1
            })
        );
        let db_only = config(
            "db",
            50,
            InterceptorConfigSpec {
                node_selector: BTreeMap::from([("pool".into(), "db".into())]),
                ..InterceptorConfigSpec::default()
            },
        );
        let all = vec![db_only.clone(), web_only.clone()];
        assert_eq!(double_capture(&web_only, &all, &nodes), None);
    }
}
