//! Churn: namespaces created and deleted in a loop while capturing; a steady namespace is captured all
//! along. Open file descriptors and memory must stay flat. Root only. Alone in its module, which runs
//! beside no other (`testkit::isolate`), so the descriptor count is this test's own.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use interceptor_crds::config::CaptureConfig;
use node_worker::discovery::{plan, MeshOverrides, PlanPolicy, Scanner, TapSpec};
use node_worker::source::live::{TapOptions, Taps};
use testkit::netns::{
    self, find, http_exchange, open_fds, post_json, rss_kib, serve_http, veth, Netns, Streams,
};

const CYCLES: usize = 40;
const WARM_UP: usize = 5;

/// One HTTP exchange from `client` to `server_addr`; polls `taps` until the response is captured.
fn exchange_and_capture(
    taps: &mut Taps,
    client: &Netns,
    server: &Netns,
    addr: &str,
    port: u16,
) -> bool {
    let served = serve_http(server.listen(addr), 1, r#"{"churn":true}"#);
    let response = http_exchange(
        client.connect(addr),
        &post_json(addr, "/churn", r#"{"n":1}"#),
    );
    served.join().unwrap();
    let mut streams = Streams::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && find(&streams.from_server, &response).is_none()
    {
        taps.poll(Duration::from_millis(50), |_, p| {
            streams.add(port, p.link_type, p.data)
        })
        .expect("capture goes on under churn");
    }
    find(&streams.from_server, &response).is_some()
}

#[test]
fn churn_keeps_descriptors_and_memory_flat() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("churn_keeps_descriptors_and_memory_flat") {
        return;
    }
    let scanner = Scanner::default();
    let policy = PlanPolicy::from(&CaptureConfig::default());
    let mut taps = Taps::new(TapOptions::default());

    let steady_client = Netns::new("steady-c");
    let steady_server = Netns::new("steady-s");
    veth(
        &steady_client,
        "c0",
        "10.204.1.1/30",
        &steady_server,
        "s0",
        "10.204.1.2/30",
    );
    let steady: Vec<String> = vec![
        steady_client.inode().to_string(),
        steady_server.inode().to_string(),
    ];

    let plan_for = |labels: &HashSet<String>| -> Vec<TapSpec> {
        plan(
            &scanner.scan().expect("scan"),
            &policy,
            &MeshOverrides::new(),
        )
        .into_iter()
        .filter(|t| t.info.netns.as_ref().is_some_and(|n| labels.contains(n)))
        .collect()
    };

    let mut baseline = (0usize, 0u64);
    let mut captured = 0;
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let client = Netns::new("churn-c");
        let mut server = Netns::new("churn-s");
        veth(
            &client,
            "c0",
            "10.204.0.1/30",
            &server,
            "s0",
            "10.204.0.2/30",
        );
        let mut labels: HashSet<String> = steady.iter().cloned().collect();
        labels.insert(client.inode().to_string());
        labels.insert(server.inode().to_string());

        let report = taps.apply(&plan_for(&labels));
        assert!(
            report.failed.is_empty(),
            "cycle {cycle}: {:?}",
            report.failed
        );
        assert_eq!(
            taps.len(),
            4,
            "cycle {cycle}: steady c0/s0 and this cycle's c0/s0"
        );

        if exchange_and_capture(&mut taps, &client, &server, "10.204.0.2:8080", 8080) {
            captured += 1;
        }
        assert!(
            exchange_and_capture(
                &mut taps,
                &steady_client,
                &steady_server,
                "10.204.1.2:8081",
                8081
            ),
            "cycle {cycle}: the steady namespace is captured throughout"
        );

        if cycle % 2 == 1 {
            // Like a CNI deleting a pod's veth before its namespace: the taps vanish while captured.
            server.ip(&["link", "del", "s0"]);
            let start = Instant::now();
            while taps.len() > 2 && start.elapsed() < Duration::from_secs(5) {
                taps.poll(Duration::from_millis(50), |_, _| {})
                    .expect("vanishing is not an error");
            }
        }
        server.delete();
        drop(client);
        let report = taps.apply(&plan_for(&labels));
        assert!(
            report.failed.is_empty(),
            "cycle {cycle}: {:?}",
            report.failed
        );
        assert_eq!(taps.len(), 2, "cycle {cycle}: only the steady taps remain");

        if cycle + 1 == WARM_UP {
            baseline = (open_fds(), rss_kib());
        }
    }
    let elapsed = started.elapsed();
    let (fds, rss) = (open_fds(), rss_kib());
    let stats = taps.stats();
    eprintln!(
        "churn: {CYCLES} cycles in {elapsed:?}; fds {} -> {fds}; rss {} KiB -> {rss} KiB; {captured}/{CYCLES} \
         churned exchanges captured; opened {} released {} vanished {} read errors {} open failures {}; \
         kernel drops {}",
        baseline.0,
        baseline.1,
        stats.opened,
        stats.released,
        stats.vanished,
        stats.read_errors,
        stats.open_failures,
        stats.totals().kernel.dropped
    );
    assert!(
        fds <= baseline.0,
        "file descriptors grew: {} -> {fds}",
        baseline.0
    );
    assert!(
        rss < baseline.1 + 8 * 1024,
        "memory grew: {} KiB -> {rss} KiB",
        baseline.1
    );
    assert_eq!(captured, CYCLES, "every churned exchange was captured");
    assert_eq!(stats.opened as usize, 2 + 2 * CYCLES);
    assert_eq!((stats.released + stats.vanished) as usize, 2 * CYCLES);
    assert_eq!(
        stats.vanished as usize, CYCLES,
        "two taps vanish in every other cycle"
    );
    assert_eq!((stats.read_errors, stats.open_failures), (0, 0));
}
