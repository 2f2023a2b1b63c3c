//! TCP reassembly under loss, reordering, duplication, overlap, port reuse, mid-stream starts and
//! memory pressure, seen through the pairs the pipeline emits.

use interceptor_crds::config::WorkerConfig;
use node_worker::synth::{http_request, http_response, Conversation, Frame, Side};
use testkit::pipeline::{addr, conversation, run, JSON};
use testkit::sink::TestSink;

/// A keep-alive conversation of `n` JSON exchanges with bodies large enough to span several segments.
fn exchanges(n: usize, mss: usize) -> (Conversation, Vec<String>) {
    let mut c = conversation(1);
    c.mss = mss;
    let mut paths = Vec::new();
    for i in 0..n {
        let path = format!("/e/{i}");
        let body = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "p".repeat(300 + i * 37));
        c.client_sends(&http_request("POST", &path, &[JSON], body.as_bytes()));
        c.server_sends(&http_response(200, &[JSON], body.as_bytes()));
        paths.push(path);
    }
    c.close();
    (c, paths)
}

fn paths_of(out: &testkit::pipeline::Outcome) -> Vec<String> {
    out.summary().into_iter().map(|(_, p, _)| p).collect()
}

/// Checks that every emitted pair is intact: the response echoes the request body.
fn assert_consistent(out: &testkit::pipeline::Outcome) {
    for p in &out.pairs {
        assert_eq!(
            p["request"]["body"], p["response"]["body"],
            "a request paired with another's response"
        );
    }
}

#[test]
fn reordered_duplicated_and_overlapping_segments_change_nothing() {
    let (c, paths) = exchanges(6, 200);
    let frames = c.into_frames();
    // Swap neighbours, duplicate every third packet, and re-send every fifth shifted by half a segment.
    let mut shuffled: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        if i + 1 < frames.len() && i % 4 == 1 {
            shuffled.push(frames[i + 1].clone());
            shuffled.push(frames[i].clone());
            i += 2;
        } else {
            shuffled.push(frames[i].clone());
            if i % 3 == 0 {
                shuffled.push(frames[i].clone());
            }
            i += 1;
        }
    }
    let out = run(&shuffled, &WorkerConfig::default());
    assert_eq!(paths_of(&out), paths, "{}", out.counters.summary());
    assert_consistent(&out);
    assert!(out.counters.bytes_retransmitted > 0);
    assert_eq!(out.counters.bytes_missing, 0);
}

#[test]
fn overlapping_retransmission_with_different_boundaries() {
    let mut c = conversation(1);
    let request = http_request("POST", "/o", &[JSON], br#"{"overlap":true}"#);
    let server_seq = 500_001;
    let client_seq = 1_001;
    // First 30 bytes, then bytes 10..60 (overlapping), then the rest.
    c.raw_segment(
        Side::Client,
        client_seq,
        Some(server_seq),
        false,
        false,
        false,
        &request[..30],
    );
    c.raw_segment(
        Side::Client,
        client_seq + 10,
        Some(server_seq),
        false,
        false,
        false,
        &request[10..60],
    );
    c.raw_segment(
        Side::Client,
        client_seq + 60,
        Some(server_seq),
        false,
        false,
        false,
        &request[60..],
    );
    let response = http_response(200, &[JSON], b"{}");
    c.raw_segment(
        Side::Server,
        server_seq,
        Some(client_seq + request.len() as u32),
        false,
        false,
        false,
        &response,
    );
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(paths_of(&out), ["/o"]);
    assert_eq!(out.counters.bytes_retransmitted, 20);
}

#[test]
fn a_lost_segment_drops_only_the_message_it_belonged_to() {
    for (drop_nth_data_segment, side) in [(3, "request"), (12, "response")] {
        let (c, paths) = exchanges(5, 200);
        let frames = c.into_frames();
        // Remove one data-carrying packet (data frames are the large ones).
        let data_frames: Vec<usize> = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.data.len() > 100)
            .map(|(i, _)| i)
            .collect();
        let victim = data_frames[drop_nth_data_segment];
        let kept: Vec<Frame> = frames
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != victim)
            .map(|(_, f)| f.clone())
            .collect();
        let out = run(&kept, &WorkerConfig::default());
        assert_consistent(&out);
        let got = paths_of(&out);
        assert_eq!(
            got.len(),
            paths.len() - 1,
            "{side}: {got:?} {}",
            out.counters.summary()
        );
        assert!(got.iter().all(|p| paths.contains(p)));
        assert_eq!(out.drops("stream_gap"), 1, "{side}");
        assert!(out.counters.bytes_missing > 0);
    }
}

#[test]
fn a_whole_lost_request_never_shifts_the_pairing() {
    // Non-pipelined keep-alive: request 2 disappears entirely; its response must not pair with 3.
    let (c, paths) = exchanges(4, 2000);
    let frames = c.into_frames();
    let request_two = frames
        .iter()
        .position(|f| f.data.windows(6).any(|w| w == b"/e/1 H"))
        .unwrap();
    let kept: Vec<Frame> = frames
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != request_two)
        .map(|(_, f)| f.clone())
        .collect();
    let out = run(&kept, &WorkerConfig::default());
    assert_consistent(&out);
    let got = paths_of(&out);
    assert!(!got.contains(&"/e/1".to_string()));
    assert!(got.iter().all(|p| paths.contains(p)), "{got:?}");
    assert!(
        got.contains(&"/e/3".to_string()),
        "{got:?} {}",
        out.counters.summary()
    );
}

#[test]
fn a_whole_lost_response_never_shifts_the_pairing() {
    let (c, paths) = exchanges(4, 2000);
    let frames = c.into_frames();
    let response_two = frames
        .iter()
        .position(|f| {
            f.data.windows(9).any(|w| w == b"HTTP/1.1 ")
                && f.data.windows(6).any(|w| w == b"\"i\":1,")
        })
        .unwrap();
    let kept: Vec<Frame> = frames
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != response_two)
        .map(|(_, f)| f.clone())
        .collect();
    let out = run(&kept, &WorkerConfig::default());
    assert_consistent(&out);
    let got = paths_of(&out);
    assert!(!got.contains(&"/e/1".to_string()));
    assert!(got.iter().all(|p| paths.contains(p)));
    assert!(
        got.contains(&"/e/3".to_string()),
        "{got:?} {}",
        out.counters.summary()
    );
}

#[test]
fn a_connection_caught_mid_way_resynchronises_at_the_next_message() {
    let (c, paths) = exchanges(4, 150);
    let frames = c.into_frames();
    // Start the capture in the middle of the second request's body.
    let start = frames
        .iter()
        .position(|f| f.data.windows(6).any(|w| w == b"/e/1 H"))
        .unwrap()
        + 1;
    let out = run(&frames[start..], &WorkerConfig::default());
    assert_consistent(&out);
    assert_eq!(paths_of(&out), paths[2..], "{}", out.counters.summary());
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut c = Conversation::new(
        addr("10.0.0.1:40000"),
        addr("10.0.0.2:80"),
        1_700_000_000_000_000,
    )
    .with_isns(u32::MAX - 100, u32::MAX - 10);
    c.mss = 64;
    c.handshake();
    c.client_sends(&http_request("POST", "/wrap", &[JSON], &[b'w'; 500]));
    c.server_sends(&http_response(200, &[JSON], &[b'w'; 500]));
    c.close();
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(paths_of(&out), ["/wrap"]);
}

#[test]
fn port_reuse_after_close_is_a_new_connection() {
    let mut frames = Vec::new();
    for (i, isn) in [(0u32, 1_000u32), (1, 9_000_000)] {
        let mut c = Conversation::new(
            addr("10.0.0.1:40000"),
            addr("10.0.0.2:80"),
            1_700_000_000_000_000 + i64::from(i) * 1_000_000,
        )
        .with_isns(isn, isn + 77);
        c.handshake();
        c.client_sends(&http_request("GET", &format!("/reuse/{i}"), &[], b""));
        c.server_sends(&http_response(200, &[JSON], b"{}"));
        c.close();
        frames.extend(c.into_frames());
    }
    let out = run(&frames, &WorkerConfig::default());
    assert_eq!(paths_of(&out), ["/reuse/0", "/reuse/1"]);
    assert_eq!(out.counters.flows, 2);
}

#[test]
fn reset_ends_a_connection_and_its_waiting_requests() {
    let mut c = conversation(1);
    c.client_sends(&http_request("GET", "/a", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.client_sends(&http_request("GET", "/b", &[], b""));
    c.reset(Side::Server);
    let out = run(c.frames(), &WorkerConfig::default());
    assert_eq!(paths_of(&out), ["/a"]);
    assert_eq!(out.drops("unanswered"), 1);
}

#[test]
fn the_flow_table_is_bounded_and_idle_flows_expire() {
    let mut config = WorkerConfig::default();
    config.limits.max_flows = 10;
    config.limits.flow_idle_timeout_seconds = 5;
    let mut frames = Vec::new();
    // 20 half-open connections at once: only 10 are tracked.
    for n in 0..20u16 {
        let mut c = Conversation::new(
            addr(&format!("10.0.1.{}:5000", n + 1)),
            addr("10.0.0.2:80"),
            1_700_000_000_000_000,
        );
        c.handshake();
        c.client_sends(&http_request("GET", "/half", &[], b""));
        frames.extend(c.into_frames());
    }
    frames.sort_by_key(|f| f.timestamp_us);
    // Later, after they went idle, a normal exchange is tracked again.
    let mut c = Conversation::new(
        addr("10.0.2.1:6000"),
        addr("10.0.0.2:80"),
        1_700_000_010_000_000,
    );
    c.handshake();
    c.client_sends(&http_request("GET", "/later", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    frames.extend(c.into_frames());
    let out = run(&frames, &config);
    assert_eq!(out.counters.flows, 11);
    assert!(out.drops("flow_table_full") >= 10);
    assert_eq!(out.counters.flows_expired, 10);
    assert_eq!(paths_of(&out), ["/later"]);
    assert_eq!(out.drops("response_timeout") + out.drops("unanswered"), 10);
}

#[test]
fn buffered_out_of_order_data_is_bounded_per_connection() {
    let mut config = WorkerConfig::default();
    config.limits.max_flow_buffer_bytes = 64 * 1024;
    config.limits.max_total_buffer_bytes = 64 * 1024;
    let mut c = conversation(1);
    // A hole at the start of a 1 MB upload: every later segment arrives before it.
    let body = vec![b'u'; 1 << 20];
    let request = http_request("POST", "/upload", &[JSON], &body);
    let first = 1_001u32;
    c.mss = 1400;
    for (i, chunk) in request.chunks(1400).enumerate().skip(1) {
        c.raw_segment(
            Side::Client,
            first + (i * 1400) as u32,
            Some(500_001),
            false,
            false,
            false,
            chunk,
        );
    }
    c.raw_segment(
        Side::Client,
        first,
        Some(500_001),
        false,
        false,
        false,
        &request[..1400],
    );
    let out = run(c.frames(), &config);
    assert!(out.peak_buffered <= 64 * 1024, "peak {}", out.peak_buffered);
    assert!(
        out.counters.bytes_missing > 0,
        "the hole was given up on under memory pressure"
    );
}

#[test]
fn snaplen_truncated_packets_are_gaps_not_garbage() {
    let (c, paths) = exchanges(3, 1400);
    let frames = c.into_frames();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.pcap");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut w = node_worker::synth::PcapWriter::new(file, 1, 262_144).unwrap();
        for f in &frames {
            // Keep only the first 120 bytes of the second exchange's packets (the request's and the response's).
            let truncate = f.data.windows(6).any(|w| w == b"\"i\":1,");
            w.write_truncated(f, if truncate { 120 } else { f.data.len() })
                .unwrap();
        }
    }
    let out = testkit::pipeline::run_file(&path, &WorkerConfig::default());
    assert_consistent(&out);
    let got = paths_of(&out);
    assert!(
        got.contains(&paths[0]) && got.contains(&paths[2]),
        "{got:?}"
    );
    assert!(!got.contains(&paths[1]));
}

#[test]
fn timestamps_going_backwards_do_not_confuse_timeouts() {
    let mut c = conversation(1);
    c.client_sends(&http_request("GET", "/t", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    let mut frames = c.into_frames();
    // The response claims to come an hour before the request.
    for f in frames.iter_mut().skip(5) {
        f.timestamp_us -= 3_600_000_000;
    }
    let out = run(&frames, &WorkerConfig::default());
    assert_eq!(paths_of(&out), ["/t"]);
    assert!(out.pairs[0]["latency_us"].as_i64().unwrap() >= 0);
}

#[test]
fn a_connection_seen_twice_is_paired_once() {
    // Two pods on one node are both tapped: the same connection arrives from both interfaces, the
    // second copy after the first already closed, or interleaved with it.
    let (c, paths) = exchanges(3, 300);
    let frames = c.into_frames();
    let mut twice = frames.clone();
    twice.extend(frames.iter().cloned());
    let out = run(&twice, &WorkerConfig::default());
    assert_eq!(paths_of(&out), paths);
    assert_eq!(out.counters.flows, 1);
    assert!(out.counters.packets_after_close > 0);
    let mut interleaved = Vec::new();
    for chunk in frames.chunks(5) {
        interleaved.extend(chunk.iter().cloned());
        interleaved.extend(chunk.iter().cloned());
    }
    let out = run(&interleaved, &WorkerConfig::default());
    assert_eq!(paths_of(&out), paths);
}

#[test]
fn a_connection_seen_through_nat_is_paired_once() {
    // A Service between two pods of one node: the client's interface sees the ClusterIP, the server's
    // the pod; same client address and initial sequence number, different server address and port.
    let client = addr("10.0.0.1:40000");
    let mut via_service = Conversation::new(client, addr("10.96.0.10:80"), 1_700_000_000_000_000)
        .with_isns(7_000, 9_000);
    let mut via_pod = Conversation::new(client, addr("10.0.0.2:8080"), 1_700_000_000_000_000)
        .with_isns(7_000, 9_000);
    for c in [&mut via_service, &mut via_pod] {
        c.handshake();
        c.client_sends(&http_request("POST", "/nat", &[JSON], b"{\"a\":1}"));
        c.server_sends(&http_response(200, &[JSON], b"{\"a\":1}"));
        c.close();
    }
    // Interleaved as two taps deliver them.
    let mut frames = Vec::new();
    for (a, b) in via_service
        .frames()
        .chunks(3)
        .zip(via_pod.frames().chunks(3))
    {
        frames.extend(a.iter().cloned());
        frames.extend(b.iter().cloned());
    }
    let out = run(&frames, &WorkerConfig::default());
    assert_eq!(paths_of(&out), ["/nat"], "{}", out.counters.summary());
    assert_eq!(out.counters.flows, 1);
    assert_eq!(out.counters.flows_mirrored, 1);
    // A different client connection that happens to reuse the client port elsewhere is not a mirror.
    let mut other = Conversation::new(client, addr("10.0.0.3:8080"), 1_700_000_000_000_000)
        .with_isns(123, 9_000);
    other.handshake();
    other.client_sends(&http_request("POST", "/other", &[JSON], b"{}"));
    other.server_sends(&http_response(200, &[JSON], b"{}"));
    other.close();
    frames.extend(other.into_frames());
    let out = run(&frames, &WorkerConfig::default());
    assert_eq!(paths_of(&out), ["/nat", "/other"]);
}

#[test]
fn loopback_connections_of_two_namespaces_are_kept_apart() {
    use node_worker::pipeline::{Identity, Pipeline};
    use node_worker::source::{CaptureMode, InterfaceInfo, LinkType, Packet};
    // Two mesh pods: each app talks to its sidecar over 127.0.0.1 with the same ports at the same time.
    let sink = TestSink::new();
    let identity = Identity {
        node: "n".into(),
        interceptor: "t/i".into(),
    };
    let mut pipeline = Pipeline::new(&WorkerConfig::default(), identity, Box::new(sink.clone()));
    let lo = |netns: &str| InterfaceInfo {
        name: "lo".into(),
        netns: Some(netns.into()),
        mode: CaptureMode::Loopback,
    };
    let (a, b) = (
        pipeline.add_interface(lo("111")),
        pipeline.add_interface(lo("222")),
    );
    let conversation = |who: &str| {
        let mut c = Conversation::new(
            addr("127.0.0.1:45000"),
            addr("127.0.0.1:8080"),
            1_700_000_000_000_000,
        )
        .with_isns(1_000, 2_000);
        c.handshake();
        c.client_sends(&http_request(
            "POST",
            &format!("/{who}"),
            &[JSON],
            format!("{{\"who\":\"{who}\"}}").as_bytes(),
        ));
        c.server_sends(&http_response(
            200,
            &[JSON],
            format!("{{\"who\":\"{who}\"}}").as_bytes(),
        ));
        c.close();
        c.into_frames()
    };
    let (fa, fb) = (conversation("a"), conversation("b"));
    for (x, y) in fa.iter().zip(&fb) {
        for (iface, frame) in [(a, x), (b, y)] {
            let packet = Packet {
                timestamp_us: frame.timestamp_us,
                link_type: LinkType::ETHERNET,
                data: &frame.data,
                orig_len: frame.data.len() as u32,
            };
            pipeline.handle(iface, &packet);
        }
    }
    pipeline.finish(std::time::Duration::from_secs(1)).unwrap();
    let pairs = sink.values();
    assert_eq!(pairs.len(), 2, "{}", pipeline.counters().summary());
    for p in &pairs {
        assert_eq!(p["request"]["body"], p["response"]["body"]);
        let netns = p["interface"]["netns"].as_str().unwrap();
        let who = p["request"]["path"].as_str().unwrap();
        assert_eq!(
            (netns, who),
            if who == "/a" {
                ("111", "/a")
            } else {
                ("222", "/b")
            }
        );
    }
}

#[test]
fn pairs_on_a_pods_loopback_name_that_pod_on_both_ends() {
    use node_worker::message::PodRef;
    use node_worker::pipeline::{Identity, Pipeline, PodLookup};
    use node_worker::source::{CaptureMode, InterfaceInfo, LinkType, Packet};
    struct Pods;
    impl PodLookup for Pods {
        fn pod(&self, _: &std::net::SocketAddr) -> Option<PodRef> {
            None
        }
        fn pod_in_netns(&self, netns: &str, port: u16) -> Option<PodRef> {
            (netns == "4026531999").then(|| PodRef {
                namespace: "shop".into(),
                name: "api-1".into(),
                container: (port == 8080).then(|| "app".into()),
            })
        }
    }
    let sink = TestSink::new();
    let identity = Identity {
        node: "n".into(),
        interceptor: "t/i".into(),
    };
    let mut pipeline = Pipeline::new(&WorkerConfig::default(), identity, Box::new(sink.clone()));
    pipeline.set_pod_lookup(Box::new(Pods));
    let lo = pipeline.add_interface(InterfaceInfo {
        name: "lo".into(),
        netns: Some("4026531999".into()),
        mode: CaptureMode::Loopback,
    });
    let mut c = Conversation::new(
        addr("127.0.0.1:45000"),
        addr("127.0.0.1:8080"),
        1_700_000_000_000_000,
    );
    c.handshake();
    c.client_sends(&http_request("GET", "/inside", &[], b""));
    c.server_sends(&http_response(200, &[JSON], b"{}"));
    c.close();
    for frame in c.frames() {
        let packet = Packet {
            timestamp_us: frame.timestamp_us,
            link_type: LinkType::ETHERNET,
            data: &frame.data,
            orig_len: frame.data.len() as u32,
        };
        pipeline.handle(lo, &packet);
    }
    pipeline.finish(std::time::Duration::from_secs(1)).unwrap();
    let pairs = sink.pairs();
    assert_eq!(pairs.len(), 1);
    let p: serde_json::Value = serde_json::from_slice(&pairs[0].value).unwrap();
    assert_eq!(p["source"]["pod"]["name"], "api-1");
    assert_eq!(p["source"]["pod"]["container"], serde_json::Value::Null);
    assert_eq!(p["destination"]["pod"]["container"], "app");
    assert_eq!(pairs[0].key, "shop/api-1");
}

/// Issue 15, item 2: packets lost right after a request whose length is known (Content-Length, or a
/// complete chunked body) cost only what they held. Pipelined: the first request is whole, the second
/// is lost entirely, the third shows the hole before the responses come. The first is paired; the
/// second is one loss; the third cannot be trusted after the loss (its client had received nothing
/// new when it sent it): one drop each, no response counted again.
#[test]
fn a_gap_after_a_whole_request_costs_only_what_it_held() {
    for chunked_first in [false, true] {
        let mut c = conversation(1);
        let body = br#"{"first":true}"#;
        let first = if chunked_first {
            let mut r = b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend(node_worker::synth::chunked(body, 5, &[]));
            r
        } else {
            http_request("POST", "/first", &[JSON], body)
        };
        c.client_sends(&first);
        let lost_from = c.frames().len();
        c.client_sends(&http_request("POST", "/second", &[JSON], b"{}"));
        let lost_to = c.frames().len();
        c.client_sends(&http_request("POST", "/third", &[JSON], b"{}"));
        for _ in 0..3 {
            c.server_sends(&http_response(200, &[JSON], b"{}"));
        }
        c.close();
        let frames: Vec<Frame> = c
            .into_frames()
            .into_iter()
            .enumerate()
            // The second request's data segment (its ACK is kept: it acknowledges nothing new).
            .filter(|(i, f)| !((lost_from..lost_to).contains(i) && f.data.len() > 54))
            .map(|(_, f)| f)
            .collect();
        let out = run(&frames, &WorkerConfig::default());
        let summary = out.counters.summary();
        assert_eq!(
            paths_of(&out),
            ["/first"],
            "chunked {chunked_first}: {summary}"
        );
        assert_eq!(out.drops("stream_gap"), 1, "{summary}");
        assert_eq!(out.drops("pairing_uncertain"), 1, "{summary}");
        assert_eq!(out.counters.total_drops(), 2, "{summary}");
    }
}
