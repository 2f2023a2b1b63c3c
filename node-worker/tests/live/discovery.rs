//! Discovery on the real host: namespaces made by the test are found with their interfaces, addresses
//! and processes, and planned as in-cluster mode would (mesh sidecar: loopback only). Root only.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use interceptor_crds::config::CaptureConfig;
use node_worker::discovery::{
    plan, HostSnapshot, MeshKind, MeshOverrides, PlanPolicy, Scanner, TapSpec,
};
use node_worker::source::live::{TapOptions, Taps};
use node_worker::source::CaptureMode;
use testkit::netns::{self, find, http_exchange, post_json, serve_http, veth, Netns, Streams};
use testkit::wait::wait_until;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The taps planned for the namespaces with these inodes only (other tests and other users of this
/// machine may have namespaces of their own).
fn planned_for(snapshot: &HostSnapshot, policy: &PlanPolicy, inodes: &[u64]) -> Vec<TapSpec> {
    let labels: Vec<String> = inodes.iter().map(u64::to_string).collect();
    plan(snapshot, policy, &MeshOverrides::new())
        .into_iter()
        .filter(|t| t.info.netns.as_ref().is_some_and(|n| labels.contains(n)))
        .collect()
}

fn summary(taps: &[TapSpec]) -> Vec<(String, CaptureMode)> {
    taps.iter()
        .map(|t| (t.info.name.clone(), t.info.mode))
        .collect()
}

#[test]
fn discovery_finds_named_and_process_namespaces_with_interfaces_and_addresses() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root(
        "discovery_finds_named_and_process_namespaces_with_interfaces_and_addresses",
    ) {
        return;
    }
    let a = Netns::new("disc-a");
    let b = Netns::new("disc-b");
    veth(&a, "a0", "10.202.0.1/30", &b, "b0", "10.202.0.2/30");
    // A namespace without a name, known only through its process.
    let mut unnamed = Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare");
    let unnamed_path = format!("/proc/{}/ns/net", unnamed.id());
    let unnamed_ino = {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let mut ino = own;
        wait_until(Duration::from_secs(5), || {
            ino = std::fs::metadata(&unnamed_path)
                .map(|m| m.ino())
                .unwrap_or(own);
            ino != own
        });
        ino
    };
    // unshare enters the new namespace before it executes sleep: the scan must see sleep.
    let comm = format!("/proc/{}/comm", unnamed.id());
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
    });

    let snapshot = Scanner::default().scan().unwrap();
    let _ = unnamed.kill();
    let _ = unnamed.wait();

    assert!(snapshot.host.is_some() && snapshot.own.is_some());
    assert!(snapshot
        .namespaces
        .iter()
        .all(|n| Some(n.id) != snapshot.host && Some(n.id) != snapshot.own));

    let found_a = snapshot
        .namespaces
        .iter()
        .find(|n| n.id.ino == a.inode())
        .expect("namespace a found");
    assert_eq!(found_a.names, vec![a.name.clone()]);
    assert_eq!(found_a.paths[0], a.path());
    let a0 = found_a.interface("a0").expect("a0 listed");
    assert!(a0.up && !a0.loopback);
    assert!(a0.addresses.contains(&ip("10.202.0.1")), "{a0:?}");
    let lo = found_a.interface("lo").expect("lo listed");
    assert!(
        lo.up && lo.loopback && lo.addresses.contains(&ip("127.0.0.1")),
        "{lo:?}"
    );
    assert_eq!(
        snapshot
            .namespace_with_address(&ip("10.202.0.2"))
            .map(|n| n.id.ino),
        Some(b.inode())
    );

    let found_unnamed = snapshot
        .namespaces
        .iter()
        .find(|n| n.id.ino == unnamed_ino)
        .expect("process-only namespace found");
    assert!(found_unnamed.names.is_empty());
    assert_eq!(found_unnamed.paths[0], Path::new(&unnamed_path));
    assert!(
        found_unnamed
            .processes
            .iter()
            .any(|p| p.comm == "sleep" && p.exe == "sleep"),
        "{found_unnamed:?}"
    );
    let unnamed_lo = found_unnamed.interface("lo").expect("lo listed");
    assert!(
        !unnamed_lo.up,
        "a new namespace's loopback is down: {unnamed_lo:?}"
    );

    let policy = PlanPolicy::from(&CaptureConfig::default());
    let taps = planned_for(&snapshot, &policy, &[a.inode(), b.inode(), unnamed_ino]);
    // a and b: their veth ends; the unnamed namespace has only a loopback that is down.
    assert_eq!(summary(&taps), {
        let mut expected = vec![
            ("a0".to_string(), CaptureMode::External),
            ("b0".to_string(), CaptureMode::External),
        ];
        if a.inode() > b.inode() {
            expected.reverse();
        }
        expected
    });

    let skip = PlanPolicy {
        skip_interfaces: vec!["a*".into()],
        ..policy
    };
    assert_eq!(
        summary(&planned_for(&snapshot, &skip, &[a.inode(), b.inode()])),
        vec![("b0".to_string(), CaptureMode::External)]
    );
}

#[test]
fn a_namespace_with_a_sidecar_is_tapped_on_loopback_only() {
    let _isolated = testkit::isolate::module(module_path!());
    if !netns::require_root("a_namespace_with_a_sidecar_is_tapped_on_loopback_only") {
        return;
    }
    let mut meshed = Netns::new("mesh-m");
    let peer = Netns::new("mesh-p");
    veth(&meshed, "m0", "10.203.0.2/30", &peer, "p0", "10.203.0.1/30");
    // A process named like Istio's sidecar.
    let dir = tempfile::tempdir().unwrap();
    let envoy = dir.path().join("envoy");
    std::fs::copy("/bin/sleep", &envoy).unwrap();
    let envoy_pid = meshed.spawn(&envoy, &["120"]);

    let scanner = Scanner::default();
    let mut snapshot = HostSnapshot::default();
    assert!(
        wait_until(Duration::from_secs(5), || {
            snapshot = scanner.scan().unwrap();
            snapshot.namespaces.iter().any(|n| {
                n.id.ino == meshed.inode()
                    && n.processes
                        .iter()
                        .any(|p| p.comm == "envoy" && p.pid == envoy_pid)
            })
        }),
        "the sidecar process is seen in its namespace"
    );
    let policy = PlanPolicy::from(&CaptureConfig::default());
    let planned = planned_for(&snapshot, &policy, &[meshed.inode()]);
    assert_eq!(
        summary(&planned),
        vec![("lo".to_string(), CaptureMode::Loopback)]
    );
    assert_eq!(
        planned[0].mesh.as_ref().map(|m| m.kind),
        Some(MeshKind::Istio)
    );

    let off = PlanPolicy {
        mesh_detection: false,
        ..policy.clone()
    };
    assert_eq!(
        summary(&planned_for(&snapshot, &off, &[meshed.inode()])),
        vec![("m0".to_string(), CaptureMode::External)]
    );

    // Captured as planned: plaintext over loopback is seen, the external interface is not tapped.
    let mut taps = Taps::new(TapOptions::default());
    let report = taps.apply(&planned);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let app = serve_http(meshed.listen("127.0.0.1:9080"), 1, r#"{"from":"app"}"#);
    let outside = serve_http(meshed.listen("10.203.0.2:9443"), 1, r#"{"from":"outside"}"#);
    let inner_request = post_json("app", "/inner", r#"{"hop":"sidecar->app"}"#);
    let outer_request = post_json("pod", "/outer", r#"{"hop":"peer->pod"}"#);
    let inner_response = http_exchange(meshed.connect("127.0.0.1:9080"), &inner_request);
    let outer_response = http_exchange(peer.connect("10.203.0.2:9443"), &outer_request);
    app.join().unwrap();
    outside.join().unwrap();
    assert!(outer_response.starts_with(b"HTTP/1.1 200"));

    let mut inner = Streams::default();
    let mut outer = Streams::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        taps.poll(Duration::from_millis(50), |info, packet| {
            assert_eq!(
                (info.name.as_str(), info.mode),
                ("lo", CaptureMode::Loopback)
            );
            inner.add(9080, packet.link_type, packet.data);
            outer.add(9443, packet.link_type, packet.data);
        })
        .unwrap();
    }
    assert!(
        find(&inner.to_server, &inner_request).is_some(),
        "loopback request captured"
    );
    assert!(
        find(&inner.from_server, &inner_response).is_some(),
        "loopback response captured"
    );
    assert_eq!(outer.packets, 0, "the external interface is not tapped");
}
