//! Worlds the operator may observe, each aggregated into the status it would write: shared by the status
//! snapshots (status.rs) and by what Flux (kstatus) and Argo CD read from them (gitops.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use interceptor_crds::interceptor_status::{KafkaState, NodeCounters, NodePhase, OwnerConfig};
use interceptor_crds::{InterceptorConfigStatus, InterceptorStatus, NodeReport};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use operator::selection::Overlap;
use operator::status::{aggregate, Observed, Outcome};

pub const NOW: i64 = 1_800_000_000;
/// `metadata.generation` of the InterceptorConfig in every scenario (also its `observedGeneration`).
pub const GENERATION: i64 = 7;

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

/// The worker DaemonSet: desired, ready and updated pods; whether its controller saw its last change.
pub fn ds(desired: i32, ready: i32, updated: i32, caught_up: bool) -> DaemonSet {
    let mut ds = DaemonSet::default();
    ds.metadata.generation = Some(3);
    ds.status = Some(DaemonSetStatus {
        desired_number_scheduled: desired,
        number_ready: ready,
        updated_number_scheduled: Some(updated),
        observed_generation: Some(if caught_up { 3 } else { 2 }),
        ..DaemonSetStatus::default()
    });
    ds
}

/// A worker's report.
pub fn report(
    node: &str,
    beat: i64,
    pairs: u64,
    drops: &[(&str, u64)],
    connected: bool,
    phase: NodePhase,
) -> InterceptorStatus {
    let owner = OwnerConfig {
        namespace: "ns".into(),
        name: "cfg".into(),
        uid: "u".into(),
    };
    let mut r = InterceptorStatus::for_node(&owner, node);
    let mut status = NodeReport {
        last_heartbeat: Some(Time(at(beat))),
        phase: Some(phase),
        pods_tapped: 3,
        counters: NodeCounters {
            packets: 1000,
            bytes: 100_000,
            pairs_emitted: pairs,
            kernel_drops: 1,
            ..NodeCounters::default()
        },
        kafka: KafkaState {
            connected,
            ..KafkaState::default()
        },
        ..NodeReport::default()
    };
    status.set_drops(
        drops
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<_, _>>(),
    );
    r.status = Some(status);
    r
}

pub fn nodes(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

pub fn observe(
    outcome: &Outcome,
    daemon_set: Option<&DaemonSet>,
    selected: &BTreeSet<String>,
    reports: &[InterceptorStatus],
    overlap: Option<&Overlap>,
    previous: Option<&InterceptorConfigStatus>,
) -> InterceptorConfigStatus {
    aggregate(&Observed {
        generation: Some(GENERATION),
        previous,
        outcome,
        daemon_set,
        selected_nodes: selected,
        reports: &reports.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
        overlap,
        now: at(NOW),
        heartbeat_timeout: Duration::from_secs(60),
        cadence: None,
    })
}

/// Two nodes, both workers ready and reporting.
pub fn ready() -> InterceptorConfigStatus {
    let reports = vec![
        report(
            "a",
            NOW - 10,
            40,
            &[("content_type", 5), ("response_timeout", 2)],
            true,
            NodePhase::Running,
        ),
        report(
            "b",
            NOW - 59,
            2,
            &[("content_type", 1)],
            true,
            NodePhase::Running,
        ),
    ];
    observe(
        &Outcome::Applied,
        Some(&ds(2, 2, 2, true)),
        &nodes(&["a", "b"]),
        &reports,
        None,
        None,
    )
}

/// Three nodes: a reports but cannot reach Kafka, b's heartbeat is stale, c never reported; and a node
/// no longer selected still reports.
fn three_nodes_one_reporting(daemon_set: &DaemonSet) -> InterceptorConfigStatus {
    let reports = vec![
        report("a", NOW - 10, 40, &[], false, NodePhase::Degraded),
        // Older than the heartbeat timeout: not reporting, not summed.
        report(
            "b",
            NOW - 61,
            1000,
            &[("content_type", 100)],
            true,
            NodePhase::Running,
        ),
        // Fresh, but its node is no longer selected: not counted.
        report("z", NOW - 1, 1000, &[], true, NodePhase::Running),
    ];
    observe(
        &Outcome::Applied,
        Some(daemon_set),
        &nodes(&["a", "b", "c"]),
        &reports,
        None,
        None,
    )
}

/// Two of three workers ready, one updated.
pub fn rollout() -> InterceptorConfigStatus {
    three_nodes_one_reporting(&ds(3, 2, 1, true))
}

/// A rollout where nothing is wrong: one of two workers ready, the other starting.
pub fn rolling_out() -> InterceptorConfigStatus {
    let reports = vec![report("a", NOW - 5, 12, &[], true, NodePhase::Running)];
    observe(
        &Outcome::Applied,
        Some(&ds(2, 1, 2, true)),
        &nodes(&["a", "b"]),
        &reports,
        None,
        None,
    )
}

/// Every worker ready and updated, but only one reports.
pub fn awaiting_reports() -> InterceptorConfigStatus {
    three_nodes_one_reporting(&ds(3, 3, 3, true))
}

/// The DaemonSet controller has not seen the DaemonSet's last change yet.
pub fn daemon_set_pending() -> InterceptorConfigStatus {
    three_nodes_one_reporting(&ds(3, 3, 3, false))
}

fn one_reporting_node(
    outcome: &Outcome,
    daemon_set: Option<&DaemonSet>,
    overlap: Option<&Overlap>,
) -> InterceptorConfigStatus {
    let reports = vec![report("a", NOW, 1, &[], true, NodePhase::Running)];
    observe(outcome, daemon_set, &nodes(&["a"]), &reports, overlap, None)
}

/// The spec cannot become a worker config: nothing applied.
pub fn invalid_spec() -> InterceptorConfigStatus {
    one_reporting_node(
        &Outcome::InvalidSpec(
            "invalid spec: kafka.brokers: at least one broker is required".into(),
        ),
        Some(&ds(1, 1, 1, true)),
        None,
    )
}

/// The API server refused an apply.
pub fn apply_refused() -> InterceptorConfigStatus {
    one_reporting_node(
        &Outcome::ApplyFailed("DaemonSet cfg: forbidden".into()),
        None,
        None,
    )
}

/// An older config captures the same node.
pub fn double_capture() -> InterceptorConfigStatus {
    let overlap = Overlap {
        configs: vec!["ns/older".into()],
        nodes: 1,
    };
    one_reporting_node(&Outcome::Applied, Some(&ds(1, 1, 1, true)), Some(&overlap))
}

/// Every worker ready and reporting, but the only one cannot reach Kafka.
pub fn kafka_unreachable() -> InterceptorConfigStatus {
    let reports = vec![report("a", NOW, 1, &[], false, NodePhase::Degraded)];
    observe(
        &Outcome::Applied,
        Some(&ds(1, 1, 1, true)),
        &nodes(&["a"]),
        &reports,
        None,
        None,
    )
}

/// No node matches the node selector.
pub fn no_nodes() -> InterceptorConfigStatus {
    observe(
        &Outcome::Applied,
        Some(&ds(0, 0, 0, true)),
        &BTreeSet::new(),
        &[],
        None,
        None,
    )
}

/// Every scenario by name (the names of the Argo CD test data files).
pub fn all() -> Vec<(&'static str, InterceptorConfigStatus)> {
    vec![
        ("ready", ready()),
        ("rolling-out", rolling_out()),
        ("rollout", rollout()),
        ("awaiting-reports", awaiting_reports()),
        ("daemonset-pending", daemon_set_pending()),
        ("invalid-spec", invalid_spec()),
        ("apply-refused", apply_refused()),
        ("double-capture", double_capture()),
        ("kafka-unreachable", kafka_unreachable()),
        ("no-nodes", no_nodes()),
    ]
}
