//! What a scan of the host found: plain data, the input of the (pure) tap planning.

use std::net::IpAddr;
use std::path::PathBuf;

/// A network namespace's identity: the inode of its nsfs file (and the nsfs device). Stable for as long
/// as the namespace lives; the kernel may reuse the number only after the namespace is freed, and an
/// open capture socket keeps its namespace alive, so a live tap can never be confused with a newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    /// The label carried into pair messages (`interface.netns`): the inode in decimal.
    pub fn label(&self) -> String {
        self.ino.to_string()
    }
}

/// A process, as far as mesh detection needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `/proc/<pid>/comm` (the kernel's 15-byte task name).
    pub comm: String,
    /// The file name of `argv[0]` (without directories), empty for kernel threads and zombies.
    pub exe: String,
}

/// One interface inside a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceSnapshot {
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    /// Every address, link-local ones included.
    pub addresses: Vec<IpAddr>,
}

impl InterfaceSnapshot {
    /// Whether the interface has an address that pod traffic could use (not only a link-local one,
    /// which the kernel gives every IPv6-capable interface that is up).
    pub fn has_routable_address(&self) -> bool {
        self.addresses.iter().any(|a| !is_link_local(a))
    }
}

fn is_link_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// One network namespace other than the host's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsSnapshot {
    pub id: NetnsId,
    /// Names under `/run/netns` (as `ip netns` shows them) bound to this namespace.
    pub names: Vec<String>,
    /// Files that open this namespace, best first: `/run/netns/<name>`, then `/proc/<pid>/ns/net`.
    pub paths: Vec<PathBuf>,
    /// The processes whose network namespace this is.
    pub processes: Vec<ProcessInfo>,
    pub interfaces: Vec<InterfaceSnapshot>,
    /// TCP ports listened on in the namespace (by any process, ztunnel's sockets included), sorted.
    pub listening: Vec<u16>,
}

impl NetnsSnapshot {
    pub fn interface(&self, name: &str) -> Option<&InterfaceSnapshot> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// Whether one of the namespace's interfaces carries `addr` (how a pod IP from the API is matched
    /// to its namespace).
    pub fn has_address(&self, addr: &IpAddr) -> bool {
        self.interfaces.iter().any(|i| i.addresses.contains(addr))
    }
}

/// Everything one scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSnapshot {
    /// The host's namespace (PID 1's; our own when PID 1's cannot be read). Never tapped.
    pub host: Option<NetnsId>,
    /// The worker's own namespace. Never tapped either: it carries the worker's own Kafka traffic.
    pub own: Option<NetnsId>,
    /// The other namespaces, sorted by id. The host's and our own are not listed.
    pub namespaces: Vec<NetnsSnapshot>,
    /// Processes whose namespace could not be read (permission; most exit between listing and reading
    /// and are not counted).
    pub unreadable_processes: usize,
    /// Namespaces seen but not entered (they vanished meanwhile, or entering was refused).
    pub unreadable_namespaces: usize,
}

impl HostSnapshot {
    pub fn namespace(&self, id: NetnsId) -> Option<&NetnsSnapshot> {
        self.namespaces.iter().find(|n| n.id == id)
    }

    /// The namespace with an interface carrying `addr`, e.g. a pod IP from the Kubernetes API.
    pub fn namespace_with_address(&self, addr: &IpAddr) -> Option<&NetnsSnapshot> {
        self.namespaces.iter().find(|n| n.has_address(addr))
    }
}
