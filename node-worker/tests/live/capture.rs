//! Live capture in network namespaces: real HTTP exchanges over veth and loopback, captured by `Taps`.
//! Root only (skips otherwise).

use std::time::{Duration, Instant};

use node_worker::discovery::{plan, MeshOverrides, PlanPolicy, Scanner, TapSpec};
use node_worker::source::live::{TapOptions, Taps};
use node_worker::source::{CaptureMode, LinkType};
use testkit::netns::{
    self, find, http_exchange, link_exists, post_json, serve_http, veth, Netns, Streams,
};
use testkit::wait::wait_until;

/// Polls `taps` until `done(streams)` or `limit`, collecting TCP payloads around server port `port`.
fn capture_until(
    taps: &mut Taps,
    port: u16,
    limit: Duration,
    done: impl Fn(&Streams) -> bool,
) -> Streams {
    let mut streams = Streams::default();
    let start = Instant::now();
    while start.elapsed() < limit && !done(&streams) {
        taps.poll(Duration::from_millis(50), |_, packet| {
            streams.add(port, packet.link_type, packet.data)
        })
        .expect("poll");
    }
    // A little longer, for the segments that close the connection.
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_millis(200) {
        taps.poll(Duration::from_millis(50), |_, packet| {
            streams.add(port, packet.link_type, packet.data)
        })
        .expect("poll");
    }
    streams
}

#[test]
fn a_veth_inside_a_namespace_is_captured_with_request_and_response() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("a_veth_inside_a_namespace_is_captured_with_request_and_response") {
        return;
    }
    let client = Netns::new("cap-c");
    let server = Netns::new("cap-s");
    veth(
        &client,
        "c0",
        "10.201.0.1/30",
        &server,
        "s0",
        "10.201.0.2/30",
    );

    let mut taps = Taps::new(TapOptions::default());
    let spec = TapSpec::interface("s0", Some(&server.path()));
    let report = taps.apply(std::slice::from_ref(&spec));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.opened, vec![spec.info.clone()]);

    let listener = server.listen("10.201.0.2:8080");
    let served = serve_http(listener, 1, r#"{"created":true,"id":42}"#);
    let request = post_json("10.201.0.2:8080", "/v1/users", r#"{"name":"ada"}"#);
    let response = http_exchange(client.connect("10.201.0.2:8080"), &request);
    assert!(
        response.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(served.join().unwrap(), vec![request.clone()]);

    let streams = capture_until(&mut taps, 8080, Duration::from_secs(5), |s| {
        find(&s.to_server, &request).is_some() && find(&s.from_server, &response).is_some()
    });
    assert!(
        find(&streams.to_server, &request).is_some(),
        "request not captured: {streams:?}"
    );
    assert!(
        find(&streams.from_server, &response).is_some(),
        "response not captured: {streams:?}"
    );

    let stats = taps.stats();
    assert_eq!(stats.open.len(), 1);
    let tap = &stats.open[0];
    assert_eq!(tap.info.name, "s0");
    assert_eq!(tap.info.mode, CaptureMode::External);
    assert_eq!(
        tap.info.netns.as_deref(),
        Some(server.path().to_str().unwrap())
    );
    assert_eq!(tap.link_type, LinkType::ETHERNET);
    // Handshake, request, response and teardown: at least 6 segments, all TCP (the filter).
    assert!(tap.counters.packets >= 6, "{tap:?}");
    assert_eq!(
        tap.counters.packets as usize, streams.packets,
        "only TCP of this exchange passes the filter"
    );
    assert!(
        tap.counters.kernel.received >= tap.counters.packets,
        "{tap:?}"
    );
    assert_eq!(tap.counters.kernel.dropped, 0);
}

#[test]
fn loopback_in_a_namespace_is_captured_over_ipv4_and_ipv6() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("loopback_in_a_namespace_is_captured_over_ipv4_and_ipv6") {
        return;
    }
    let pod = Netns::new("cap-lo");
    let mut taps = Taps::new(TapOptions::default());
    let report = taps.apply(&[TapSpec::interface("lo", Some(&pod.path()))]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    for (addr, port) in [("127.0.0.1:8081", 8081u16), ("[::1]:8082", 8082)] {
        let served = serve_http(pod.listen(addr), 1, r#"{"ok":true}"#);
        let request = post_json(addr, "/loop", r#"{"via":"lo"}"#);
        let response = http_exchange(pod.connect(addr), &request);
        served.join().unwrap();
        let streams = capture_until(&mut taps, port, Duration::from_secs(5), |s| {
            find(&s.to_server, &request).is_some() && find(&s.from_server, &response).is_some()
        });
        assert!(
            find(&streams.to_server, &request).is_some(),
            "{addr}: request not captured"
        );
        assert!(
            find(&streams.from_server, &response).is_some(),
            "{addr}: response not captured"
        );
    }
    let stats = taps.stats();
    assert_eq!(stats.open[0].info.mode, CaptureMode::Loopback);
}

#[test]
fn an_interface_deleted_while_captured_is_a_quiet_loss() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("an_interface_deleted_while_captured_is_a_quiet_loss") {
        return;
    }
    let client = Netns::new("del-c");
    let server = Netns::new("del-s");
    veth(
        &client,
        "c0",
        "10.201.1.1/30",
        &server,
        "s0",
        "10.201.1.2/30",
    );
    let mut taps = Taps::new(TapOptions::default());
    let spec = TapSpec::interface("s0", Some(&server.path()));
    assert!(taps.apply(std::slice::from_ref(&spec)).failed.is_empty());

    server.ip(&["link", "del", "s0"]);
    let mut lost = Vec::new();
    let start = Instant::now();
    while lost.is_empty() && start.elapsed() < Duration::from_secs(5) {
        let report = taps
            .poll(Duration::from_millis(100), |_, _| {})
            .expect("a vanished interface is not an error");
        lost.extend(report.lost);
    }
    assert_eq!(lost, vec![spec.info.clone()]);
    let stats = taps.stats();
    assert!(stats.open.is_empty());
    assert_eq!((stats.vanished, stats.read_errors), (1, 0));

    // Still planned but gone: the next apply fails quietly (counted), and polling with no taps is fine.
    let report = taps.apply(std::slice::from_ref(&spec));
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].1.is_vanished(), "{:?}", report.failed);
    taps.poll(Duration::from_millis(10), |_, _| {}).unwrap();
    assert_eq!(taps.stats().open_failures, 1);
}

#[test]
fn a_namespace_deleted_while_tapped_is_released_on_the_next_apply() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("a_namespace_deleted_while_tapped_is_released_on_the_next_apply") {
        return;
    }
    let client = Netns::new("gone-c");
    let mut server = Netns::new("gone-s");
    veth(
        &client,
        "c0",
        "10.201.2.1/30",
        &server,
        "s0",
        "10.201.2.2/30",
    );
    let server_label = server.inode().to_string();
    let ours = |specs: Vec<TapSpec>| -> Vec<TapSpec> {
        specs
            .into_iter()
            .filter(|s| s.info.netns.as_deref() == Some(server_label.as_str()))
            .collect()
    };
    let scanner = Scanner::default();
    let policy = PlanPolicy::from(&interceptor_crds::config::CaptureConfig::default());
    let planned = ours(plan(
        &scanner.scan().unwrap(),
        &policy,
        &MeshOverrides::new(),
    ));
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].info.name, "s0");

    let mut taps = Taps::new(TapOptions::default());
    assert!(taps.apply(&planned).failed.is_empty());
    {
        let served = serve_http(server.listen("10.201.2.2:8080"), 1, r#"{"bye":1}"#);
        let request = post_json("x", "/", "{}");
        let response = http_exchange(client.connect("10.201.2.2:8080"), &request);
        served.join().unwrap();
        let streams = capture_until(&mut taps, 8080, Duration::from_secs(5), |s| {
            find(&s.from_server, &response).is_some()
        });
        assert!(find(&streams.from_server, &response).is_some());
    }

    server.delete();
    // The capture socket keeps the namespace (and so its veth) alive: polling goes on without error.
    for _ in 0..5 {
        taps.poll(Duration::from_millis(20), |_, _| {})
            .expect("poll after namespace deletion");
    }
    assert!(link_exists(&client.name, "c0"), "held by the open tap");

    let replanned = ours(plan(
        &scanner.scan().unwrap(),
        &policy,
        &MeshOverrides::new(),
    ));
    assert!(replanned.is_empty(), "{replanned:?}");
    let report = taps.apply(&replanned);
    assert_eq!(report.closed, vec![planned[0].info.clone()]);
    assert!(report.failed.is_empty());
    let stats = taps.stats();
    assert_eq!(
        (
            stats.open.len(),
            stats.released,
            stats.vanished,
            stats.read_errors
        ),
        (0, 1, 0, 0)
    );
    assert!(
        stats.closed.packets >= 6,
        "the closed tap's counters are kept: {stats:?}"
    );
    // Released for real: the kernel frees the namespace, which destroys the veth pair.
    assert!(
        wait_until(Duration::from_secs(15), || !link_exists(&client.name, "c0")),
        "namespace still alive after its tap was released"
    );
}

#[test]
fn the_any_device_in_a_namespace_delivers_linux_cooked_packets() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("the_any_device_in_a_namespace_delivers_linux_cooked_packets") {
        return;
    }
    let client = Netns::new("any-c");
    let server = Netns::new("any-s");
    veth(
        &client,
        "c0",
        "10.201.3.1/30",
        &server,
        "s0",
        "10.201.3.2/30",
    );
    let mut taps = Taps::new(TapOptions::default());
    // `vlan` does not compile for Linux cooked capture: the handle falls back to plain `tcp`.
    let report = taps.apply(&[TapSpec::interface("any", Some(&server.path()))]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let served = serve_http(server.listen("10.201.3.2:8080"), 1, r#"{"any":true}"#);
    let request = post_json("any", "/any", r#"{"q":1}"#);
    let response = http_exchange(client.connect("10.201.3.2:8080"), &request);
    served.join().unwrap();
    let streams = capture_until(&mut taps, 8080, Duration::from_secs(5), |s| {
        find(&s.to_server, &request).is_some() && find(&s.from_server, &response).is_some()
    });
    assert!(find(&streams.to_server, &request).is_some());
    assert!(find(&streams.from_server, &response).is_some());
    let stats = taps.stats();
    assert!(
        [LinkType::LINUX_SLL, LinkType::LINUX_SLL2].contains(&stats.open[0].link_type),
        "{:?}",
        stats.open[0].link_type
    );
}
