//! Second views of an exchange that involves a meshed pod of this node.
//!
//! A mesh's proxy re-originates connections: when a pod on this node calls another pod on this node and
//! one of them is meshed, the client's tap and the server's tap see two different TCP connections (the
//! application's, and the proxy's), which the second-view check of the pipeline (client address and
//! ISN) cannot match. The rule: the client's view is kept; a view whose client address belongs to
//! another tapped namespace of the node is a server-side copy, skipped when either namespace is meshed
//! (between two plain pods the ISN check already does it, with the same outcome). It relies on the
//! proxy keeping the client's address on its leg to the server: ztunnel does (original source); so do
//! the legs a proxy sends out of a pod (they come from the pod's address). A sidecar's inbound leg comes
//! from 127.0.0.6 (Istio) or the pod's own address (Linkerd): it cannot be told apart by its client;
//! those copies are matched by content instead (`sidecar_copies`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::discovery::mesh::MeshKind;
use crate::discovery::{HostSnapshot, TapSpec};

/// The tapped namespaces of the node: their addresses, and which are meshed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTaps {
    /// Address -> label of the tapped namespace holding it.
    by_ip: HashMap<IpAddr, String>,
    /// Labels of the tapped namespaces in a mesh.
    meshed: HashSet<String>,
    /// Of those, the ones with a sidecar proxy (Istio's, Linkerd's), and its kind.
    sidecars: HashMap<String, MeshKind>,
}

impl NodeTaps {
    /// From a scan and the taps planned for it (namespaces without a tap are not the node's pods as far
    /// as views go: their exchanges are seen once, by the other end).
    pub fn new(snapshot: &HostSnapshot, taps: &[TapSpec]) -> NodeTaps {
        let mut this = NodeTaps::default();
        for tap in taps {
            let Some(label) = tap.info.netns.as_deref() else {
                continue;
            };
            if let Some(mesh) = &tap.mesh {
                this.meshed.insert(label.to_string());
                if mesh.kind != MeshKind::IstioAmbient {
                    this.sidecars.insert(label.to_string(), mesh.kind);
                }
            }
            let Some(ns) = snapshot.namespaces.iter().find(|n| n.id.label() == label) else {
                continue;
            };
            for ip in ns.interfaces.iter().flat_map(|i| i.addresses.iter()) {
                if !ip.is_loopback() {
                    this.by_ip.insert(*ip, label.to_string());
                }
            }
        }
        this
    }

    /// No meshed namespace is tapped (most nodes): no connection is a server-side copy.
    pub fn has_mesh(&self) -> bool {
        !self.meshed.is_empty()
    }

    /// A sidecar pod is tapped (its inbound legs may copy an exchange another tap records).
    pub fn has_sidecar(&self) -> bool {
        !self.sidecars.is_empty()
    }

    /// The sidecar pod of this node, other than the tap's own namespace, that `peer` belongs to: a
    /// connection to it, seen on `tap_netns`, is a client's view of an exchange that the sidecar pod's
    /// tap records again on its inbound leg.
    pub fn sidecar_peer<'a>(&'a self, tap_netns: Option<&str>, peer: IpAddr) -> Option<&'a str> {
        let tap_netns = tap_netns?;
        let label = self.by_ip.get(&peer)?;
        (label != tap_netns && self.sidecars.contains_key(label)).then_some(label.as_str())
    }

    /// Whether a connection from `client` to `server`, seen on the tap of the namespace `tap_netns`, may
    /// be its sidecar's inbound leg: the namespace has a sidecar, both ends are the pod itself (its
    /// loopback or its own address: Istio's leg comes from 127.0.0.6, Linkerd's from the pod's address)
    /// and the server's port is not the proxy's. Its client cannot be told, so its pairs are matched
    /// with a client's view by content. The pod's own calls to itself qualify too; they find no match.
    pub fn is_sidecar_inbound_leg(
        &self,
        tap_netns: &str,
        client: IpAddr,
        server: SocketAddr,
    ) -> bool {
        let Some(kind) = self.sidecars.get(tap_netns) else {
            return false;
        };
        let own =
            |ip: IpAddr| ip.is_loopback() || self.by_ip.get(&ip).is_some_and(|l| l == tap_netns);
        own(client) && own(server.ip()) && !kind.proxy_ports().contains(&server.port())
    }

    /// Whether a connection whose client is `client`, seen on a tap in the namespace labelled
    /// `tap_netns`, is a server-side copy of an exchange the client's own tap records.
    pub fn is_server_side_copy(&self, tap_netns: Option<&str>, client: IpAddr) -> bool {
        let Some(tap_netns) = tap_netns else {
            return false;
        };
        if client.is_loopback() {
            return false;
        }
        match self.by_ip.get(&client) {
            Some(client_netns) if client_netns != tap_netns => {
                self.meshed.contains(client_netns) || self.meshed.contains(tap_netns)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::discovery::mesh::Mesh;
    use crate::discovery::{InterfaceSnapshot, NetnsId, NetnsSnapshot, NetnsTarget};
    use crate::source::{CaptureMode, InterfaceInfo};

    fn ns(ino: u64, ip: &str) -> NetnsSnapshot {
        NetnsSnapshot {
            id: NetnsId { dev: 4, ino },
            names: Vec::new(),
            paths: vec![PathBuf::from("/x")],
            processes: Vec::new(),
            interfaces: vec![
                InterfaceSnapshot {
                    name: "lo".into(),
                    up: true,
                    loopback: true,
                    addresses: vec!["127.0.0.1".parse().unwrap()],
                },
                InterfaceSnapshot {
                    name: "eth0".into(),
                    up: true,
                    loopback: false,
                    addresses: vec![ip.parse().unwrap()],
                },
            ],
            listening: Vec::new(),
        }
    }

    fn tap(ino: u64, mesh: Option<MeshKind>) -> TapSpec {
        TapSpec {
            info: InterfaceInfo {
                name: if mesh.is_some() { "lo" } else { "eth0" }.into(),
                netns: Some(ino.to_string()),
                mode: if mesh.is_some() {
                    CaptureMode::Loopback
                } else {
                    CaptureMode::External
                },
            },
            target: NetnsTarget::Current,
            mesh: mesh.map(|k| Mesh::new(k, "test")),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Namespaces 1 to 4, each with `eth0` at 10.1.0.<n>.
    fn four_pods() -> HostSnapshot {
        HostSnapshot {
            namespaces: (1..=4).map(|n| ns(n, &format!("10.1.0.{n}"))).collect(),
            ..HostSnapshot::default()
        }
    }

    #[test]
    fn the_clients_view_is_kept_and_the_servers_copy_skipped_when_a_mesh_is_involved() {
        let snapshot = four_pods();
        // 1: ambient, 2 and 3: plain, 4: not tapped.
        let taps = [
            tap(1, Some(MeshKind::IstioAmbient)),
            tap(2, None),
            tap(3, None),
        ];
        let node = NodeTaps::new(&snapshot, &taps);
        // The ambient pod calls pod 2: its own view kept, pod 2's copy (ztunnel's leg) skipped.
        assert!(!node.is_server_side_copy(Some("1"), ip("10.1.0.1")));
        assert!(node.is_server_side_copy(Some("2"), ip("10.1.0.1")));
        // Pod 2 calls the ambient pod: pod 2's view kept, the ambient pod's inbound leg skipped.
        assert!(!node.is_server_side_copy(Some("2"), ip("10.1.0.2")));
        assert!(node.is_server_side_copy(Some("1"), ip("10.1.0.2")));
        // Two plain pods: left to the ISN check.
        assert!(!node.is_server_side_copy(Some("3"), ip("10.1.0.2")));
        // A client without a tap on this node, loopback clients, an unknown tap: kept.
        assert!(!node.is_server_side_copy(Some("1"), ip("10.1.0.4")));
        assert!(!node.is_server_side_copy(Some("1"), ip("10.9.9.9")));
        assert!(!node.is_server_side_copy(Some("1"), ip("127.0.0.6")));
        assert!(!node.is_server_side_copy(None, ip("10.1.0.2")));
    }

    #[test]
    fn a_sidecar_pods_inbound_legs_and_its_clients_views_are_told() {
        let snapshot = four_pods();
        // 1: Istio sidecar, 2: Linkerd sidecar, 3: ambient, 4: plain.
        let taps = [
            tap(1, Some(MeshKind::Istio)),
            tap(2, Some(MeshKind::Linkerd)),
            tap(3, Some(MeshKind::IstioAmbient)),
            tap(4, None),
        ];
        let node = NodeTaps::new(&snapshot, &taps);
        assert!(node.has_sidecar());
        // Clients' views: a connection to a sidecar pod, seen on any other tap.
        assert_eq!(node.sidecar_peer(Some("4"), ip("10.1.0.1")), Some("1"));
        assert_eq!(node.sidecar_peer(Some("1"), ip("10.1.0.2")), Some("2"));
        assert_eq!(node.sidecar_peer(Some("3"), ip("10.1.0.2")), Some("2"));
        // Not: the pod's own address on its own tap, an ambient or plain pod, an address of no tap.
        assert_eq!(node.sidecar_peer(Some("1"), ip("10.1.0.1")), None);
        assert_eq!(node.sidecar_peer(Some("4"), ip("10.1.0.3")), None);
        assert_eq!(node.sidecar_peer(Some("1"), ip("10.1.0.4")), None);
        assert_eq!(node.sidecar_peer(Some("4"), ip("10.9.9.9")), None);
        assert_eq!(node.sidecar_peer(None, ip("10.1.0.1")), None);
        // Inbound legs: Istio's from 127.0.0.6 to the pod, Linkerd's from the pod to itself, older
        // releases' to 127.0.0.1.
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(node.is_sidecar_inbound_leg("1", ip("127.0.0.6"), addr("10.1.0.1:8080")));
        assert!(node.is_sidecar_inbound_leg("2", ip("10.1.0.2"), addr("10.1.0.2:8080")));
        assert!(node.is_sidecar_inbound_leg("2", ip("127.0.0.1"), addr("127.0.0.1:8080")));
        // Not: the application's outbound leg (to another pod, or to the proxy's port before its
        // destination is known), the proxy's own ports, an ambient or plain pod's loopback.
        assert!(!node.is_sidecar_inbound_leg("1", ip("10.1.0.1"), addr("10.1.0.4:8080")));
        assert!(!node.is_sidecar_inbound_leg("1", ip("10.1.0.1"), addr("127.0.0.1:15001")));
        assert!(!node.is_sidecar_inbound_leg("2", ip("10.1.0.2"), addr("127.0.0.1:4140")));
        assert!(!node.is_sidecar_inbound_leg("3", ip("127.0.0.1"), addr("10.1.0.3:8080")));
        assert!(!node.is_sidecar_inbound_leg("4", ip("127.0.0.1"), addr("127.0.0.1:8080")));
        assert!(!node.is_sidecar_inbound_leg("9", ip("127.0.0.6"), addr("10.1.0.1:8080")));
    }
}
