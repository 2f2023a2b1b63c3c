//! Many namespaces at once (`LIVE_SCALE_NAMESPACES`, default 100): how long a scan, a plan and opening
//! every tap take, what an idle poll round over all of them costs, and that all are found, tapped and
//! released. Prints the measurements; asserts only outcomes. Root only; alone in its module (`testkit::isolate`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use interceptor_crds::config::CaptureConfig;
use node_worker::discovery::{plan, MeshOverrides, PlanPolicy, Scanner};
use node_worker::source::live::{TapOptions, Taps};
use testkit::netns::{
    self, find, http_exchange, open_fds, post_json, serve_http, veth, Netns, Streams,
};

#[test]
fn a_hundred_namespaces_are_scanned_tapped_and_released() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("a_hundred_namespaces_are_scanned_tapped_and_released") {
        return;
    }
    let count: usize = std::env::var("LIVE_SCALE_NAMESPACES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        .clamp(2, 1000)
        / 2
        * 2;
    let mut namespaces = Vec::new();
    for pair in 0..count / 2 {
        let a = Netns::new("scale");
        let b = Netns::new("scale");
        let (hi, lo) = (pair / 64, (pair % 64) * 4);
        veth(
            &a,
            "eth0",
            &format!("10.206.{hi}.{}/30", lo + 1),
            &b,
            "eth0",
            &format!("10.206.{hi}.{}/30", lo + 2),
        );
        namespaces.push(a);
        namespaces.push(b);
    }
    let labels: HashSet<String> = namespaces.iter().map(|n| n.inode().to_string()).collect();

    let scanner = Scanner::default();
    let mut scans = Vec::new();
    let mut snapshot = scanner.scan().unwrap();
    for _ in 0..5 {
        let start = Instant::now();
        snapshot = scanner.scan().unwrap();
        scans.push(start.elapsed());
    }
    scans.sort();
    for (index, ns) in namespaces.iter().enumerate() {
        let found = snapshot
            .namespaces
            .iter()
            .find(|n| n.id.ino == ns.inode())
            .expect("every namespace found");
        let (pair, side) = (index / 2, index % 2);
        let expected: IpAddr = format!("10.206.{}.{}", pair / 64, (pair % 64) * 4 + 1 + side)
            .parse()
            .unwrap();
        assert!(found
            .interface("eth0")
            .unwrap()
            .addresses
            .contains(&expected));
    }

    let policy = PlanPolicy::from(&CaptureConfig::default());
    let start = Instant::now();
    let planned: Vec<_> = plan(&snapshot, &policy, &MeshOverrides::new())
        .into_iter()
        .filter(|t| t.info.netns.as_ref().is_some_and(|n| labels.contains(n)))
        .collect();
    let plan_time = start.elapsed();
    assert_eq!(planned.len(), count);

    let fds_before = open_fds();
    let mut taps = Taps::new(TapOptions::default());
    let start = Instant::now();
    let report = taps.apply(&planned);
    let open_time = start.elapsed();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(taps.len(), count);
    let fds_per_tap = (open_fds() - fds_before) as f64 / count as f64;

    let rounds = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        taps.poll(Duration::ZERO, |_, _| {}).unwrap();
    }
    let idle_round = start.elapsed() / rounds;

    // Traffic on the last pair is still captured among all the others.
    let (client, server) = (&namespaces[count - 2], &namespaces[count - 1]);
    let pair = count / 2 - 1;
    let addr = format!("10.206.{}.{}:8080", pair / 64, (pair % 64) * 4 + 2);
    let served = serve_http(server.listen(&addr), 1, r#"{"scale":true}"#);
    let response = http_exchange(client.connect(&addr), &post_json(&addr, "/", "{}"));
    served.join().unwrap();
    let mut streams = Streams::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && find(&streams.from_server, &response).is_none()
    {
        taps.poll(Duration::from_millis(50), |_, p| {
            streams.add(8080, p.link_type, p.data)
        })
        .unwrap();
    }
    assert!(find(&streams.from_server, &response).is_some());

    let start = Instant::now();
    let report = taps.apply(&[]);
    let release_time = start.elapsed();
    assert_eq!(report.closed.len(), count);
    assert_eq!(open_fds(), fds_before, "every tap's descriptors are closed");
    eprintln!(
        "scale: {count} namespaces ({} on the host); scan min {:?} median {:?}; plan {plan_time:?}; \
         open {count} taps {open_time:?} ({fds_per_tap:.1} fds each); idle poll round {idle_round:?}; \
         release {release_time:?}",
        snapshot.namespaces.len(),
        scans[0],
        scans[scans.len() / 2],
    );
}
