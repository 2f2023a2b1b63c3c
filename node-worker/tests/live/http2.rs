//! HTTP/2 in clear text, live: real h2c clients (curl `--http2-prior-knowledge` and `--http2`,
//! nghttp) and servers (nghttpd from Debian's nghttp2 packages; Apache's mod_http2 for `Upgrade: h2c`)
//! talking across network namespaces, captured by the real `node-worker` binary. Every request comes
//! out exactly once, paired with its own response, with the bodies the server sent; also for a
//! connection the capture joined after it was up, and for one upgraded from HTTP/1.1.
//! Root only, and skips with a message when a server or client is missing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::netns::{self, Netns, Node};
use testkit::wait::wait_until;
use testkit::worker::Worker;

fn tools_present(test: &str) -> bool {
    all_present(
        test,
        &[
            "/usr/sbin/nghttpd",
            "/usr/bin/nghttp",
            "/usr/bin/h2load",
            "/usr/bin/curl",
        ],
        "nghttp2-server nghttp2-client curl",
    )
}

/// Whether every one of `paths` exists; if not, says which are missing and what installs them.
fn all_present(test: &str, paths: &[&str], packages: &str) -> bool {
    let missing: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        true
    } else {
        eprintln!("skipping {test}: missing {missing:?} (apt-get install {packages})");
        false
    }
}

/// A JSON document of about `size` bytes naming `tag`.
fn document(tag: &str, size: usize) -> String {
    format!(r#"{{"doc":"{tag}","pad":"{}"}}"#, "y".repeat(size))
}

struct Site {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    files: HashMap<String, String>,
}

/// An htdocs directory with `files` (path without the leading slash, content).
fn site(files: &[(&str, String)]) -> Site {
    let dir = tempfile::Builder::new()
        .prefix("ilt-h2-")
        .tempdir()
        .unwrap();
    let root = dir.path().to_path_buf();
    for (name, content) in files {
        std::fs::write(root.join(name), content).unwrap();
    }
    Site {
        _dir: dir,
        root,
        files: files
            .iter()
            .map(|(n, c)| (format!("/{n}"), c.clone()))
            .collect(),
    }
}

/// nghttpd in `ns` on `addr:8080`, h2c only, serving `site` and echoing uploads; waits until it
/// accepts connections.
fn start_nghttpd(ns: &mut Netns, addr: &str, site: &Site) {
    let root = site.root.to_string_lossy().into_owned();
    ns.spawn(
        Path::new("/usr/sbin/nghttpd"),
        &["--no-tls", "--echo-upload", "-a", addr, "-d", &root, "8080"],
    );
    let url = format!("http://{addr}:8080/");
    let up = wait_until(Duration::from_secs(10), || {
        ns.output(
            "curl",
            &["-s", "-o", "/dev/null", "--http2-prior-knowledge", &url],
        )
        .status
        .success()
    });
    assert!(up, "nghttpd did not start in {}", ns.name);
}

fn run_ok(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = ns.output(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pairs by request path, each checked as HTTP/2 with a 200 and the version on both halves.
fn by_path(pairs: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut out: HashMap<String, Vec<&Value>> = HashMap::new();
    for p in pairs {
        assert_eq!(p["request"]["version"], "HTTP/2", "{p}");
        assert_eq!(p["response"]["version"], "HTTP/2", "{p}");
        assert_eq!(p["request"]["stream_id"], p["response"]["stream_id"], "{p}");
        let path = p["request"]["path"]
            .as_str()
            .unwrap_or("<unknown>")
            .to_string();
        out.entry(path).or_default().push(p);
    }
    out
}

#[test]
fn curl_and_nghttp_against_nghttpd_every_stream_paired_once() {
    let _isolated = testkit::isolate::module(module_path!());
    let test = "curl_and_nghttp_against_nghttpd_every_stream_paired_once";
    if !netns::require_root(test) || !tools_present(test) {
        return;
    }
    let node = Node::new("h2-node");
    let client = Netns::new("h2-client");
    let mut server = Netns::new("h2-server");
    node.attach(&client, "c0", "vc", "10.220.1.1/24");
    node.attach(&server, "s0", "vs", "10.220.1.2/24");
    let site = site(&[
        ("a.json", document("a", 10)),
        ("b.json", document("b", 3000)),
        // Larger than one DATA frame (16 KiB) and one TCP segment.
        ("big.json", document("big", 100_000)),
        ("echo", String::new()),
    ]);
    start_nghttpd(&mut server, "10.220.1.2", &site);

    let netns_arg = server.path().to_string_lossy().into_owned();
    let mut worker = Worker::start(&["--interface", "s0", "--netns", &netns_arg], None);
    worker.wait_capturing();

    let base = "http://10.220.1.2:8080";
    // curl: a GET, then a POST whose body nghttpd echoes (one connection each: curl 7.88 fails to
    // reuse an h2c prior-knowledge connection, "Error in the HTTP2 framing layer").
    let out = run_ok(
        &client,
        "curl",
        &[
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &format!("{base}/b.json"),
        ],
    );
    assert_eq!(out, "2", "HTTP/2");
    let posted = document("posted", 500);
    run_ok(
        &client,
        "curl",
        &[
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &posted,
            &format!("{base}/echo"),
        ],
    );
    // nghttp: ten concurrent streams for a.json on one connection; two paths on another; big.json
    // twice at once on a third (nghttp requests a repeated URI once: -m multiplies).
    run_ok(
        &client,
        "nghttp",
        &["-n", "-m", "10", &format!("{base}/a.json")],
    );
    let (a, big) = (format!("{base}/a.json"), format!("{base}/big.json"));
    run_ok(&client, "nghttp", &["-n", &a, &big]);
    run_ok(&client, "nghttp", &["-n", "-m", "2", &big]);

    let done = worker.stop();
    let paths = by_path(&done.pairs);
    let count = |p: &str| paths.get(p).map_or(0, Vec::len);
    assert_eq!(count("/a.json"), 11, "{:?}", paths.keys());
    assert_eq!(count("/b.json"), 1);
    assert_eq!(count("/big.json"), 3);
    assert_eq!(count("/echo"), 1);
    assert_eq!(done.pairs.len(), 16);
    for (path, pairs) in &paths {
        for p in pairs {
            assert_eq!(p["response"]["status"], 200, "{p}");
            assert_eq!(p["response"]["body_base64"], false, "{p}");
            if path == "/echo" {
                assert_eq!(p["request"]["method"], "POST");
                assert_eq!(p["request"]["body"], posted.as_str());
                assert_eq!(p["response"]["body"], posted.as_str());
            } else {
                assert_eq!(p["request"]["method"], "GET");
                assert_eq!(p["request"]["body"], "");
                assert_eq!(p["response"]["body"], site.files[path].as_str(), "{path}");
            }
            let host = p["request"]["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == "host")
                .map(|h| h[1].clone());
            assert_eq!(host, Some("10.220.1.2:8080".into()), "{p}");
            assert_eq!(p["source"]["ip"], "10.220.1.1");
            assert_eq!(p["destination"]["ip"], "10.220.1.2");
            assert_eq!(p["destination"]["port"], 8080);
        }
    }
    assert_eq!(done.total_drops(), 0, "{}", done.stats["drops"]);
    assert_eq!(done.counter("flows_not_http"), 0);
    assert_eq!(done.counter("requests"), 16);
    assert_eq!(done.counter("responses"), 16);
    assert_eq!(done.capture("kernel_dropped"), 0);
}

#[test]
fn a_connection_up_before_the_capture_started() {
    let _isolated = testkit::isolate::module(module_path!());
    let test = "a_connection_up_before_the_capture_started";
    if !netns::require_root(test) || !tools_present(test) {
        return;
    }
    let node = Node::new("h2l-node");
    let mut client = Netns::new("h2l-client");
    let mut server = Netns::new("h2l-server");
    node.attach(&client, "c0", "vc", "10.221.1.1/24");
    node.attach(&server, "s0", "vs", "10.221.1.2/24");
    let files: Vec<(String, String)> = (0..16)
        .map(|i| (format!("p{i}.json"), document(&format!("p{i}"), 200)))
        .collect();
    let refs: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let site = site(&refs);
    start_nghttpd(&mut server, "10.221.1.2", &site);

    // One h2load connection fetching a file every 400 ms (a timing script); the capture starts
    // after a few.
    let script: String = (0..16)
        .map(|i| format!("{}\thttp://10.221.1.2:8080/p{i}.json\n", i * 400))
        .collect();
    let script_path = site.root.join("timing.txt");
    std::fs::write(&script_path, script).unwrap();
    let script_arg = format!("--timing-script-file={}", script_path.display());
    let h2load = client.spawn(
        Path::new("/usr/bin/h2load"),
        &["-c", "1", "-m", "1", &script_arg],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let netns_arg = server.path().to_string_lossy().into_owned();
    // The response's content-type was indexed by the server's encoder before the join: unknown, so
    // the content-type rule is off here.
    let mut worker = Worker::start(
        &["--interface", "s0", "--netns", &netns_arg],
        Some("filters: {contentTypes: []}\n"),
    );
    worker.wait_capturing();
    let finished = wait_until(Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{h2load}")).exists()
            || std::fs::read_to_string(format!("/proc/{h2load}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    assert!(finished, "h2load did not finish");

    let done = worker.stop();
    let paths = by_path(&done.pairs);
    eprintln!(
        "late join: {} of 16 requests paired, counters {}",
        done.pairs.len(),
        done.stats["counters"]
    );
    assert!(
        done.pairs.len() >= 6,
        "the requests after the join are paired: {} ({:?}, drops {})",
        done.pairs.len(),
        paths.keys(),
        done.stats["drops"]
    );
    assert!(
        done.pairs.len() < 16,
        "the first ones came before the capture"
    );
    for (path, pairs) in &paths {
        assert_eq!(pairs.len(), 1, "{path} once");
        let p = pairs[0];
        assert_eq!(p["response"]["status"], 200, "{p}");
        // The path is a literal in each request (a new one every time): known, and the body is
        // the one the server holds for it.
        assert_eq!(p["response"]["body"], site.files[path].as_str(), "{path}");
        // What h2load's encoder indexed before the join (authority, user agent, ...) is unknown,
        // never invented.
        assert!(
            p["request"]["unknown_headers"]
                .as_array()
                .is_some_and(|u| !u.is_empty()),
            "{p}"
        );
    }
    assert_eq!(done.counter("flows_not_http"), 0);
    assert_eq!(done.total_drops(), 0, "{}", done.stats["drops"]);
}

/// Apache's modules, as Debian's `apache2-bin` installs them.
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// Apache's own files (configuration, echo handler, logs); the server dies with its namespace.
struct Apache {
    _dir: tempfile::TempDir,
}

/// Apache (Debian's `apache2`, not its system service) in `ns` on `addr:8080` with mod_http2 taking
/// `Upgrade: h2c` (`Protocols h2c http/1.1`), serving `site` as `application/json` and echoing POSTs
/// to `/echo` (mod_lua); waits until it answers. One process (`-X`), so killing it kills the server.
/// The worker MPM, not the event MPM: with the event MPM, Apache 2.4 sends an upgraded connection
/// `GOAWAY (timeout)` as soon as its first stream is answered, and curl then moves its next request to
/// a new connection or fails it, depending on the race.
fn start_apache(ns: &mut Netns, addr: &str, site: &Site) -> Apache {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("ilt-apache-")
        .tempdir()
        .unwrap();
    let d = dir.path().display();
    let root = site.root.display();
    // Apache serves as www-data: the site must be readable to it.
    std::fs::set_permissions(&site.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let echo = r#"
function handle(r)
  r.content_type = "application/json"
  if r.method == "POST" then r:write(r:requestbody()) end
  return apache2.OK
end
"#;
    std::fs::write(dir.path().join("echo.lua"), echo).unwrap();
    let modules = ["mpm_worker", "authz_core", "mime", "http2", "lua"]
        .map(|m| format!("LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n"))
        .concat();
    let config = format!(
        "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\n\
         Listen {addr}:8080\nServerName h2c.test\nUser www-data\nGroup www-data\n{modules}\
         TypesConfig /dev/null\nAddType application/json .json\nProtocols h2c http/1.1\n\
         DocumentRoot {root}\n<Directory {root}>\n  Require all granted\n</Directory>\n\
         LuaMapHandler ^/echo$ {d}/echo.lua\n"
    );
    let conf = dir.path().join("httpd.conf");
    std::fs::write(&conf, config).unwrap();
    let conf = conf.to_string_lossy().into_owned();
    ns.spawn(Path::new("/usr/sbin/apache2"), &["-X", "-f", &conf]);
    let url = format!("http://{addr}:8080/");
    let up = wait_until(Duration::from_secs(10), || {
        ns.output("curl", &["-s", "-o", "/dev/null", &url])
            .status
            .success()
    });
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert!(up, "apache did not start in {}: {log}", ns.name);
    Apache { _dir: dir }
}

#[test]
fn upgrade_to_h2c_with_curl_and_apache_each_request_paired_with_its_stream() {
    let _isolated = testkit::isolate::module(module_path!());
    let test = "upgrade_to_h2c_with_curl_and_apache_each_request_paired_with_its_stream";
    let tools = [
        "/usr/sbin/apache2",
        "/usr/lib/apache2/modules/mod_http2.so",
        "/usr/lib/apache2/modules/mod_lua.so",
        "/usr/bin/curl",
    ];
    if !netns::require_root(test) || !all_present(test, &tools, "apache2-bin curl") {
        return;
    }
    let node = Node::new("h2u-node");
    let client = Netns::new("h2u-client");
    let mut server = Netns::new("h2u-server");
    node.attach(&client, "c0", "vc", "10.223.1.1/24");
    node.attach(&server, "s0", "vs", "10.223.1.2/24");
    let site = site(&[
        ("a.json", document("a", 10)),
        ("b.json", document("b", 3000)),
        // Several DATA frames (16 KiB each) and TCP segments.
        ("big.json", document("big", 40_000)),
    ]);
    let _apache = start_apache(&mut server, "10.223.1.2", &site);

    let netns_arg = server.path().to_string_lossy().into_owned();
    let mut worker = Worker::start(&["--interface", "s0", "--netns", &netns_arg], None);
    worker.wait_capturing();

    let base = "http://10.223.1.2:8080";
    let url = |path: &str| format!("{base}{path}");
    // One connection: the first GET asks for the upgrade (HTTP/1.1 with `Upgrade: h2c`) and its
    // response comes as HTTP/2 on stream 1; curl sends the next two as streams 3 and 5.
    let versions = run_ok(
        &client,
        "curl",
        &[
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} ",
            &url("/a.json"),
            &url("/b.json"),
            &url("/big.json"),
        ],
    );
    assert_eq!(versions, "2 2 2 ", "upgraded, then HTTP/2");
    // Another connection: curl asks for the upgrade on a POST too, and Apache declines one with a
    // body (a plain HTTP/1.1 answer, the connection stays HTTP/1.1); the GET that follows on the same
    // connection is upgraded (stream 1), and a POST after it goes as HTTP/2 on stream 3.
    let (first, second) = (document("first", 300), document("second", 5000));
    let versions = run_ok(
        &client,
        "curl",
        &[
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} ",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &first,
            &url("/echo"),
            "--next",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} ",
            &url("/a.json"),
            "--next",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} ",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &second,
            &url("/echo"),
        ],
    );
    assert_eq!(
        versions, "1.1 2 2 ",
        "the POST not upgraded, the GET after it"
    );

    let done = worker.stop();
    // Per connection (client port), each pair as [method, path (and echoed document), request
    // version, response version, response stream, request stream].
    let mut connections: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for p in &done.pairs {
        assert_eq!(p["response"]["status"], 200, "{p}");
        assert_eq!(p["response"]["body_base64"], false, "{p}");
        assert_eq!(p["source"]["ip"], "10.223.1.1", "{p}");
        assert_eq!(p["destination"]["ip"], "10.223.1.2", "{p}");
        assert_eq!(p["destination"]["port"], 8080, "{p}");
        let path = p["request"]["path"].as_str().unwrap_or("<unknown>");
        let what = if path == "/echo" {
            // The echo: the request's own body came back; named by its document's tag.
            assert_eq!(p["response"]["body"], p["request"]["body"], "{p}");
            let sent: Value = serde_json::from_str(p["request"]["body"].as_str().unwrap()).unwrap();
            Value::from(format!("/echo {}", sent["doc"].as_str().unwrap()))
        } else {
            assert_eq!(p["request"]["body"], "", "{p}");
            assert_eq!(p["response"]["body"], site.files[path].as_str(), "{p}");
            Value::from(path)
        };
        let port = p["source"]["port"].as_u64().unwrap();
        connections.entry(port).or_default().push(json!([
            p["request"]["method"],
            what,
            p["request"]["version"],
            p["response"]["version"],
            p["response"]["stream_id"],
            p["request"]["stream_id"],
        ]));
    }
    let canonical = |mut groups: Vec<Vec<Value>>| {
        for g in &mut groups {
            g.sort_by_key(Value::to_string);
        }
        groups.sort_by_key(|g| Value::from(g.clone()).to_string());
        groups
    };
    // The upgrade request is HTTP/1.1 (no stream id of its own); its response is stream 1's.
    let upgraded = |path: &str| json!(["GET", path, "HTTP/1.1", "HTTP/2", 1, null]);
    let h2 = |method: &str, what: &str, stream: u32| {
        json!([method, what, "HTTP/2", "HTTP/2", stream, stream])
    };
    let expected = vec![
        vec![
            upgraded("/a.json"),
            h2("GET", "/b.json", 3),
            h2("GET", "/big.json", 5),
        ],
        vec![
            json!(["POST", "/echo first", "HTTP/1.1", "HTTP/1.1", null, null]),
            upgraded("/a.json"),
            h2("POST", "/echo second", 3),
        ],
    ];
    assert_eq!(
        canonical(connections.into_values().collect()),
        canonical(expected),
        "drops {}",
        done.stats["drops"]
    );
    assert_eq!(done.total_drops(), 0, "{}", done.stats["drops"]);
    assert_eq!(done.counter("flows_not_http"), 0);
    assert_eq!(
        done.counter("flows_upgraded"),
        0,
        "h2c is decoded, not opaque"
    );
    assert_eq!(done.counter("flows_tunneled"), 0);
    assert_eq!(done.counter("requests"), 6);
    // Six, and the two `101 Switching Protocols` (the counter includes interim responses).
    assert_eq!(done.counter("responses"), 8);
    assert_eq!(done.counter("pairs_emitted"), 6);
    assert_eq!(done.capture("kernel_dropped"), 0);
}

/// Debian's Python, which has Debian's `python3-grpcio` (`make deps`), whatever `python3` comes first
/// on PATH.
const PYTHON: &str = "/usr/bin/python3";

/// A gRPC server and client (Python's grpcio, raw bytes as messages: no generated code), run as
/// `python3 SCRIPT server ADDR` and `python3 SCRIPT client ADDR` (which asserts every answer and
/// prints `ok`).
const GRPC_SCRIPT: &str = r#"
import sys, grpc
from concurrent import futures

same = lambda b: b
def say(req, ctx): return b"hello " + req
def count(req, ctx):
    for i in range(int(req)): yield b"item-%d" % i
def total(it, ctx): return b"|".join(it)
def chat(it, ctx):
    for m in it: yield m.upper()
def fail(req, ctx): ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

mode, addr = sys.argv[1], sys.argv[2]
if mode == "server":
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say, same, same),
        "Count": grpc.unary_stream_rpc_method_handler(count, same, same),
        "Total": grpc.stream_unary_rpc_method_handler(total, same, same),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, same, same),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, same, same),
    }
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Echo", handlers),))
    server.add_insecure_port(addr)
    server.start()
    server.wait_for_termination()
else:
    ch = grpc.insecure_channel(addr)
    grpc.channel_ready_future(ch).result(timeout=10)
    m = lambda kind, name: getattr(ch, kind)("/demo.Echo/" + name, request_serializer=same, response_deserializer=same)
    say, count, total, chat, fail = m("unary_unary", "Say"), m("unary_stream", "Count"), m("stream_unary", "Total"), m("stream_stream", "Chat"), m("unary_unary", "Fail")
    assert say(b"world") == b"hello world"
    big = b"x" * 200000
    assert say(big) == b"hello " + big
    assert say(b"zip", compression=grpc.Compression.Gzip) == b"hello zip"
    calls = [say.future(b"c%d" % i) for i in range(20)]
    assert [c.result() for c in calls] == [b"hello c%d" % i for i in range(20)]
    assert list(count(b"5")) == [b"item-%d" % i for i in range(5)]
    assert total(iter([b"a", b"b", b"c"])) == b"a|b|c"
    assert list(chat(iter([b"x", b"y"]))) == [b"X", b"Y"]
    try:
        fail(b"q")
        raise SystemExit("Fail succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND
    print("ok")
"#;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn grpc_unary_streaming_compressed_and_concurrent_calls() {
    let _isolated = testkit::isolate::module(module_path!());
    let test = "grpc_unary_streaming_compressed_and_concurrent_calls";
    if !netns::require_root(test) {
        return;
    }
    let has_grpc = std::process::Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_grpc {
        eprintln!("skipping {test}: {PYTHON} without grpc (make deps installs python3-grpcio)");
        return;
    }
    let node = Node::new("grpc-node");
    let client = Netns::new("grpc-client");
    let mut server = Netns::new("grpc-server");
    node.attach(&client, "c0", "vc", "10.222.1.1/24");
    node.attach(&server, "s0", "vs", "10.222.1.2/24");
    let dir = tempfile::Builder::new()
        .prefix("ilt-grpc-")
        .tempdir()
        .unwrap();
    let script = dir.path().join("echo.py");
    std::fs::write(&script, GRPC_SCRIPT).unwrap();
    let script = script.to_string_lossy().into_owned();
    server.spawn(Path::new(PYTHON), &[&script, "server", "10.222.1.2:50051"]);

    let netns_arg = server.path().to_string_lossy().into_owned();
    let config = "filters: {contentTypes: [application/json, application/grpc]}\n";
    let mut worker = Worker::start(&["--interface", "s0", "--netns", &netns_arg], Some(config));
    worker.wait_capturing();
    let out = run_ok(&client, PYTHON, &[&script, "client", "10.222.1.2:50051"]);
    assert_eq!(out.trim(), "ok");
    let done = worker.stop();

    let mut by_method: HashMap<String, Vec<&Value>> = HashMap::new();
    for p in &done.pairs {
        assert_eq!(p["request"]["version"], "HTTP/2", "{p}");
        assert_eq!(p["request"]["grpc"]["service"], "demo.Echo", "{p}");
        let method = p["request"]["grpc"]["method"].as_str().unwrap().to_string();
        assert_eq!(p["request"]["path"], format!("/demo.Echo/{method}"));
        by_method.entry(method).or_default().push(p);
    }
    let counts: HashMap<&str, usize> = by_method
        .iter()
        .map(|(k, v)| (k.as_str(), v.len()))
        .collect();
    assert_eq!(
        counts,
        HashMap::from([
            ("Say", 23),
            ("Count", 1),
            ("Total", 1),
            ("Chat", 1),
            ("Fail", 1)
        ]),
        "drops {}",
        done.stats["drops"]
    );
    let messages = |m: &Value| m["grpc"]["messages"].clone();
    let list = |items: &[&[u8]]| Value::from(items.iter().map(|i| b64(i)).collect::<Vec<_>>());
    // Every unary call paired with its own answer (the concurrent ones included).
    for p in &by_method["Say"] {
        let request = p["request"]["grpc"]["messages"][0]
            .as_str()
            .unwrap()
            .to_string();
        let sent =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &request).unwrap();
        let mut expected = b"hello ".to_vec();
        expected.extend_from_slice(&sent);
        assert_eq!(
            messages(&p["response"]),
            list(&[&expected]),
            "{}",
            p["request"]["grpc"]
        );
        assert_eq!(p["response"]["grpc"]["status"], 0);
        assert_eq!(p["request"]["grpc"]["count"], 1);
        if sent == b"zip" {
            assert_eq!(p["request"]["grpc"]["encoding"], "gzip", "decompressed");
        }
    }
    let sizes: Vec<usize> = by_method["Say"]
        .iter()
        .map(|p| p["request"]["grpc"]["messages"][0].as_str().unwrap().len())
        .collect();
    assert!(
        sizes.iter().any(|&n| n > 200_000),
        "the 200 KB message, over many frames"
    );
    let one = |name: &str| by_method[name][0];
    assert_eq!(messages(&one("Count")["request"]), list(&[b"5"]));
    assert_eq!(
        messages(&one("Count")["response"]),
        list(&[b"item-0", b"item-1", b"item-2", b"item-3", b"item-4"])
    );
    assert_eq!(one("Count")["response"]["grpc"]["count"], 5);
    assert_eq!(
        messages(&one("Total")["request"]),
        list(&[b"a", b"b", b"c"])
    );
    assert_eq!(messages(&one("Total")["response"]), list(&[b"a|b|c"]));
    assert_eq!(messages(&one("Chat")["request"]), list(&[b"x", b"y"]));
    assert_eq!(messages(&one("Chat")["response"]), list(&[b"X", b"Y"]));
    let fail = &one("Fail")["response"]["grpc"];
    assert_eq!(fail["status"], 5, "NOT_FOUND");
    assert_eq!(fail["message"], "no such thing");
    assert_eq!(fail["count"], 0);
    assert_eq!(done.total_drops(), 0, "{}", done.stats["drops"]);
    assert_eq!(done.counter("flows_not_http"), 0);
}
