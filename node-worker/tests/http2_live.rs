//! HTTP/2 in clear text, live: real h2c clients (curl `--http2-prior-knowledge`, nghttp) and server
//! (nghttpd, Debian's nghttp2 packages) talking across network namespaces, captured by the real
//! `node-worker` binary. Every request comes out exactly once, paired with its own response, with the
//! bodies the server sent; also for a connection the capture joined after it was up.
//! Root only, and skips with a message when nghttpd, nghttp or curl is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/netns.rs"]
mod netns;
#[path = "support/worker.rs"]
mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use netns::{wait_until, Netns, Node};
use serde_json::Value;
use worker::Worker;

fn tools_present(test: &str) -> bool {
    let missing: Vec<&str> = [
        "/usr/sbin/nghttpd",
        "/usr/bin/nghttp",
        "/usr/bin/h2load",
        "/usr/bin/curl",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    if missing.is_empty() {
        true
    } else {
        eprintln!("skipping {test}: missing {missing:?} (apt-get install nghttp2-server nghttp2-client curl)");
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
