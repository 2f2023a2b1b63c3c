//! Service meshes: which one a pod's network namespace is in, and why we think so. A mesh encrypts what
//! leaves the pod (mTLS), so the plaintext HTTP is only visible on the pod's loopback: between the
//! sidecar and the application (Istio and Linkerd sidecars), or between the application and the
//! listeners ztunnel opens inside the pod's namespace (Istio ambient mode). See docs/DESIGN.md, "Service
//! meshes".

use super::snapshot::ProcessInfo;

/// Also `node-worker capture --mesh` (its values are the names [`MeshKind::as_str`] gives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum MeshKind {
    /// An Istio sidecar (`istio-proxy`: envoy and pilot-agent), classic or native.
    Istio,
    /// Istio's ambient mode: no sidecar; istio-cni's rules in the pod's namespace send its traffic to
    /// ztunnel's listeners (15001 outbound, 15006 inbound plain text, 15008 inbound HBONE).
    IstioAmbient,
    /// A Linkerd proxy (`linkerd-proxy`), classic or native sidecar.
    Linkerd,
}

impl MeshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeshKind::Istio => "istio",
            MeshKind::IstioAmbient => "istio-ambient",
            MeshKind::Linkerd => "linkerd",
        }
    }

    /// Where the mesh's rules redirect the application's outbound connections (nat OUTPUT, REDIRECT).
    /// On the pod's loopback such a connection is seen as `pod:port -> 127.0.0.1:<this>` one way and
    /// `original destination -> pod:port` the other way.
    pub fn outbound_ports(self) -> &'static [u16] {
        match self {
            MeshKind::Istio | MeshKind::IstioAmbient => &[ISTIO_OUTBOUND],
            MeshKind::Linkerd => &[LINKERD_OUTBOUND],
        }
    }

    /// The ports of the mesh's proxy in the pod's namespace: never an application's.
    pub fn proxy_ports(self) -> &'static [u16] {
        match self {
            // envoy's admin, outbound, inbound, HBONE, agent, health, DNS and telemetry ports.
            MeshKind::Istio => &[
                15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090,
            ],
            MeshKind::IstioAmbient => &AMBIENT_LISTENERS_AND_DNS,
            // outbound, inbound, admin (metrics, readiness).
            MeshKind::Linkerd => &[LINKERD_OUTBOUND, 4143, 4191],
        }
    }
}

/// Istio's outbound capture port (sidecar and ztunnel).
pub const ISTIO_OUTBOUND: u16 = 15001;
/// Linkerd's outbound capture port.
pub const LINKERD_OUTBOUND: u16 = 4140;
/// ztunnel's listeners in an ambient pod's namespace: outbound, inbound plain text, inbound HBONE.
pub const AMBIENT_LISTENERS: [u16; 3] = [15001, 15006, 15008];
const AMBIENT_LISTENERS_AND_DNS: [u16; 4] = [15001, 15006, 15008, 15053];

/// A mesh found in a namespace, and what it was recognised by (status, metrics and logs say it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mesh {
    pub kind: MeshKind,
    /// E.g. `process envoy`, `annotation ambient.istio.io/redirection=enabled`.
    pub reason: String,
}

impl Mesh {
    pub fn new(kind: MeshKind, reason: impl Into<String>) -> Mesh {
        Mesh {
            kind,
            reason: reason.into(),
        }
    }
}

/// The mesh whose sidecar runs under this process name (`comm` or the file name of `argv[0]`).
pub fn sidecar_kind(process_name: &str) -> Option<MeshKind> {
    match process_name {
        "envoy" | "pilot-agent" => Some(MeshKind::Istio),
        "linkerd2-proxy" => Some(MeshKind::Linkerd),
        _ => None,
    }
}

/// What the host shows of a namespace's mesh: a sidecar among its processes, else ztunnel's three
/// listeners (ztunnel's process lives in its own pod; only its sockets are in the pod's namespace, so
/// the listeners, not a process name, tell an ambient pod). `listening`: TCP ports in LISTEN state in
/// the namespace.
pub fn detect(processes: &[ProcessInfo], listening: &[u16]) -> Option<Mesh> {
    let sidecar = processes.iter().find_map(|p| {
        let by = |name: &str| sidecar_kind(name).map(|kind| (kind, name.to_string()));
        by(&p.comm).or_else(|| by(&p.exe))
    });
    if let Some((kind, name)) = sidecar {
        return Some(Mesh::new(kind, format!("process {name}")));
    }
    AMBIENT_LISTENERS
        .iter()
        .all(|port| listening.contains(port))
        .then(|| {
            Mesh::new(
                MeshKind::IstioAmbient,
                "listeners 15001, 15006, 15008 (ztunnel) without a sidecar",
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn process(comm: &str, exe: &str) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            comm: comm.into(),
            exe: exe.into(),
        }
    }

    fn kind(found: Option<Mesh>) -> Option<MeshKind> {
        found.map(|m| m.kind)
    }

    #[test]
    fn sidecars_are_recognised_by_comm_or_argv0() {
        let istio = detect(&[process("pause", "pause"), process("envoy", "envoy")], &[]);
        assert_eq!(istio, Some(Mesh::new(MeshKind::Istio, "process envoy")));
        assert_eq!(
            kind(detect(&[process("pilot-agent", "")], &[])),
            Some(MeshKind::Istio)
        );
        // comm renamed by the program (prctl), argv[0] still tells.
        assert_eq!(
            detect(&[process("main", "linkerd2-proxy")], &[]),
            Some(Mesh::new(MeshKind::Linkerd, "process linkerd2-proxy"))
        );
        assert_eq!(
            detect(
                &[process("nginx", "nginx"), process("envoyish", "my-envoy")],
                &[]
            ),
            None
        );
        assert_eq!(detect(&[], &[]), None);
    }

    #[test]
    fn ambient_pods_are_recognised_by_ztunnels_listeners_not_by_a_process_name() {
        let app = [process("pause", "pause"), process("python3", "python3")];
        let ambient = detect(&app, &[8080, 15001, 15006, 15008]).unwrap();
        assert_eq!(ambient.kind, MeshKind::IstioAmbient);
        assert!(ambient.reason.contains("15008"), "{}", ambient.reason);
        assert_eq!(detect(&app, &[15001, 15006]), None, "all three are needed");
        // ztunnel's own pod: the process, but not the pod listeners.
        assert_eq!(
            detect(&[process("ztunnel", "ztunnel")], &[15020, 15021]),
            None
        );
        // A sidecar listening on the same ports is a sidecar.
        assert_eq!(
            kind(detect(&[process("envoy", "envoy")], &AMBIENT_LISTENERS)),
            Some(MeshKind::Istio)
        );
    }

    #[test]
    fn proxy_and_outbound_ports_per_mesh() {
        assert_eq!(MeshKind::Linkerd.outbound_ports(), &[4140]);
        assert!(MeshKind::Linkerd.proxy_ports().contains(&4191));
        assert!(MeshKind::Linkerd.proxy_ports().contains(&4143));
        assert_eq!(MeshKind::IstioAmbient.outbound_ports(), &[15001]);
        assert!(MeshKind::Istio.proxy_ports().contains(&15090));
        assert!(!MeshKind::IstioAmbient.proxy_ports().contains(&8080));
    }
}
