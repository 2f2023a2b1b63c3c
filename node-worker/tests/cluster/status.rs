//! The node's InterceptorStatus writes against a mocked API server, in paused tokio time: the exact
//! requests (path, field manager, force, content type, body), the heartbeat period, the minimum gap
//! between writes whatever changes, re-creation of a deleted object, backoff on failures, and the
//! `Stopping` phase and final counters at shutdown.

use std::sync::Arc;
use std::time::Duration;

use interceptor_crds::interceptor_status::OwnerConfig;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use node_worker::cluster::pods::{pod_info, PodIndex, SharedPods};
use node_worker::cluster::state::{ConfigState, LoopSnapshot, NetnsView, Shared};
use node_worker::cluster::status::{PacingOverride, StatusWriter};
use node_worker::discovery::NetnsId;
use node_worker::sink::SinkStats;
use node_worker::source::{CaptureMode, InterfaceInfo};
use node_worker::stats::DropReason;
use serde_json::{json, Value};
use testkit::cluster::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const OBJECT_PATH: &str =
    "/apis/interceptor.dev/v1alpha1/namespaces/interceptor-system/interceptorstatuses/default-node-a";
const STATUS_PATH: &str =
    "/apis/interceptor.dev/v1alpha1/namespaces/interceptor-system/interceptorstatuses/default-node-a/status";

fn clock() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn snapshot(packets: u64, connected: bool) -> LoopSnapshot {
    let mut s = LoopSnapshot::default();
    s.counters.packets = packets;
    s.counters.bytes = packets * 64;
    s.counters.pairs_emitted = 7;
    s.counters.add_drops(DropReason::ContentType, 3);
    s.sink = SinkStats {
        accepted: 7,
        delivered: 7,
        connected: Some(connected),
        last_error: (!connected).then(|| "all brokers down".to_string()),
        ..SinkStats::default()
    };
    s.tapped = vec![InterfaceInfo {
        name: "eth0".into(),
        netns: Some("11".into()),
        mode: CaptureMode::External,
    }];
    s
}

/// A worker state: config version 7 in use, capturing, one tapped pod.
fn world() -> (Arc<Shared>, SharedPods) {
    let shared = Shared::new();
    shared.set_config(ConfigState {
        version: Some("7".into()),
        refused: None,
    });
    shared.set_capture_running(true);
    shared.publish_snapshot(snapshot(100, true));
    shared.publish_netns(NetnsView {
        namespaces: vec![(
            NetnsId { dev: 4, ino: 11 },
            vec!["10.1.0.5".parse().unwrap()],
        )],
    });
    let pods = SharedPods::default();
    let mut index = PodIndex::default();
    index.apply(
        pod_info(&Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("web-1".into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: Some("10.1.0.5".into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        })
        .unwrap(),
    );
    pods.publish(index.ip_table());
    (shared, pods)
}

fn start(shared: &Arc<Shared>, pods: &SharedPods) -> (Handle, watch::Sender<bool>, JoinHandle<()>) {
    let (client, handle) = mock_client();
    let writer = StatusWriter {
        api: Api::namespaced(client, NAMESPACE),
        owner: OwnerConfig {
            namespace: NAMESPACE.into(),
            name: CONFIG.into(),
            uid: UID.into(),
        },
        node: NODE.into(),
        shared: Arc::clone(shared),
        pods: pods.clone(),
        pacing: PacingOverride::default(),
        stall_after: Duration::from_secs(30),
        clock,
    };
    let (done, done_rx) = watch::channel(false);
    let task = tokio::spawn(writer.run(done_rx));
    (handle, done, task)
}

fn the_object() -> Value {
    json!({
        "apiVersion": "interceptor.dev/v1alpha1",
        "kind": "InterceptorStatus",
        "metadata": {
            "name": "default-node-a",
            "namespace": "interceptor-system",
            "labels": {"interceptor.dev/config": "default", "interceptor.dev/node": "node-a"},
            "ownerReferences": [{
                "apiVersion": "interceptor.dev/v1alpha1", "kind": "InterceptorConfig",
                "name": "default", "uid": "uid-default",
                "controller": false, "blockOwnerDeletion": false
            }]
        },
        "spec": {"interceptor": "default", "node": "node-a"}
    })
}

fn running_status(packets: u64) -> Value {
    json!({
        "apiVersion": "interceptor.dev/v1alpha1",
        "kind": "InterceptorStatus",
        "metadata": {"name": "default-node-a"},
        "status": {
            "lastHeartbeat": "2027-01-15T08:00:00Z",
            "phase": "Running",
            "configVersion": "7",
            "podsTapped": 1,
            "interfaces": [{"pod": "shop/web-1", "interface": "eth0", "mode": "external", "state": "active"}],
            "counters": {
                "packets": packets, "bytes": packets * 64, "pairsEmitted": 7,
                "drops": {"content_type": 3}, "dropsTotal": 3, "kernelDrops": 0
            },
            "kafka": {"connected": true, "bufferedBytes": 0, "purges": 0}
        }
    })
}

fn assert_apply(seen: &Seen, path: &str) {
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PATCH", path));
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(
        seen.query.get("fieldManager").map(String::as_str),
        Some("interceptor-worker")
    );
    assert_eq!(seen.query.get("force").map(String::as_str), Some("true"));
}

/// Answer a write as the API server would: the object, with the applied status.
fn ok(send: Responder, seen: &Seen) {
    let mut object = the_object();
    if let Some(status) = seen.body.get("status") {
        object["status"] = status.clone();
    }
    send.send_response(json_response(200, &object));
}

/// The object, then its status: the first two requests of every writer.
async fn expect_start(handle: &mut Handle) -> Seen {
    let (object, send) = next(handle).await;
    assert_apply(&object, OBJECT_PATH);
    assert_eq!(object.body, the_object());
    ok(send, &object);
    let (status, send) = next(handle).await;
    assert_apply(&status, STATUS_PATH);
    ok(send, &status);
    status
}

#[tokio::test(start_paused = true)]
async fn the_object_then_its_status_are_applied_and_the_heartbeat_follows_every_period() {
    let (shared, pods) = world();
    let (mut handle, _done, _task) = start(&shared, &pods);
    let first = expect_start(&mut handle).await;
    assert_eq!(first.body, running_status(100));

    // Counters alone are not worth a write: they wait for the heartbeat, 20 s after the last write.
    shared.publish_snapshot(snapshot(250, true));
    assert_no_request_within(&mut handle, Duration::from_secs(19)).await;
    let (beat, send) = next(&mut handle).await;
    assert_apply(&beat, STATUS_PATH);
    assert_eq!(beat.at - first.at, Duration::from_secs(20));
    assert_eq!(beat.body, running_status(250));
    ok(send, &beat);
    let (again, send) = next(&mut handle).await;
    assert_eq!(again.at - beat.at, Duration::from_secs(20));
    assert_eq!(again.path, STATUS_PATH, "the object itself is applied once");
    ok(send, &again);
}

#[tokio::test(start_paused = true)]
async fn a_significant_change_is_written_after_the_minimum_gap_and_bursts_stay_bounded() {
    let (shared, pods) = world();
    let (mut handle, _done, _task) = start(&shared, &pods);
    let first = expect_start(&mut handle).await;

    // Kafka goes away one second later: reported as soon as 5 s have passed since the last write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shared.publish_snapshot(snapshot(100, false));
    let (degraded, send) = next(&mut handle).await;
    assert_eq!(degraded.at - first.at, Duration::from_secs(5));
    assert_eq!(degraded.body["status"]["phase"], "Degraded");
    assert_eq!(
        degraded.body["status"]["message"],
        "Kafka unreachable (see kafka.lastError)"
    );
    assert_eq!(degraded.body["status"]["kafka"]["connected"], false);
    assert_eq!(
        degraded.body["status"]["kafka"]["lastError"],
        "all brokers down"
    );
    ok(send, &degraded);

    // A config that flips between refused and accepted every 300 ms for a minute: never two writes
    // within 5 s, so at most one write per 5 s (plus the heartbeat cadence in between).
    let flipper = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            for i in 0..200u32 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                shared.set_config(ConfigState {
                    version: Some("7".into()),
                    refused: (i % 2 == 0)
                        .then(|| format!("config.yaml of resourceVersion {i} refused: bad")),
                });
            }
        })
    };
    let start = Instant::now();
    let mut times = vec![degraded.at];
    while Instant::now() - start < Duration::from_secs(60) {
        let (seen, send) = next(&mut handle).await;
        assert_apply(&seen, STATUS_PATH);
        times.push(seen.at);
        ok(send, &seen);
    }
    flipper.abort();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(5),
            "two writes {:?} apart",
            pair[1] - pair[0]
        );
    }
    assert!(times.len() <= 14, "{} writes in 60 s", times.len());
}

#[tokio::test(start_paused = true)]
async fn a_deleted_object_is_created_again_and_failures_back_off() {
    let (shared, pods) = world();
    let (mut handle, _done, _task) = start(&shared, &pods);
    let (object, send) = next(&mut handle).await;
    assert_apply(&object, OBJECT_PATH);
    ok(send, &object);
    // The operator deleted the object (the node was silent): the status apply finds nothing.
    let (status, send) = next(&mut handle).await;
    assert_apply(&status, STATUS_PATH);
    send.send_response(json_response(404, &api_error(404, "NotFound")));
    let (recreate, send) = next(&mut handle).await;
    assert_apply(&recreate, OBJECT_PATH);
    assert_eq!(recreate.body, the_object());
    ok(send, &recreate);
    let (status, send) = next(&mut handle).await;
    assert_apply(&status, STATUS_PATH);
    assert_eq!(status.body, running_status(100));
    ok(send, &status);

    // The API server fails: retried after 5 s, then 10 s, then 20 s (the heartbeat period at most).
    let mut last = status.at;
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let (seen, send) = next(&mut handle).await;
        assert_apply(&seen, STATUS_PATH);
        gaps.push(seen.at - last);
        last = seen.at;
        send.send_response(json_response(500, &api_error(500, "InternalError")));
    }
    let secs: Vec<u64> = gaps.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![20, 5, 10, 20]);
    let (recovered, send) = next(&mut handle).await;
    assert_eq!((recovered.at - last).as_secs(), 20);
    ok(send, &recovered);
    assert_no_request_within(&mut handle, Duration::from_secs(19)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_stopping_then_the_final_counters_and_returns() {
    let (shared, pods) = world();
    let (mut handle, done, task) = start(&shared, &pods);
    let first = expect_start(&mut handle).await;

    tokio::time::sleep(Duration::from_secs(8)).await;
    shared.set_stopping();
    let (stopping, send) = next(&mut handle).await;
    assert_eq!(
        stopping.at - first.at,
        Duration::from_secs(8),
        "at once: 5 s have passed"
    );
    assert_eq!(stopping.body["status"]["phase"], "Stopping");
    assert_eq!(
        stopping.body["status"]["message"],
        "shutting down: flushing buffered pairs"
    );
    ok(send, &stopping);

    // The capture flushed: the final counters, written once more (not before 5 s), and the writer ends.
    shared.set_capture_running(false);
    shared.publish_snapshot(snapshot(400, true));
    done.send(true).unwrap();
    let (last, send) = next(&mut handle).await;
    assert_eq!(last.at - stopping.at, Duration::from_secs(5));
    assert_eq!(last.body["status"]["phase"], "Stopping");
    assert_eq!(last.body["status"]["counters"]["packets"], 400);
    ok(send, &last);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the writer returns after its last write")
        .unwrap();
}
