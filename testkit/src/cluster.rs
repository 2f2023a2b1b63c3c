//! For the tests of the in-cluster worker: a mocked Kubernetes API (the tower-test `ApiServerVerifier`
//! pattern of kube-rs/controller-rs, as in operator/tests/integration/reconcile.rs), requests decoded
//! and checked against the worker's RBAC (config/rbac/worker_role.yaml), watch responses that stream
//! events, and a small fake API server for tests that run the whole worker.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use http::{Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

pub type TestBody = BoxBody<Bytes, Infallible>;
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<TestBody>>;
pub type Responder = tower_test::mock::SendResponse<Response<TestBody>>;

pub const NAMESPACE: &str = "interceptor-system";
pub const CONFIG: &str = "default";
pub const CONFIG_MAP: &str = "default-config";
pub const UID: &str = "uid-default";
pub const NODE: &str = "node-a";

/// A client whose every request the test answers through the handle.
pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<TestBody>>();
    (Client::new(service, NAMESPACE), handle)
}

/// One request as the API server sees it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub body: Value,
    /// When it arrived (tokio time: paused in rate tests).
    pub at: tokio::time::Instant,
}

impl Seen {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Decodes a request and checks it against the worker's RBAC.
pub async fn decode(request: Request<Body>) -> Seen {
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
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
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
        at: tokio::time::Instant::now(),
    };
    eprintln!(
        "request: {} {} {:?} {}",
        seen.method, seen.path, seen.query, seen.body
    );
    assert_authorized(&seen);
    seen
}

/// The next request, decoded, and the means to answer it.
pub async fn next(handle: &mut Handle) -> (Seen, Responder) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(600), handle.next_request())
        .await
        .expect("the worker stopped making requests")
        .expect("the worker finished (or panicked) before this request");
    (decode(request).await, send)
}

/// Asserts that no request comes within `wait` (tokio time).
pub async fn assert_no_request_within(handle: &mut Handle, wait: Duration) {
    match tokio::time::timeout(wait, handle.next_request()).await {
        Err(_) | Ok(None) => {}
        Ok(Some((request, _))) => {
            panic!("unexpected request {} {}", request.method(), request.uri())
        }
    }
}

pub fn json_response(status: u16, body: &Value) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed())
        .unwrap()
}

pub fn api_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason} (test)"), "reason": reason, "code": code})
}

/// An open watch response: events written to it reach the watcher at once.
#[derive(Clone)]
pub struct WatchStream {
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
}

impl WatchStream {
    /// `type` is ADDED, MODIFIED, DELETED or BOOKMARK.
    pub fn send(&self, type_: &str, object: &Value) -> bool {
        let mut line = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap();
        line.push(b'\n');
        self.tx
            .unbounded_send(Ok(Frame::data(Bytes::from(line))))
            .is_ok()
    }
}

/// A 200 response whose body stays open; events are written with the returned stream.
pub fn watch_response() -> (Response<TestBody>, WatchStream) {
    let (tx, rx) = mpsc::unbounded();
    let body = StreamBody::new(rx).boxed();
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    (response, WatchStream { tx })
}

pub fn list(kind: &str, api_version: &str, resource_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api_version,
           "metadata": {"resourceVersion": resource_version}, "items": items})
}

pub fn config_map(resource_version: &str, yaml: Option<&str>) -> Value {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE, "resourceVersion": resource_version}});
    if let Some(yaml) = yaml {
        cm["data"] = json!({"config.yaml": yaml});
    }
    cm
}

/// A running pod on NODE.
pub fn pod(namespace: &str, name: &str, ip: &str, containers: &[(&str, &[u16])]) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": NODE, "containers": containers.iter().map(|(c, ports)| json!({
            "name": c, "image": "app",
            "ports": ports.iter().map(|p| json!({"containerPort": p, "protocol": "TCP"})).collect::<Vec<_>>()
        })).collect::<Vec<_>>()},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

// ---- RBAC: every request must be allowed by the worker's Role/ClusterRole as shipped. ----

/// (group, resource, verbs): one rule of a role.
type Rule = (String, String, Vec<String>);

/// The rules of the worker's roles in config/rbac/worker_role.yaml.
fn worker_rules() -> Vec<Rule> {
    static RULES: Mutex<Option<Vec<Rule>>> = Mutex::new(None);
    let mut cached = RULES.lock().unwrap();
    if let Some(rules) = cached.as_ref() {
        return rules.clone();
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/rbac/worker_role.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut rules = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let role: Value = serde::Deserialize::deserialize(document).unwrap();
        for rule in role["rules"].as_array().into_iter().flatten() {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    rules.push((group.clone(), resource, strings("verbs")));
                }
            }
        }
    }
    *cached = Some(rules.clone());
    rules
}

/// The verb and resource of a request.
fn rbac_of(seen: &Seen) -> (String, String, String) {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => (String::new(), &parts[2..]),
        _ => (parts[1].to_string(), &parts[3..]),
    };
    // rest: [namespaces/{ns}/]{resource}[/{name}[/{subresource}]]
    let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
        &rest[2..]
    } else {
        rest
    };
    let resource = match rest.len() {
        3 => format!("{}/{}", rest[0], rest[2]),
        _ => rest[0].to_string(),
    };
    let verb = match (seen.method.as_str(), rest.len()) {
        ("GET", 1) if seen.is_watch() => "watch",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        (m, _) => panic!("unexpected method {m}"),
    };
    (group, resource, verb.to_string())
}

fn assert_authorized(seen: &Seen) {
    let (group, resource, verb) = rbac_of(seen);
    let rules = worker_rules();
    let allows = |verb: &str| {
        rules
            .iter()
            .any(|(g, r, verbs)| *g == group && *r == resource && verbs.iter().any(|v| v == verb))
    };
    assert!(
        allows(&verb),
        "{} {} needs {verb} on {group:?}/{resource}, which config/rbac/worker_role.yaml does not grant",
        seen.method,
        seen.path
    );
    // A server-side apply creates the object when it is missing: that is authorized as create.
    if seen.content_type == "application/apply-patch+yaml" {
        assert!(allows("create"), "apply on {resource} needs create too");
    }
}

// ---- A fake API server for the whole worker: serves objects, streams watches, records writes. ----

#[derive(Default)]
struct FakeState {
    resource_version: u64,
    config_maps: Vec<Value>,
    pods: Vec<Value>,
    config_watches: Vec<WatchStream>,
    pod_watches: Vec<WatchStream>,
    statuses: BTreeMap<String, Value>,
    writes: Vec<Seen>,
}

/// Answers the worker's requests by path, as an API server would (for the tests that run it all).
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<FakeState>>,
}

fn object_name(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl FakeApi {
    /// Serves `handle` until the client is dropped.
    pub fn serve(&self, mut handle: Handle) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let seen = decode(request).await;
                send.send_response(this.answer(seen));
            }
        })
    }

    fn bump(state: &mut FakeState, object: &mut Value) -> String {
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        object["metadata"]["resourceVersion"] = json!(rv);
        rv
    }

    pub fn set_config_map(&self, mut cm: Value) {
        let mut state = self.state.lock().unwrap();
        Self::bump(&mut state, &mut cm);
        let existed = state
            .config_maps
            .iter()
            .any(|c| object_name(c) == object_name(&cm));
        state
            .config_maps
            .retain(|c| object_name(c) != object_name(&cm));
        state.config_maps.push(cm.clone());
        let type_ = if existed { "MODIFIED" } else { "ADDED" };
        state.config_watches.retain(|w| w.send(type_, &cm));
    }

    pub fn add_pod(&self, mut pod: Value) {
        let mut state = self.state.lock().unwrap();
        Self::bump(&mut state, &mut pod);
        state.pods.push(pod.clone());
        state.pod_watches.retain(|w| w.send("ADDED", &pod));
    }

    /// The PATCH requests so far.
    pub fn writes(&self) -> Vec<Seen> {
        self.state.lock().unwrap().writes.clone()
    }

    /// The last status applied to the InterceptorStatus named `name`.
    pub fn status_of(&self, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .statuses
            .get(name)
            .and_then(|o| o.get("status").cloned())
    }

    fn answer(&self, seen: Seen) -> Response<TestBody> {
        let mut state = self.state.lock().unwrap();
        let path = seen.path.clone();
        let selector = seen.query.get("fieldSelector").cloned().unwrap_or_default();
        let rv = state.resource_version.to_string();
        if seen.method == Method::GET && path.ends_with("/configmaps") {
            if seen.is_watch() {
                let (response, stream) = watch_response();
                state.config_watches.push(stream);
                return response;
            }
            let items: Vec<Value> = state
                .config_maps
                .iter()
                .filter(|c| selector == format!("metadata.name={}", object_name(c)))
                .cloned()
                .collect();
            return json_response(200, &list("ConfigMapList", "v1", &rv, items));
        }
        if seen.method == Method::GET && path == "/api/v1/pods" {
            assert_eq!(selector, format!("spec.nodeName={NODE}"));
            if seen.is_watch() {
                let (response, stream) = watch_response();
                state.pod_watches.push(stream);
                return response;
            }
            let items = state.pods.clone();
            return json_response(200, &list("PodList", "v1", &rv, items));
        }
        if seen.method == Method::PATCH && path.contains("/interceptorstatuses/") {
            state.writes.push(seen.clone());
            let rest = path.rsplit_once("/interceptorstatuses/").unwrap().1;
            let (name, subresource) = match rest.split_once('/') {
                Some((name, sub)) => (name.to_string(), Some(sub)),
                None => (rest.to_string(), None),
            };
            let object = state.statuses.entry(name.clone()).or_insert(Value::Null);
            match subresource {
                None => {
                    let status = object.get("status").cloned();
                    *object = seen.body.clone();
                    if let Some(status) = status {
                        object["status"] = status;
                    }
                }
                Some(_) => {
                    if object.is_null() {
                        return json_response(404, &api_error(404, "NotFound"));
                    }
                    object["status"] = seen.body["status"].clone();
                }
            }
            return json_response(200, object);
        }
        panic!("the fake API does not serve {} {}", seen.method, path);
    }
}
