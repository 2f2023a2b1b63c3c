//! The reconcile loop against a mocked API server (the tower-test `ApiServerVerifier` pattern of
//! kube-rs/controller-rs): every request is checked (method, path, field manager, force, body), answered,
//! and checked against the RBAC the operator declares.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::sample;
use http::{Method, Request, Response};
use interceptor_crds::interceptor_status::{NodeReport, OwnerConfig};
use interceptor_crds::{InterceptorConfig, InterceptorStatus};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;
use operator::controller::{error_policy, reconcile, Context, Error, Settings, FIELD_MANAGER};
use operator::metrics::Metrics;
use operator::rbac::{allows, OPERATOR};
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    for obj in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(obj));
    }
    reader
}

fn node(name: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(BTreeMap::from([(
        "kubernetes.io/os".into(),
        "linux".into(),
    )]));
    n
}

fn report(config: &InterceptorConfig, node: &str, beat: i64) -> InterceptorStatus {
    let owner = OwnerConfig {
        namespace: config.metadata.namespace.clone().unwrap(),
        name: config.metadata.name.clone().unwrap(),
        uid: config.metadata.uid.clone().unwrap(),
    };
    let mut r = InterceptorStatus::for_node(&owner, node);
    r.status = Some(NodeReport {
        last_heartbeat: Some(Time(Timestamp::from_second(beat).unwrap())),
        kafka: interceptor_crds::interceptor_status::KafkaState {
            connected: true,
            ..Default::default()
        },
        ..NodeReport::default()
    });
    r
}

struct World {
    configs: Vec<InterceptorConfig>,
    nodes: Vec<Node>,
    reports: Vec<InterceptorStatus>,
}

fn context(world: World) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context {
        client: client.clone(),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some("test".into()),
            },
        ),
        configs: store(world.configs),
        nodes: store(world.nodes),
        reports: store(world.reports),
        metrics: Arc::new(Metrics::default()),
        settings: Settings::default(),
        clock: now,
    };
    (Arc::new(ctx), handle)
}

/// One request as seen by the API server.
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Value,
}

/// The RBAC verb and resource of a request (only the shapes the operator uses).
fn rbac_of(seen: &Seen) -> (String, String, String) {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => (String::new(), &parts[2..]),
        _ => (parts[1].to_string(), &parts[3..]),
    };
    // rest: namespaces/{ns}/{resource}[/{name}[/{subresource}]]
    let resource = match rest.len() {
        5 => format!("{}/{}", rest[2], rest[4]),
        _ => rest[2].to_string(),
    };
    let verb = match (seen.method.as_str(), rest.len()) {
        ("GET", 3) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        (m, _) => panic!("unexpected method {m}"),
    };
    (group, resource, verb.to_string())
}

/// Take the next request, check it against the declared RBAC (SSA may create: it needs create too), and
/// answer it with `status` and `body`.
async fn next(handle: &mut Handle, status: u16, respond: impl FnOnce(&Seen) -> Value) -> Seen {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the reconciler stopped making requests")
        .expect("the reconciler finished (or panicked) before this request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let seen = Seen {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        },
    };
    eprintln!("request: {} {} {}", seen.method, seen.path, seen.body);
    let (group, resource, verb) = rbac_of(&seen);
    assert!(
        allows(OPERATOR, &group, &resource, &verb),
        "{} {} needs {verb} on {group}/{resource}, which the operator's RBAC does not grant",
        seen.method,
        seen.path
    );
    if seen.content_type == "application/apply-patch+yaml" {
        assert!(allows(OPERATOR, &group, &resource, "create") || resource.contains('/'));
    }
    let answer = respond(&seen);
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    seen
}

async fn assert_no_more_requests(handle: &mut Handle) {
    match tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await {
        Err(_) | Ok(None) => {}
        Ok(Some((request, _))) => {
            panic!("unexpected request {} {}", request.method(), request.uri())
        }
    }
}

fn assert_apply(seen: &Seen, path: &str) {
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PATCH", path));
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(
        seen.query.get("fieldManager").map(String::as_str),
        Some(FIELD_MANAGER)
    );
    assert_eq!(seen.query.get("force").map(String::as_str), Some("true"));
}

fn assert_owned_by(body: &Value, config: &InterceptorConfig) {
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "InterceptorConfig");
    assert_eq!(owner["apiVersion"], "interceptor.dev/v1alpha1");
    assert_eq!(owner["name"], config.metadata.name.clone().unwrap());
    assert_eq!(owner["uid"], config.metadata.uid.clone().unwrap());
    assert_eq!(owner["controller"], true);
}

/// The DaemonSet the API server returns after an apply: the applied object with a status.
fn daemon_set_with_status(applied: &Value, desired: i32, ready: i32) -> Value {
    let mut ds = applied.clone();
    ds["metadata"]["generation"] = json!(1);
    ds["status"] = json!({
        "desiredNumberScheduled": desired, "numberReady": ready, "updatedNumberScheduled": ready,
        "currentNumberScheduled": desired, "numberMisscheduled": 0, "observedGeneration": 1,
    });
    ds
}

/// The InterceptorConfig the API server returns after a status apply.
fn with_status(icfg: &InterceptorConfig, seen: &Seen) -> Value {
    let mut obj = serde_json::to_value(icfg).unwrap();
    obj["status"] = seen.body["status"].clone();
    obj
}

fn api_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason} (test)"), "reason": reason, "code": code})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

const NS: &str = "/api/v1/namespaces/interceptor-system";
const APPS: &str = "/apis/apps/v1/namespaces/interceptor-system";
const ICD: &str = "/apis/interceptor.dev/v1alpha1/namespaces/interceptor-system";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/interceptor-system/events";

#[tokio::test]
async fn a_new_config_is_applied_stale_reports_deleted_status_written() {
    let icfg = sample("interceptorconfig-minimal.yaml");
    let (ctx, mut handle) = context(World {
        configs: vec![icfg.clone()],
        nodes: vec![node("a"), node("b")],
        reports: vec![report(&icfg, "a", NOW - 5), report(&icfg, "gone", NOW - 5)],
    });
    let task = tokio::spawn(reconcile(Arc::new(icfg.clone()), ctx.clone()));

    let cm = next(&mut handle, 200, |s| s.body.clone()).await;
    assert_apply(&cm, &format!("{NS}/configmaps/default-config"));
    assert_eq!(cm.body["kind"], "ConfigMap");
    assert!(cm.body["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .contains("kafka.kafka:9092"));
    assert_owned_by(&cm.body, &icfg);

    let ds = next(&mut handle, 200, |s| daemon_set_with_status(&s.body, 2, 2)).await;
    assert_apply(&ds, &format!("{APPS}/daemonsets/default"));
    assert_eq!(ds.body["kind"], "DaemonSet");
    assert_owned_by(&ds.body, &icfg);

    let delete = next(
        &mut handle,
        200,
        |_| json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    )
    .await;
    assert_eq!(
        (delete.method.as_str(), delete.path.as_str()),
        (
            "DELETE",
            &*format!("{ICD}/interceptorstatuses/default-gone")
        )
    );

    let status = next(&mut handle, 200, |s| with_status(&icfg, s)).await;
    assert_apply(&status, &format!("{ICD}/interceptorconfigs/default/status"));
    assert_eq!(status.body["kind"], "InterceptorConfig");
    let s = &status.body["status"];
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(
        (
            s["desiredNodes"].clone(),
            s["readyNodes"].clone(),
            s["reportingNodes"].clone()
        ),
        (json!(2), json!(2), json!(1))
    );
    assert_eq!(condition(s, "Reconciled")["status"], "True");
    assert_eq!(condition(s, "Ready")["reason"], "AwaitingReports");
    assert_eq!(condition(s, "Degraded")["status"], "False");

    // A new config whose workers are not all reporting yet: one warning event (Ready False).
    let event = next(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (event.method.as_str(), event.path.as_str()),
        ("POST", EVENTS)
    );
    assert_eq!(event.body["reason"], "AwaitingReports");
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["regarding"]["name"], "default");

    let action = task.await.unwrap().unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(30))
    );
    assert!(ctx
        .metrics
        .encode()
        .contains("interceptor_operator_stale_reports_deleted_total 1"));
    assert!(ctx
        .metrics
        .encode()
        .contains("interceptor_operator_reconciles_total 1"));
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let mut icfg = sample("interceptorconfig-minimal.yaml");
    let world = |icfg: &InterceptorConfig| World {
        configs: vec![icfg.clone()],
        nodes: vec![node("a")],
        reports: vec![],
    };
    // First pass: learn the status the operator writes.
    let (ctx, mut handle) = context(world(&icfg));
    let task = tokio::spawn(reconcile(Arc::new(icfg.clone()), ctx));
    next(&mut handle, 200, |s| s.body.clone()).await;
    next(&mut handle, 200, |s| daemon_set_with_status(&s.body, 1, 1)).await;
    let written = next(&mut handle, 200, |s| with_status(&icfg, s)).await;
    next(&mut handle, 201, |s| s.body.clone()).await;
    task.await.unwrap().unwrap();

    // Second pass with that status in place: the two applies, and nothing else.
    icfg.status = Some(serde_json::from_value(written.body["status"].clone()).unwrap());
    let (ctx, mut handle) = context(world(&icfg));
    let task = tokio::spawn(reconcile(Arc::new(icfg.clone()), ctx));
    next(&mut handle, 200, |s| s.body.clone()).await;
    next(&mut handle, 200, |s| daemon_set_with_status(&s.body, 1, 1)).await;
    task.await.unwrap().unwrap();
    assert_no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn an_invalid_spec_applies_nothing_and_reports_why() {
    let mut icfg = sample("interceptorconfig-minimal.yaml");
    icfg.spec.kafka.brokers.clear();
    let (ctx, mut handle) = context(World {
        configs: vec![icfg.clone()],
        nodes: vec![node("a")],
        reports: vec![],
    });
    let task = tokio::spawn(reconcile(Arc::new(icfg.clone()), ctx));

    let get = next(&mut handle, 404, |_| api_error(404, "NotFound")).await;
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", &*format!("{APPS}/daemonsets/default"))
    );
    let status = next(&mut handle, 200, |s| with_status(&icfg, s)).await;
    assert_apply(&status, &format!("{ICD}/interceptorconfigs/default/status"));
    let reconciled = condition(&status.body["status"], "Reconciled");
    assert_eq!(
        (reconciled["status"].clone(), reconciled["reason"].clone()),
        (json!("False"), json!("InvalidSpec"))
    );
    assert!(reconciled["message"]
        .as_str()
        .unwrap()
        .contains("kafka.brokers"));
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let e = next(&mut handle, 201, |s| s.body.clone()).await;
        assert_eq!((e.method.as_str(), e.path.as_str()), ("POST", EVENTS));
        reasons.push(e.body["reason"].as_str().unwrap().to_string());
    }
    // Reconciled False and Degraded True share the reason InvalidSpec: one event for both.
    assert_eq!(reasons, vec!["ReconcileFailed", "InvalidSpec"]);
    assert!(
        task.await.unwrap().is_ok(),
        "an invalid spec is not retried: a spec change triggers the next reconcile"
    );
}

#[tokio::test]
async fn a_refused_apply_is_reported_in_status_and_retried() {
    let icfg = sample("interceptorconfig-minimal.yaml");
    let (ctx, mut handle) = context(World {
        configs: vec![icfg.clone()],
        nodes: vec![node("a")],
        reports: vec![],
    });
    let task = tokio::spawn(reconcile(Arc::new(icfg.clone()), ctx.clone()));
    next(&mut handle, 200, |s| s.body.clone()).await;
    next(&mut handle, 422, |_| api_error(422, "Invalid")).await;
    let status = next(&mut handle, 200, |s| with_status(&icfg, s)).await;
    let reconciled = condition(&status.body["status"], "Reconciled");
    assert_eq!(reconciled["reason"], "ApplyFailed");
    assert!(reconciled["message"]
        .as_str()
        .unwrap()
        .contains("DaemonSet default"));
    for _ in 0..2 {
        next(&mut handle, 201, |s| s.body.clone()).await;
    }
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Apply {
                kind: "DaemonSet",
                ..
            }
        ),
        "{err}"
    );
    let action = error_policy(Arc::new(icfg), &err, ctx.clone());
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10))
    );
    assert!(ctx
        .metrics
        .encode()
        .contains("interceptor_operator_reconcile_failures_total{reason=\"apply\"} 1"));
}

#[tokio::test]
async fn an_unavailable_api_server_fails_fast_without_writing_status() {
    let icfg = sample("interceptorconfig-minimal.yaml");
    let (ctx, mut handle) = context(World {
        configs: vec![icfg.clone()],
        nodes: vec![node("a")],
        reports: vec![],
    });
    let task = tokio::spawn(reconcile(Arc::new(icfg.clone()), ctx));
    next(&mut handle, 503, |_| api_error(503, "ServiceUnavailable")).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Apply {
                kind: "ConfigMap",
                ..
            }
        ),
        "{err}"
    );
    assert_no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn the_newer_of_two_configs_on_the_same_nodes_is_degraded() {
    let older = {
        let mut c = sample("interceptorconfig-minimal.yaml");
        c.metadata.name = Some("older".into());
        c.metadata.uid = Some("uid-older".into());
        c.metadata.creation_timestamp = Some(Time(Timestamp::from_second(NOW - 1000).unwrap()));
        c
    };
    let mut newer = sample("interceptorconfig-minimal.yaml");
    newer.metadata.creation_timestamp = Some(Time(now()));
    let (ctx, mut handle) = context(World {
        configs: vec![older, newer.clone()],
        nodes: vec![node("a")],
        reports: vec![report(&newer, "a", NOW)],
    });
    let task = tokio::spawn(reconcile(Arc::new(newer.clone()), ctx));
    next(&mut handle, 200, |s| s.body.clone()).await;
    next(&mut handle, 200, |s| daemon_set_with_status(&s.body, 1, 1)).await;
    let status = next(&mut handle, 200, |s| with_status(&newer, s)).await;
    let degraded = condition(&status.body["status"], "Degraded");
    assert_eq!(
        (degraded["status"].clone(), degraded["reason"].clone()),
        (json!("True"), json!("DoubleCapture"))
    );
    assert!(degraded["message"]
        .as_str()
        .unwrap()
        .contains("interceptor-system/older"));
    let event = next(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (event.body["reason"].clone(), event.body["type"].clone()),
        (json!("DoubleCapture"), json!("Warning"))
    );
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_config_being_deleted_is_left_to_garbage_collection() {
    let mut icfg = sample("interceptorconfig-minimal.yaml");
    icfg.metadata.deletion_timestamp = Some(Time(now()));
    let (ctx, mut handle) = context(World {
        configs: vec![],
        nodes: vec![],
        reports: vec![],
    });
    let action = reconcile(Arc::new(icfg), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_no_more_requests(&mut handle).await;
}
