//! Service meshes, without the mesh: pods set up as each mesh sets them up (testkit::mesh), real HTTP
//! through a stand-in of its proxy, and `node-worker capture --discover` expected to capture each
//! exchange exactly once, in clear text, with its real peer on both ends. Root only.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use testkit::http::{self, keep_alive, Request, Server};
use testkit::mesh::{self, Ztunnel};
use testkit::netns::{self, Netns, Node};
use testkit::worker::Worker;

/// Each test's worker discovers every namespace, the other test's pods included, and its counters are
/// the whole worker's: the tests of this module run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `tapped` event of `interface` in the namespace labelled `ino`.
fn tapped_event(worker: &Worker, interface: &str, ino: &str) -> Value {
    let quoted = format!("\"{ino}\"");
    worker
        .events("tapped")
        .into_iter()
        .find(|e| {
            e["fields"]["interface"] == interface
                && e["fields"]["netns"]
                    .as_str()
                    .is_some_and(|n| n.contains(&quoted))
        })
        .unwrap()
}

fn body(tag: &str) -> String {
    format!(r#"{{"case":"{tag}"}}"#)
}

/// The one pair whose request body is `body`; panics when it is not exactly one.
fn the_pair<'a>(pairs: &[&'a Value], body: &str) -> &'a Value {
    let found: Vec<&Value> = pairs
        .iter()
        .copied()
        .filter(|p| p["request"]["body"] == body)
        .collect();
    assert_eq!(found.len(), 1, "pairs for {body}: {found:?}");
    found[0]
}

fn end(pair: &Value, which: &str) -> (String, u64) {
    (
        pair[which]["ip"].as_str().unwrap_or("").to_string(),
        pair[which]["port"].as_u64().unwrap_or(0),
    )
}

/// An ambient pod (istio-cni's rules in its namespace, a ztunnel stand-in listening on 15001, 15006
/// and 15008 there) calls a peer and is called by a client; neither of them is tapped (they stand for
/// pods of other nodes). Discovery recognises the pod by ztunnel's listeners and taps its `lo` only;
/// each outbound exchange comes out once from the pod to the peer's real address (recovered from
/// conntrack: on `lo` the app's packets go to 127.0.0.1:15001), each inbound one once from the client's
/// address (ztunnel keeps the original source) to the app; the HBONE port's bytes are never seen.
#[test]
fn ambient_pod_each_exchange_once_in_clear_with_its_real_peer() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("ambient_pod_each_exchange_once_in_clear_with_its_real_peer") {
        return;
    }
    ambient_pod_each_exchange_once(true);
}

/// The same without CAP_NET_ADMIN (the DaemonSet does not grant it): ctnetlink is refused, and the real
/// destinations are taken from the answers, which the kernel shows un-redirected.
#[test]
fn ambient_pod_without_net_admin_takes_destinations_from_the_answers() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("ambient_pod_without_net_admin_takes_destinations_from_the_answers") {
        return;
    }
    ambient_pod_each_exchange_once(false);
}

fn ambient_pod_each_exchange_once(net_admin: bool) {
    let node = Node::new("amb-node");
    let mut ambient = Netns::new("amb-pod");
    let peer = Netns::new("amb-peer");
    let client = Netns::new("amb-client");
    node.attach(&ambient, "eth0", "va", "10.214.1.2/24");
    node.attach(&peer, "ext0", "vp", "10.214.1.3/24");
    node.attach(&client, "ext0", "vc", "10.214.1.4/24");
    mesh::ambient_redirection(&ambient);
    let _ztunnel = Ztunnel::start(&mut ambient);
    let app = Server::start(&ambient, "10.214.1.2:8080");
    let remote = Server::start(&peer, "10.214.1.3:9090");
    let ino = ambient.inode().to_string();

    let config = "capture: {rescanSeconds: 1, skipInterfaces: [\"ext*\"]}\n";
    let mut worker = if net_admin {
        Worker::start(&["--discover"], Some(config))
    } else {
        Worker::start_without(&["--discover"], Some(config), &["net_admin"])
    };
    worker.wait_event("tapped", "lo", &ino, 1);
    let event = tapped_event(&worker, "lo", &ino);
    assert_eq!(event["fields"]["mesh"], "istio-ambient", "{event}");
    assert!(
        event["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("15008")),
        "{event}"
    );

    // Outbound: one keep-alive connection of three requests, and two short ones.
    let mut outbound = Vec::new();
    let keep: Vec<Request> = (0..3)
        .map(|i| Request::post_json("/echo", &body(&format!("out-keep-{i}"))))
        .collect();
    let answers = keep_alive(&ambient, remote.addr, &keep);
    assert!(answers.iter().all(|m| m.status() == 200));
    outbound.extend(
        keep.iter()
            .map(|r| String::from_utf8(r.body.clone()).unwrap()),
    );
    for i in 0..2 {
        let r = Request::post_json("/echo", &body(&format!("out-short-{i}")));
        keep_alive(&ambient, remote.addr, std::slice::from_ref(&r));
        outbound.push(String::from_utf8(r.body).unwrap());
    }
    // Inbound, plain text through 15006: keep-alive and short.
    let mut inbound = Vec::new();
    let keep: Vec<Request> = (0..3)
        .map(|i| Request::post_json("/echo", &body(&format!("in-keep-{i}"))))
        .collect();
    keep_alive(&client, app.addr, &keep);
    inbound.extend(
        keep.iter()
            .map(|r| String::from_utf8(r.body.clone()).unwrap()),
    );
    let r = Request::post_json("/echo", &body("in-short"));
    keep_alive(&client, app.addr, std::slice::from_ref(&r));
    inbound.push(String::from_utf8(r.body).unwrap());
    // HBONE: TLS to 15008 (a ClientHello's first bytes); the stand-in reads and closes.
    let hbone: SocketAddr = "10.214.1.2:15008".parse().unwrap();
    let mut tls = http::connect(&client, hbone);
    tls.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
    ])
    .unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    std::thread::sleep(Duration::from_millis(300));

    let done = worker.stop();
    assert_eq!(
        done.tapped_in(&ino),
        [("lo".to_string(), "loopback".to_string())],
        "an ambient pod: loopback only"
    );
    let pairs = done.pairs_in(&ino);
    assert_eq!(
        pairs.len(),
        outbound.len() + inbound.len(),
        "each exchange once: {pairs:?}"
    );
    for body in &outbound {
        let pair = the_pair(&pairs, body);
        assert_eq!(end(pair, "source").0, "10.214.1.2", "{pair}");
        assert_eq!(
            end(pair, "destination"),
            ("10.214.1.3".to_string(), 9090),
            "the real peer, not ztunnel's 127.0.0.1:15001: {pair}"
        );
        assert_eq!(pair["interface"]["name"], "lo");
        assert_eq!(pair["response"]["status"], 200);
    }
    for body in &inbound {
        let pair = the_pair(&pairs, body);
        assert_eq!(
            end(pair, "source").0,
            "10.214.1.4",
            "the client, kept by ztunnel: {pair}"
        );
        assert_eq!(
            end(pair, "destination"),
            ("10.214.1.2".to_string(), 8080),
            "{pair}"
        );
    }
    assert_eq!(done.total_drops(), 0, "{}", done.stats);
    // One conntrack question per redirected connection (one keep-alive, two short); without
    // NET_ADMIN, each destination taken from the connection's answers instead.
    let redirects = &done.stats["redirects"];
    let (resolved, learned) = if net_admin { (3, 0) } else { (0, 3) };
    assert_eq!(
        redirects["resolved"].as_u64(),
        Some(resolved),
        "{}",
        done.stats
    );
    assert_eq!(
        redirects["learned"].as_u64(),
        Some(learned),
        "{}",
        done.stats
    );
    assert_eq!(done.counter("flows_not_http"), 0, "HBONE never reached lo");
    assert!(
        remote
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
}

/// A sidecar pod (Linkerd's proxy-init rules and a `linkerd2-proxy` stand-in running as uid 2102 on
/// 4140/4143, or Istio's sidecar rules and an `envoy` stand-in running as uid 1337 on 15001/15006) calls
/// a peer and is called by a client, neither tapped. Discovery recognises the proxy process and taps
/// `lo` only; each outbound exchange comes out once to the peer's real address (on `lo` the app's
/// packets go to the proxy's 127.0.0.1 port), each inbound one once to the app (its source is the
/// proxy's leg from the pod itself: a sidecar does not keep the client's address).
fn sidecar_pod_each_exchange_once(kind: &str, subnet: &str) {
    let node = Node::new(&format!("{kind}-node"));
    let mut meshed = Netns::new(&format!("{kind}-pod"));
    let peer = Netns::new(&format!("{kind}-peer"));
    let client = Netns::new(&format!("{kind}-cli"));
    let ip = |host: u8| format!("{subnet}.{host}");
    node.attach(&meshed, "eth0", "vl", &format!("{}/24", ip(2)));
    node.attach(&peer, "ext0", "vp", &format!("{}/24", ip(3)));
    node.attach(&client, "ext0", "vc", &format!("{}/24", ip(4)));
    let (_proxy, mesh_name, process) = match kind {
        "linkerd" => {
            mesh::linkerd_redirection(&meshed);
            (
                mesh::Proxy::linkerd(&mut meshed),
                "linkerd",
                "linkerd2-proxy",
            )
        }
        _ => {
            mesh::istio_sidecar_redirection(&meshed);
            (mesh::Proxy::istio_sidecar(&mut meshed), "istio", "envoy")
        }
    };
    let app = Server::start(&meshed, &format!("{}:8080", ip(2)));
    let remote = Server::start(&peer, &format!("{}:9090", ip(3)));
    let ino = meshed.inode().to_string();

    let mut worker = Worker::start(
        &["--discover"],
        Some("capture: {rescanSeconds: 1, skipInterfaces: [\"ext*\"]}\n"),
    );
    worker.wait_event("tapped", "lo", &ino, 1);
    let event = tapped_event(&worker, "lo", &ino);
    assert_eq!(event["fields"]["mesh"], mesh_name, "{event}");
    assert_eq!(
        event["fields"]["reason"].as_str(),
        Some(format!("process {process}").as_str()),
        "{event}"
    );

    let keep: Vec<Request> = (0..3)
        .map(|i| Request::post_json("/echo", &body(&format!("{kind}-out-{i}"))))
        .collect();
    keep_alive(&meshed, remote.addr, &keep);
    let short = Request::post_json("/echo", &body(&format!("{kind}-out-short")));
    keep_alive(&meshed, remote.addr, std::slice::from_ref(&short));
    let mut outbound: Vec<String> = keep
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    outbound.push(String::from_utf8(short.body).unwrap());
    let inbound_requests: Vec<Request> = (0..2)
        .map(|i| Request::post_json("/echo", &body(&format!("{kind}-in-{i}"))))
        .collect();
    keep_alive(&client, app.addr, &inbound_requests);
    let inbound: Vec<String> = inbound_requests
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let done = worker.stop();
    assert_eq!(
        done.tapped_in(&ino),
        [("lo".to_string(), "loopback".to_string())]
    );
    let pairs = done.pairs_in(&ino);
    assert_eq!(pairs.len(), outbound.len() + inbound.len(), "{pairs:?}");
    for body in &outbound {
        let pair = the_pair(&pairs, body);
        assert_eq!(end(pair, "source").0, ip(2), "{pair}");
        assert_eq!(
            end(pair, "destination"),
            (ip(3), 9090),
            "the real peer, not the proxy's 127.0.0.1 port: {pair}"
        );
    }
    for body in &inbound {
        let pair = the_pair(&pairs, body);
        assert_eq!(end(pair, "destination"), (ip(2), 8080), "{pair}");
    }
    assert_eq!(
        done.stats["redirects"]["resolved"].as_u64(),
        Some(2),
        "{}",
        done.stats
    );
    assert_eq!(done.total_drops(), 0, "{}", done.stats);
}

#[test]
fn linkerd_pod_each_exchange_once_with_its_real_destination() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("linkerd_pod_each_exchange_once_with_its_real_destination") {
        return;
    }
    sidecar_pod_each_exchange_once("linkerd", "10.215.1");
}

#[test]
fn istio_sidecar_pod_each_exchange_once_with_its_real_destination() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("istio_sidecar_pod_each_exchange_once_with_its_real_destination") {
        return;
    }
    sidecar_pod_each_exchange_once("istio", "10.217.1");
}

/// `capture --interface lo --netns PATH --mesh istio`: one pod's loopback chosen by hand, the mesh
/// named by the user. The application's outbound calls come out with their real destination (without
/// the flag the two halves of each redirected connection did not meet, and the calls were lost).
#[test]
fn capture_of_one_loopback_with_mesh_named_pairs_outbound_calls_with_their_real_destination() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    let test =
        "capture_of_one_loopback_with_mesh_named_pairs_outbound_calls_with_their_real_destination";
    if !netns::require_root(test) {
        return;
    }
    let node = Node::new("lo-mesh-node");
    let mut meshed = Netns::new("lo-mesh-pod");
    let peer = Netns::new("lo-mesh-peer");
    node.attach(&meshed, "eth0", "vl", "10.219.1.2/24");
    node.attach(&peer, "ext0", "vp", "10.219.1.3/24");
    mesh::istio_sidecar_redirection(&meshed);
    let _proxy = mesh::Proxy::istio_sidecar(&mut meshed);
    let remote = Server::start(&peer, "10.219.1.3:9090");
    let path = meshed.path();
    let netns_arg = path.to_str().expect("a UTF-8 path");

    let run = |mesh: Option<&str>, tag: &str| {
        let mut args = vec!["--interface", "lo", "--netns", netns_arg];
        if let Some(mesh) = mesh {
            args.extend(["--mesh", mesh]);
        }
        let mut worker = Worker::start(&args, None);
        worker.wait_capturing();
        let requests: Vec<Request> = (0..3)
            .map(|i| Request::post_json("/echo", &body(&format!("{tag}-{i}"))))
            .collect();
        keep_alive(&meshed, remote.addr, &requests);
        std::thread::sleep(Duration::from_millis(300));
        let bodies: Vec<String> = requests
            .iter()
            .map(|r| String::from_utf8(r.body.clone()).unwrap())
            .collect();
        (worker.stop(), bodies)
    };

    let (done, bodies) = run(Some("istio"), "named");
    let pairs: Vec<&Value> = done.pairs.iter().collect();
    assert_eq!(pairs.len(), bodies.len(), "{pairs:?}");
    for body in &bodies {
        let pair = the_pair(&pairs, body);
        assert_eq!(end(pair, "source").0, "10.219.1.2", "{pair}");
        assert_eq!(
            end(pair, "destination"),
            ("10.219.1.3".to_string(), 9090),
            "the real peer, not the proxy's 127.0.0.1:15001: {pair}"
        );
    }
    assert_eq!(
        done.stats["redirects"]["resolved"].as_u64(),
        Some(1),
        "{}",
        done.stats
    );
    assert_eq!(done.total_drops(), 0, "{}", done.stats);

    // The same traffic with no mesh named: what the flag is for.
    let (done, bodies) = run(None, "unnamed");
    let with_real_destination = done
        .pairs
        .iter()
        .filter(|p| bodies.iter().any(|b| p["request"]["body"] == b.as_str()))
        .filter(|p| end(p, "destination") == ("10.219.1.3".to_string(), 9090))
        .count();
    assert_eq!(with_real_destination, 0, "{:?}", done.pairs);
}

/// An ambient pod and two plain pods on one node (`10.SUBNET.1.2-4`), all to be tapped: the ambient pod
/// serves on 8080, the server pod on 9090, the client pod calls.
struct AmbientNode {
    _node: Node,
    ambient: Netns,
    client: Netns,
    _server: Netns,
    _ztunnel: Ztunnel,
    app: Server,
    remote: Server,
    /// The namespaces' inodes: ambient, server, client.
    inodes: [String; 3],
    subnet: &'static str,
}

impl AmbientNode {
    fn new(tag: &str, subnet: &'static str) -> AmbientNode {
        let node = Node::new(&format!("{tag}-node"));
        let mut ambient = Netns::new(&format!("{tag}-pod"));
        let server = Netns::new(&format!("{tag}-srv"));
        let client = Netns::new(&format!("{tag}-cli"));
        node.attach(&ambient, "eth0", "va", &format!("{subnet}.2/24"));
        node.attach(&server, "eth0", "vs", &format!("{subnet}.3/24"));
        node.attach(&client, "eth0", "vc", &format!("{subnet}.4/24"));
        mesh::ambient_redirection(&ambient);
        let ztunnel = Ztunnel::start(&mut ambient);
        let app = Server::start(&ambient, &format!("{subnet}.2:8080"));
        let remote = Server::start(&server, &format!("{subnet}.3:9090"));
        let inodes = [&ambient, &server, &client].map(|n| n.inode().to_string());
        AmbientNode {
            _node: node,
            ambient,
            client,
            _server: server,
            _ztunnel: ztunnel,
            app,
            remote,
            inodes,
            subnet,
        }
    }

    /// A worker discovering the node, once its three taps have reached the pipeline.
    fn worker(&self) -> Worker {
        let mut worker = Worker::start(&["--discover"], Some("capture: {rescanSeconds: 1}\n"));
        worker.wait_event("tapped", "lo", &self.inodes[0], 1);
        worker.wait_event("tapped", "eth0", &self.inodes[1], 1);
        worker.wait_event("tapped", "eth0", &self.inodes[2], 1);
        // The node's taps reach the pipeline with the scan after the last one opened.
        std::thread::sleep(Duration::from_millis(1500));
        worker
    }

    /// Exactly one pair per request body: the ambient pod's calls (`outbound`) from its own tap, to the
    /// server pod's real address; the client pod's calls (`inbound`) from the client's tap.
    fn assert_each_exchange_once(
        &self,
        done: &testkit::worker::Finished,
        outbound: &[String],
        inbound: &[String],
    ) {
        let pairs: Vec<&Value> = self.inodes.iter().flat_map(|i| done.pairs_in(i)).collect();
        assert_eq!(
            pairs.len(),
            outbound.len() + inbound.len(),
            "each exchange once: {pairs:?}"
        );
        let ip = |last: u8| format!("{}.{last}", self.subnet);
        for (bodies, tap, client, server) in [
            (outbound, &self.inodes[0], ip(2), (ip(3), 9090)),
            (inbound, &self.inodes[2], ip(4), (ip(2), 8080)),
        ] {
            for body in bodies {
                let pair = the_pair(&pairs, body);
                assert_eq!(
                    pair["interface"]["netns"],
                    tap.as_str(),
                    "the client's tap: {pair}"
                );
                assert_eq!(end(pair, "source").0, client, "{pair}");
                assert_eq!(end(pair, "destination"), server, "{pair}");
            }
        }
        assert_eq!(done.total_drops(), 0, "{}", done.stats);
        assert!(done.counter("flows_mirrored") >= 2, "{}", done.stats);
    }
}

/// An ambient pod and two plain pods on one node, all tapped: the ambient pod calls one plain pod, the
/// other plain pod calls the ambient pod. ztunnel re-originates each connection, so the client's tap and
/// the server's tap see two different connections; each exchange still comes out once, from the
/// client's tap, with the real peer on both ends.
#[test]
fn ambient_and_plain_pods_on_one_node_each_exchange_once() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("ambient_and_plain_pods_on_one_node_each_exchange_once") {
        return;
    }
    let pods = AmbientNode::new("amb2", "10.216.1");
    let worker = pods.worker();
    let out: Vec<String> = (0..2).map(|i| body(&format!("node-out-{i}"))).collect();
    let inb: Vec<String> = (0..2).map(|i| body(&format!("node-in-{i}"))).collect();
    let requests = |bodies: &[String]| -> Vec<Request> {
        bodies
            .iter()
            .map(|b| Request::post_json("/echo", b))
            .collect()
    };
    keep_alive(&pods.ambient, pods.remote.addr, &requests(&out));
    keep_alive(&pods.client, pods.app.addr, &requests(&inb));
    std::thread::sleep(Duration::from_millis(300));
    pods.assert_each_exchange_once(&worker.stop(), &out, &inb);
}

/// The same pods, but their keep-alive connections are up before the worker starts: the capture
/// joins them mid-way, with no SYN to tell the client, so the server-side copy (ztunnel's leg, seen by
/// the other pod's tap) is only recognised once its first request names the client. Each exchange still
/// comes out once, from the client's tap.
#[test]
fn ambient_and_plain_pods_joined_mid_way_each_exchange_once() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("ambient_and_plain_pods_joined_mid_way_each_exchange_once") {
        return;
    }
    let pods = AmbientNode::new("amb4", "10.224.1");
    // Both connections carry an exchange before the capture starts, then wait.
    let exchange = |stream: &mut std::net::TcpStream, buf: &mut Vec<u8>, host: &str, body: &str| {
        let request = Request::post_json("/echo", body);
        stream.write_all(&request.encode(host, false)).unwrap();
        let response = http::read_response(stream, buf);
        assert_eq!(response.status(), 200, "{body}");
    };
    let (out_host, in_host) = (pods.remote.addr.to_string(), pods.app.addr.to_string());
    let mut outbound = http::connect(&pods.ambient, pods.remote.addr);
    let mut inbound = http::connect(&pods.client, pods.app.addr);
    let (mut out_buf, mut in_buf) = (Vec::new(), Vec::new());
    exchange(&mut outbound, &mut out_buf, &out_host, &body("before-out"));
    exchange(&mut inbound, &mut in_buf, &in_host, &body("before-in"));

    let worker = pods.worker();
    let out: Vec<String> = (0..2).map(|i| body(&format!("late-out-{i}"))).collect();
    let inb: Vec<String> = (0..2).map(|i| body(&format!("late-in-{i}"))).collect();
    for (o, i) in out.iter().zip(&inb) {
        exchange(&mut outbound, &mut out_buf, &out_host, o);
        exchange(&mut inbound, &mut in_buf, &in_host, i);
    }
    drop((outbound, inbound));
    std::thread::sleep(Duration::from_millis(300));
    pods.assert_each_exchange_once(&worker.stop(), &out, &inb);
}

/// An ambient pod that goes away: its tap is released with its conntrack socket, which would otherwise
/// keep the pod's namespace alive for the worker's lifetime.
#[test]
fn a_mesh_pod_that_goes_away_releases_its_conntrack_handles() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("a_mesh_pod_that_goes_away_releases_its_conntrack_handles") {
        return;
    }
    let node = Node::new("amb3-node");
    let mut ambient = Netns::new("amb3-pod");
    node.attach(&ambient, "eth0", "va", "10.218.1.2/24");
    mesh::ambient_redirection(&ambient);
    let ztunnel = Ztunnel::start(&mut ambient);
    let ino = ambient.inode().to_string();
    let mut worker = Worker::start(&["--discover"], Some("capture: {rescanSeconds: 1}\n"));
    worker.wait_event("tapped", "lo", &ino, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let with_pod = worker.fds();
    ambient.delete();
    drop(ztunnel);
    worker.wait_event("released", "lo", &ino, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let without = worker.fds();
    // The capture socket and the ctnetlink socket.
    assert!(
        without + 2 <= with_pod,
        "fds with the pod {with_pod}, after it went away {without}"
    );
    worker.stop();
}

/// A plain pod and two sidecar pods (Istio's, whose proxy reaches its application from 127.0.0.6, and
/// Linkerd's, from the pod's own address) on one node, all tapped. The plain pod calls both sidecar
/// pods, the Istio pod calls the Linkerd pod. Each exchange crosses two taps in clear text: the client's
/// (the plain pod's `eth0`, the Istio pod's `lo` on its way to its proxy) and the server pod's `lo`, on
/// its proxy's inbound leg, whose client cannot be told by address. Each still comes out once, from the
/// client's tap, with the real client and server; the proxy legs' copies are counted.
#[test]
fn sidecar_and_plain_pods_on_one_node_each_exchange_once() {
    let _isolated = testkit::isolate::module(module_path!());
    let _serial = serial();
    if !netns::require_root("sidecar_and_plain_pods_on_one_node_each_exchange_once") {
        return;
    }
    let subnet = "10.221.1";
    let ip = |host: u8| format!("{subnet}.{host}");
    let node = Node::new("side2-node");
    let mut istio = Netns::new("side2-istio");
    let mut linkerd = Netns::new("side2-lkd");
    let plain = Netns::new("side2-plain");
    node.attach(&istio, "eth0", "vi", &format!("{}/24", ip(2)));
    node.attach(&linkerd, "eth0", "vl", &format!("{}/24", ip(3)));
    node.attach(&plain, "eth0", "vp", &format!("{}/24", ip(4)));
    mesh::istio_sidecar_redirection(&istio);
    mesh::linkerd_redirection(&linkerd);
    let _istio_proxy = mesh::Proxy::istio_sidecar(&mut istio);
    let _linkerd_proxy = mesh::Proxy::linkerd(&mut linkerd);
    let istio_app = Server::start(&istio, &format!("{}:8080", ip(2)));
    let linkerd_app = Server::start(&linkerd, &format!("{}:8080", ip(3)));
    let [istio_ino, linkerd_ino, plain_ino] =
        [&istio, &linkerd, &plain].map(|n| n.inode().to_string());

    let mut worker = Worker::start(&["--discover"], Some("capture: {rescanSeconds: 1}\n"));
    worker.wait_event("tapped", "lo", &istio_ino, 1);
    worker.wait_event("tapped", "lo", &linkerd_ino, 1);
    worker.wait_event("tapped", "eth0", &plain_ino, 1);
    // The node's taps reach the pipeline with the scan after the last one opened.
    std::thread::sleep(Duration::from_millis(1500));

    // (tag, client namespace, server, client's tap, client's address, server's address)
    let calls = [
        (
            "plain-istio",
            &plain,
            istio_app.addr,
            &plain_ino,
            ip(4),
            ip(2),
        ),
        (
            "plain-lkd",
            &plain,
            linkerd_app.addr,
            &plain_ino,
            ip(4),
            ip(3),
        ),
        (
            "istio-lkd",
            &istio,
            linkerd_app.addr,
            &istio_ino,
            ip(2),
            ip(3),
        ),
    ];
    let mut expected = Vec::new();
    for (tag, from, to, tap, client, server) in &calls {
        // A keep-alive connection of three requests (the proxy's leg is one connection for several
        // exchanges) and a short one.
        let keep: Vec<Request> = (0..3)
            .map(|i| Request::post_json("/echo", &body(&format!("{tag}-{i}"))))
            .collect();
        let answers = keep_alive(from, *to, &keep);
        assert!(answers.iter().all(|m| m.status() == 200), "{tag}");
        let short = Request::post_json("/echo", &body(&format!("{tag}-short")));
        keep_alive(from, *to, std::slice::from_ref(&short));
        for r in keep.iter().chain([&short]) {
            let body = String::from_utf8(r.body.clone()).unwrap();
            expected.push((body, (*tap).clone(), client.clone(), server.clone()));
        }
    }
    // Past the copies' window (1 s), so that a copy nothing matched would have come out.
    std::thread::sleep(Duration::from_millis(1500));

    let done = worker.stop();
    let pairs: Vec<&Value> = [&istio_ino, &linkerd_ino, &plain_ino]
        .into_iter()
        .flat_map(|i| done.pairs_in(i))
        .collect();
    assert_eq!(pairs.len(), expected.len(), "each exchange once: {pairs:?}");
    for (body, tap, client, server) in &expected {
        let pair = the_pair(&pairs, body);
        assert_eq!(
            pair["interface"]["netns"],
            tap.as_str(),
            "the client's tap: {pair}"
        );
        assert_eq!(end(pair, "source").0, *client, "{pair}");
        assert_eq!(end(pair, "destination"), (server.clone(), 8080), "{pair}");
    }
    assert_eq!(
        done.counter("pairs_sidecar_copies"),
        expected.len() as u64,
        "each proxy leg's copy counted: {}",
        done.stats
    );
    assert_eq!(done.total_drops(), 0, "{}", done.stats);
}
