//! HTTP parsing, pairing, the product's rules and the pair message, end to end through capture files
//! built packet by packet.

use std::io::Write;

use base64::Engine as _;

use interceptor_crds::config::WorkerConfig;
use node_worker::stats::DropReason;
use node_worker::synth::{chunked, gzip, http_request, http_response, Side};
use testkit::pipeline::{conversation, open_config, run, JSON};

#[test]
fn a_json_exchange_becomes_one_pair_message() {
    let mut c = conversation(1);
    c.client_sends(&http_request(
        "POST",
        "/v1/users?id=3",
        &[
            JSON,
            ("X-Dup", "a"),
            ("x-dup", "b"),
            ("Authorization", "Bearer secret"),
        ],
        br#"{"name":"ann"}"#,
    ));
    c.wait_us(1834);
    c.server_sends(&http_response(200, &[JSON], br#"{"id":3}"#));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.pairs.len(), 1, "{:?}", out.counters);
    let p = &out.pairs[0];
    assert_eq!(p["schema"], "interceptor.pair/v1");
    assert_eq!(p["node"], "test-node");
    assert_eq!(p["interceptor"], "test/interceptor");
    assert_eq!(p["interface"]["mode"], "file");
    assert_eq!(p["source"]["ip"], "10.0.0.1");
    assert_eq!(p["source"]["port"], 40001);
    assert_eq!(p["destination"]["port"], 8080);
    assert!(p["destination"]["pod"].is_null());
    assert_eq!(p["request"]["method"], "POST");
    assert_eq!(p["request"]["path"], "/v1/users?id=3");
    assert_eq!(p["request"]["version"], "HTTP/1.1");
    assert_eq!(p["request"]["body"], r#"{"name":"ann"}"#);
    assert_eq!(p["request"]["body_base64"], false);
    assert_eq!(p["response"]["status"], 200);
    assert_eq!(p["response"]["reason"], "X");
    assert_eq!(p["response"]["body"], r#"{"id":3}"#);
    // Headers keep order, case and duplicates; sensitive values are masked by default.
    let headers = p["request"]["headers"].as_array().unwrap();
    let names: Vec<_> = headers.iter().map(|h| h[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Host",
            "Content-Type",
            "X-Dup",
            "x-dup",
            "Authorization",
            "Content-Length"
        ]
    );
    assert_eq!(headers[4][1], "[REDACTED]");
    assert_eq!(headers[2][1], "a");
    let wire = http_request(
        "POST",
        "/v1/users?id=3",
        &[
            JSON,
            ("X-Dup", "a"),
            ("x-dup", "b"),
            ("Authorization", "Bearer secret"),
        ],
        br#"{"name":"ann"}"#,
    );
    assert_eq!(p["request"]["wire_bytes"], wire.len());
    assert!(p["latency_us"].as_i64().unwrap() >= 1834);
    assert!(p["request"]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(out.keys[0], "10.0.0.2:8080");
    assert_eq!(out.counters.pairs_emitted, 1);
    assert_eq!(out.counters.total_drops(), 0);
}

#[test]
fn masking_can_be_switched_off() {
    let mut c = conversation(1);
    c.client_sends(&http_request("GET", "/", &[("Cookie", "a=b")], b""));
    c.server_sends(&http_response(200, &[JSON, ("Set-Cookie", "x=y")], b"{}"));
    let mut config = WorkerConfig::default();
    config.redaction.mask_headers.clear();
    let out = run(c.frames(), &config);
    assert_eq!(out.pairs[0]["request"]["headers"][1][1], "a=b");
    assert_eq!(out.pairs[0]["response"]["headers"][1][1], "x=y");
}

#[test]
fn keep_alive_pipelining_and_interleaving_pair_in_order() {
    let mut c = conversation(1);
    // Three pipelined requests in one segment, answered in order, the last two in one segment.
    let mut requests = Vec::new();
    for i in 0..3 {
        requests.extend(http_request("GET", &format!("/item/{i}"), &[], b""));
    }
    c.client_sends(&requests);
    c.server_sends(&http_response(200, &[JSON], b"{\"i\":0}"));
    let mut two = http_response(200, &[JSON], b"{\"i\":1}");
    two.extend(http_response(200, &[JSON], b"{\"i\":2}"));
    c.server_sends(&two);
    // Then a plain keep-alive exchange.
    c.client_sends(&http_request("GET", "/item/3", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{\"i\":3}"));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.pairs.len(), 4);
    for (i, p) in out.pairs.iter().enumerate() {
        assert_eq!(p["request"]["path"], format!("/item/{i}"));
        assert_eq!(p["response"]["body"], format!("{{\"i\":{i}}}"));
    }
}

#[test]
fn chunked_with_trailers_gzip_and_close_delimited_bodies() {
    let json = br#"{"k":"v","list":[1,2,3]}"#.repeat(50);
    let mut c = conversation(1);
    let mut req = b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(chunked(&json, 100, &[("X-Checksum", "abc")]));
    c.client_sends(&req);
    let gz = gzip(&json);
    let mut res = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    res.extend(chunked(&gz, 333, &[]));
    c.server_sends(&res);
    // HTTP/1.0 response without a length: the body ends when the server closes.
    c.client_sends(b"GET /old HTTP/1.0\r\n\r\n");
    c.server_sends(
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":\"close\"}",
    );
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.pairs.len(), 2, "{}", out.counters.summary());
    let p = &out.pairs[0];
    assert_eq!(p["request"]["body"].as_str().unwrap().as_bytes(), &json[..]);
    assert_eq!(
        p["response"]["body"].as_str().unwrap().as_bytes(),
        &json[..]
    );
    assert_eq!(p["response"]["content_encoding"], "gzip");
    assert_eq!(p["request"]["wire_bytes"], req.len());
    assert_eq!(out.pairs[1]["response"]["body"], "{\"until\":\"close\"}");
    assert_eq!(out.pairs[1]["request"]["version"], "HTTP/1.0");
}

#[test]
fn head_interim_and_bodiless_statuses() {
    let mut c = conversation(1);
    // HEAD: the response's Content-Length describes a body that is not sent.
    c.client_sends(&http_request("HEAD", "/h", &[], b""));
    c.server_sends(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    );
    // 100-continue, then the body, then the final response.
    c.client_sends(b"POST /up HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    c.server_sends(b"HTTP/1.1 100 Continue\r\n\r\n");
    c.client_sends(b"{}");
    c.server_sends(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    // 204 and 304 have no body whatever they say.
    c.client_sends(&http_request("DELETE", "/d", &[JSON], b""));
    c.server_sends(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
    c.client_sends(&http_request("GET", "/n", &[JSON], b""));
    c.server_sends(b"HTTP/1.1 304 Not Modified\r\n\r\n");
    c.client_sends(&http_request("GET", "/last", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"[]"));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    let got: Vec<_> = out
        .summary()
        .into_iter()
        .map(|(m, t, s)| format!("{m} {t} {s}"))
        .collect();
    assert_eq!(
        got,
        [
            "HEAD /h 200",
            "POST /up 201",
            "DELETE /d 204",
            "GET /n 304",
            "GET /last 200"
        ]
    );
    assert_eq!(
        out.counters.responses, 6,
        "the interim 100 is parsed but not paired"
    );
}

#[test]
fn an_upgrade_stops_parsing_the_connection_and_is_counted() {
    let mut c = conversation(1);
    c.client_sends(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    c.server_sends(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    // What follows is websocket framing, including bytes that look like HTTP.
    c.client_sends(b"\x81\x05GET / HTTP/1.1\r\n\r\n");
    c.server_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(out.summary(), [("GET".into(), "/ws".into(), 101)]);
    assert_eq!(out.counters.flows_upgraded, 1);
    assert_eq!(out.counters.flows_tunneled, 0);
    assert_eq!(out.counters.requests, 1);
    assert_eq!(out.counters.total_drops(), 0);
}

/// A 101 whose request the capture lost still ends HTTP/1.x on the connection: the WebSocket
/// frames after it, HTTP-looking text included, are not parsed (issue 15, item 4). Before, only the
/// direction of the 101 stopped, and the client's frames were searched and parsed as requests.
#[test]
fn an_upgrade_answering_a_lost_request_stops_parsing_too() {
    let mut c = conversation(1);
    let lost = c.frames().len();
    c.client_sends(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    c.server_sends(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    for _ in 0..3 {
        c.client_sends(b"\x81\x20GET /chat HTTP/1.1\r\nHost: a\r\n\r\n");
        c.server_sends(b"\x81\x30HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
    c.close();
    let mut frames = c.into_frames();
    frames.remove(lost);
    let out = run(&frames, &open_config());
    assert_eq!(out.pairs.len(), 0, "{:?}", out.pairs);
    assert_eq!(out.counters.flows_upgraded, 1, "{}", out.counters.summary());
    assert_eq!(
        (out.counters.requests, out.counters.responses),
        (0, 1),
        "only the 101 is parsed: {}",
        out.counters.summary()
    );
    assert_eq!(
        out.counters.total_drops(),
        1,
        "the lost exchange: {}",
        out.counters.summary()
    );
}

/// An egress proxy carrying plain HTTP through CONNECT: the tunnel's exchanges are parsed and paired
/// like any others (issue 15, item 4). Before, everything after the `200` was ignored.
#[test]
fn plain_http_inside_a_connect_tunnel_is_paired() {
    let mut c = conversation(1);
    c.client_sends(b"CONNECT users.shop:80 HTTP/1.1\r\nHost: users.shop:80\r\n\r\n");
    // A 2xx to CONNECT has no body, whatever its head says (RFC 9110 section 9.3.6).
    c.server_sends(b"HTTP/1.1 200 Connection established\r\nContent-Length: 12\r\n\r\n");
    c.client_sends(&http_request(
        "POST",
        "/v1/users",
        &[JSON],
        br#"{"name":"ann"}"#,
    ));
    c.server_sends(&http_response(201, &[JSON], br#"{"id":3}"#));
    // Pipelined, and a request and its response in one segment each.
    c.client_sends(
        &[
            http_request("GET", "/v1/users/3", &[], b""),
            http_request("GET", "/v1/users/4", &[], b""),
        ]
        .concat(),
    );
    c.server_sends(
        &[
            http_response(200, &[JSON], br#"{"id":3}"#),
            http_response(200, &[JSON], br#"{"id":4}"#),
        ]
        .concat(),
    );
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(
        out.summary(),
        [
            ("POST".into(), "/v1/users".into(), 201),
            ("GET".into(), "/v1/users/3".into(), 200),
            ("GET".into(), "/v1/users/4".into(), 200),
        ],
        "{}",
        out.counters.summary()
    );
    assert_eq!(out.pairs[0]["request"]["body"], r#"{"name":"ann"}"#);
    assert_eq!(out.pairs[2]["response"]["body"], r#"{"id":4}"#);
    assert_eq!(out.counters.flows_tunneled, 0);
    assert_eq!(out.counters.requests, 4);
    // The CONNECT exchange itself has no allowed content type: the default rules drop it.
    assert_eq!(out.counters.total_drops(), 1, "{}", out.counters.summary());
    assert_eq!(out.counters.drops(DropReason::ContentType), 1);
}

/// TLS (or anything not HTTP/1.x) inside a CONNECT tunnel is ignored cheaply and counted as
/// tunneled: no parse error, no search through it for a message start, nothing more parsed, HTTP-
/// looking bytes included; also when the client sends its first tunnel bytes before the `200`
/// is seen (a client that does not wait, or a capture that shows them first), and when a gap comes
/// where the tunnel starts.
#[test]
fn tls_inside_a_connect_tunnel_is_ignored_cheaply_and_counted() {
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 GET / HTTP/1.1\r\n\r\n";
    for case in ["after the 200", "before the 200", "a gap at its start"] {
        let mut c = conversation(1);
        c.client_sends(b"CONNECT db:443 HTTP/1.1\r\nHost: db:443\r\n\r\n");
        if case == "before the 200" {
            c.client_sends(hello);
        }
        c.server_sends(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let lost = c.frames().len();
        if case != "before the 200" {
            c.client_sends(hello);
        }
        c.server_sends(b"\x16\x03\x03\x00\x40 server hello HTTP/1.1 200 OK\r\n\r\n");
        for _ in 0..3 {
            c.client_sends(b"\x17\x03\x03\x00\x20GET /x HTTP/1.1\r\n\r\n");
            c.server_sends(&[0x17; 3000]);
        }
        c.close();
        let mut frames = c.into_frames();
        if case == "a gap at its start" {
            frames.remove(lost);
        }
        let out = run(&frames, &open_config());
        let summary = out.counters.summary();
        assert_eq!(
            out.summary(),
            [("CONNECT".into(), "db:443".into(), 200)],
            "{case}: {summary}"
        );
        assert_eq!(out.counters.flows_tunneled, 1, "{case}: {summary}");
        assert_eq!(out.counters.flows_not_http, 0, "{case}: {summary}");
        assert_eq!(
            (out.counters.requests, out.counters.responses),
            (1, 1),
            "{case}: {summary}"
        );
        assert_eq!(out.counters.total_drops(), 0, "{case}: {summary}");
    }
}

/// A refused CONNECT (407) leaves the connection HTTP/1.x: the next request is read as one.
#[test]
fn a_refused_connect_leaves_the_connection_http() {
    let mut c = conversation(1);
    c.client_sends(b"CONNECT db:443 HTTP/1.1\r\nHost: db:443\r\n\r\n");
    c.server_sends(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\nno");
    c.client_sends(&http_request("GET", "/after", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(
        out.summary(),
        [
            ("CONNECT".into(), "db:443".into(), 407),
            ("GET".into(), "/after".into(), 200)
        ]
    );
    assert_eq!(out.counters.flows_tunneled, 0);
    assert_eq!(out.counters.total_drops(), 0);
}

#[test]
fn non_http_is_ignored_cheaply_and_counted() {
    let mut c = conversation(1);
    c.client_sends(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS client hello");
    c.server_sends(&vec![0x17; 5000]);
    c.client_sends(b"GET / HTTP/1.1\r\n\r\n");
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(out.pairs.len(), 0);
    assert_eq!(out.counters.flows_not_http, 1);
    assert_eq!(
        out.counters.requests, 0,
        "bytes after the first are not even parsed"
    );
    assert_eq!(out.counters.total_drops(), 0);
    assert!(out.peak_buffered < 1024);
}

#[test]
fn a_request_without_response_is_dropped_after_the_timeout() {
    let mut c = conversation(1);
    c.client_sends(&http_request("GET", "/slow", &[JSON], b""));
    c.wait_us(11_000_000);
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.client_sends(&http_request("GET", "/fast", &[JSON], b""));
    c.wait_us(9_000_000);
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.client_sends(&http_request("GET", "/never", &[JSON], b""));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.summary(), [("GET".into(), "/fast".into(), 200)]);
    assert_eq!(out.drops("response_timeout"), 1);
    assert_eq!(
        out.drops("unmatched_response"),
        1,
        "the late response is not paired with /fast"
    );
    assert_eq!(out.drops("unanswered"), 1);
}

fn exchange_with(
    request: Vec<u8>,
    response: Vec<u8>,
    config: &WorkerConfig,
) -> testkit::pipeline::Outcome {
    let mut c = conversation(1);
    c.client_sends(&request);
    c.server_sends(&response);
    c.close();
    run(c.frames(), config)
}

#[test]
fn content_type_rule_at_its_boundaries() {
    let defaults = WorkerConfig::default();
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Headers, Headers, bool); 7] = [
        (
            &[],
            &[("Content-Type", "Application/JSON; charset=utf-8")],
            true,
        ),
        (
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &[("Content-Type", "text/html")],
            true,
        ),
        (
            &[("content-type", "text/plain")],
            &[("Content-Type", "text/html")],
            false,
        ),
        (&[], &[], false),
        (
            &[],
            &[("Content-Type", "application/json-patch+json")],
            false,
        ),
        (&[], &[("Content-Type", " application/json ;q=1")], true),
        (&[], &[("Content-Type", "application/xml")], false),
    ];
    for (req_headers, res_headers, kept) in cases {
        let out = exchange_with(
            http_request("POST", "/x", req_headers, b"a=1"),
            http_response(200, res_headers, b"{}"),
            &defaults,
        );
        assert_eq!(
            out.pairs.len(),
            usize::from(kept),
            "{req_headers:?} / {res_headers:?}"
        );
        assert_eq!(out.drops("content_type"), u64::from(!kept));
    }
}

#[test]
fn status_path_agent_and_header_rules() {
    let defaults = WorkerConfig::default();
    let run_one =
        |target: &str, req_headers: &[(&str, &str)], status: u16, res_headers: &[(&str, &str)]| {
            let mut res = vec![JSON];
            res.extend_from_slice(res_headers);
            exchange_with(
                http_request("GET", target, req_headers, b""),
                http_response(status, &res, b"{}"),
                &defaults,
            )
        };
    for (status, kept) in [
        (200, true),
        (299, true),
        (300, true),
        (301, false),
        (302, true),
        (308, false),
        (399, true),
        (400, false),
        (404, false),
        (500, false),
        (503, false),
    ] {
        let out = run_one("/a", &[], status, &[]);
        assert_eq!(out.pairs.len(), usize::from(kept), "status {status}");
        assert_eq!(
            out.drops("status_code"),
            u64::from(!kept),
            "status {status}"
        );
    }
    for (target, kept) in [
        ("/healthz", false),
        ("/healthz?x=1", false),
        ("/healthz/", true),
        ("/metrics", false),
        ("/api/health", false),
        ("/api/v2/alive", false),
        ("/api/v2/detect?q", false),
        ("/api/v2/detector", true),
        ("/", true),
    ] {
        let out = run_one(target, &[], 200, &[]);
        assert_eq!(out.pairs.len(), usize::from(kept), "path {target}");
        assert_eq!(
            out.drops("excluded_path"),
            u64::from(!kept),
            "path {target}"
        );
    }
    let out = run_one("/a", &[("User-Agent", "kube-probe/1.30")], 200, &[]);
    assert_eq!(out.drops("user_agent"), 1);
    let out = run_one("/a", &[("User-Agent", "Mozilla/5.0 kube-probe")], 200, &[]);
    assert_eq!(out.pairs.len(), 1);
    let out = run_one("/a", &[("X-Soveren-Request", "1")], 200, &[]);
    assert_eq!(out.drops("excluded_header"), 1);
    let out = run_one("/a", &[], 200, &[("x-soveren-request", "1")]);
    assert_eq!(out.drops("excluded_header"), 1);
}

#[test]
fn size_limits_at_exactly_one_mebibyte() {
    let defaults = WorkerConfig::default();
    let head_len = http_request("POST", "/big", &[JSON], &[b'x'; 10]).len() - 10;
    for extra in [0usize, 1] {
        // Find the body size that makes the whole request exactly 1 MiB (+ extra).
        let mut body_len = 1_048_576 - head_len;
        while http_request("POST", "/big", &[JSON], &vec![b'x'; body_len]).len() > 1_048_576 {
            body_len -= 1;
        }
        let body = vec![b'x'; body_len + extra];
        let request = http_request("POST", "/big", &[JSON], &body);
        assert_eq!(request.len(), 1_048_576 + extra);
        let mut config = defaults.clone();
        config.limits.max_pair_bytes = 0;
        let out = exchange_with(request, http_response(200, &[JSON], b"{}"), &config);
        assert_eq!(out.pairs.len(), 1 - extra, "request of 1 MiB + {extra}");
        assert_eq!(out.drops("message_too_large"), extra as u64);
        // Known from Content-Length: nothing of the body was buffered.
        if extra == 1 {
            assert!(
                out.peak_buffered < 64 * 1024,
                "buffered {}",
                out.peak_buffered
            );
        }
    }
    // The pair rule: two halves within the message limit, together one byte over.
    let request = http_request("POST", "/p", &[JSON], &vec![b'a'; 600_000]);
    let response_head = http_response(200, &[JSON], b"").len();
    let mut response_body = 1_048_577 - request.len() - response_head;
    while http_response(200, &[JSON], &vec![b'b'; response_body]).len() + request.len() > 1_048_577
    {
        response_body -= 1;
    }
    let response = http_response(200, &[JSON], &vec![b'b'; response_body]);
    assert_eq!(request.len() + response.len(), 1_048_577);
    let out = exchange_with(request.clone(), response, &defaults);
    assert_eq!(out.drops("pair_too_large"), 1);
    let response = http_response(200, &[JSON], &vec![b'b'; response_body - 1]);
    let out = exchange_with(request, response, &defaults);
    assert_eq!(out.pairs.len(), 1);
}

#[test]
fn a_doomed_pair_stops_buffering_at_once() {
    // A chunked 8 MiB HTML response to a request without content type: dropped at the response head.
    let mut c = conversation(1);
    c.client_sends(&http_request("GET", "/page", &[], b""));
    let mut res =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    res.extend(chunked(&vec![b'h'; 8 << 20], 65_536, &[]));
    c.server_sends(&res);
    c.client_sends(&http_request("GET", "/next", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.drops("content_type"), 1);
    assert_eq!(
        out.summary(),
        [("GET".into(), "/next".into(), 200)],
        "the stream stays in step after it"
    );
    assert!(
        out.peak_buffered < 64 * 1024,
        "buffered {}",
        out.peak_buffered
    );
}

#[test]
fn bodies_are_decoded_and_bombs_kept_as_sent() {
    let json = br#"{"a":1}"#;
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(json).unwrap();
    let mut br = Vec::new();
    brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
        .write_all(json)
        .unwrap();
    for (coding, body) in [
        ("gzip", gzip(json)),
        ("deflate", deflate.finish().unwrap()),
        ("br", br),
    ] {
        let out = exchange_with(
            http_request("GET", "/", &[], b""),
            http_response(200, &[JSON, ("Content-Encoding", coding)], &body),
            &WorkerConfig::default(),
        );
        assert_eq!(out.pairs[0]["response"]["body"], r#"{"a":1}"#, "{coding}");
        assert_eq!(out.pairs[0]["response"]["content_encoding"], coding);
    }
    // Within the wire limits, past maxDecodedBodyBytes once decoded: kept as sent (issue 15, item
    // 5), the other half decoded as usual. Before, the pair was dropped (decoded_too_large).
    let bomb = gzip(&vec![b'0'; 50 << 20]);
    assert!(bomb.len() < 100_000);
    let out = exchange_with(
        http_request(
            "POST",
            "/",
            &[JSON, ("Content-Encoding", "gzip")],
            &gzip(json),
        ),
        http_response(200, &[JSON, ("Content-Encoding", "gzip")], &bomb),
        &WorkerConfig::default(),
    );
    assert_eq!(out.pairs.len(), 1, "{}", out.counters.summary());
    assert_eq!(out.counters.total_drops(), 0);
    let response = &out.pairs[0]["response"];
    assert_eq!(
        response["body"],
        base64::engine::general_purpose::STANDARD.encode(&bomb)
    );
    assert_eq!(response["body_base64"], true);
    assert_eq!(response["content_encoding"], "gzip");
    assert_eq!(response["body_decoded"], false);
    let request = &out.pairs[0]["request"];
    assert_eq!(request["body"], r#"{"a":1}"#);
    assert!(
        request.get("body_decoded").is_none(),
        "present only on a body kept as sent: {request}"
    );
    assert!(
        out.peak_buffered < 2 * bomb.len() + 4096,
        "only the encoded bytes are held: {}",
        out.peak_buffered
    );
    // Binary bodies travel as base64.
    let out = exchange_with(
        http_request("POST", "/bin", &[JSON], &[0xff, 0xfe, 0x00]),
        http_response(200, &[JSON], b"{}"),
        &WorkerConfig::default(),
    );
    assert_eq!(out.pairs[0]["request"]["body_base64"], true);
    assert_eq!(out.pairs[0]["request"]["body"], "//4A");
}

#[test]
fn garbage_between_messages_is_skipped_and_counted() {
    let mut c = conversation(1);
    c.client_sends(&http_request("GET", "/1", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.client_sends(b"\x00\x01garbage that is not http\r\n\r\n");
    c.client_sends(&http_request("GET", "/2", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.drops("http_parse_error"), 1);
    assert_eq!(out.summary()[0], ("GET".into(), "/1".into(), 200));
    // /2 is found again, and paired: the server had received it when it answered.
    assert_eq!(out.summary().len(), 2, "{}", out.counters.summary());
}

#[test]
fn oversized_heads_and_excess_pipelining_are_bounded() {
    let mut c = conversation(1);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000));
    c.client_sends(huge.as_bytes());
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.drops("header_too_large"), 1);
    assert!(out.peak_buffered <= 70 * 1024);

    let mut c = conversation(2);
    let mut many = Vec::new();
    for i in 0..100 {
        many.extend(http_request("GET", &format!("/{i}"), &[], b""));
    }
    c.client_sends(&many);
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(
        out.drops("too_many_pending"),
        36,
        "{}",
        out.counters.summary()
    );
    assert_eq!(out.drops("unanswered"), 64);

    // Requests beyond the limit keep their places: the responses that follow stay in step.
    let mut c = conversation(3);
    let (mut requests, mut responses) = (Vec::new(), Vec::new());
    for i in 0..70 {
        requests.extend(http_request("GET", &format!("/{i}"), &[], b""));
        responses.extend(http_response(
            200,
            &[JSON],
            format!("{{\"i\":{i}}}").as_bytes(),
        ));
    }
    c.client_sends(&requests);
    c.server_sends(&responses);
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.pairs.len(), 64);
    assert_eq!(out.drops("too_many_pending"), 6);
    for p in &out.pairs {
        let i = p["request"]["path"]
            .as_str()
            .unwrap()
            .trim_start_matches('/');
        assert_eq!(p["response"]["body"], format!("{{\"i\":{i}}}"));
    }

    // Far beyond it, the connection is given up on, and every request is accounted for.
    let mut c = conversation(4);
    let mut flood = Vec::new();
    for i in 0..1000 {
        flood.extend(http_request("GET", &format!("/{i}"), &[], b""));
    }
    c.client_sends(&flood);
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert!(
        out.counters.requests < 300,
        "parsing stops once the connection is given up"
    );
    assert_eq!(out.drops("too_many_pending"), out.counters.requests);
    assert_eq!(out.counters.total_drops(), out.counters.requests);
}

#[test]
fn every_rule_switched_off_keeps_everything() {
    let mut c = conversation(1);
    c.client_sends(&http_request(
        "GET",
        "/healthz",
        &[("User-Agent", "kube-probe/1"), ("X-Soveren-Request", "y")],
        b"",
    ));
    c.server_sends(&http_response(
        503,
        &[("Content-Type", "text/plain")],
        &vec![b'x'; 2 << 20],
    ));
    c.close();
    let mut config = open_config();
    config.limits.max_message_bytes = 0;
    config.limits.max_pair_bytes = 0;
    config.limits.max_flow_buffer_bytes = 8 << 20;
    let out = run(c.frames(), &config);
    assert_eq!(out.summary(), [("GET".into(), "/healthz".into(), 503)]);
    assert_eq!(
        out.pairs[0]["response"]["body"].as_str().unwrap().len(),
        2 << 20
    );
    // And with the memory bound below the message, it is a counted drop, never unbounded memory.
    config.limits.max_flow_buffer_bytes = 1 << 20;
    let out = run(c.frames(), &config);
    assert_eq!(out.drops("flow_buffer_full"), 1);
    assert!(out.peak_buffered <= 1 << 20);
}

#[test]
fn ipv6_and_server_speaking_first_are_handled() {
    let mut c = node_worker::synth::Conversation::new(
        testkit::pipeline::addr("[fd00::1]:40000"),
        testkit::pipeline::addr("[fd00::2]:80"),
        1_700_000_000_000_000,
    );
    c.handshake();
    c.send(Side::Client, &http_request("GET", "/v6", &[], b""));
    c.send(Side::Server, &http_response(200, &[JSON], b"{}"));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(out.pairs[0]["source"]["ip"], "fd00::1");
}
