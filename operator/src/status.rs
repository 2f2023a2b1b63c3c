//! Pure status aggregation: what the operator observed (its apply, the DaemonSet, the workers'
//! InterceptorStatus reports, other configs) -> the InterceptorConfig's status, the reports to delete, and
//! the condition changes worth an event.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use interceptor_crds::interceptor_config::Totals;
use interceptor_crds::interceptor_status::NodePhase;
use interceptor_crds::status_cadence::StatusCadence;
use interceptor_crds::{InterceptorConfigStatus, InterceptorStatus};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::selection::Overlap;

pub const READY: &str = "Ready";
pub const RECONCILED: &str = "Reconciled";
pub const DEGRADED: &str = "Degraded";
/// kstatus's abnormal-true conditions (sigs.k8s.io/cli-utils/pkg/kstatus), read by Flux's health checks,
/// kpt and cli-utils: `Reconciling` True means in progress, `Stalled` True means it cannot progress
/// without a change. Never both True. With both False, kstatus goes by `Ready`.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// How applying the children went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// ConfigMap and DaemonSet applied.
    Applied,
    /// The spec cannot become a valid `config.yaml` (nothing was applied; workers keep the last good one).
    InvalidSpec(String),
    /// The API server refused an apply.
    ApplyFailed(String),
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// `metadata.generation` of the InterceptorConfig.
    pub generation: Option<i64>,
    /// The status as it is now (to keep `lastTransitionTime` of unchanged conditions).
    pub previous: Option<&'a InterceptorConfigStatus>,
    pub outcome: &'a Outcome,
    /// The worker DaemonSet as the API server returned it (with its status).
    pub daemon_set: Option<&'a DaemonSet>,
    /// Nodes the DaemonSet selects.
    pub selected_nodes: &'a BTreeSet<String>,
    /// This config's InterceptorStatus objects.
    /// (The reflector's own `Arc`s: a reconcile copies no report.)
    pub reports: &'a [Arc<InterceptorStatus>],
    pub overlap: Option<&'a Overlap>,
    pub now: Timestamp,
    /// A report older than this does not count as reporting.
    pub heartbeat_timeout: Duration,
    /// The status cadence the workers were given now (None: nothing was rendered).
    pub cadence: Option<StatusCadence>,
}

fn is_fresh(report: &InterceptorStatus, now: Timestamp, timeout: Duration) -> bool {
    let Some(beat) = report
        .status
        .as_ref()
        .and_then(|s| s.last_heartbeat.as_ref())
    else {
        return false;
    };
    let timeout = SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX);
    now.duration_since(beat.0) <= timeout
}

/// The status cadence for workers on `selected` nodes, and how old a heartbeat may be before its
/// worker stops counting as reporting (never less than `least_timeout`, the operator's flag). The
/// cadence in `previous` is kept while the cluster has not clearly shrunk below its step, so that a
/// cluster hovering around a step does not make every worker write twice.
pub fn worker_cadence(
    selected: usize,
    previous: Option<&InterceptorConfigStatus>,
    least_timeout: Duration,
) -> (StatusCadence, Duration) {
    let cadence = StatusCadence::for_nodes(selected, previous.and_then(|p| p.status_cadence));
    (cadence, least_timeout.max(cadence.heartbeat_timeout()))
}

/// What of a report the InterceptorConfig's status shows at once: its phase and message, its config
/// version, its Kafka connection. A change of any of them triggers a reconcile (run.rs); heartbeats and
/// counters never do (at 5 000 nodes they are most of the writes, and the periodic resync sums them).
pub fn report_signature(report: &InterceptorStatus) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    report.spec.interceptor.hash(&mut hasher);
    report.spec.node.hash(&mut hasher);
    if let Some(s) = &report.status {
        s.phase.map(|p| format!("{p:?}")).hash(&mut hasher);
        s.message.hash(&mut hasher);
        s.config_version.hash(&mut hasher);
        s.kafka.connected.hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// Names of the reports to delete: their node is gone, or no longer selected and silent.
pub fn stale_reports(
    reports: &[Arc<InterceptorStatus>],
    existing_nodes: &BTreeSet<String>,
    selected_nodes: &BTreeSet<String>,
    now: Timestamp,
    heartbeat_timeout: Duration,
) -> Vec<String> {
    reports
        .iter()
        .filter(|r| {
            !existing_nodes.contains(&r.spec.node)
                || (!selected_nodes.contains(&r.spec.node) && !is_fresh(r, now, heartbeat_timeout))
        })
        .map(|r| r.name_any())
        .collect()
}

/// Up to five names, then "and N more".
fn list(names: &[String]) -> String {
    let mut text = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        text.push_str(&format!(" and {} more", names.len() - 5));
    }
    text
}

struct Cond {
    status: bool,
    reason: &'static str,
    message: String,
}

fn cond(status: bool, reason: &'static str, message: impl Into<String>) -> Cond {
    Cond {
        status,
        reason,
        message: message.into(),
    }
}

fn condition(type_: &str, c: Cond, o: &Observed<'_>) -> Condition {
    let status = if c.status { "True" } else { "False" };
    let last_transition_time = o
        .previous
        .and_then(|p| p.conditions.iter().find(|x| x.type_ == type_))
        .filter(|x| x.status == status)
        .map(|x| x.last_transition_time.clone())
        .unwrap_or_else(|| Time(o.now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: c.reason.to_string(),
        message: c.message,
        observed_generation: o.generation,
        last_transition_time,
    }
}

/// The status for what was observed.
pub fn aggregate(o: &Observed<'_>) -> InterceptorConfigStatus {
    let ds_status = o.daemon_set.and_then(|d| d.status.as_ref());
    let desired = ds_status.map_or(0, |s| s.desired_number_scheduled);
    let ready = ds_status.map_or(0, |s| s.number_ready);
    let updated = ds_status.map_or(0, |s| s.updated_number_scheduled.unwrap_or(0));
    let ds_caught_up = match (o.daemon_set, ds_status) {
        (Some(ds), Some(s)) => {
            s.observed_generation.is_some() && s.observed_generation >= ds.metadata.generation
        }
        _ => false,
    };

    let fresh: Vec<&InterceptorStatus> = o
        .reports
        .iter()
        .filter(|r| {
            o.selected_nodes.contains(&r.spec.node) && is_fresh(r, o.now, o.heartbeat_timeout)
        })
        .map(|r| &**r)
        .collect();
    let mut totals = Totals::default();
    for report in &fresh {
        let Some(s) = report.status.as_ref() else {
            continue;
        };
        totals.pods_tapped = totals.pods_tapped.saturating_add(u64::from(s.pods_tapped));
        totals.packets = totals.packets.saturating_add(s.counters.packets);
        totals.bytes = totals.bytes.saturating_add(s.counters.bytes);
        totals.pairs_emitted = totals
            .pairs_emitted
            .saturating_add(s.counters.pairs_emitted);
        totals.kernel_drops = totals.kernel_drops.saturating_add(s.counters.kernel_drops);
        for (reason, n) in &s.counters.drops {
            let slot = totals.drops_by_reason.entry(reason.clone()).or_default();
            *slot = slot.saturating_add(*n);
            totals.drops = totals.drops.saturating_add(*n);
        }
        totals.kafka_connected_nodes += u64::from(s.kafka.connected);
    }
    let reporting = i32::try_from(fresh.len()).unwrap_or(i32::MAX);

    let reconciled = match o.outcome {
        Outcome::Applied => cond(true, "Applied", "ConfigMap and DaemonSet are applied"),
        Outcome::InvalidSpec(m) => cond(false, "InvalidSpec", m.clone()),
        Outcome::ApplyFailed(m) => cond(false, "ApplyFailed", m.clone()),
    };

    let node_names = |pred: &dyn Fn(&InterceptorStatus) -> bool| -> Vec<String> {
        fresh
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.spec.node.clone())
            .collect()
    };
    let kafka_down = node_names(&|r| r.status.as_ref().is_some_and(|s| !s.kafka.connected));
    let degraded_nodes = node_names(&|r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(NodePhase::Degraded))
    });
    let degraded = if let Outcome::InvalidSpec(m) | Outcome::ApplyFailed(m) = o.outcome {
        cond(true, reconciled.reason, m.clone())
    } else if let Some(overlap) = o.overlap {
        cond(
            true,
            "DoubleCapture",
            format!(
                "{} node(s) are also captured by the older {}; their pairs are produced twice",
                overlap.nodes,
                list(&overlap.configs)
            ),
        )
    } else if !kafka_down.is_empty() {
        cond(
            true,
            "KafkaUnreachable",
            format!("workers on {} cannot reach Kafka", list(&kafka_down)),
        )
    } else if !degraded_nodes.is_empty() {
        cond(
            true,
            "WorkersDegraded",
            format!("workers on {} report Degraded", list(&degraded_nodes)),
        )
    } else {
        cond(
            false,
            "AsExpected",
            "spec applied; no double capture; no reporting worker is degraded or cut off from Kafka",
        )
    };

    let ready_cond = if !matches!(o.outcome, Outcome::Applied) {
        cond(
            false,
            "ReconcileFailed",
            "the last reconcile failed, see the Reconciled condition",
        )
    } else if !ds_caught_up {
        cond(
            false,
            "DaemonSetPending",
            "the DaemonSet controller has not processed the DaemonSet yet",
        )
    } else if desired == 0 {
        cond(
            false,
            "NoNodesSelected",
            "no node matches the node selector and tolerations",
        )
    } else if updated < desired || ready < desired {
        cond(
            false,
            "RolloutInProgress",
            format!("{ready} of {desired} workers ready, {updated} updated"),
        )
    } else if reporting < desired {
        let silent: Vec<String> = o
            .selected_nodes
            .iter()
            .filter(|n| !fresh.iter().any(|r| &r.spec.node == *n))
            .cloned()
            .collect();
        cond(
            false,
            "AwaitingReports",
            format!(
                "{reporting} of {desired} workers report; no recent heartbeat from {}",
                list(&silent)
            ),
        )
    } else {
        cond(
            true,
            "WorkersReady",
            format!("{ready} of {desired} workers ready and reporting"),
        )
    };

    let stalled = match (o.outcome, degraded.reason) {
        (Outcome::InvalidSpec(_) | Outcome::ApplyFailed(_), reason)
        | (_, reason @ "DoubleCapture") => cond(true, reason, degraded.message.clone()),
        _ => cond(
            false,
            "AsExpected",
            "the spec is valid and applied, and no node is captured twice",
        ),
    };
    let reconciling = match ready_cond.reason {
        _ if stalled.status => cond(
            false,
            "Stalled",
            "nothing progresses until the Stalled condition is resolved",
        ),
        "DaemonSetPending" | "RolloutInProgress" | "AwaitingReports" => {
            cond(true, ready_cond.reason, ready_cond.message.clone())
        }
        "NoNodesSelected" => cond(false, "NoNodesSelected", ready_cond.message.clone()),
        _ => cond(
            false,
            "Complete",
            "no rollout in progress; every selected worker reports",
        ),
    };

    InterceptorConfigStatus {
        observed_generation: o.generation,
        conditions: vec![
            condition(READY, ready_cond, o),
            condition(RECONCILED, reconciled, o),
            condition(DEGRADED, degraded, o),
            condition(RECONCILING, reconciling, o),
            condition(STALLED, stalled, o),
        ],
        desired_nodes: desired,
        updated_nodes: updated,
        ready_nodes: ready,
        reporting_nodes: reporting,
        totals,
        // Workers keep the last cadence they were given when a new spec cannot be rendered.
        status_cadence: o
            .cadence
            .or_else(|| o.previous.and_then(|p| p.status_cadence)),
    }
}

/// A condition that changed (status or reason) from one status to the next: worth an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    /// Whether the new state is a bad one (Ready/Reconciled False, Degraded/Stalled True).
    pub warning: bool,
}

/// The conditions of `next` whose status or reason differ from `previous`. A condition seen for the first
/// time is a transition only when it is bad (a new config does not need three "all is well" events).
///
/// Two conditions changing for the same reason (Reconciled False and Degraded True, both `InvalidSpec`)
/// are one transition: one event.
pub fn transitions(
    previous: Option<&InterceptorConfigStatus>,
    next: &InterceptorConfigStatus,
) -> Vec<Transition> {
    let mut seen_reasons: Vec<&str> = Vec::new();
    next.conditions
        .iter()
        .filter(|c| {
            let first = !seen_reasons.contains(&c.reason.as_str());
            seen_reasons.push(&c.reason);
            first
        })
        .filter_map(|c| {
            let warning = is_bad(c);
            let changed =
                match previous.and_then(|p| p.conditions.iter().find(|x| x.type_ == c.type_)) {
                    Some(p) => p.status != c.status || p.reason != c.reason,
                    None => warning,
                };
            changed.then(|| Transition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                warning,
            })
        })
        .collect()
}

/// Whether a condition reports trouble: Ready or Reconciled False, Degraded or Stalled True. Reconciling
/// True is progress, not trouble.
fn is_bad(c: &Condition) -> bool {
    match c.type_.as_str() {
        DEGRADED | STALLED => c.status == "True",
        RECONCILING => false,
        _ => c.status == "False",
    }
}

/// Whether two statuses differ in anything but the timestamps of unchanged conditions (so that an
/// unchanged status is not written again: status writes must not cause work).
pub fn differs(a: Option<&InterceptorConfigStatus>, b: &InterceptorConfigStatus) -> bool {
    a != Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use interceptor_crds::interceptor_status::{InterceptorStatusSpec, NodeReport};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_report_signature_changes_with_what_the_status_shows_never_with_heartbeats_or_counters() {
        let report = |phase, beat: i64, packets, connected| {
            let mut r = InterceptorStatus::new(
                "e2e-node-1",
                InterceptorStatusSpec {
                    interceptor: "e2e".into(),
                    node: "node-1".into(),
                },
            );
            let mut status = NodeReport {
                phase: Some(phase),
                last_heartbeat: Some(Time(Timestamp::from_second(beat).unwrap())),
                config_version: Some("v1".into()),
                ..NodeReport::default()
            };
            status.counters.packets = packets;
            status.kafka.connected = connected;
            r.status = Some(status);
            r
        };
        let base = report_signature(&report(NodePhase::Running, 100, 5, true));
        assert_eq!(
            base,
            report_signature(&report(NodePhase::Running, 400, 9_000, true))
        );
        assert_ne!(
            base,
            report_signature(&report(NodePhase::Degraded, 100, 5, true))
        );
        assert_ne!(
            base,
            report_signature(&report(NodePhase::Running, 100, 5, false))
        );
        let mut moved = report(NodePhase::Running, 100, 5, true);
        moved.status.as_mut().unwrap().config_version = Some("v2".into());
        assert_ne!(base, report_signature(&moved));
        let mut explained = report(NodePhase::Running, 100, 5, true);
        explained.status.as_mut().unwrap().message = Some("the capture loop is stalled".into());
        assert_ne!(base, report_signature(&explained));
    }

    fn with_cadence(heartbeat_seconds: u64) -> InterceptorConfigStatus {
        InterceptorConfigStatus {
            status_cadence: Some(StatusCadence {
                heartbeat_seconds,
                min_interval_seconds: heartbeat_seconds / 4,
            }),
            ..InterceptorConfigStatus::default()
        }
    }

    #[test]
    fn the_heartbeat_timeout_follows_the_cadence_and_never_drops_below_the_flag() {
        let flag = Duration::from_secs(60);
        let (cadence, timeout) = worker_cadence(3, None, flag);
        assert_eq!(cadence, StatusCadence::default());
        assert_eq!(timeout, flag);
        let (cadence, timeout) = worker_cadence(5_000, None, flag);
        assert_eq!(cadence.heartbeat_seconds, 320);
        assert_eq!(timeout, Duration::from_secs(960));
        let (_, timeout) = worker_cadence(3, None, Duration::from_secs(600));
        assert_eq!(timeout, Duration::from_secs(600), "a longer flag wins");
    }

    #[test]
    fn the_cadence_in_the_status_holds_until_the_cluster_clearly_shrinks() {
        let flag = Duration::from_secs(60);
        let previous = with_cadence(80);
        assert_eq!(
            worker_cadence(950, Some(&previous), flag)
                .0
                .heartbeat_seconds,
            80
        );
        assert_eq!(worker_cadence(950, None, flag).0.heartbeat_seconds, 40);
        assert_eq!(
            worker_cadence(700, Some(&previous), flag)
                .0
                .heartbeat_seconds,
            40
        );
        // The timeout is the kept cadence's: workers still write every 80 s.
        assert_eq!(
            worker_cadence(950, Some(&previous), flag).1,
            Duration::from_secs(240)
        );
    }
}
