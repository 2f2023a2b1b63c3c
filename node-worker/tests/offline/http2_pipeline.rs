//! HTTP/2 with prior knowledge (h2c) through the whole pipeline, on synthetic TCP conversations:
//! pairs exactly as the pair message writes them, many interleaved streams, frames cut at every byte,
//! a capture that joins the connection late, and the counted drops (RST_STREAM, GOAWAY, oversized
//! frames, what cannot be decoded).

use node_worker::synth::h2::{frame, literal, PREFACE};
use node_worker::synth::{gzip, Conversation, Frame};
use serde_json::json;
use testkit::pipeline::{addr, conversation, open_config, run, Outcome};

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let block: Vec<u8> = fields
        .iter()
        .flat_map(|(n, v)| literal(n, v, false))
        .collect();
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(1, flags, stream, &block)
}

fn data(stream: u32, body: &[u8], end_stream: bool) -> Vec<u8> {
    frame(0, if end_stream { END_STREAM } else { 0 }, stream, body)
}

fn settings() -> Vec<u8> {
    frame(4, 0, 0, &[0, 3, 0, 0, 0, 100])
}

fn get(stream: u32, path: &str) -> Vec<u8> {
    headers(
        stream,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "api:8080"),
            ("user-agent", "curl/8"),
        ],
        true,
    )
}

fn json_response(stream: u32, body: &str) -> Vec<u8> {
    let mut out = headers(
        stream,
        &[(":status", "200"), ("content-type", "application/json")],
        false,
    );
    out.extend(data(stream, body.as_bytes(), true));
    out
}

/// The client's preface and SETTINGS, the server's SETTINGS, then `client` and `server` bytes.
fn h2c(client: &[u8], server: &[u8]) -> Vec<Frame> {
    let mut c = conversation(1);
    c.client_sends(&[PREFACE, &settings()].concat());
    c.server_sends(&settings());
    c.client_sends(client);
    c.server_sends(server);
    c.close();
    c.into_frames()
}

fn paths(out: &Outcome) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = out
        .pairs
        .iter()
        .map(|p| {
            (
                p["request"]["path"]
                    .as_str()
                    .unwrap_or("<null>")
                    .to_string(),
                p["response"]["body"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_get_pairs_exactly_as_the_contract_writes_it() {
    let out = run(
        &h2c(&get(1, "/v1/users?id=3"), &json_response(1, "{\"id\":3}")),
        &open_config(),
    );
    assert_eq!(out.pairs.len(), 1, "{:?}", out.counters);
    let p = &out.pairs[0];
    let mut request = p["request"].clone();
    let mut response = p["response"].clone();
    for m in [&mut request, &mut response] {
        m.as_object_mut().unwrap().remove("timestamp");
    }
    assert_eq!(
        request,
        json!({"method": "GET", "path": "/v1/users?id=3", "version": "HTTP/2",
               "headers": [["host", "api:8080"], ["user-agent", "curl/8"]],
               "body": "", "body_base64": false, "content_encoding": null,
               "wire_bytes": get(1, "/").len() + 13, "stream_id": 1, "trailers": []})
    );
    assert_eq!(
        response,
        json!({"status": 200, "reason": "", "version": "HTTP/2",
               "headers": [["content-type", "application/json"]],
               "body": "{\"id\":3}", "body_base64": false, "content_encoding": null,
               "wire_bytes": json_response(1, "{\"id\":3}").len(), "stream_id": 1, "trailers": []})
    );
    assert_eq!(p["source"]["port"], 40001);
    assert_eq!(p["schema"], "interceptor.pair/v1");
    assert_eq!(out.counters.flows_not_http, 0);
    assert_eq!(out.counters.total_drops(), 0);
    assert_eq!((out.counters.requests, out.counters.responses), (1, 1));
}

#[test]
fn the_default_rules_apply() {
    // Defaults: JSON kept; a response without an allowed type dropped; /healthz excluded.
    let mut client = get(1, "/a");
    client.extend(get(3, "/healthz"));
    client.extend(get(5, "/b"));
    let mut server = json_response(1, "{}");
    server.extend(json_response(3, "{}"));
    server.extend(headers(
        5,
        &[(":status", "200"), ("content-type", "text/html")],
        false,
    ));
    server.extend(data(5, b"<p>", true));
    let out = run(&h2c(&client, &server), &Default::default());
    assert_eq!(paths(&out), [("/a".into(), "{}".into())]);
    assert_eq!(out.drops("excluded_path"), 1);
    assert_eq!(out.drops("content_type"), 1);
}

#[test]
fn grpc_messages_status_and_method() {
    let framed = |flag: u8, m: &[u8]| {
        let mut v = vec![flag];
        v.extend_from_slice(&(m.len() as u32).to_be_bytes());
        v.extend_from_slice(m);
        v
    };
    let mut client = headers(
        1,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/helloworld.Greeter/SayHello"),
            (":authority", "greeter:50051"),
            ("content-type", "application/grpc"),
            ("grpc-encoding", "gzip"),
            ("te", "trailers"),
        ],
        false,
    );
    client.extend(data(1, &framed(1, &gzip(b"\x0a\x05world")), true));
    let mut server = headers(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    let body = [framed(0, b"\x0a\x0bHello world"), framed(0, b"")].concat();
    // One message cut across two DATA frames.
    server.extend(data(1, &body[..7], false));
    server.extend(data(1, &body[7..], false));
    server.extend(headers(
        1,
        &[("grpc-status", "0"), ("grpc-message", "OK")],
        true,
    ));
    let frames = h2c(&client, &server);
    // Not kept by the default content types...
    let out = run(&frames, &Default::default());
    assert_eq!(out.pairs.len(), 0);
    assert_eq!(out.drops("content_type"), 1);
    // ...only when configured.
    let mut config = interceptor_crds::config::WorkerConfig::default();
    config.filters.content_types = vec!["application/json".into(), "application/grpc".into()];
    let out = run(&frames, &config);
    assert_eq!(out.pairs.len(), 1, "{:?}", out.counters);
    let p = &out.pairs[0];
    assert_eq!(
        p["request"]["grpc"],
        json!({"service": "helloworld.Greeter", "method": "SayHello", "encoding": "gzip",
               "count": 1, "messages": ["CgV3b3JsZA=="]})
    );
    assert_eq!(
        p["response"]["grpc"],
        json!({"status": 0, "message": "OK", "encoding": null, "count": 2,
               "messages": ["CgtIZWxsbyB3b3JsZA==", ""]})
    );
    assert_eq!(
        p["response"]["trailers"],
        json!([["grpc-status", "0"], ["grpc-message", "OK"]])
    );
    assert_eq!(p["request"]["path"], "/helloworld.Greeter/SayHello");
}

#[test]
fn many_interleaved_streams_each_with_its_own_response() {
    let n = 40u32;
    let ids: Vec<u32> = (0..n).map(|i| 2 * i + 1).collect();
    let mut client = Vec::new();
    for &s in &ids {
        client.extend(headers(
            s,
            &[(":method", "POST"), (":path", &format!("/s/{s}"))],
            false,
        ));
    }
    for &s in ids.iter().rev() {
        client.extend(data(s, format!("req{s}").as_bytes(), true));
    }
    let mut server = Vec::new();
    for &s in ids.iter().rev() {
        server.extend(headers(s, &[(":status", "200")], false));
    }
    for half in [0, 1] {
        for &s in &ids {
            let body = format!("{{\"stream\":{s}}}");
            let (a, b) = body.split_at(body.len() / 2);
            server.extend(data(s, [a, b][half].as_bytes(), half == 1));
        }
    }
    let out = run(&h2c(&client, &server), &open_config());
    assert_eq!(out.pairs.len(), n as usize, "{:?}", out.counters);
    for p in &out.pairs {
        let s = p["request"]["stream_id"].as_u64().unwrap();
        assert_eq!(p["response"]["stream_id"], s);
        assert_eq!(p["request"]["path"], format!("/s/{s}"));
        assert_eq!(p["request"]["body"], format!("req{s}"));
        assert_eq!(p["response"]["body"], format!("{{\"stream\":{s}}}"));
    }
    assert_eq!(out.counters.total_drops(), 0);
}

#[test]
fn frames_cut_at_every_byte_pair_as_if_whole() {
    let mut client = [PREFACE, &settings()].concat();
    client.extend(get(1, "/one"));
    client.extend(headers(3, &[(":method", "PUT"), (":path", "/two")], false));
    client.extend(data(3, b"{\"a\":1}", true));
    let mut server = settings();
    server.extend(json_response(3, "{\"two\":2}"));
    server.extend(json_response(1, "{\"one\":1}"));
    let whole = {
        let mut c = conversation(1);
        c.client_sends(&client);
        c.server_sends(&server);
        c.close();
        run(c.frames(), &open_config())
    };
    assert_eq!(whole.pairs.len(), 2);
    for at in 1..client.len().max(server.len()) {
        let mut c = conversation(1);
        let (c1, c2) = client.split_at(at.min(client.len()));
        let (s1, s2) = server.split_at(at.min(server.len()));
        c.client_sends(c1);
        if !c2.is_empty() {
            c.client_sends(c2);
        }
        c.server_sends(s1);
        if !s2.is_empty() {
            c.server_sends(s2);
        }
        c.close();
        let out = run(c.frames(), &open_config());
        assert_eq!(paths(&out), paths(&whole), "cut at {at}");
        assert_eq!(out.counters.total_drops(), 0, "cut at {at}");
    }
}

#[test]
fn the_servers_settings_captured_before_the_clients_preface() {
    let mut c = conversation(1);
    c.server_sends(&settings());
    c.client_sends(&[PREFACE, &settings(), &get(1, "/x")].concat());
    c.server_sends(&json_response(1, "{}"));
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(paths(&out), [("/x".into(), "{}".into())]);
    assert_eq!(out.counters.flows_not_http, 0);
}

#[test]
fn reset_refused_cut_and_oversized_streams_are_counted() {
    let mut client = Vec::new();
    for s in [1, 3, 5, 7, 9] {
        client.extend(get(s, "/"));
    }
    // Stream 11 sends a DATA frame larger than maxMessageBytes and maxHeaderBytes allow.
    client.extend(headers(
        11,
        &[(":method", "POST"), (":path", "/big")],
        false,
    ));
    client.extend(data(11, &vec![b'x'; 70_000], true));
    client.extend(get(13, "/after"));
    let mut server = Vec::new();
    server.extend(frame(3, 0, 1, &[0, 0, 0, 8])); // RST_STREAM(CANCEL) on 1
    server.extend(json_response(3, "{}"));
    server.extend(headers(5, &[(":status", "200")], false)); // cut by the connection's end
    server.extend(json_response(13, "{}"));
    server.extend(frame(7, 0, 0, &[0, 0, 0, 13, 0, 0, 0, 0])); // GOAWAY: last stream 13
    let mut config = open_config();
    config.limits.max_message_bytes = 50_000;
    let mut c = conversation(1);
    c.client_sends(&[PREFACE, &settings()].concat());
    c.client_sends(&client);
    c.server_sends(&server);
    c.close();
    let out = run(c.frames(), &config);
    assert_eq!(
        paths(&out),
        [("/".into(), "{}".into()), ("/after".into(), "{}".into())]
    );
    assert_eq!(out.drops("http2_stream_reset"), 1);
    assert_eq!(out.drops("http2_frame_too_large"), 1);
    assert_eq!(out.drops("stream_gap"), 1, "stream 5's response was cut");
    assert_eq!(out.drops("unanswered"), 2, "streams 7 and 9");
    assert_eq!(out.counters.total_drops(), 5);
}

/// The capture that the detection tests used to count as not HTTP: the preface, then a HEADERS
/// frame whose block is not HPACK (text). Now the connection is read as HTTP/2 and the block is a
/// counted header error, never an HTTP/1 parse.
#[test]
fn a_block_that_is_not_hpack_is_a_counted_header_error() {
    let client = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x14\x01\x05\x00\x00\x00\x01GET / HTTP/1.1\r\n\r\n\x00\x00";
    let server = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x01\x01\x05\x00\x00\x00\x01\x88";
    let mut c = conversation(1);
    c.client_sends(&[PREFACE, client].concat());
    c.server_sends(server);
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(out.counters.flows_not_http, 0);
    assert_eq!(out.counters.requests, 0);
    assert_eq!(out.drops("http2_header_error"), 1);
    assert_eq!(out.drops("unmatched_response"), 1);
    assert_eq!(out.drops("http_parse_error"), 0);
    assert!(out.pairs.is_empty());
}

/// A capture started after the connection was up and the HPACK tables were filled: frames are
/// recognised by validation, what the tables held before is unknown, what was added since is known.
#[test]
fn a_capture_joining_mid_connection() {
    let mut c = Conversation::new(
        addr("10.0.0.1:40001"),
        addr("10.0.0.2:8080"),
        1_700_000_000_000_000,
    );
    // Request on stream 21: :method GET (static), a field from before the join (index 62, in fact
    // the :path), a new header added to the table.
    let mut block = vec![0x82, 0xbe];
    block.extend(literal("x-request-id", "r-21", true));
    c.client_sends(&frame(1, END_HEADERS | END_STREAM, 21, &block));
    // Response: :status 200, content-type from before the join (index 62 of the server's table).
    let mut res = frame(1, END_HEADERS, 21, &[0x88, 0xbe]);
    res.extend(data(21, b"{\"late\":true}", true));
    c.server_sends(&res);
    // The next request uses the entry added after the join (now index 62) and a literal path.
    let mut block = vec![0x82, 0xbe];
    block.extend(literal(":path", "/known", false));
    c.client_sends(&frame(1, END_HEADERS | END_STREAM, 23, &block));
    c.server_sends(&json_response(23, "{}"));
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(out.pairs.len(), 2, "{:?}", out.counters);
    let first = &out.pairs[0];
    assert_eq!(
        first["request"]["path"],
        serde_json::Value::Null,
        "unknown, never invented"
    );
    assert_eq!(first["request"]["unknown_headers"], json!([null]));
    assert_eq!(
        first["request"]["headers"],
        json!([["x-request-id", "r-21"]])
    );
    assert_eq!(first["response"]["unknown_headers"], json!([null]));
    assert_eq!(first["response"]["body"], "{\"late\":true}");
    let second = &out.pairs[1];
    assert_eq!(second["request"]["path"], "/known");
    assert_eq!(
        second["request"]["headers"],
        json!([["x-request-id", "r-21"]])
    );
    assert_eq!(out.counters.flows_not_http, 0);
    assert_eq!(out.counters.total_drops(), 0);
}

/// HTTP/1.1 `Upgrade: h2c` answered with `101 Switching Protocols` (RFC 7540 section 3.2): the
/// upgrade request is stream 1 and pairs with its HTTP/2 response; the connection goes on as HTTP/2
/// (the server's frames in the same segment as the 101 included).
#[test]
fn an_upgrade_to_h2c_goes_on_as_http2() {
    let mut c = conversation(1);
    c.client_sends(
        b"GET /up HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    let mut server =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    server.extend(settings());
    server.extend(json_response(1, "{\"up\":1}"));
    c.server_sends(&server);
    c.client_sends(&[PREFACE, &settings(), &get(3, "/next")].concat());
    c.server_sends(&json_response(3, "{\"next\":3}"));
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(
        paths(&out),
        [
            ("/next".into(), "{\"next\":3}".into()),
            ("/up".into(), "{\"up\":1}".into())
        ],
        "{:?}",
        out.counters
    );
    let up = out
        .pairs
        .iter()
        .find(|p| p["request"]["path"] == "/up")
        .unwrap();
    assert_eq!(up["request"]["version"], "HTTP/1.1");
    assert_eq!(up["response"]["version"], "HTTP/2");
    assert_eq!(up["response"]["stream_id"], 1);
    assert_eq!(out.counters.flows_tunneled, 0);
    assert_eq!(
        out.counters.flows_upgraded, 0,
        "h2c is decoded, not counted as upgraded"
    );
    assert_eq!(out.counters.total_drops(), 0);
    // A 101 to anything else is a tunnel, as before.
    let mut c = conversation(2);
    c.client_sends(
        b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    c.server_sends(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(out.counters.flows_upgraded, 1);
    assert_eq!(out.counters.flows_tunneled, 0);
}

/// An HTTP/1 request answered by an HTTP/2 server's SETTINGS (a server that speaks only HTTP/2 with
/// prior knowledge, e.g. nghttpd to `nghttp -u`): the connection is opaque and the request waits
/// unanswered, as for any server answering in another protocol; nothing HTTP/1 read is lost silently.
#[test]
fn an_http1_request_answered_in_http2_is_opaque() {
    let mut c = conversation(1);
    c.client_sends(b"GET /a HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n");
    c.server_sends(&settings());
    c.close();
    let out = run(c.frames(), &open_config());
    assert_eq!(out.counters.flows_not_http, 1);
    assert_eq!(out.counters.requests, 1);
    assert_eq!(out.drops("unanswered"), 1);
    assert_eq!(out.counters.total_drops(), 1);
}

/// The benchmarks' HTTP/2 capture (`capture-gen --h2`): with the product's default rules every
/// stream is one pair, with its own answer (each JSON answer names its request's path, a POST's body
/// too), nothing dropped or unknown: what the callgrind figure of HTTP/2 counts is right.
#[test]
fn the_generated_h2_mix_gives_every_stream_its_own_pair() {
    let options = node_worker::synth::mix::MixOptions {
        target_bytes: 3_000_000,
        connections: 6,
        seed: 5,
        ..Default::default()
    };
    let mut frames = Vec::new();
    let stats = node_worker::synth::h2mix::generate(&options, |f| {
        frames.push(f.clone());
        Ok(())
    })
    .unwrap();
    let out = run(&frames, &Default::default());
    assert!(stats.expected_pairs > 500, "{stats:?}");
    assert_eq!(
        out.pairs.len() as u64,
        stats.expected_pairs,
        "{:?}",
        out.counters
    );
    assert_eq!(out.counters.total_drops(), 0);
    assert_eq!(out.counters.flows_not_http, 0);
    let mut posts = 0;
    let mut seen = std::collections::HashSet::new();
    for p in &out.pairs {
        let path = p["request"]["path"].as_str().unwrap();
        assert!(seen.insert(path.to_string()), "{path} once");
        let named = format!(r#"{{"path":"{path}","#);
        assert!(
            p["response"]["body"].as_str().unwrap().starts_with(&named),
            "{p}"
        );
        assert_eq!(p["request"]["version"], "HTTP/2");
        assert!(p["request"]["unknown_headers"].is_null(), "{p}");
        let host = &p["request"]["headers"][0];
        assert_eq!(*host, json!(["host", "10.1.0.2:8082"]), "{p}");
        if p["request"]["method"] == "POST" {
            posts += 1;
            assert!(
                p["request"]["body"].as_str().unwrap().starts_with(&named),
                "{p}"
            );
        }
    }
    assert_eq!(posts, stats.exchanges["h2_post"]);
}
