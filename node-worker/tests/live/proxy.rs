//! CONNECT tunnels through a real forward proxy (Debian's tinyproxy), captured between the client and
//! the proxy by the real `node-worker` binary (issue 15, item 4): plain HTTP inside a tunnel is paired
//! like any exchange; a tunnel whose bytes are not HTTP (TLS records) is ignored after its first bytes
//! and counted as tunneled, never as a parse error.
//! Root only, and skips with a message when tinyproxy is missing (`apt-get install tinyproxy-bin`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use testkit::http::{echo, read_response, Request, Server};
use testkit::netns::{self, veth, Netns};
use testkit::wait::wait_until;
use testkit::worker::Worker;

const TINYPROXY: &str = "/usr/bin/tinyproxy";

/// tinyproxy in `ns`, listening on `addr:3128`, in the foreground; waits until it accepts connections.
fn start_tinyproxy(ns: &mut Netns, addr: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ilt-proxy-")
        .tempdir()
        .unwrap();
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port 3128\nListen {addr}\nTimeout 30\nMaxClients 16\nLogLevel Critical\n\
             Allow 10.0.0.0/8\nConnectPort 8080\nConnectPort 8443\n"
        ),
    )
    .unwrap();
    ns.spawn(Path::new(TINYPROXY), &["-d", "-c", &conf.to_string_lossy()]);
    let up = wait_until(Duration::from_secs(10), || {
        // bash's /dev/tcp: a connection from inside the namespace, without a panic on refusal.
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{addr}/3128"))
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "tinyproxy did not start on {addr}:3128");
    dir
}

/// Opens a tunnel to `target` through the proxy at `proxy`, from `ns`: returns the stream once the
/// proxy's `200` head has been read whole.
fn tunnel(ns: &Netns, proxy: &str, target: &str) -> TcpStream {
    let mut stream = testkit::http::connect(ns, proxy.parse().unwrap());
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the proxy closed: {head:?}"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(
        head.contains(" 200 "),
        "the proxy refused the tunnel: {head}"
    );
    stream
}

/// A TCP server in `ns` on `addr` that echoes every byte back (a stand-in for a TLS server: the
/// tunnel's bytes are TLS records).
fn echo_bytes_server(ns: &Netns, addr: &str) -> std::thread::JoinHandle<()> {
    let listener = ns.listen(addr);
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    })
}

#[test]
fn connect_tunnels_through_a_real_proxy_plain_http_paired_tls_counted() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("connect_tunnels_through_a_real_proxy_plain_http_paired_tls_counted") {
        return;
    }
    if !Path::new(TINYPROXY).exists() {
        eprintln!("skipping: {TINYPROXY} missing (apt-get install tinyproxy-bin)");
        return;
    }
    let client = Netns::new("px-c");
    let mut server = Netns::new("px-s");
    veth(
        &client,
        "c0",
        "10.216.1.1/30",
        &server,
        "s0",
        "10.216.1.2/30",
    );
    let web = Server::start(&server, "10.216.1.2:8080");
    let tls = echo_bytes_server(&server, "10.216.1.2:8443");
    let _conf = start_tinyproxy(&mut server, "10.216.1.2");
    let path = client.path().to_string_lossy().into_owned();
    let mut worker = Worker::start(&["--interface", "c0", "--netns", &path], None);
    worker.wait_capturing();

    // Plain HTTP through the tunnel, keep-alive: three JSON exchanges.
    let proxy = "10.216.1.2:3128";
    let mut stream = tunnel(&client, proxy, "10.216.1.2:8080");
    let mut buf = Vec::new();
    let bodies: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"through":"proxy","n":{i}}}"#))
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        let request = Request::post_json("/echo", body);
        stream
            .write_all(&request.encode("10.216.1.2:8080", i == 2))
            .unwrap();
        let response = read_response(&mut stream, &mut buf);
        assert_eq!(response.status(), 200);
        assert_eq!(response.body, echo(body.as_bytes()));
    }
    drop(stream);

    // TLS records through another tunnel (HTTP-looking text inside them included).
    let mut stream = tunnel(&client, proxy, "10.216.1.2:8443");
    let records: [&[u8]; 3] = [
        b"\x16\x03\x01\x00\x40client hello GET / HTTP/1.1\r\n\r\n",
        b"\x17\x03\x03\x00\x20POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"\x17\x03\x03\x00\x10application data",
    ];
    for record in records {
        stream.write_all(record).unwrap();
        let mut back = vec![0u8; record.len()];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, record);
    }
    drop(stream);
    let _ = tls.join();
    std::thread::sleep(Duration::from_millis(300));

    let done = worker.stop();
    let summary = format!("{} {}", done.stats["counters"], done.stats["drops"]);
    let through: Vec<&str> = done
        .pairs
        .iter()
        .filter(|p| p["request"]["path"] == "/echo")
        .map(|p| p["request"]["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        through,
        bodies.iter().map(String::as_str).collect::<Vec<_>>(),
        "every exchange inside the tunnel, once, in order: {summary}"
    );
    for pair in done
        .pairs
        .iter()
        .filter(|p| p["request"]["path"] == "/echo")
    {
        assert_eq!(pair["response"]["status"], 200);
        assert_eq!(
            pair["response"]["body"].as_str().unwrap_or("").as_bytes(),
            echo(pair["request"]["body"].as_str().unwrap_or("").as_bytes()).as_slice()
        );
    }
    assert_eq!(
        web.received().len(),
        3,
        "the server saw the tunnel's requests"
    );
    assert_eq!(
        done.counter("flows_tunneled"),
        1,
        "the TLS tunnel: {summary}"
    );
    assert_eq!(done.drops("http_parse_error"), 0, "{summary}");
    assert_eq!(
        done.counter("requests"),
        5,
        "two CONNECTs and the tunnel's three requests, nothing from the TLS records: {summary}"
    );
    // The CONNECTs' answers carry no allowed Content-Type: the default rules drop those two pairs.
    assert_eq!(done.drops("content_type"), 2, "{summary}");
    assert_eq!(done.total_drops(), 2, "{summary}");
}
