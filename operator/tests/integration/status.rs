//! Snapshot tests of the pure status aggregation.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{assert_appliable, assert_snapshot};
use crate::scenarios::{self, at, ds, nodes, observe, report, NOW};
use interceptor_crds::interceptor_status::NodePhase;
use interceptor_crds::InterceptorConfigStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use operator::status::{stale_reports, transitions, Outcome};

fn yaml(status: &InterceptorConfigStatus) -> String {
    assert_appliable("the status", &serde_json::to_value(status).unwrap());
    serde_yaml_ng::to_string(status).unwrap()
}

#[test]
fn all_ready_and_reporting() {
    let status = scenarios::ready();
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(status.totals.pairs_emitted, 42);
    assert_eq!(status.totals.drops, 8);
    assert_snapshot("status-ready.yaml", &yaml(&status));
}

#[test]
fn stale_heartbeats_and_rollout_and_kafka_down() {
    let rolling = scenarios::rollout();
    let awaiting = scenarios::awaiting_reports();
    let pending = scenarios::daemon_set_pending();
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
    let invalid = scenarios::invalid_spec();
    let refused = scenarios::apply_refused();
    let double = scenarios::double_capture();
    let none = scenarios::no_nodes();
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
        &reports.into_iter().map(Arc::new).collect::<Vec<_>>(),
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
