//! Service-mesh sidecars, recognised by process name. A mesh encrypts what leaves the pod (mTLS), so the
//! plaintext HTTP is only visible on the pod's loopback, between the sidecar and the application.

use super::snapshot::ProcessInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MeshKind {
    Istio,
    Linkerd,
}

impl MeshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeshKind::Istio => "istio",
            MeshKind::Linkerd => "linkerd",
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

/// The mesh of the first sidecar among `processes`, if any.
pub fn detect(processes: &[ProcessInfo]) -> Option<MeshKind> {
    processes
        .iter()
        .find_map(|p| sidecar_kind(&p.comm).or_else(|| sidecar_kind(&p.exe)))
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

    #[test]
    fn sidecars_are_recognised_by_comm_or_argv0() {
        assert_eq!(
            detect(&[process("pause", "pause"), process("envoy", "envoy")]),
            Some(MeshKind::Istio)
        );
        assert_eq!(detect(&[process("pilot-agent", "")]), Some(MeshKind::Istio));
        // comm renamed by the program (prctl), argv[0] still tells.
        assert_eq!(
            detect(&[process("main", "linkerd2-proxy")]),
            Some(MeshKind::Linkerd)
        );
        assert_eq!(
            detect(&[process("nginx", "nginx"), process("envoyish", "my-envoy")]),
            None
        );
        assert_eq!(detect(&[]), None);
    }
}
