//! The pods on this node as the Kubernetes API describes them, reduced to what the worker needs: which pod
//! (and container) an address belongs to, which pods run a service-mesh sidecar, and which discovered
//! network namespace is whose. Pure: the watch that feeds it is in `pod_watch`.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::state::NetnsView;
use crate::discovery::{Mesh, MeshKind, MeshOverride, MeshOverrides};
use crate::message::PodRef;
use crate::pipeline::PodLookup;

/// Set by Istio's injector on every pod it gave a sidecar.
pub const ISTIO_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Set by Linkerd's injector on every pod it gave a proxy.
pub const LINKERD_VERSION_ANNOTATION: &str = "linkerd.io/proxy-version";
/// Set by istio-cni on a pod once its traffic is redirected to ztunnel (Istio ambient mode); the
/// namespace label `istio.io/dataplane-mode=ambient` is only the intent.
pub const AMBIENT_REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
/// Istio's sidecar container.
pub const ISTIO_PROXY: &str = "istio-proxy";
/// Linkerd's proxy container.
pub const LINKERD_PROXY: &str = "linkerd-proxy";

/// A container, as far as attributing a port to it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    /// Declared TCP container ports.
    pub ports: Vec<u16>,
    /// A service-mesh proxy (never the application a port belongs to unless it declares the port).
    pub proxy: bool,
}

/// What the worker keeps of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// Shares the node's network namespace and address: never tapped, never an address's owner.
    pub host_network: bool,
    /// Succeeded or Failed: its address may already belong to a new pod.
    pub terminal: bool,
    /// Being deleted: a newer pod with the same address wins.
    pub deleting: bool,
    /// Creation time (seconds), to prefer the newest of two pods claiming one address.
    pub created: i64,
    pub mesh: Option<Mesh>,
    /// Regular containers and native sidecars (init containers that keep running).
    pub containers: Vec<ContainerInfo>,
}

impl PodInfo {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether this pod owns its addresses now (hostNetwork pods and finished pods do not).
    fn owns_addresses(&self) -> bool {
        !self.host_network && !self.terminal && !self.ips.is_empty()
    }

    /// The container an address's port belongs to: the one declaring the port, else the mesh proxy
    /// for the mesh's own ports (Linkerd's 4140, 4143, 4191; in ambient mode ztunnel's ports belong to
    /// no container of the pod), else the only application container (a client's ephemeral port tells
    /// nothing), else none.
    pub fn container_for_port(&self, port: u16) -> Option<&str> {
        if let Some(c) = self.containers.iter().find(|c| c.ports.contains(&port)) {
            return Some(&c.name);
        }
        if let Some(mesh) = &self.mesh {
            if mesh.kind.proxy_ports().contains(&port) {
                return self
                    .containers
                    .iter()
                    .find(|c| c.proxy)
                    .map(|c| c.name.as_str());
            }
        }
        let mut apps = self.containers.iter().filter(|c| !c.proxy);
        match (apps.next(), apps.next()) {
            (Some(only), None) => Some(&only.name),
            _ => None,
        }
    }

    pub fn pod_ref(&self, port: u16) -> PodRef {
        PodRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            container: self.container_for_port(port).map(str::to_string),
        }
    }
}

fn is_native_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The containers that run for the pod's lifetime: regular ones and native sidecars.
fn running_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let regular = spec.into_iter().flat_map(|s| s.containers.iter());
    let native = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| is_native_sidecar(c));
    regular.chain(native)
}

fn proxy_kind(container_name: &str) -> Option<MeshKind> {
    match container_name {
        ISTIO_PROXY => Some(MeshKind::Istio),
        LINKERD_PROXY => Some(MeshKind::Linkerd),
        _ => None,
    }
}

/// The service mesh of the pod, and what told: the injectors' annotations, a proxy container (regular,
/// or a native sidecar: an init container with `restartPolicy: Always`), else istio-cni's ambient
/// annotation (a pod with a sidecar is never redirected to ztunnel).
pub fn mesh_of(pod: &Pod) -> Option<Mesh> {
    let annotation = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    if annotation(ISTIO_STATUS_ANNOTATION).is_some() {
        return Some(Mesh::new(
            MeshKind::Istio,
            format!("annotation {ISTIO_STATUS_ANNOTATION}"),
        ));
    }
    if annotation(LINKERD_VERSION_ANNOTATION).is_some() {
        return Some(Mesh::new(
            MeshKind::Linkerd,
            format!("annotation {LINKERD_VERSION_ANNOTATION}"),
        ));
    }
    let sidecar = |c: &Container| {
        let kind = proxy_kind(&c.name)?;
        let how = if is_native_sidecar(c) {
            "native sidecar"
        } else {
            "container"
        };
        Some(Mesh::new(kind, format!("{how} {}", c.name)))
    };
    if let Some(mesh) = running_containers(pod).find_map(sidecar) {
        return Some(mesh);
    }
    (annotation(AMBIENT_REDIRECTION_ANNOTATION) == Some("enabled")).then(|| {
        Mesh::new(
            MeshKind::IstioAmbient,
            format!("annotation {AMBIENT_REDIRECTION_ANNOTATION}=enabled"),
        )
    })
}

/// The pod's addresses: `status.podIPs`, else `status.podIP`; unparsable ones are skipped.
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    ips
}

fn container_info(c: &Container) -> ContainerInfo {
    ContainerInfo {
        name: c.name.clone(),
        ports: c
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect(),
        proxy: proxy_kind(&c.name).is_some(),
    }
}

/// What the worker keeps of a pod; `None` for an object without a name or namespace.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let namespace = pod.metadata.namespace.clone()?;
    let name = pod.metadata.name.clone()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    Some(PodInfo {
        namespace,
        name,
        ips: pod_ips(pod),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        terminal: matches!(phase, Some("Succeeded" | "Failed")),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        mesh: mesh_of(pod),
        containers: running_containers(pod).map(container_info).collect(),
    })
}

/// Which pod owns an address, for the pipeline (both ends of every pair).
#[derive(Clone, Debug, Default)]
pub struct IpTable {
    by_ip: HashMap<IpAddr, Arc<PodInfo>>,
}

impl IpTable {
    pub fn lookup(&self, addr: &SocketAddr) -> Option<PodRef> {
        self.by_ip.get(&addr.ip()).map(|p| p.pod_ref(addr.port()))
    }

    pub fn pod(&self, ip: &IpAddr) -> Option<&PodInfo> {
        self.by_ip.get(ip).map(Arc::as_ref)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// Of two pods claiming one address, the one that owns it now: not being deleted, then the newest.
fn better_owner(candidate: &PodInfo, current: &PodInfo) -> bool {
    (!candidate.deleting, candidate.created, candidate.key())
        > (!current.deleting, current.created, current.key())
}

/// The pods on this node, by `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIndex {
    pods: BTreeMap<String, PodInfo>,
}

impl PodIndex {
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Adds or replaces a pod; returns whether anything the worker uses changed.
    pub fn apply(&mut self, info: PodInfo) -> bool {
        let key = info.key();
        if self.pods.get(&key) == Some(&info) {
            return false;
        }
        self.pods.insert(key, info);
        true
    }

    pub fn remove(&mut self, namespace: &str, name: &str) -> bool {
        self.pods.remove(&format!("{namespace}/{name}")).is_some()
    }

    /// Replaces everything (a relist); returns whether anything changed.
    pub fn replace_all(&mut self, pods: impl IntoIterator<Item = PodInfo>) -> bool {
        let fresh: BTreeMap<String, PodInfo> = pods.into_iter().map(|p| (p.key(), p)).collect();
        let changed = fresh != self.pods;
        self.pods = fresh;
        changed
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    /// Address -> pod, for the pods that own their addresses.
    pub fn ip_table(&self) -> IpTable {
        let mut by_ip: HashMap<IpAddr, Arc<PodInfo>> = HashMap::new();
        for pod in self.pods.values().filter(|p| p.owns_addresses()) {
            let shared = Arc::new(pod.clone());
            for ip in &pod.ips {
                match by_ip.get(ip) {
                    Some(current) if !better_owner(pod, current) => {}
                    _ => {
                        by_ip.insert(*ip, Arc::clone(&shared));
                    }
                }
            }
        }
        IpTable { by_ip }
    }

    /// What the API says about each discovered namespace that holds a pod's address: the pod's mesh (or
    /// none), or "do not tap" when the pod's Kubernetes namespace is excluded. Namespaces without a known
    /// pod get no override (discovery's own detection decides: the pod may be too new for the API cache).
    pub fn mesh_overrides(&self, view: &NetnsView, exclude_namespaces: &[String]) -> MeshOverrides {
        let table = self.ip_table();
        let mut overrides = MeshOverrides::new();
        for (id, addresses) in &view.namespaces {
            let Some(pod) = addresses.iter().find_map(|ip| table.pod(ip)) else {
                continue;
            };
            let decision = if exclude_namespaces.contains(&pod.namespace) {
                MeshOverride::Exclude
            } else {
                match &pod.mesh {
                    Some(mesh) => MeshOverride::Mesh(mesh.clone()),
                    None => MeshOverride::NoMesh,
                }
            };
            overrides.insert(*id, decision);
        }
        overrides
    }
}

/// The current address table, shared between the pod watch (writer) and the capture thread (reader).
#[derive(Clone, Debug, Default)]
pub struct SharedPods {
    table: Arc<RwLock<Arc<IpTable>>>,
}

impl SharedPods {
    pub fn publish(&self, table: IpTable) {
        let table = Arc::new(table);
        match self.table.write() {
            Ok(mut slot) => *slot = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// The table now (cheap: an `Arc` clone).
    pub fn current(&self) -> Arc<IpTable> {
        match self.table.read() {
            Ok(slot) => Arc::clone(&slot),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl PodLookup for SharedPods {
    fn pod(&self, addr: &SocketAddr) -> Option<PodRef> {
        self.current().lookup(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::NetnsId;
    use k8s_openapi::api::core::v1::{ContainerPort, PodIP, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn container(name: &str, ports: &[i32]) -> Container {
        Container {
            name: name.into(),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|p| ContainerPort {
                        container_port: *p,
                        ..ContainerPort::default()
                    })
                    .collect()
            }),
            ..Container::default()
        }
    }

    fn pod(ns: &str, name: &str, ips: &[&str], containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers,
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ips.first().map(|s| s.to_string()),
                pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
                ..PodStatus::default()
            }),
        }
    }

    fn annotated(p: Pod, key: &str) -> Pod {
        annotated_with(p, key, "x")
    }

    fn annotated_with(mut p: Pod, key: &str, value: &str) -> Pod {
        p.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        p
    }

    fn kind_of(p: &Pod) -> Option<MeshKind> {
        mesh_of(p).map(|m| m.kind)
    }

    fn reason_of(p: &Pod) -> String {
        mesh_of(p).map(|m| m.reason).unwrap_or_default()
    }

    fn native(mut c: Container) -> Container {
        c.restart_policy = Some("Always".into());
        c
    }

    fn with_init(mut p: Pod, init: Vec<Container>) -> Pod {
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(init);
        }
        p
    }

    #[test]
    fn ambient_pods_are_recognised_by_istio_cnis_annotation() {
        let plain = pod("a", "p", &["10.0.0.1"], vec![container("app", &[8080])]);
        let ambient = annotated_with(plain.clone(), AMBIENT_REDIRECTION_ANNOTATION, "enabled");
        assert_eq!(kind_of(&ambient), Some(MeshKind::IstioAmbient));
        assert_eq!(
            reason_of(&ambient),
            "annotation ambient.istio.io/redirection=enabled"
        );
        // Any other value (istio-cni writes "disabled" when it lets go) is not ambient.
        for value in ["disabled", "", "Enabled "] {
            let p = annotated_with(plain.clone(), AMBIENT_REDIRECTION_ANNOTATION, value);
            assert_eq!(kind_of(&p), None, "{value:?}");
        }
        // The namespace's intent label on a pod is not redirection.
        let mut labelled = plain.clone();
        labelled.metadata.labels =
            Some([("istio.io/dataplane-mode".to_string(), "ambient".to_string())].into());
        assert_eq!(kind_of(&labelled), None);
        // A sidecar wins: istio-cni never redirects a pod that has one.
        let both = annotated(ambient.clone(), ISTIO_STATUS_ANNOTATION);
        assert_eq!(kind_of(&both), Some(MeshKind::Istio));
        // ztunnel's ports belong to no container of the pod; the app keeps its own and client ports.
        let info = pod_info(&ambient).unwrap();
        assert_eq!(info.container_for_port(15001), None);
        assert_eq!(info.container_for_port(15008), None);
        assert_eq!(info.container_for_port(8080), Some("app"));
        assert_eq!(info.container_for_port(40000), Some("app"));
    }

    #[test]
    fn each_sidecar_shape_says_how_it_was_recognised() {
        let app = || pod("a", "p", &["10.0.0.1"], vec![container("app", &[8080])]);
        let classic = pod(
            "a",
            "p",
            &["10.0.0.1"],
            vec![container("app", &[]), container(LINKERD_PROXY, &[])],
        );
        assert_eq!(reason_of(&classic), "container linkerd-proxy");
        // Linkerd's native sidecar (config.beta.linkerd.io/proxy-enable-native-sidecar).
        let linkerd_native = with_init(
            app(),
            vec![
                container("linkerd-init", &[]),
                native(container(LINKERD_PROXY, &[])),
            ],
        );
        assert_eq!(kind_of(&linkerd_native), Some(MeshKind::Linkerd));
        assert_eq!(reason_of(&linkerd_native), "native sidecar linkerd-proxy");
        let istio_native = with_init(app(), vec![native(container(ISTIO_PROXY, &[15090]))]);
        assert_eq!(reason_of(&istio_native), "native sidecar istio-proxy");
        assert_eq!(
            reason_of(&annotated(app(), ISTIO_STATUS_ANNOTATION)),
            "annotation sidecar.istio.io/status"
        );
        // A native sidecar that is not a mesh proxy is not a mesh.
        let other = with_init(app(), vec![native(container("log-shipper", &[]))]);
        assert_eq!(kind_of(&other), None);
    }

    #[test]
    fn linkerds_ports_belong_to_its_proxy_even_undeclared() {
        for p in [
            pod(
                "a",
                "p",
                &["10.0.0.1"],
                vec![container("app", &[8080]), container(LINKERD_PROXY, &[])],
            ),
            with_init(
                pod("a", "p", &["10.0.0.1"], vec![container("app", &[8080])]),
                vec![native(container(LINKERD_PROXY, &[]))],
            ),
        ] {
            let info = pod_info(&p).unwrap();
            for port in [4140, 4143, 4191] {
                assert_eq!(info.container_for_port(port), Some(LINKERD_PROXY), "{port}");
            }
            assert_eq!(info.container_for_port(8080), Some("app"));
            assert_eq!(info.container_for_port(50000), Some("app"));
        }
        // Without a mesh, 4143 is just a port.
        let plain = pod_info(&pod("a", "p", &["10.0.0.1"], vec![container("app", &[])])).unwrap();
        assert_eq!(plain.container_for_port(4143), Some("app"));
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn meshes_are_recognised_by_annotation_or_proxy_container() {
        let plain = pod("a", "p", &["10.0.0.1"], vec![container("app", &[])]);
        assert_eq!(kind_of(&plain), None);
        assert_eq!(
            kind_of(&annotated(plain.clone(), ISTIO_STATUS_ANNOTATION)),
            Some(MeshKind::Istio)
        );
        assert_eq!(
            kind_of(&annotated(plain.clone(), LINKERD_VERSION_ANNOTATION)),
            Some(MeshKind::Linkerd)
        );
        // An unrelated Istio annotation (injection turned off) is not a sidecar.
        assert_eq!(
            kind_of(&annotated(plain.clone(), "sidecar.istio.io/inject")),
            None
        );
        let istio = pod(
            "a",
            "p",
            &["10.0.0.1"],
            vec![container("app", &[]), container(ISTIO_PROXY, &[15090])],
        );
        assert_eq!(kind_of(&istio), Some(MeshKind::Istio));
        let linkerd = pod("a", "p", &["10.0.0.1"], vec![container(LINKERD_PROXY, &[])]);
        assert_eq!(kind_of(&linkerd), Some(MeshKind::Linkerd));
    }

    #[test]
    fn native_sidecars_count_but_plain_init_containers_do_not() {
        let mut p = pod("a", "p", &["10.0.0.1"], vec![container("app", &[8080])]);
        let mut proxy = container(ISTIO_PROXY, &[]);
        p.spec.as_mut().unwrap().init_containers = Some(vec![proxy.clone()]);
        assert_eq!(
            kind_of(&p),
            None,
            "an init container that ran to completion"
        );
        proxy.restart_policy = Some("Always".into());
        p.spec.as_mut().unwrap().init_containers = Some(vec![container("istio-init", &[]), proxy]);
        assert_eq!(kind_of(&p), Some(MeshKind::Istio));
        let info = pod_info(&p).unwrap();
        let names: Vec<&str> = info.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["app", ISTIO_PROXY]);
        // The proxy is not the application: a client port is attributed to the only app container.
        assert_eq!(info.container_for_port(40000), Some("app"));
    }

    #[test]
    fn ports_are_attributed_to_the_declaring_container_or_the_only_app() {
        let p = pod_info(&pod(
            "shop",
            "web-1",
            &["10.1.0.5", "fd00::5"],
            vec![
                container("app", &[8080]),
                container("metrics", &[9100]),
                container(LINKERD_PROXY, &[4143]),
            ],
        ))
        .unwrap();
        assert_eq!(p.ips.len(), 2);
        assert_eq!(p.container_for_port(8080), Some("app"));
        assert_eq!(p.container_for_port(9100), Some("metrics"));
        assert_eq!(p.container_for_port(4143), Some(LINKERD_PROXY));
        assert_eq!(p.container_for_port(40000), None, "two app containers");
        let single = pod_info(&pod(
            "shop",
            "api",
            &["10.1.0.6"],
            vec![container("api", &[])],
        ))
        .unwrap();
        assert_eq!(
            single.pod_ref(40000),
            PodRef {
                namespace: "shop".into(),
                name: "api".into(),
                container: Some("api".into())
            }
        );
    }

    #[test]
    fn host_network_and_finished_pods_own_no_address() {
        let mut index = PodIndex::default();
        let mut host = pod("kube-system", "proxy", &["192.168.1.10"], vec![]);
        host.spec.as_mut().unwrap().host_network = Some(true);
        let mut done = pod("batch", "job-1", &["10.1.0.7"], vec![]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let live = pod("shop", "web", &["10.1.0.8"], vec![container("app", &[])]);
        for p in [&host, &done, &live] {
            assert!(index.apply(pod_info(p).unwrap()));
        }
        assert!(!index.apply(pod_info(&live).unwrap()), "unchanged");
        let table = index.ip_table();
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup(&addr("192.168.1.10:10249")), None);
        assert_eq!(table.lookup(&addr("10.1.0.7:80")), None);
        assert_eq!(
            table.lookup(&addr("10.1.0.8:8080")).map(|p| p.name),
            Some("web".to_string())
        );
    }

    #[test]
    fn a_reused_address_belongs_to_the_newest_live_pod() {
        let mut old = pod("a", "old", &["10.1.0.9"], vec![]);
        old.metadata.creation_timestamp = Some(Time(Timestamp::from_second(100).unwrap()));
        let mut new = pod("a", "new", &["10.1.0.9"], vec![]);
        new.metadata.creation_timestamp = Some(Time(Timestamp::from_second(200).unwrap()));
        let mut index = PodIndex::default();
        index.apply(pod_info(&new).unwrap());
        index.apply(pod_info(&old).unwrap());
        let owner = |index: &PodIndex| {
            index
                .ip_table()
                .lookup(&addr("10.1.0.9:1"))
                .map(|p| p.name)
                .unwrap()
        };
        assert_eq!(owner(&index), "new");
        new.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(300).unwrap()));
        index.apply(pod_info(&new).unwrap());
        assert_eq!(owner(&index), "old", "the pod being deleted gives way");
        assert!(index.remove("a", "old"));
        assert_eq!(owner(&index), "new");
    }

    #[test]
    fn overrides_follow_pod_ips_into_discovered_namespaces() {
        let ns = |ino| NetnsId { dev: 4, ino };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let view = NetnsView {
            namespaces: vec![
                (ns(1), vec![ip("127.0.0.1"), ip("10.1.0.1")]),
                (ns(2), vec![ip("10.1.0.2")]),
                (ns(3), vec![ip("10.1.0.3")]),
                (ns(4), vec![ip("10.1.0.4")]),
            ],
        };
        let mut index = PodIndex::default();
        index.replace_all(
            [
                pod("shop", "plain", &["10.1.0.1"], vec![]),
                annotated(
                    pod("shop", "meshed", &["10.1.0.2"], vec![]),
                    LINKERD_VERSION_ANNOTATION,
                ),
                pod("kube-system", "dns", &["10.1.0.3"], vec![]),
            ]
            .iter()
            .filter_map(pod_info),
        );
        let overrides = index.mesh_overrides(&view, &["kube-system".to_string()]);
        assert_eq!(overrides.get(&ns(1)), Some(&MeshOverride::NoMesh));
        assert_eq!(
            overrides.get(&ns(2)),
            Some(&MeshOverride::Mesh(Mesh::new(
                MeshKind::Linkerd,
                "annotation linkerd.io/proxy-version"
            )))
        );
        assert_eq!(overrides.get(&ns(3)), Some(&MeshOverride::Exclude));
        assert_eq!(overrides.get(&ns(4)), None, "no pod known for it");
        assert_eq!(overrides.len(), 3);
    }

    #[test]
    fn objects_without_identity_are_ignored_and_missing_ips_tolerated() {
        let mut nameless = pod("a", "x", &[], vec![]);
        nameless.metadata.name = None;
        assert_eq!(pod_info(&nameless), None);
        let mut pending = pod("a", "pending", &[], vec![]);
        pending.status = None;
        let info = pod_info(&pending).unwrap();
        assert!(info.ips.is_empty() && !info.terminal);
        let mut odd = pod("a", "odd", &["not-an-ip"], vec![]);
        odd.status.as_mut().unwrap().pod_ip = Some("10.9.9.9".into());
        assert_eq!(pod_info(&odd).unwrap().ips, vec![ip_of("10.9.9.9")]);
    }

    fn ip_of(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn shared_pods_serve_the_latest_table() {
        let shared = SharedPods::default();
        assert_eq!(shared.pod(&addr("10.1.0.8:80")), None);
        let mut index = PodIndex::default();
        index.apply(pod_info(&pod("shop", "web", &["10.1.0.8"], vec![])).unwrap());
        shared.publish(index.ip_table());
        assert_eq!(
            shared.pod(&addr("10.1.0.8:80")).map(|p| p.name),
            Some("web".into())
        );
    }
}
