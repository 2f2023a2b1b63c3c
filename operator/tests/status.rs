//! Snapshot tests of the pure status aggregation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{assert_appliable, assert_snapshot};
use interceptor_crds::interceptor_status::{KafkaState, NodeCounters, NodePhase, OwnerConfig};
use interceptor_crds::{InterceptorConfigStatus, InterceptorStatus, NodeReport};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use operator::selection::Overlap;
use operator::status::{aggregate, stale_reports, transitions, Observed, Outcome};

const NOW: i64 = 1_800_000_000;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn ds(desired: i32, ready: i32, updated: i32, caught_up: bool) -> DaemonSet {
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

fn report(
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

fn nodes(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn observe(
    outcome: &Outcome,
    daemon_set: Option<&DaemonSet>,
    selected: &BTreeSet<String>,
    reports: &[InterceptorStatus],
    overlap: Option<&Overlap>,
    previous: Option<&InterceptorConfigStatus>,
) -> InterceptorConfigStatus {
    aggregate(&Observed {
        generation: Some(7),
        previous,
        outcome,
        daemon_set,
        selected_nodes: selected,
        reports,
        overlap,
        now: at(NOW),
        heartbeat_timeout: Duration::from_secs(60),
    })
}

fn yaml(status: &InterceptorConfigStatus) -> String {
    assert_appliable("the status", &serde_json::to_value(status).unwrap());
    serde_yaml_ng::to_string(status).unwrap()
}

#[test]
fn all_ready_and_reporting() {
    let selected = nodes(&["a", "b"]);
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
    let status = observe(
        &Outcome::Applied,
        Some(&ds(2, 2, 2, true)),
        &selected,
        &reports,
        None,
        None,
    );
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(status.totals.pairs_emitted, 42);
    assert_eq!(status.totals.drops, 8);
    assert_snapshot("status-ready.yaml", &yaml(&status));
}

#[test]
fn stale_heartbeats_and_rollout_and_kafka_down() {
    let selected = nodes(&["a", "b", "c"]);
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
    let rolling = observe(
        &Outcome::Applied,
        Some(&ds(3, 2, 1, true)),
        &selected,
        &reports,
        None,
        None,
    );
    let awaiting = observe(
        &Outcome::Applied,
        Some(&ds(3, 3, 3, true)),
        &selected,
        &reports,
        None,
        None,
    );
    let pending = observe(
        &Outcome::Applied,
        Some(&ds(3, 3, 3, false)),
        &selected,
        &reports,
        None,
        None,
    );
    assert_eq!(rolling.reporting_nodes, 1);
    assert_eq!(rolling.totals.pairs_emitted, 40);
    assert_eq!(rolling.conditions[0].reason, "RolloutInProgress");
    assert_eq!(awaiting.conditions[0].reason, "AwaitingReports");
    assert_eq!(pending.conditions[0].reason, "DaemonSetPending");
    assert_eq!(rolling.conditions[2].reason, "KafkaUnreachable");
    assert_snapshot(
        "status-progressing.yaml",
        &format!(
            "# rollout\n{}# awaiting reports\n{}# DaemonSet not observed yet\n{}",
            yaml(&rolling),
            yaml(&awaiting),
            yaml(&pending)
        ),
    );
}

#[test]
fn invalid_spec_apply_failure_double_capture_and_no_nodes() {
    let selected = nodes(&["a"]);
    let reports = vec![report("a", NOW, 1, &[], true, NodePhase::Running)];
    let invalid = observe(
        &Outcome::InvalidSpec(
            "invalid spec: kafka.brokers: at least one broker is required".into(),
        ),
        Some(&ds(1, 1, 1, true)),
        &selected,
        &reports,
        None,
        None,
    );
    let refused = observe(
        &Outcome::ApplyFailed("DaemonSet cfg: forbidden".into()),
        None,
        &selected,
        &reports,
        None,
        None,
    );
    let overlap = Overlap {
        configs: vec!["ns/older".into()],
        nodes: 1,
    };
    let double = observe(
        &Outcome::Applied,
        Some(&ds(1, 1, 1, true)),
        &selected,
        &reports,
        Some(&overlap),
        None,
    );
    let none = observe(
        &Outcome::Applied,
        Some(&ds(0, 0, 0, true)),
        &BTreeSet::new(),
        &[],
        None,
        None,
    );
    assert_eq!(invalid.conditions[1].status, "False");
    assert_eq!(
        double.conditions[0].status, "True",
        "double capture does not stop the workers"
    );
    assert_eq!(double.conditions[2].reason, "DoubleCapture");
    assert_eq!(none.conditions[0].reason, "NoNodesSelected");
    assert_snapshot(
        "status-failures.yaml",
        &format!(
            "# invalid spec\n{}# apply refused\n{}# double capture\n{}# no nodes\n{}",
            yaml(&invalid),
            yaml(&refused),
            yaml(&double),
            yaml(&none)
        ),
    );
}

#[test]
fn unchanged_conditions_keep_their_transition_time_and_raise_no_event() {
    let selected = nodes(&["a"]);
    let reports = vec![report("a", NOW, 1, &[], true, NodePhase::Running)];
    let mut first = observe(
        &Outcome::Applied,
        Some(&ds(1, 1, 1, true)),
        &selected,
        &reports,
        None,
        None,
    );
    for c in &mut first.conditions {
        c.last_transition_time = Time(at(NOW - 3600));
    }
    let again = observe(
        &Outcome::Applied,
        Some(&ds(1, 1, 1, true)),
        &selected,
        &reports,
        None,
        Some(&first),
    );
    assert_eq!(
        again, first,
        "an unchanged world gives an identical status (no status write)"
    );
    assert!(transitions(Some(&first), &again).is_empty());

    let broken = observe(
        &Outcome::Applied,
        Some(&ds(1, 0, 1, true)),
        &selected,
        &reports,
        None,
        Some(&first),
    );
    let ready = &broken.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.last_transition_time.0),
        ("False", at(NOW))
    );
    assert_eq!(broken.conditions[1].last_transition_time.0, at(NOW - 3600));
    let events = transitions(Some(&first), &broken);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].type_.as_str(),
            events[0].reason.as_str(),
            events[0].warning
        ),
        ("Ready", "RolloutInProgress", true)
    );

    // A brand-new config: only bad conditions are worth an event.
    let events = transitions(None, &broken);
    assert_eq!(
        events.iter().map(|t| t.type_.as_str()).collect::<Vec<_>>(),
        vec!["Ready"]
    );
}

#[test]
fn stale_reports_are_those_of_gone_or_unselected_silent_nodes() {
    let reports = vec![
        report("gone", NOW, 0, &[], true, NodePhase::Running),
        report("kept", NOW - 1000, 0, &[], true, NodePhase::Running),
        report(
            "unselected-silent",
            NOW - 1000,
            0,
            &[],
            true,
            NodePhase::Running,
        ),
        report(
            "unselected-fresh",
            NOW - 5,
            0,
            &[],
            true,
            NodePhase::Running,
        ),
    ];
    let existing = nodes(&["kept", "unselected-silent", "unselected-fresh"]);
    let selected = nodes(&["kept"]);
    let stale = stale_reports(
        &reports,
        &existing,
        &selected,
        at(NOW),
        Duration::from_secs(60),
    );
    assert_eq!(
        stale,
        vec!["cfg-gone".to_string(), "cfg-unselected-silent".to_string()]
    );
}
