//! What to tap, decided from a snapshot alone (pure: no I/O, so it is tested with made-up hosts and can
//! later take what the Kubernetes API knows about pods).
//!
//! Per namespace (the host's and the worker's own are never tapped):
//! - a service mesh runs in it (a sidecar process, ztunnel's listeners, or the API says so) and mesh
//!   detection is on: tap its loopback `lo`, where the application talks plaintext with its sidecar or
//!   with ztunnel, and nothing else (what leaves the pod is encrypted, or is the proxy's second leg of an
//!   exchange already seen on `lo`: tapping both would capture it twice);
//! - otherwise: tap each external interface (not loopback, up, with a non-link-local address);
//! - an interface named in `skipInterfaces` (exactly, or by a `prefix*`) is never tapped.

use std::collections::HashMap;

use interceptor_crds::config::CaptureConfig;

use super::mesh::{self, Mesh};
use super::netns::NetnsTarget;
use super::snapshot::{HostSnapshot, NetnsId, NetnsSnapshot};
use crate::source::{CaptureMode, InterfaceInfo};

/// The capture settings the planning honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanPolicy {
    pub mesh_detection: bool,
    /// Exact interface names, or prefixes ending in `*`.
    pub skip_interfaces: Vec<String>,
}

impl From<&CaptureConfig> for PlanPolicy {
    fn from(config: &CaptureConfig) -> Self {
        PlanPolicy {
            mesh_detection: config.mesh_detection,
            skip_interfaces: config.skip_interfaces.clone(),
        }
    }
}

/// What is known about a namespace's mesh from elsewhere than the host (the in-cluster worker: pod
/// annotations such as `sidecar.istio.io/status` or `ambient.istio.io/redirection`, or a
/// `linkerd-proxy`/`istio-proxy` container). It replaces the host's detection for that namespace;
/// `meshDetection: false` still wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshOverride {
    Mesh(Mesh),
    NoMesh,
    /// Never tap this namespace (its pod's Kubernetes namespace is in `filters.excludeNamespaces`).
    Exclude,
}

/// Per-namespace overrides, keyed by namespace (match a pod to its namespace by IP with
/// [`HostSnapshot::namespace_with_address`]).
pub type MeshOverrides = HashMap<NetnsId, MeshOverride>;

/// One interface to capture, and how to get at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapSpec {
    /// The interface, its namespace's label and the mode: carried into every pair, and the tap's key
    /// (two specs with equal `info` are the same tap).
    pub info: InterfaceInfo,
    pub target: NetnsTarget,
    /// The mesh that made this a loopback tap, and why.
    pub mesh: Option<Mesh>,
}

impl TapSpec {
    /// One interface chosen by the user (`capture --interface NAME [--netns PATH]`). The namespace is
    /// labelled with the path as given; `lo` is tapped in loopback mode, anything else as external.
    pub fn interface(name: &str, netns: Option<&std::path::Path>) -> TapSpec {
        let mode = if name == "lo" {
            CaptureMode::Loopback
        } else {
            CaptureMode::External
        };
        TapSpec {
            info: InterfaceInfo {
                name: name.to_string(),
                netns: netns.map(|p| p.display().to_string()),
                mode,
            },
            target: netns.map_or(NetnsTarget::Current, NetnsTarget::path),
            mesh: None,
        }
    }
}

/// Whether `name` matches one of the skip patterns (`eth1`, or `cali*`).
pub fn is_skipped(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// The taps for a snapshot, sorted by namespace then interface name.
pub fn plan(
    snapshot: &HostSnapshot,
    policy: &PlanPolicy,
    overrides: &MeshOverrides,
) -> Vec<TapSpec> {
    let mut namespaces: Vec<&NetnsSnapshot> = snapshot
        .namespaces
        .iter()
        .filter(|ns| Some(ns.id) != snapshot.host && Some(ns.id) != snapshot.own)
        .collect();
    namespaces.sort_by_key(|ns| ns.id);
    namespaces.dedup_by_key(|ns| ns.id);
    let mut taps = Vec::new();
    for ns in namespaces {
        plan_namespace(ns, policy, overrides.get(&ns.id), &mut taps);
    }
    taps
}

fn plan_namespace(
    ns: &NetnsSnapshot,
    policy: &PlanPolicy,
    known: Option<&MeshOverride>,
    taps: &mut Vec<TapSpec>,
) {
    if known == Some(&MeshOverride::Exclude) {
        return;
    }
    let mesh = if !policy.mesh_detection {
        None
    } else {
        match known {
            Some(MeshOverride::Mesh(mesh)) => Some(mesh.clone()),
            Some(MeshOverride::NoMesh | MeshOverride::Exclude) => None,
            None => mesh::detect(&ns.processes, &ns.listening),
        }
    };
    let target = NetnsTarget::Enter {
        paths: ns.paths.clone(),
        expect: Some(ns.id),
    };
    let mut interfaces: Vec<_> = ns
        .interfaces
        .iter()
        .filter(|i| i.up && !is_skipped(&i.name, &policy.skip_interfaces))
        .filter(|i| match mesh {
            // The proxy and the application talk over `lo` (it has no routable-address rule: the
            // kernel's 127.0.0.1 is enough).
            Some(_) => i.loopback && i.name == "lo",
            None => !i.loopback && i.has_routable_address(),
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    for interface in interfaces {
        taps.push(TapSpec {
            info: InterfaceInfo {
                name: interface.name.clone(),
                netns: Some(ns.id.label()),
                mode: if mesh.is_some() {
                    CaptureMode::Loopback
                } else {
                    CaptureMode::External
                },
            },
            target: target.clone(),
            mesh: mesh.clone(),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::IpAddr;
    use std::path::PathBuf;

    use super::*;
    use crate::discovery::mesh::MeshKind;
    use crate::discovery::snapshot::{InterfaceSnapshot, ProcessInfo};

    fn iface(name: &str, up: bool, addresses: &[&str]) -> InterfaceSnapshot {
        InterfaceSnapshot {
            name: name.into(),
            up,
            loopback: name == "lo",
            addresses: addresses
                .iter()
                .map(|a| a.parse::<IpAddr>().unwrap())
                .collect(),
        }
    }

    fn ns(ino: u64, processes: &[&str], interfaces: Vec<InterfaceSnapshot>) -> NetnsSnapshot {
        NetnsSnapshot {
            id: NetnsId { dev: 4, ino },
            names: Vec::new(),
            paths: vec![PathBuf::from(format!("/proc/{ino}/ns/net"))],
            processes: processes
                .iter()
                .enumerate()
                .map(|(i, name)| ProcessInfo {
                    pid: i as u32 + 100,
                    comm: name.to_string(),
                    exe: name.to_string(),
                })
                .collect(),
            interfaces,
            listening: Vec::new(),
        }
    }

    fn pod(ino: u64, processes: &[&str]) -> NetnsSnapshot {
        ns(
            ino,
            processes,
            vec![
                iface("lo", true, &["127.0.0.1", "::1"]),
                iface("eth0", true, &["10.1.0.5", "fe80::1"]),
                iface("tunl0", false, &[]),
            ],
        )
    }

    fn host(namespaces: Vec<NetnsSnapshot>) -> HostSnapshot {
        HostSnapshot {
            host: Some(NetnsId { dev: 4, ino: 1 }),
            own: Some(NetnsId { dev: 4, ino: 1 }),
            namespaces,
            ..HostSnapshot::default()
        }
    }

    fn policy() -> PlanPolicy {
        PlanPolicy::from(&CaptureConfig::default())
    }

    fn summary(taps: &[TapSpec]) -> Vec<(String, String, &'static str)> {
        taps.iter()
            .map(|t| {
                (
                    t.info.netns.clone().unwrap_or_default(),
                    t.info.name.clone(),
                    t.info.mode.as_str(),
                )
            })
            .collect()
    }

    fn row(ns: &str, name: &str, mode: &'static str) -> (String, String, &'static str) {
        (ns.into(), name.into(), mode)
    }

    #[test]
    fn plain_pods_are_tapped_on_their_external_interface_and_mesh_pods_on_loopback() {
        let snapshot = host(vec![
            pod(20, &["pause", "envoy", "app"]),
            pod(10, &["pause", "app"]),
        ]);
        let taps = plan(&snapshot, &policy(), &MeshOverrides::new());
        assert_eq!(
            summary(&taps),
            vec![row("10", "eth0", "external"), row("20", "lo", "loopback")]
        );
        assert_eq!(
            taps[1].mesh,
            Some(Mesh::new(MeshKind::Istio, "process envoy"))
        );
        assert_eq!(
            taps[0].target,
            NetnsTarget::Enter {
                paths: vec![PathBuf::from("/proc/10/ns/net")],
                expect: Some(NetnsId { dev: 4, ino: 10 })
            }
        );
    }

    #[test]
    fn the_host_and_own_namespaces_are_never_tapped() {
        let mut snapshot = host(vec![
            pod(1, &["systemd"]),
            pod(2, &["node-worker"]),
            pod(3, &["app"]),
        ]);
        snapshot.own = Some(NetnsId { dev: 4, ino: 2 });
        assert_eq!(
            summary(&plan(&snapshot, &policy(), &MeshOverrides::new())),
            vec![row("3", "eth0", "external")]
        );
    }

    #[test]
    fn interfaces_down_without_address_or_only_link_local_are_not_tapped() {
        let snapshot = host(vec![ns(
            5,
            &["app"],
            vec![
                iface("lo", true, &["127.0.0.1"]),
                iface("eth0", false, &["10.0.0.1"]),
                iface("eth1", true, &[]),
                iface("eth2", true, &["fe80::2"]),
                iface("eth3", true, &["fe80::3", "10.0.0.3"]),
                iface("eth4", true, &["fd00::4"]),
            ],
        )]);
        assert_eq!(
            summary(&plan(&snapshot, &policy(), &MeshOverrides::new())),
            vec![row("5", "eth3", "external"), row("5", "eth4", "external")]
        );
    }

    #[test]
    fn skip_interfaces_takes_exact_names_and_prefixes() {
        let snapshot = host(vec![ns(
            5,
            &["app"],
            vec![
                iface("eth0", true, &["10.0.0.1"]),
                iface("cali123", true, &["10.0.0.2"]),
                iface("cali", true, &["10.0.0.3"]),
                iface("net1", true, &["10.0.0.4"]),
            ],
        )]);
        let policy = PlanPolicy {
            skip_interfaces: vec!["cali*".into(), "net1".into(), "net".into()],
            ..policy()
        };
        assert_eq!(
            summary(&plan(&snapshot, &policy, &MeshOverrides::new())),
            vec![row("5", "eth0", "external")]
        );
        assert!(is_skipped("anything", &["*".to_string()]));
        assert!(!is_skipped("eth0", &[]));
    }

    #[test]
    fn mesh_detection_off_taps_external_interfaces_even_with_a_sidecar() {
        let snapshot = host(vec![pod(7, &["linkerd2-proxy", "app"])]);
        let off = PlanPolicy {
            mesh_detection: false,
            ..policy()
        };
        assert_eq!(
            summary(&plan(&snapshot, &off, &MeshOverrides::new())),
            vec![row("7", "eth0", "external")]
        );
        let mut overrides = MeshOverrides::new();
        overrides.insert(
            NetnsId { dev: 4, ino: 7 },
            MeshOverride::Mesh(Mesh::new(MeshKind::Istio, "test")),
        );
        assert_eq!(
            summary(&plan(&snapshot, &off, &overrides)),
            vec![row("7", "eth0", "external")]
        );
    }

    #[test]
    fn api_overrides_replace_process_detection() {
        let snapshot = host(vec![pod(7, &["linkerd2-proxy"]), pod(8, &["app"])]);
        let mut overrides = MeshOverrides::new();
        overrides.insert(NetnsId { dev: 4, ino: 7 }, MeshOverride::NoMesh);
        overrides.insert(
            NetnsId { dev: 4, ino: 8 },
            MeshOverride::Mesh(Mesh::new(
                MeshKind::Linkerd,
                "annotation linkerd.io/proxy-version",
            )),
        );
        let taps = plan(&snapshot, &policy(), &overrides);
        assert_eq!(
            summary(&taps),
            vec![row("7", "eth0", "external"), row("8", "lo", "loopback")]
        );
        assert_eq!(
            taps[1].mesh.as_ref().map(|m| (m.kind, m.reason.as_str())),
            Some((MeshKind::Linkerd, "annotation linkerd.io/proxy-version"))
        );
    }

    #[test]
    fn a_mesh_pod_with_loopback_skipped_or_down_is_not_tapped_at_all() {
        let skip_lo = PlanPolicy {
            skip_interfaces: vec!["lo".into()],
            ..policy()
        };
        let snapshot = host(vec![pod(9, &["envoy"])]);
        assert!(plan(&snapshot, &skip_lo, &MeshOverrides::new()).is_empty());
        let down = host(vec![ns(
            9,
            &["envoy"],
            vec![iface("lo", false, &[]), iface("eth0", true, &["10.0.0.9"])],
        )]);
        assert!(plan(&down, &policy(), &MeshOverrides::new()).is_empty());
    }

    #[test]
    fn an_ambient_pod_is_tapped_on_loopback_only_never_on_eth0() {
        let mut ambient = pod(11, &["pause", "app"]);
        ambient.listening = vec![8080, 15001, 15006, 15008, 15053];
        let taps = plan(
            &host(vec![ambient, pod(12, &["app"])]),
            &policy(),
            &MeshOverrides::new(),
        );
        assert_eq!(
            summary(&taps),
            vec![row("11", "lo", "loopback"), row("12", "eth0", "external")]
        );
        assert_eq!(
            taps[0].mesh.as_ref().map(|m| m.kind),
            Some(MeshKind::IstioAmbient)
        );
        // The API saying "no mesh" wins over the listeners (e.g. ztunnel not yet told to let go).
        let mut overrides = MeshOverrides::new();
        overrides.insert(NetnsId { dev: 4, ino: 11 }, MeshOverride::NoMesh);
        let mut ambient = pod(11, &["app"]);
        ambient.listening = vec![15001, 15006, 15008];
        assert_eq!(
            summary(&plan(&host(vec![ambient]), &policy(), &overrides)),
            vec![row("11", "eth0", "external")]
        );
    }

    #[test]
    fn a_user_chosen_interface_is_labelled_with_its_path() {
        let spec = TapSpec::interface("lo", Some(std::path::Path::new("/run/netns/web")));
        assert_eq!(spec.info.netns.as_deref(), Some("/run/netns/web"));
        assert_eq!(spec.info.mode, CaptureMode::Loopback);
        assert_eq!(spec.target, NetnsTarget::path("/run/netns/web"));
        let host_eth = TapSpec::interface("eth0", None);
        assert_eq!(host_eth.target, NetnsTarget::Current);
        assert_eq!(host_eth.info.mode, CaptureMode::External);
        assert_eq!(host_eth.info.netns, None);
    }
}
