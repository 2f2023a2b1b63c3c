//! End to end, live: the real `node-worker` binary captures real clients and servers talking across
//! network namespaces ("pods" on a bridge, as on a Kubernetes node) and is stopped with SIGINT. The
//! ground truth is what the clients sent: every kept request comes out exactly once with the right
//! request and response bodies, and every dropped one is counted under its reason. Also: a service-mesh
//! pod is tapped on its loopback only, and two pods on one node, both tapped, give each exchange once.
//! Root only (skips with a message otherwise); 10.x addresses in namespaces the tests create.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;
use testkit::http::{self, echo, keep_alive, pipelined, Request, Server};
use testkit::netns::{self, Netns, Node};
use testkit::wait::wait_until;
use testkit::worker::{Finished, Worker};

/// A request body that names its case, padded to `pad` bytes of filler.
fn body(tag: &str, pad: usize) -> String {
    format!(r#"{{"case":"{tag}","pad":"{}"}}"#, "x".repeat(pad))
}

/// What the ground truth expects of one kept pair.
#[derive(Debug)]
struct Expected {
    method: &'static str,
    path: String,
    request_body: String,
    response_body: String,
    gzip: bool,
    chunked: bool,
}

impl Expected {
    fn echo(method: &'static str, path: &str, request_body: &str) -> Expected {
        Expected {
            method,
            path: path.to_string(),
            request_body: request_body.to_string(),
            response_body: String::from_utf8(echo(request_body.as_bytes())).unwrap(),
            gzip: path == "/gzip",
            chunked: path == "/chunked",
        }
    }
}

fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["headers"].as_array()?.iter().find_map(|h| {
        (h[0].as_str()?.eq_ignore_ascii_case(name))
            .then(|| h[1].as_str())
            .flatten()
    })
}

/// Every expected pair is in `pairs` exactly once (matched by its distinct request body), with the
/// right request and response; nothing else is.
fn assert_pairs_match(pairs: &[&Value], expected: &[Expected], context: &str) {
    let mut by_body: HashMap<&str, Vec<&Value>> = HashMap::new();
    for pair in pairs {
        by_body
            .entry(pair["request"]["body"].as_str().unwrap_or(""))
            .or_default()
            .push(pair);
    }
    for e in expected {
        let found = by_body.remove(e.request_body.as_str()).unwrap_or_default();
        assert_eq!(
            found.len(),
            1,
            "{context}: the pair for {} {} with body {:.60} came out {} times",
            e.method,
            e.path,
            e.request_body,
            found.len()
        );
        let pair = found[0];
        let (request, response) = (&pair["request"], &pair["response"]);
        assert_eq!(request["method"], e.method, "{context}: {pair}");
        assert_eq!(request["path"], e.path.as_str(), "{context}: {pair}");
        assert_eq!(request["body_base64"], false, "{context}: {pair}");
        assert_eq!(response["status"], 200, "{context}: {pair}");
        assert_eq!(
            response["body"].as_str(),
            Some(e.response_body.as_str()),
            "{context}: the response of {:.60}",
            e.request_body
        );
        if e.gzip {
            assert_eq!(response["content_encoding"], "gzip", "{context}: {pair}");
        }
        if e.chunked {
            assert_eq!(
                header(response, "transfer-encoding"),
                Some("chunked"),
                "{context}: {pair}"
            );
        }
        assert!(
            pair["latency_us"].as_i64().is_some_and(|l| l >= 0),
            "{context}: {pair}"
        );
    }
    let extra: Vec<_> = by_body.keys().collect();
    assert!(
        extra.is_empty(),
        "{context}: unexpected pairs for {extra:?}"
    );
}

/// curl, one process, several URLs on one keep-alive connection (`--next`), one request body sent
/// chunked. Returns what it sent.
fn curl_keep_alive(client: &Netns, server: SocketAddr) -> Vec<Expected> {
    let cases = [
        ("/echo", body("curl-1", 10), false),
        ("/chunked", body("curl-2", 300), false),
        ("/gzip", body("curl-3", 2000), false),
        ("/echo", body("curl-4-chunked-request", 500), true),
    ];
    let mut args: Vec<String> = vec!["-sS".into(), "--max-time".into(), "20".into()];
    for (i, (path, data, chunked)) in cases.iter().enumerate() {
        if i > 0 {
            args.push("--next".into());
        }
        args.extend(
            [
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{num_connects}\\n",
                "-H",
                "Content-Type: application/json",
            ]
            .map(String::from),
        );
        if *chunked {
            args.extend(["-H".into(), "Transfer-Encoding: chunked".into()]);
        }
        args.extend(["--data-binary".into(), data.clone()]);
        args.push(format!("http://{server}{path}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = client.output("curl", &args);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    // One connection for all: the first transfer connects, the others reuse it.
    assert_eq!(
        lines,
        ["200 1", "200 0", "200 0", "200 0"],
        "curl transfers"
    );
    cases
        .iter()
        .map(|(path, data, _)| Expected::echo("POST", path, data))
        .collect()
}

/// Python's http.client, one keep-alive connection: kept requests and one of each dropped case.
fn python_keep_alive(client: &Netns, server: SocketAddr) -> Vec<Expected> {
    let b1 = body("python-1", 50);
    let b2 = body("python-probe", 5);
    let b3 = body("python-3", 4000);
    let form = "name=python&case=python-form&note=a+b%26c".to_string();
    let script = format!(
        r#"
import http.client, sys
c = http.client.HTTPConnection("{ip}", {port}, timeout=20)
json = {{"Content-Type": "application/json"}}
calls = [
    ("POST", "/echo", {b1:?}, json),
    ("GET", "/healthz", None, {{}}),
    ("POST", "/echo", {b2:?}, {{"Content-Type": "application/json", "User-Agent": "kube-probe/1.31"}}),
    ("GET", "/missing", None, {{}}),
    ("GET", "/page", None, {{}}),
    ("POST", "/gzip", {b3:?}, json),
    ("POST", "/echo", {form:?}, {{"Content-Type": "application/x-www-form-urlencoded"}}),
]
for method, path, body, headers in calls:
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    print(r.status)
c.close()
"#,
        ip = server.ip(),
        port = server.port(),
    );
    let out = client.output("python3", &["-c", &script]);
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(statuses, ["200", "200", "200", "404", "200", "200", "200"]);
    vec![
        Expected::echo("POST", "/echo", &b1),
        Expected::echo("POST", "/gzip", &b3),
        Expected::echo("POST", "/echo", &form),
    ]
}

/// Raw sockets: pipelined batches (one with a dropped request in the middle), short connections of
/// several sizes, and chunked request bodies on a keep-alive connection.
fn raw_clients(client: &Netns, server: SocketAddr) -> Vec<Expected> {
    let mut expected = Vec::new();
    let batch = [
        Request::post_json("/echo", &body("pipe-1", 20)),
        Request::post_json("/chunked", &body("pipe-2", 700)),
        Request::post_json("/gzip", &body("pipe-3", 3000)),
    ];
    let responses = pipelined(client, server, &batch);
    assert!(responses.iter().all(|r| r.status() == 200));
    for r in &batch {
        expected.push(Expected::echo(
            "POST",
            &r.path,
            std::str::from_utf8(&r.body).unwrap(),
        ));
    }
    let batch = [
        Request::post_json("/echo", &body("pipe-4", 5)),
        Request::get("/healthz"),
        Request::post_json("/echo", &body("pipe-6", 5)),
    ];
    let responses = pipelined(client, server, &batch);
    assert_eq!(
        responses.iter().map(|r| r.status()).collect::<Vec<_>>(),
        [200, 200, 200]
    );
    expected.push(Expected::echo("POST", "/echo", &body("pipe-4", 5)));
    expected.push(Expected::echo("POST", "/echo", &body("pipe-6", 5)));

    for (i, pad) in [0, 1, 100, 1400, 1500, 3000, 9000, 30_000, 120_000, 7]
        .into_iter()
        .enumerate()
    {
        let b = body(&format!("short-{i}"), pad);
        let responses = keep_alive(client, server, &[Request::post_json("/echo", &b)]);
        assert_eq!(responses[0].body, echo(b.as_bytes()));
        expected.push(Expected::echo("POST", "/echo", &b));
    }

    let chunked: Vec<Request> = (0..3)
        .map(|i| {
            Request::post_json(
                if i == 1 { "/chunked" } else { "/echo" },
                &body(&format!("chunked-request-{i}"), 250 * i),
            )
            .with_chunked_body()
        })
        .collect();
    let responses = keep_alive(client, server, &chunked);
    assert!(responses.iter().all(|r| r.status() == 200));
    for r in &chunked {
        expected.push(Expected::echo(
            "POST",
            &r.path,
            std::str::from_utf8(&r.body).unwrap(),
        ));
    }
    expected
}

#[test]
fn real_clients_every_kept_pair_once_with_its_bodies_and_drops_by_reason() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("real_clients_every_kept_pair_once_with_its_bodies_and_drops_by_reason")
    {
        return;
    }
    let node = Node::new("gt-node");
    let client = Netns::new("gt-client");
    let server_ns = Netns::new("gt-server");
    node.attach(&client, "c0", "vc", "10.210.1.1/24");
    node.attach(&server_ns, "s0", "vs", "10.210.1.2/24");
    let server = Server::start(&server_ns, "10.210.1.2:8080");

    let netns_arg = server_ns.path().to_string_lossy().into_owned();
    let mut worker = Worker::start(&["--interface", "s0", "--netns", &netns_arg], None);
    worker.wait_capturing();

    let mut expected = curl_keep_alive(&client, server.addr);
    expected.extend(python_keep_alive(&client, server.addr));
    expected.extend(raw_clients(&client, server.addr));
    let sent = server.received().len();

    let done: Finished = worker.stop();
    let pairs: Vec<&Value> = done.pairs.iter().collect();
    assert_pairs_match(&pairs, &expected, "server-side capture");
    for pair in &pairs {
        assert_eq!(
            pair["interface"],
            serde_json::json!({"name": "s0", "netns": netns_arg, "mode": "external"})
        );
        assert_eq!(pair["source"]["ip"], "10.210.1.1");
        assert_eq!(pair["destination"]["ip"], "10.210.1.2");
        assert_eq!(pair["destination"]["port"], 8080);
        assert_eq!(pair["node"], "e2e-node");
        assert_eq!(pair["schema"], "interceptor.pair/v1");
    }

    // The dropped cases, each under its reason, and nothing else dropped.
    let expected_drops = [
        ("excluded_path", 2),
        ("user_agent", 1),
        ("status_code", 1),
        ("content_type", 1),
    ];
    for (reason, n) in expected_drops {
        assert_eq!(done.drops(reason), n, "{reason}: {}", done.stats["drops"]);
    }
    assert_eq!(
        done.total_drops(),
        5,
        "unexpected drops: {}",
        done.stats["drops"]
    );
    // Every request the server answered was parsed, and is emitted or dropped.
    assert_eq!(sent, expected.len() + 5, "requests the server answered");
    assert_eq!(done.counter("requests"), sent as u64);
    assert_eq!(done.counter("responses"), sent as u64);
    assert_eq!(done.counter("pairs_emitted"), expected.len() as u64);
    assert_eq!(done.capture("kernel_dropped"), 0);
    assert_eq!(done.counter("bytes_missing"), 0);
    assert!(
        done.stderr.contains("pairs emitted:"),
        "the summary: {}",
        done.stderr
    );
}

/// A pod behind a service-mesh sidecar (a process named `envoy`) whose app serves over 127.0.0.1, and
/// a plain pod that calls the mesh pod's external address: discovery taps the mesh pod's `lo` only
/// (mode loopback) and the plain pod's external interface.
#[test]
fn discover_taps_a_mesh_pod_on_loopback_only() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("discover_taps_a_mesh_pod_on_loopback_only") {
        return;
    }
    let node = Node::new("mesh-node");
    let mut mesh = Netns::new("mesh-pod");
    let plain = Netns::new("mesh-plain");
    node.attach(&mesh, "eth0", "vm", "10.211.1.2/24");
    node.attach(&plain, "eth0", "vp", "10.211.1.3/24");
    let _sidecar = mesh.spawn_named("envoy");
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        netns::runs_in(&mesh.name, "envoy")
    }));
    // The app, on loopback (the sidecar would forward to it), and a port on the pod's address (the
    // sidecar's inbound listener would be here: its traffic on the wire is encrypted in real life).
    let app = Server::start(&mesh, "127.0.0.1:8080");
    let inbound = Server::start(&mesh, "10.211.1.2:15006");
    let (mesh_ino, plain_ino) = (mesh.inode().to_string(), plain.inode().to_string());

    let mut worker = Worker::start(&["--discover"], Some("capture: {rescanSeconds: 1}\n"));
    worker.wait_event("tapped", "lo", &mesh_ino, 1);
    worker.wait_event("tapped", "eth0", &plain_ino, 1);

    // Inside the mesh pod, over loopback: keep-alive and a short connection.
    let mut loopback = Vec::new();
    let requests: Vec<Request> = (0..4)
        .map(|i| Request::post_json("/echo", &body(&format!("mesh-lo-{i}"), 100 * i)))
        .collect();
    keep_alive(&mesh, app.addr, &requests);
    keep_alive(
        &mesh,
        app.addr,
        &[Request::post_json("/gzip", &body("mesh-lo-gzip", 900))],
    );
    for r in &requests {
        loopback.push(Expected::echo(
            "POST",
            "/echo",
            std::str::from_utf8(&r.body).unwrap(),
        ));
    }
    loopback.push(Expected::echo("POST", "/gzip", &body("mesh-lo-gzip", 900)));
    // From the plain pod to the mesh pod's address.
    let external: Vec<Request> = (0..3)
        .map(|i| Request::post_json("/echo", &body(&format!("mesh-ext-{i}"), 10)))
        .collect();
    keep_alive(&plain, inbound.addr, &external);
    let external: Vec<Expected> = external
        .iter()
        .map(|r| Expected::echo("POST", "/echo", std::str::from_utf8(&r.body).unwrap()))
        .collect();

    let done = worker.stop();
    assert_eq!(
        done.tapped_in(&mesh_ino),
        [("lo".to_string(), "loopback".to_string())],
        "the mesh pod: loopback only"
    );
    assert_eq!(
        done.tapped_in(&plain_ino),
        [("eth0".to_string(), "external".to_string())]
    );
    let in_mesh = done.pairs_in(&mesh_ino);
    assert_pairs_match(&in_mesh, &loopback, "mesh pod loopback");
    for pair in &in_mesh {
        assert_eq!(pair["interface"]["name"], "lo");
        assert_eq!(pair["interface"]["mode"], "loopback");
        assert_eq!(pair["destination"]["ip"], "127.0.0.1");
        assert_eq!(pair["destination"]["port"], 8080);
    }
    // The external traffic is seen once, by the calling pod's tap: never on the mesh pod's eth0.
    let in_plain = done.pairs_in(&plain_ino);
    assert_pairs_match(&in_plain, &external, "plain pod calling the mesh pod");
    for pair in &in_plain {
        assert_eq!(pair["interface"]["name"], "eth0");
        assert_eq!(pair["interface"]["mode"], "external");
        assert_eq!(pair["destination"]["ip"], "10.211.1.2");
    }
    assert_eq!(done.tap_packets("eth0", &mesh_ino), None);
}

/// Two pods on one node, both tapped on their external interfaces, call each other: every exchange
/// crosses both taps but is emitted once, for keep-alive and short connections, both ways.
#[test]
fn discover_two_pods_on_one_node_each_exchange_once() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("discover_two_pods_on_one_node_each_exchange_once") {
        return;
    }
    let node = Node::new("pair-node");
    let a = Netns::new("pair-a");
    let b = Netns::new("pair-b");
    node.attach(&a, "eth0", "va", "10.212.1.2/24");
    node.attach(&b, "eth0", "vb", "10.212.1.3/24");
    let server_a = Server::start(&a, "10.212.1.2:8080");
    let server_b = Server::start(&b, "10.212.1.3:9090");
    let (a_ino, b_ino) = (a.inode().to_string(), b.inode().to_string());

    let mut worker = Worker::start(&["--discover"], Some("capture: {rescanSeconds: 1}\n"));
    worker.wait_event("tapped", "eth0", &a_ino, 1);
    worker.wait_event("tapped", "eth0", &b_ino, 1);

    let mut expected = Vec::new();
    for (from, to, tag) in [(&a, &server_b, "a-to-b"), (&b, &server_a, "b-to-a")] {
        // Keep-alive: several requests on one connection, then the connection closes.
        let requests: Vec<Request> = (0..5)
            .map(|i| {
                let path = ["/echo", "/chunked", "/gzip"][i % 3];
                Request::post_json(path, &body(&format!("{tag}-keepalive-{i}"), 400 * i))
            })
            .collect();
        keep_alive(from, to.addr, &requests);
        // Pipelined, on another connection.
        let batch: Vec<Request> = (0..3)
            .map(|i| Request::post_json("/echo", &body(&format!("{tag}-pipelined-{i}"), 30)))
            .collect();
        pipelined(from, to.addr, &batch);
        // Short connections.
        let short: Vec<Request> = (0..5)
            .map(|i| Request::post_json("/echo", &body(&format!("{tag}-short-{i}"), 2000 * i)))
            .collect();
        for r in &short {
            keep_alive(from, to.addr, std::slice::from_ref(r));
        }
        for r in requests.iter().chain(&batch).chain(&short) {
            expected.push(Expected::echo(
                "POST",
                &r.path,
                std::str::from_utf8(&r.body).unwrap(),
            ));
        }
    }

    let done = worker.stop();
    assert_eq!(
        done.tapped_in(&a_ino),
        [("eth0".to_string(), "external".to_string())]
    );
    assert_eq!(
        done.tapped_in(&b_ino),
        [("eth0".to_string(), "external".to_string())]
    );
    // Both taps saw the traffic...
    assert!(
        done.tap_packets("eth0", &a_ino).unwrap_or(0) > 0
            && done.tap_packets("eth0", &b_ino).unwrap_or(0) > 0,
        "{}",
        done.stderr
    );
    // ...and each exchange came out once.
    let ours: Vec<&Value> = done
        .pairs
        .iter()
        .filter(|p| p["interface"]["netns"] == a_ino || p["interface"]["netns"] == b_ino)
        .collect();
    assert_pairs_match(&ours, &expected, "two pods");
}

/// Connects from `ns` to `to`, from the fixed local address `from` (bind before connect).
fn connect_from(ns: &Netns, from: &str, to: SocketAddr) -> std::net::TcpStream {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let from: std::net::SocketAddrV4 = from.parse().unwrap();
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let stream = node_worker::discovery::in_netns(&ns.path(), || {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(from))?;
        connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
        Ok::<_, nix::Error>(std::net::TcpStream::from(fd))
    })
    .expect("enter namespace")
    .unwrap_or_else(|e| panic!("connect {to} from {from} in {}: {e}", ns.name));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Two mesh pods on one node whose sidecar-to-app connections have the same loopback addresses and
/// ports at the same time (each pod has its own 127.0.0.1; ephemeral ports collide sooner or later
/// with enough pods): they are different connections, and each exchange must come out once, from its
/// own pod.
///
/// Once a defect (issue 3): connections were keyed by addresses and ports only, and the two merged.
#[test]
fn discover_two_mesh_pods_with_the_same_loopback_connection_are_kept_apart() {
    let _isolated = testkit::isolate::module(module_path!());
    use std::io::Write;
    if !netns::require_root(
        "discover_two_mesh_pods_with_the_same_loopback_connection_are_kept_apart",
    ) {
        return;
    }
    let mut pods = [Netns::new("twin-1"), Netns::new("twin-2")];
    let mut sidecars = Vec::new();
    for pod in &mut pods {
        sidecars.push(pod.spawn_named("envoy"));
    }
    let servers: Vec<Server> = pods
        .iter()
        .map(|p| Server::start(p, "127.0.0.1:8080"))
        .collect();
    assert!(pods.iter().all(
        |p| wait_until(std::time::Duration::from_secs(5), || netns::runs_in(
            &p.name, "envoy"
        ))
    ));
    let inodes: Vec<String> = pods.iter().map(|p| p.inode().to_string()).collect();
    let mut worker = Worker::start(&["--discover"], Some("capture: {rescanSeconds: 1}\n"));
    for ino in &inodes {
        worker.wait_event("tapped", "lo", ino, 1);
    }

    // Both pods: 127.0.0.1:41000 -> 127.0.0.1:8080, open at the same time, requests interleaved.
    let mut streams: Vec<_> = pods
        .iter()
        .zip(&servers)
        .map(|(p, s)| connect_from(p, "127.0.0.1:41000", s.addr))
        .collect();
    let mut buffers = [Vec::new(), Vec::new()];
    let mut expected: Vec<Vec<Expected>> = vec![Vec::new(), Vec::new()];
    for round in 0..3 {
        for (i, stream) in streams.iter_mut().enumerate() {
            let b = body(&format!("twin-{i}-{round}"), 200 * round);
            let request = Request::post_json("/echo", &b);
            stream
                .write_all(&request.encode("127.0.0.1:8080", round == 2))
                .unwrap();
            let response = http::read_response(stream, &mut buffers[i]);
            assert_eq!(response.body, echo(b.as_bytes()));
            expected[i].push(Expected::echo("POST", "/echo", &b));
            // Long enough for the worker to read each step in its own poll round, so that the two
            // connections' packets reach it interleaved, as on a busy node.
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
    }
    drop(streams);

    let done = worker.stop();
    for pair in &done.pairs {
        let case = pair["request"]["body"].as_str().unwrap_or("").get(..20);
        eprintln!("pair in {}: {case:?}", pair["interface"]["netns"]);
    }
    for (i, ino) in inodes.iter().enumerate() {
        let pairs = done.pairs_in(ino);
        assert_pairs_match(
            &pairs,
            &expected[i],
            &format!(
                "mesh pod {} (drops {}, counters {})",
                i + 1,
                done.stats["drops"],
                done.stats["counters"]
            ),
        );
        for pair in pairs {
            assert_eq!(pair["source"]["port"], 41000);
            assert_eq!(pair["interface"]["mode"], "loopback");
        }
    }
}
