//! What GitOps tools read from an InterceptorConfig in each state the operator can report:
//! - Flux (health checks), kpt and cli-utils through kstatus: its rules for a custom resource, ported below
//!   from `Compute` in sigs.k8s.io/cli-utils/pkg/kstatus/status;
//! - Argo CD through the health checks in `config/argocd` (the layout of Argo CD's
//!   `resource_customizations`), executed as Argo CD executes them: Lua 5.1 (Argo CD's gopher-lua), the
//!   object as the global `obj`, the script's returned table read as `status` and `message`.
//!
//! The Argo CD test data are the statuses the operator's own aggregation writes (tests/integration/scenarios.rs);
//! `UPDATE_SNAPSHOTS=1` rewrites them after a change, and the expectations in `health_test.yaml` are then
//! reviewed by hand.

use std::path::{Path, PathBuf};

use crate::scenarios::{self, report, GENERATION, NOW};
use interceptor_crds::interceptor_status::NodePhase;
use interceptor_crds::InterceptorConfigStatus;
use mlua::{Lua, LuaSerdeExt};
use serde_json::{json, Value};

// --- kstatus -------------------------------------------------------------------------------------

/// The kstatus status of a custom resource (no type-specific rules apply to ours), with its message:
/// 1. `metadata.deletionTimestamp` set: Terminating;
/// 2. `status.observedGeneration` present and not `metadata.generation`: InProgress;
/// 3. the first of the conditions `Reconciling` True (InProgress) or `Stalled` True (Failed);
/// 4. a `Ready` condition: True is Current, False or Unknown is InProgress (kstatus 0.35+; older
///    releases skip this rule and go on to 5);
/// 5. otherwise Current.
fn kstatus(object: &Value) -> (&'static str, String) {
    if object["metadata"]["deletionTimestamp"].is_string() {
        return ("Terminating", "Resource scheduled for deletion".into());
    }
    let generation = object["metadata"]["generation"].as_i64();
    let observed = object["status"]["observedGeneration"].as_i64();
    if let (Some(g), Some(o)) = (generation, observed) {
        if g != o {
            return (
                "InProgress",
                format!(
                    "InterceptorConfig generation is {g}, but latest observed generation is {o}"
                ),
            );
        }
    }
    let conditions = object["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let message = |c: &Value| c["message"].as_str().unwrap_or_default().to_string();
    for c in &conditions {
        match (c["type"].as_str(), c["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return ("InProgress", message(c)),
            (Some("Stalled"), Some("True")) => return ("Failed", message(c)),
            _ => {}
        }
    }
    if let Some(ready) = conditions.iter().find(|c| c["type"] == "Ready") {
        return match ready["status"].as_str() {
            Some("True") => ("Current", "Resource is Ready".into()),
            _ => ("InProgress", message(ready)),
        };
    }
    ("Current", "Resource is current".into())
}

/// An InterceptorConfig as the API server would return it with this status.
fn config_object(generation: i64, status: Option<&InterceptorConfigStatus>) -> Value {
    let mut object = json!({
        "apiVersion": "interceptor.dev/v1alpha1",
        "kind": "InterceptorConfig",
        "metadata": {"name": "default", "namespace": "interceptor-system", "generation": generation},
        "spec": {"kafka": {"brokers": ["kafka.kafka:9092"]}},
    });
    if let Some(status) = status {
        object["status"] = serde_json::to_value(status).unwrap();
    }
    object
}

#[test]
fn kstatus_reads_every_state_as_documented() {
    let expected = [
        ("ready", "Current"),
        ("rolling-out", "InProgress"),
        ("rollout", "InProgress"),
        ("awaiting-reports", "InProgress"),
        ("daemonset-pending", "InProgress"),
        ("invalid-spec", "Failed"),
        ("apply-refused", "Failed"),
        ("double-capture", "Failed"),
        // Degraded is not a kstatus condition: Kafka being unreachable is trouble to show (Argo CD
        // does), not a reason to fail a rollout that is complete.
        ("kafka-unreachable", "Current"),
        // Ready False with nothing in progress: kstatus 0.35+ waits (InProgress), older ones say Current.
        ("no-nodes", "InProgress"),
    ];
    let all = scenarios::all();
    assert_eq!(
        all.len(),
        expected.len(),
        "a scenario without an expectation"
    );
    for ((name, status), (want_name, want)) in all.iter().zip(expected) {
        assert_eq!(*name, want_name);
        let types: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert!(
            !(types.contains(&("Reconciling", "True")) && types.contains(&("Stalled", "True"))),
            "{name}: Reconciling and Stalled are both True"
        );
        let (got, message) = kstatus(&config_object(GENERATION, Some(status)));
        assert_eq!(got, want, "{name}: kstatus says {got} ({message})");
        assert!(
            !message.is_empty(),
            "{name}: kstatus has no message to show"
        );
    }
}

#[test]
fn kstatus_follows_a_config_through_its_life() {
    let at = |generation: i64, status: &InterceptorConfigStatus| {
        kstatus(&config_object(generation, Some(status))).0
    };
    // Applied, rolled out, every worker reporting.
    assert_eq!(
        at(GENERATION, &scenarios::daemon_set_pending()),
        "InProgress"
    );
    assert_eq!(at(GENERATION, &scenarios::rolling_out()), "InProgress");
    assert_eq!(at(GENERATION, &scenarios::awaiting_reports()), "InProgress");
    assert_eq!(at(GENERATION, &scenarios::ready()), "Current");
    // The spec changes: until the operator has seen it, the old status does not count.
    let (state, message) = kstatus(&config_object(GENERATION + 1, Some(&scenarios::ready())));
    assert_eq!(state, "InProgress");
    assert!(
        message.contains("latest observed generation is 7"),
        "{message}"
    );
    // A change the operator cannot apply stalls it; the next good one gets it going again.
    assert_eq!(at(GENERATION, &scenarios::invalid_spec()), "Failed");
    assert_eq!(at(GENERATION, &scenarios::apply_refused()), "Failed");
    assert_eq!(at(GENERATION, &scenarios::rolling_out()), "InProgress");
    assert_eq!(at(GENERATION, &scenarios::ready()), "Current");
    // Another config starts capturing the same nodes, then goes away.
    assert_eq!(at(GENERATION, &scenarios::double_capture()), "Failed");
    assert_eq!(at(GENERATION, &scenarios::ready()), "Current");
    // Deleted.
    let mut deleted = config_object(GENERATION, Some(&scenarios::ready()));
    deleted["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:00Z");
    assert_eq!(kstatus(&deleted).0, "Terminating");
}

// --- Argo CD -------------------------------------------------------------------------------------

fn customizations() -> PathBuf {
    crate::common::repo().join("config/argocd/interceptor.dev")
}

/// The health Argo CD computes with `script` for `object`: (status, message).
fn argocd_health(script: &str, object: &Value) -> (String, String) {
    let lua = Lua::new();
    // JSON null is nil in Argo CD's conversion, as absent fields are.
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(object, options).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(script).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// Writes or compares one test data file (a YAML object), as the snapshot tests do.
fn test_data(kind: &str, name: &str, object: &Value) {
    let path = customizations()
        .join(kind)
        .join("testdata")
        .join(format!("{name}.yaml"));
    let text = serde_yaml_ng::to_string(object).unwrap();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    assert_eq!(
        want,
        text,
        "{} is not what the operator writes now (UPDATE_SNAPSHOTS=1 rewrites it; then review health_test.yaml)",
        path.display()
    );
}

#[test]
fn argocd_test_data_are_the_states_the_operator_and_workers_write() {
    for (name, status) in scenarios::all() {
        test_data(
            "InterceptorConfig",
            name,
            &config_object(GENERATION, Some(&status)),
        );
    }
    test_data("InterceptorConfig", "no-status", &config_object(1, None));
    test_data(
        "InterceptorConfig",
        "generation-not-observed",
        &config_object(GENERATION + 1, Some(&scenarios::ready())),
    );

    for (name, phase, connected) in [
        ("running", NodePhase::Running, true),
        ("starting", NodePhase::Starting, true),
        ("degraded", NodePhase::Degraded, false),
        ("stopping", NodePhase::Stopping, true),
    ] {
        let mut status = report("node-a", NOW, 40, &[("content_type", 3)], connected, phase);
        if phase == NodePhase::Degraded {
            status.status.as_mut().unwrap().message = Some("Kafka unreachable for 75 s".into());
        }
        test_data(
            "InterceptorStatus",
            name,
            &serde_json::to_value(&status).unwrap(),
        );
    }
    let mut fresh = report("node-a", NOW, 0, &[], true, NodePhase::Starting);
    fresh.status = None;
    test_data(
        "InterceptorStatus",
        "no-status",
        &serde_json::to_value(&fresh).unwrap(),
    );
}

#[test]
fn argocd_health_checks_pass_their_test_cases() {
    for kind in ["InterceptorConfig", "InterceptorStatus"] {
        let dir = customizations().join(kind);
        let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
        let cases: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(dir.join("health_test.yaml")).unwrap(),
        )
        .unwrap();
        let cases = cases["tests"].as_array().unwrap();
        let data_files = std::fs::read_dir(dir.join("testdata")).unwrap().count();
        assert_eq!(
            cases.len(),
            data_files,
            "{kind}: a test data file without a test case"
        );
        for case in cases {
            let input = case["inputPath"].as_str().unwrap();
            let object = read_yaml(&dir.join(input));
            let (status, message) = argocd_health(&script, &object);
            let want = &case["healthStatus"];
            assert_eq!(
                (status.as_str(), message.as_str()),
                (
                    want["status"].as_str().unwrap(),
                    want["message"].as_str().unwrap()
                ),
                "{kind} {input}"
            );
        }
    }
}

fn read_yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
