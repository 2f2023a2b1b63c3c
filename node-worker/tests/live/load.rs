//! Load through a tapped veth: keep-alive clients send requests as fast as they can for a few seconds
//! (`LIVE_LOAD_SECONDS`, default 3) while the event loop captures. Not a timed assertion: it prints the
//! share of requests captured, kernel drops and the capture thread's CPU time, and asserts only that
//! nothing is lost when the kernel dropped nothing. Root only; alone in its module (`testkit::isolate`).

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_worker::discovery::TapSpec;
use node_worker::source::live::{TapOptions, Taps};
use testkit::netns::{self, tcp_segment, veth, Netns};

const MARKER: &[u8] = b"POST /load/";
const CLIENTS: usize = 4;

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name here.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A keep-alive server: answers every request on a connection until the client closes it.
fn serve_keep_alive(listener: std::net::TcpListener, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let body = br#"{"ok":true}"#;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    // Head.
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut payload = vec![0u8; length];
                    if reader.read_exact(&mut payload).is_err() {
                        return;
                    }
                    // One write per response (and no Nagle): a split write would wait for a delayed ACK.
                    let mut response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    response.extend_from_slice(body);
                    if writer.write_all(&response).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[test]
fn load_through_a_tapped_veth() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("load_through_a_tapped_veth") {
        return;
    }
    let seconds: u64 = std::env::var("LIVE_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let client = Netns::new("load-c");
    let server = Netns::new("load-s");
    veth(
        &client,
        "c0",
        "10.205.0.1/30",
        &server,
        "s0",
        "10.205.0.2/30",
    );
    let mut taps = Taps::new(TapOptions::default());
    assert!(taps
        .apply(&[TapSpec::interface("s0", Some(&server.path()))])
        .failed
        .is_empty());

    let stop = Arc::new(AtomicBool::new(false));
    serve_keep_alive(server.listen("10.205.0.2:8080"), stop.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let stream = client.connect("10.205.0.2:8080");
            let _ = stream.set_nodelay(true);
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let body = r#"{"user":"ada","items":[1,2,3]}"#;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let request = format!(
                        "POST /load/{id}/{n} HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    writer.write_all(request.as_bytes()).unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    // Response: head, then the body of the length it announces.
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut payload = vec![0u8; length];
                    if reader.read_exact(&mut payload).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();

    let cpu_before = thread_cpu();
    let start = Instant::now();
    let mut marks: Vec<Vec<bool>> = vec![Vec::new(); CLIENTS];
    let mut packets = 0u64;
    let mut capture = |taps: &mut Taps, wait: Duration| {
        taps.poll(wait, |_, packet| {
            packets += 1;
            if let Some((_, 8080, payload)) = tcp_segment(packet.link_type, packet.data) {
                mark_requests(&payload, &mut marks);
            }
        })
        .unwrap();
    };
    while start.elapsed() < Duration::from_secs(seconds) {
        capture(&mut taps, Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_millis(500) {
        capture(&mut taps, Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    let seen: u64 = marks
        .iter()
        .map(|m| m.iter().filter(|&&b| b).count() as u64)
        .sum();
    let cpu = thread_cpu().saturating_sub(cpu_before);
    let sent = sent.load(Ordering::Relaxed);
    let stats = taps.stats();
    let kernel = stats.totals().kernel;
    eprintln!(
        "load: {sent} requests in {elapsed:.1?} ({:.0}/s) over {CLIENTS} keep-alive connections; captured \
         {seen} ({:.2}%); {packets} packets; kernel received {} dropped {}; capture thread CPU {cpu:?} \
         ({:.1}% of one core, {:.2} us/packet); peak RSS {} KiB",
        sent as f64 / elapsed.as_secs_f64(),
        100.0 * seen as f64 / sent.max(1) as f64,
        kernel.received,
        kernel.dropped,
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / packets.max(1) as f64,
        peak_rss_kib()
    );
    assert!(sent > 0);
    assert!(seen <= sent, "a request that was never sent was seen");
    if kernel.dropped == 0 {
        assert_eq!(
            seen, sent,
            "the kernel dropped nothing, so every request was captured"
        );
    }
}

/// Marks every request (`POST /load/<client>/<n> `) in `payload` as seen; retransmitted segments are
/// marked again, not counted twice.
fn mark_requests(payload: &[u8], seen: &mut [Vec<bool>]) {
    let mut rest = payload;
    while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER) {
        rest = &rest[at + MARKER.len()..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let text = String::from_utf8_lossy(&rest[..end]);
        let Some((client, n)) = text.split_once('/') else {
            continue;
        };
        let (Ok(client), Ok(n)) = (client.parse::<usize>(), n.parse::<usize>()) else {
            continue;
        };
        if let Some(marks) = seen.get_mut(client) {
            if marks.len() <= n {
                marks.resize(n + 1, false);
            }
            marks[n] = true;
        }
    }
}
