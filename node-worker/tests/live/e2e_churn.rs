//! End to end under pod churn: the real `node-worker capture --discover` runs with a short
//! `capture.rescanSeconds` while "pods" (network namespaces on a bridge) are created and deleted around
//! it, many times. The worker keeps running and capturing: each short-lived pod's exchange is emitted
//! exactly once, a steady pair of pods is captured all along, and the worker's resident memory and
//! open file descriptors stay flat. Pods go away both ways: their interface deleted while tapped (the
//! tap vanishes) or their namespace deleted (the next scan releases the tap). Some pods live shorter
//! than a scan. Root only (skips with a message otherwise); 10.x addresses only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use testkit::http::{echo, keep_alive, Request, Server};
use testkit::netns::{self, Netns, Node};
use testkit::worker::Worker;

const CYCLES: usize = 40;
/// Memory and descriptors are measured after this many cycles (allocator and caches warmed up)...
const WARM_UP: usize = 5;
/// ...and may grow this much by the end.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;

fn body(tag: &str, pad: usize) -> String {
    format!(r#"{{"case":"{tag}","pad":"{}"}}"#, "z".repeat(pad))
}

/// Waits (up to 10 s) until `cond` holds, then takes a breath so the worker is idle.
fn settle(worker: &Worker, mut cond: impl FnMut(&Worker) -> bool, what: &str) {
    let start = Instant::now();
    while !cond(worker) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "worker did not {what}:\n{}",
            worker.stderr_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events_for(worker: &Worker, message: &str, inode: &str) -> usize {
    let quoted = format!("\"{inode}\"");
    worker
        .events(message)
        .iter()
        .filter(|e| {
            e["fields"]["netns"]
                .as_str()
                .is_some_and(|n| n.contains(&quoted))
        })
        .count()
}

#[test]
fn churn_worker_keeps_capturing_with_flat_memory_and_descriptors() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("churn_worker_keeps_capturing_with_flat_memory_and_descriptors") {
        return;
    }
    let node = Node::new("churn-node");
    let steady_client = Netns::new("churn-steady-c");
    let steady_server = Netns::new("churn-steady-s");
    node.attach(&steady_client, "eth0", "vsc", "10.216.0.1/16");
    node.attach(&steady_server, "eth0", "vss", "10.216.0.2/16");
    let steady = Server::start(&steady_server, "10.216.0.2:8080");
    let client_ino = steady_client.inode().to_string();
    let server_ino = steady_server.inode().to_string();

    let mut worker = Worker::start_logging(
        &["--discover"],
        Some("capture: {rescanSeconds: 1}\n"),
        "info,node_worker=debug",
    );
    worker.wait_event("tapped", "eth0", &client_ino, 1);
    worker.wait_event("tapped", "eth0", &server_ino, 1);

    let mut expected: Vec<String> = Vec::new();
    let mut baseline = None;
    let mut vanished = 0;
    let mut released = 0;
    for cycle in 0..CYCLES {
        let ip = format!("10.216.1.{}", 10 + cycle);
        let node_if = format!("vp{cycle}");
        let pod = Netns::new("churn-pod");
        node.attach(&pod, "eth0", &node_if, &format!("{ip}/16"));
        let server = Server::start(&pod, &format!("{ip}:8080"));
        let ino = pod.inode().to_string();
        // Namespace inodes are reused once freed: count this pod's events from here.
        let tapped_before = events_for(&worker, "tapped", &ino);
        let vanished_before = events_for(&worker, "interface vanished while captured", &ino);
        let released_before = events_for(&worker, "released", &ino);
        // A pod that lives shorter than a scan, deleted while the worker may be scanning it.
        let mut blink = Netns::new("churn-blink");
        node.attach(
            &blink,
            "eth0",
            &format!("vb{cycle}"),
            &format!("10.216.2.{}/16", 10 + cycle),
        );

        // Most pods are found on request (SIGHUP), every fourth by the periodic rescan.
        if cycle % 4 != 0 {
            worker.signal(Signal::SIGHUP);
        }
        blink.delete();
        worker.wait_event("tapped", "eth0", &ino, tapped_before + 1);

        let b = body(&format!("cycle-{cycle}"), 100 + 37 * cycle);
        let responses = keep_alive(
            &steady_client,
            server.addr,
            &[Request::post_json("/echo", &b)],
        );
        assert_eq!(responses[0].body, echo(b.as_bytes()));
        expected.push(b);
        let b = body(&format!("steady-{cycle}"), 10);
        keep_alive(
            &steady_client,
            steady.addr,
            &[Request::post_json("/gzip", &b)],
        );
        expected.push(b);
        // Let the exchange reach the worker before its pod goes (the steady client's tap sees it too).
        std::thread::sleep(Duration::from_millis(50));
        drop(server);

        if cycle % 2 == 0 {
            // The pod's interface goes while tapped: the tap vanishes.
            node.ns.ip(&["link", "del", &node_if]);
            vanished += 1;
            settle(
                &worker,
                |w| events_for(w, "interface vanished while captured", &ino) > vanished_before,
                "notice the vanished interface",
            );
            drop(pod);
        } else {
            // The namespace goes: the next scan releases the tap.
            drop(pod);
            released += 1;
            if cycle % 4 != 1 {
                worker.signal(Signal::SIGHUP);
            }
            settle(
                &worker,
                |w| events_for(w, "released", &ino) > released_before,
                "release the tap",
            );
        }
        if cycle + 1 == WARM_UP {
            baseline = Some((worker.rss_kib(), worker.fds()));
        }
        assert!(worker.exited().is_none(), "the worker stopped under churn");
    }
    // Let a last scan run with every churned pod gone, then measure.
    worker.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let (rss_before, fds_before) = baseline.unwrap();
    let (rss_after, fds_after, peak) = (worker.rss_kib(), worker.fds(), worker.peak_rss_kib());
    let done = worker.stop();
    eprintln!(
        "churn: {CYCLES} cycles ({vanished} vanished, {released} released); fds {fds_before} -> {fds_after}; RSS {rss_before} -> {rss_after} KiB (peak {peak} KiB); capture {}",
        done.stats["capture"]
    );
    // A leak grows with the cycles. The worker taps every namespace of the host, so one that some
    // other process removed between the two measurements can only lower the count (seen when other
    // tests ran on the machine at the same time): fewer is not a leak.
    assert!(
        fds_after <= fds_before,
        "open descriptors grew under churn: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + RSS_GROWTH_LIMIT_KIB,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    // Every pod's exchange, and the steady pair's, came out exactly once.
    let ours = [client_ino.as_str(), server_ino.as_str()];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for pair in &done.pairs {
        let body = pair["request"]["body"].as_str().unwrap_or("");
        if !body.contains("\"case\":\"cycle-") && !body.contains("\"case\":\"steady-") {
            continue;
        }
        assert_eq!(
            pair["response"]["body"].as_str().map(str::as_bytes),
            Some(echo(body.as_bytes()).as_slice()),
            "{pair}"
        );
        let netns = pair["interface"]["netns"].as_str().unwrap_or("");
        assert!(
            ours.contains(&netns) || body.contains("cycle-"),
            "captured in an unexpected namespace: {pair}"
        );
        *seen.entry(body.to_string()).or_default() += 1;
    }
    for b in &expected {
        assert_eq!(seen.get(b).copied(), Some(1), "pair for {b:.40}");
    }
    assert_eq!(seen.len(), expected.len());
    // Every churned pod was tapped, and its tap closed one way or the other.
    assert!(
        done.capture("opened") >= CYCLES as u64 + 2,
        "{}",
        done.stats["capture"]
    );
    assert!(
        done.capture("vanished") >= vanished && done.capture("released") >= released,
        "{}",
        done.stats["capture"]
    );
}
