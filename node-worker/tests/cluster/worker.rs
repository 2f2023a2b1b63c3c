//! The whole in-cluster worker (`node-worker run` minus the process): a fake API server serves the
//! ConfigMap and the node's pods, whose IPs are those of network namespaces this test creates; real HTTP
//! traffic flows between them; pairs go to the real Kafka broker when INTERCEPTOR_TEST_KAFKA is set
//! (`make test` starts it), else to a JSON Lines file. Checks: the taps the API steers (a Linkerd pod on
//! its loopback, an excluded namespace not at all), pod identities on both ends of every pair, a config
//! change applied live, and the status patches counting it all, ending with `Stopping`. Root only.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use interceptor_crds::config::KafkaConfig;
use node_worker::cluster::run;
use node_worker::cluster::sink::{ClusterSink, KafkaFactory, LinesFactory, SinkFactory};
use node_worker::cluster::status::{Pacing, PacingOverride};
use node_worker::cluster::WorkerSettings;
use node_worker::sink::SinkError;
use serde_json::{json, Value};
use testkit::cluster::*;
use testkit::netns::{self, http_exchange, post_json, serve_http, veth, Netns};
use testkit::sink::TestSink;
use testkit::wait::eventually;

const WEB_IP: &str = "10.213.0.1";
const API_IP: &str = "10.213.0.2";
const SKIP_IP: &str = "10.213.0.5";

/// Builds the sinks of `inner` behind a [`TestSink`] that keeps a copy of every pair, so the test knows
/// when its pairs have been emitted.
struct TeeFactory {
    inner: Box<dyn SinkFactory>,
    seen: TestSink,
}

impl SinkFactory for TeeFactory {
    fn build(&self, kafka: &KafkaConfig) -> Result<Box<dyn ClusterSink>, SinkError> {
        Ok(Box::new(self.seen.tee(self.inner.build(kafka)?)))
    }
    fn follows_kafka_config(&self) -> bool {
        self.inner.follows_kafka_config()
    }
}

/// Our pairs (other tests may run traffic in namespaces of their own meanwhile).
fn ours(pairs: &[Value]) -> Vec<Value> {
    pairs
        .iter()
        .filter(|p| p["source"]["ip"] == WEB_IP && p["destination"]["ip"] == API_IP)
        .cloned()
        .collect()
}

fn paths(pairs: &[Value]) -> BTreeSet<String> {
    pairs
        .iter()
        .map(|p| p["request"]["path"].as_str().unwrap().to_string())
        .collect()
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// One sample of `/metrics`.
fn metric(health: SocketAddr, name: &str) -> Option<u64> {
    get(health, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn interfaces(status: &Value) -> Vec<(String, String, String)> {
    status["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["pod"].as_str().unwrap().to_string(),
                i["interface"].as_str().unwrap().to_string(),
                i["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// N requests from web to api, paths `/v1/<tag>/<i>`, each on its own connection.
async fn traffic(web: Arc<Netns>, api: Arc<Netns>, tag: &'static str, n: usize) {
    tokio::task::spawn_blocking(move || {
        let server = serve_http(api.listen(&format!("{API_IP}:8080")), n, "{\"ok\":true}");
        for i in 0..n {
            let response = http_exchange(
                web.connect(&format!("{API_IP}:8080")),
                &post_json("api", &format!("/v1/{tag}/{i}"), "{\"n\":1}"),
            );
            assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
        }
        server.join().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_captures_pod_traffic_names_both_ends_and_reports_it() {
    if !netns::require_root("the_worker_captures_pod_traffic_names_both_ends_and_reports_it") {
        return;
    }
    let web = Netns::new("wk-web");
    let api = Netns::new("wk-api");
    let skip = Netns::new("wk-skip");
    veth(&web, "w0", "10.213.0.1/30", &api, "a0", "10.213.0.2/30");
    veth(&skip, "s0", "10.213.0.5/30", &web, "w1", "10.213.0.6/30");
    let skip_label = format!("netns:{}", skip.inode());

    // Where pairs go: the test broker, or a file.
    let broker = std::env::var("INTERCEPTOR_TEST_KAFKA")
        .ok()
        .filter(|b| !b.is_empty());
    let topic = testkit::kafka::unique_topic("cluster-worker");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pairs.jsonl");
    let seen = TestSink::new();
    let (inner, kafka_yaml): (Box<dyn SinkFactory>, String) = match &broker {
        Some(b) => {
            eprintln!("pairs go to Kafka at {b}, topic {topic}");
            (
                Box::new(KafkaFactory { node: NODE.into() }),
                format!("kafka: {{brokers: ['{b}'], topic: {topic}, createTopic: true, topicPartitions: 1}}\n"),
            )
        }
        None => {
            eprintln!(
                "INTERCEPTOR_TEST_KAFKA is not set: pairs go to {}",
                file.display()
            );
            (
                Box::new(LinesFactory::File(file.to_str().unwrap().into())),
                String::new(),
            )
        }
    };
    let factory = Arc::new(TeeFactory {
        inner,
        seen: seen.clone(),
    });
    let config_yaml = |more_filters: &str| {
        format!(
            "capture: {{rescanSeconds: 1}}\nfilters: {{excludeNamespaces: [kube-system]{more_filters}}}\n{kafka_yaml}"
        )
    };
    let base = config_yaml("");

    let fake = FakeApi::default();
    fake.set_config_map(config_map("", Some(&base)));
    fake.add_pod(pod("shop", "web-1", WEB_IP, &[("client", &[])]));
    let mut api_pod = pod("shop", "api-1", API_IP, &[("app", &[8080])]);
    api_pod["metadata"]["annotations"] = json!({"linkerd.io/proxy-version": "stable-2.14"});
    fake.add_pod(api_pod);
    fake.add_pod(pod("kube-system", "skipper", SKIP_IP, &[("skipper", &[])]));
    let (client, handle) = mock_client();
    let _server = fake.serve(handle);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = listener.local_addr().unwrap();
    let mut settings = WorkerSettings::new(NODE, NAMESPACE, CONFIG, UID, CONFIG_MAP);
    settings.pacing = PacingOverride::fixed(Pacing {
        period: Duration::from_secs(2),
        min_gap: Duration::from_secs(1),
        check_every: Duration::from_millis(200),
    });
    settings.publish_every = Duration::from_millis(200);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(run(settings, client, factory, listener, async {
        let _ = stopped.await;
    }));

    // The taps converge on what the API says: web-1 on its external interfaces, api-1 (Linkerd) on
    // its loopback, the excluded namespace not at all.
    let name = "default-node-a";
    eventually("the taps the API steers", Duration::from_secs(60), || {
        let status = fake.status_of(name).unwrap_or(Value::Null);
        let taps = interfaces(&status);
        taps.contains(&("shop/api-1".into(), "lo".into(), "loopback".into()))
            && taps.contains(&("shop/web-1".into(), "w0".into(), "external".into()))
            && !taps
                .iter()
                .any(|(pod, i, _)| pod == "shop/api-1" && i != "lo")
    })
    .await;
    let status = fake.status_of(name).unwrap();
    // Per tapped interface, the mesh and why (here: the API's annotation).
    let entry = |pod: &str, interface: &str| {
        status["interfaces"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|i| i["pod"] == pod && i["interface"] == interface)
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let api_lo = entry("shop/api-1", "lo");
    assert_eq!(api_lo["mesh"], "linkerd", "{status}");
    assert_eq!(
        api_lo["meshReason"], "annotation linkerd.io/proxy-version",
        "{status}"
    );
    assert!(entry("shop/web-1", "w0").get("mesh").is_none(), "{status}");
    let exposition = get(health, "/metrics");
    assert!(
        exposition.lines().any(|l| l.starts_with(
            "interceptor_worker_tap_info{pod=\"shop/api-1\",interface=\"lo\",mode=\"loopback\",mesh=\"linkerd\""
        )),
        "{exposition}"
    );
    assert!(
        !interfaces(&status)
            .iter()
            .any(|(pod, _, _)| pod == "kube-system/skipper" || *pod == skip_label),
        "{status}"
    );
    assert!(get(health, "/readyz").starts_with("HTTP/1.1 200"));
    assert!(get(health, "/healthz").starts_with("HTTP/1.1 200"));

    let (web, api) = (Arc::new(web), Arc::new(api));
    traffic(Arc::clone(&web), Arc::clone(&api), "items", 5).await;
    eventually("the first pairs emitted", Duration::from_secs(30), || {
        ours(&seen.values()).len() >= 5
    })
    .await;

    // A config change applies live: /v1/skip is excluded from now on.
    let excluded = config_yaml(", excludePaths: [/v1/skip/0]");
    fake.set_config_map(config_map("", Some(&excluded)));
    eventually("the new config in use", Duration::from_secs(30), || {
        fake.status_of(name)
            .is_some_and(|s| s["configVersion"] != status["configVersion"])
    })
    .await;
    // The loop takes it at its next round (within 100 ms): leave it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    traffic(Arc::clone(&web), Arc::clone(&api), "skip", 1).await;
    traffic(Arc::clone(&web), Arc::clone(&api), "after", 1).await;
    eventually("the pair after the change", Duration::from_secs(30), || {
        paths(&ours(&seen.values())).contains("/v1/after/0")
    })
    .await;

    // The metrics say the same (published by the capture loop about every 200 ms here).
    eventually(
        "the metrics to count the pairs",
        Duration::from_secs(10),
        || metric(health, "interceptor_worker_pairs_emitted_total").is_some_and(|n| n >= 6),
    )
    .await;
    assert!(
        metric(
            health,
            "interceptor_worker_drops_total{reason=\"excluded_path\"}"
        )
        .unwrap()
            >= 1
    );
    assert!(metric(health, "interceptor_worker_tapped_interfaces").unwrap() >= 2);
    assert_eq!(metric(health, "interceptor_worker_config_loaded"), Some(1));
    assert_eq!(
        metric(health, "interceptor_worker_capture_running"),
        Some(1)
    );

    // SIGTERM: Stopping, flush, final counters.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker stops")
        .unwrap()
        .expect("a clean stop, every pair delivered");

    // The pairs where they went, with pod identities on both ends.
    let delivered: Vec<Value> = match &broker {
        Some(b) => testkit::kafka::consume(b, &topic, 6, Duration::from_secs(30), &[])
            .into_iter()
            .map(|m| serde_json::from_slice(&m.value).unwrap())
            .collect(),
        None => std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    };
    let delivered = ours(&delivered);
    let expected: BTreeSet<String> = (0..5)
        .map(|i| format!("/v1/items/{i}"))
        .chain(["/v1/after/0".to_string()])
        .collect();
    assert_eq!(paths(&delivered), expected);
    assert_eq!(delivered.len(), 6, "each exchange once");
    for pair in &delivered {
        assert_eq!(pair["node"], NODE);
        assert_eq!(pair["interceptor"], "interceptor-system/default");
        assert_eq!(
            pair["source"]["pod"],
            json!({"namespace": "shop", "name": "web-1", "container": "client"}),
            "{pair}"
        );
        assert_eq!(
            pair["destination"]["pod"],
            json!({"namespace": "shop", "name": "api-1", "container": "app"}),
            "{pair}"
        );
        assert_eq!(pair["destination"]["port"], 8080);
        assert_eq!(pair["interface"]["name"], "w0");
        assert_eq!(pair["interface"]["mode"], "external");
    }

    // The status: applied by the worker's field manager, ending with Stopping and counting the pairs.
    let writes = fake.writes();
    assert!(writes
        .iter()
        .all(
            |w| w.query.get("fieldManager").map(String::as_str) == Some("interceptor-worker")
                && w.query.get("force").map(String::as_str) == Some("true")
        ));
    assert!(!writes[0].path.ends_with("/status"), "the object first");
    let last = fake.status_of(name).unwrap();
    assert_eq!(last["phase"], "Stopping");
    assert!(
        last["counters"]["pairsEmitted"].as_u64().unwrap() >= 6,
        "{last}"
    );
    assert!(
        last["counters"]["drops"]["excluded_path"].as_u64().unwrap() >= 1,
        "{last}"
    );
    assert!(last["counters"]["packets"].as_u64().unwrap() > 0);
    assert!(last["lastHeartbeat"].is_string());
    if broker.is_some() {
        assert_eq!(last["kafka"]["connected"], true, "{last}");
    }
}
