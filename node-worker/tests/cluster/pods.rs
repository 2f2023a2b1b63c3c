//! The watch of the node's pods against a mocked API server: the request (all namespaces, field selector
//! on the node, RBAC), the address table the pipeline names pair ends with (hostNetwork pods left out,
//! containers by port), the mesh overrides sent to the capture loop (pod IPs matched to the scanned
//! namespaces; Istio, Linkerd, excluded namespaces), and updates from watch events.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interceptor_crds::config::WorkerConfig;
use kube::Api;
use node_worker::cluster::pod_watch::{MeshTarget, PodWatch};
use node_worker::cluster::pods::SharedPods;
use node_worker::cluster::state::{NetnsView, Shared};
use node_worker::discovery::{Mesh, MeshKind, MeshOverride, MeshOverrides, NetnsId};
use node_worker::message::PodRef;
use node_worker::pipeline::PodLookup;
use serde_json::json;
use testkit::cluster::*;
use testkit::wait::eventually;
use tokio::sync::watch;

#[derive(Default)]
struct Recorder(Mutex<Vec<MeshOverrides>>);

impl MeshTarget for Recorder {
    fn set_mesh_overrides(&self, overrides: MeshOverrides) {
        self.0.lock().unwrap().push(overrides);
    }
}

impl Recorder {
    fn last(&self) -> Option<MeshOverrides> {
        self.0.lock().unwrap().last().cloned()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ns(ino: u64) -> NetnsId {
    NetnsId { dev: 4, ino }
}

fn pod_ref(namespace: &str, name: &str, container: Option<&str>) -> Option<PodRef> {
    Some(PodRef {
        namespace: namespace.into(),
        name: name.into(),
        container: container.map(str::to_string),
    })
}

#[tokio::test]
async fn pods_of_the_node_name_pair_ends_and_steer_the_taps() {
    let (client, mut handle) = mock_client();
    let shared = Shared::new();
    let pods = SharedPods::default();
    let config = WorkerConfig {
        filters: interceptor_crds::config::Filters {
            exclude_namespaces: vec!["kube-system".into()],
            ..Default::default()
        },
        ..WorkerConfig::default()
    };
    let (_config_tx, config_rx) = watch::channel(Some(Arc::new(config)));
    let (control_tx, control_rx) = watch::channel::<Option<Arc<dyn MeshTarget>>>(None);
    let task = tokio::spawn(
        PodWatch {
            api: Api::all(client),
            node: NODE.into(),
            shared: Arc::clone(&shared),
            pods: pods.clone(),
            config: config_rx,
            control: control_rx,
        }
        .run(),
    );

    let (seen, send) = next(&mut handle).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/api/v1/pods")
    );
    assert_eq!(
        seen.query.get("fieldSelector").map(String::as_str),
        Some("spec.nodeName=node-a")
    );
    let web = pod(
        "shop",
        "web-1",
        "10.1.0.5",
        &[("app", &[8080]), ("metrics", &[9100])],
    );
    let mut istio = pod("shop", "cart-1", "10.1.0.6", &[("cart", &[])]);
    istio["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"});
    let mut native = pod("pay", "pay-1", "10.1.0.7", &[("pay", &[])]);
    native["spec"]["initContainers"] =
        json!([{"name": "linkerd-proxy", "image": "proxy", "restartPolicy": "Always"}]);
    let dns = pod("kube-system", "dns-1", "10.1.0.8", &[("dns", &[53])]);
    let mut ambient = pod("shop", "amb-1", "10.1.0.9", &[("amb", &[8080])]);
    ambient["metadata"]["annotations"] = json!({"ambient.istio.io/redirection": "enabled"});
    let mut host = pod(
        "kube-system",
        "kube-proxy",
        "192.168.5.10",
        &[("proxy", &[])],
    );
    host["spec"]["hostNetwork"] = json!(true);
    send.send_response(json_response(
        200,
        &list(
            "PodList",
            "v1",
            "20",
            vec![web, istio, native, dns, host, ambient],
        ),
    ));

    eventually(
        "the address table published",
        Duration::from_secs(5),
        || pods.pod(&addr("10.1.0.5:8080")).is_some(),
    )
    .await;
    assert_eq!(
        pods.pod(&addr("10.1.0.5:8080")),
        pod_ref("shop", "web-1", Some("app"))
    );
    assert_eq!(
        pods.pod(&addr("10.1.0.5:9100")),
        pod_ref("shop", "web-1", Some("metrics"))
    );
    assert_eq!(
        pods.pod(&addr("10.1.0.5:41000")),
        pod_ref("shop", "web-1", None),
        "a client port of a pod with two containers"
    );
    assert_eq!(
        pods.pod(&addr("10.1.0.6:41000")),
        pod_ref("shop", "cart-1", Some("cart"))
    );
    assert_eq!(
        pods.pod(&addr("10.1.0.8:53")),
        pod_ref("kube-system", "dns-1", Some("dns")),
        "excluded pods are not tapped, but still name the ends of other pods' pairs"
    );
    assert_eq!(pods.pod(&addr("192.168.5.10:10249")), None, "hostNetwork");
    assert_eq!(
        pods.pod(&addr("10.1.0.9:15008")),
        pod_ref("shop", "amb-1", None),
        "ztunnel's port in an ambient pod is no container's"
    );
    assert_eq!(
        pods.pod(&addr("10.1.0.7:4143")),
        pod_ref("pay", "pay-1", Some("linkerd-proxy")),
        "Linkerd's inbound port is its proxy's"
    );

    // The capture loop starts and scans: each namespace holding a pod's IP gets the API's verdict.
    control_tx.send_replace(Some(Arc::new(Recorder::default()) as Arc<dyn MeshTarget>));
    let recorder = Arc::new(Recorder::default());
    control_tx.send_replace(Some(recorder.clone() as Arc<dyn MeshTarget>));
    let ip = |s: &str| s.parse().unwrap();
    shared.publish_netns(NetnsView {
        namespaces: vec![
            (ns(1), vec![ip("127.0.0.1"), ip("10.1.0.5")]),
            (ns(2), vec![ip("10.1.0.6")]),
            (ns(3), vec![ip("10.1.0.7")]),
            (ns(4), vec![ip("10.1.0.8")]),
            (ns(5), vec![ip("10.9.9.9")]),
            (ns(6), vec![ip("127.0.0.1"), ip("10.1.0.9")]),
        ],
    });
    let expected: MeshOverrides = [
        (ns(1), MeshOverride::NoMesh),
        (
            ns(2),
            MeshOverride::Mesh(Mesh::new(
                MeshKind::Istio,
                "annotation sidecar.istio.io/status",
            )),
        ),
        (
            ns(3),
            MeshOverride::Mesh(Mesh::new(MeshKind::Linkerd, "native sidecar linkerd-proxy")),
        ),
        (ns(4), MeshOverride::Exclude),
        (
            ns(6),
            MeshOverride::Mesh(Mesh::new(
                MeshKind::IstioAmbient,
                "annotation ambient.istio.io/redirection=enabled",
            )),
        ),
    ]
    .into_iter()
    .collect();
    eventually("overrides sent", Duration::from_secs(5), || {
        recorder.last() == Some(expected.clone())
    })
    .await;

    // A new pod in namespace 5, then web-1 deleted: the table and the overrides follow.
    let (seen, send) = next(&mut handle).await;
    assert!(seen.is_watch());
    assert_eq!(
        seen.query.get("resourceVersion").map(String::as_str),
        Some("20")
    );
    let (response, events) = watch_response();
    send.send_response(response);
    events.send("ADDED", &pod("shop", "new-1", "10.9.9.9", &[("new", &[])]));
    eventually("the new pod known", Duration::from_secs(5), || {
        recorder
            .last()
            .is_some_and(|o| o.get(&ns(5)) == Some(&MeshOverride::NoMesh))
    })
    .await;
    assert_eq!(
        pods.pod(&addr("10.9.9.9:80")),
        pod_ref("shop", "new-1", Some("new"))
    );
    events.send(
        "DELETED",
        &pod("shop", "web-1", "10.1.0.5", &[("app", &[8080])]),
    );
    eventually("the deleted pod forgotten", Duration::from_secs(5), || {
        pods.pod(&addr("10.1.0.5:8080")).is_none()
    })
    .await;
    eventually("its override dropped", Duration::from_secs(5), || {
        recorder.last().is_some_and(|o| !o.contains_key(&ns(1)))
    })
    .await;

    // Nothing changed (the same pod again, the same scan again): the loop is not told again, since
    // every override set makes it rescan.
    let sent = recorder.count();
    events.send(
        "MODIFIED",
        &pod("shop", "new-1", "10.9.9.9", &[("new", &[])]),
    );
    let same = (*shared.netns()).clone();
    shared.publish_netns(same);
    events.send("ADDED", &pod("other", "marker", "10.8.8.8", &[("m", &[])]));
    eventually("the marker pod known", Duration::from_secs(5), || {
        pods.pod(&addr("10.8.8.8:1")).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(recorder.count(), sent, "no new overrides without a change");
    task.abort();
}
