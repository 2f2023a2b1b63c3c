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
//! from 127.0.0.6 and cannot be told apart (loopback clients are never skipped).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::discovery::{HostSnapshot, TapSpec};

/// The tapped namespaces of the node: their addresses, and which are meshed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTaps {
    /// Address -> label of the tapped namespace holding it.
    by_ip: HashMap<IpAddr, String>,
    /// Labels of the tapped namespaces in a mesh.
    meshed: HashSet<String>,
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
            if tap.mesh.is_some() {
                this.meshed.insert(label.to_string());
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
    use crate::discovery::mesh::{Mesh, MeshKind};
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

    #[test]
    fn the_clients_view_is_kept_and_the_servers_copy_skipped_when_a_mesh_is_involved() {
        let snapshot = HostSnapshot {
            namespaces: vec![
                ns(1, "10.1.0.1"),
                ns(2, "10.1.0.2"),
                ns(3, "10.1.0.3"),
                ns(4, "10.1.0.4"),
            ],
            ..HostSnapshot::default()
        };
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
}
