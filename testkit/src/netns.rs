//! Test helpers: network namespaces that clean up after themselves, veth links between them, and tiny
//! HTTP servers and clients running inside them. Needs root (see [`require_root`]).
//!
//! Every namespace is named `ilt-<tag>-<pid>-<n>` so parallel tests never collide, and is deleted when
//! its guard drops, also while a failing test unwinds. Namespaces left behind by a killed test run are
//! removed by the next run (their PID is dead). Addresses are 10.x only and live only inside these
//! namespaces: the host's interfaces and routes are never touched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use node_worker::discovery::in_netns;

const PREFIX: &str = "ilt-";

/// True when this process runs as root (its effective user id is 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .is_some_and(|euid| euid == "0")
}

/// True when running as root; otherwise prints why the test is skipped.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        true
    } else {
        eprintln!("skipping {test}: needs root (network namespaces, packet capture)");
        false
    }
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command and reports whether it succeeded (for cleanup and probes).
pub fn try_run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.rsplit('-');
        let (_n, pid) = (parts.next(), parts.next());
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                try_run("ip", &["netns", "del", &name]);
            }
        }
    }
}

/// A named network namespace (`ip netns add`), deleted on drop with every process started in it.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
    deleted: bool,
}

impl Netns {
    /// Creates `ilt-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        static CLEANUP: Once = Once::new();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        CLEANUP.call_once(remove_stale_namespaces);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns {
            name,
            children: Vec::new(),
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The nsfs file of the namespace, as `--netns` takes it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// The namespace's inode, as discovery labels it.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path()).map(|m| m.ino()).unwrap_or(0)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Starts `program args` inside the namespace (`ip netns exec`); it is killed on drop.
    pub fn spawn(&mut self, program: &Path, args: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} in {}: {e}", program.display(), self.name));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kills the processes started in the namespace and deletes its name. The namespace itself lives on
    /// while anything still holds it (an open socket, a process started otherwise).
    pub fn delete(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        if !self.deleted {
            self.deleted = true;
            try_run("ip", &["netns", "del", &self.name]);
        }
    }

    /// Binds a TCP listener inside the namespace.
    pub fn listen(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().expect("socket address");
        in_netns(&self.path(), || TcpListener::bind(addr))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name))
    }

    /// Connects from inside the namespace.
    pub fn connect(&self, addr: &str) -> TcpStream {
        let addr: SocketAddr = addr.parse().expect("socket address");
        let stream = in_netns(&self.path(), || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("connect {addr} from {}: {e}", self.name));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        stream
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Joins two namespaces with a veth pair: `a_if` (address `a_addr`, CIDR) in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    run(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    );
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A "node" for pods: a namespace holding a bridge that pods attach to with veth pairs, as a
/// Kubernetes node's pod network does (the host's own interfaces are never touched). The bridge has no
/// address, so discovery does not tap the node namespace itself.
pub struct Node {
    pub ns: Netns,
    pub bridge: &'static str,
}

impl Node {
    pub fn new(tag: &str) -> Node {
        let ns = Netns::new(tag);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Node { ns, bridge: "br0" }
    }

    /// Plugs `pod` into the bridge: `pod_if` (with `addr`, CIDR) in the pod, `node_if` on the bridge.
    pub fn attach(&self, pod: &Netns, pod_if: &str, node_if: &str, addr: &str) {
        run(
            "ip",
            &[
                "link",
                "add",
                pod_if,
                "netns",
                &pod.name,
                "type",
                "veth",
                "peer",
                "name",
                node_if,
                "netns",
                &self.ns.name,
            ],
        );
        self.ns.ip(&["link", "set", node_if, "master", self.bridge]);
        self.ns.ip(&["link", "set", node_if, "up"]);
        pod.ip(&["addr", "add", addr, "dev", pod_if]);
        pod.ip(&["link", "set", pod_if, "up"]);
    }
}

impl Netns {
    /// Runs `program args` inside the namespace to completion and returns its output.
    pub fn output(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    /// Starts a process whose name is `name` (a copy of `sleep`, like a service-mesh sidecar such as
    /// `envoy`) in the namespace; it is killed on drop. The copy lives in the returned directory.
    pub fn spawn_named(&mut self, name: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("ilt-bin-")
            .tempdir()
            .expect("temporary directory");
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep(1) installed");
        let copy = dir.path().join(name);
        std::fs::copy(sleep, &copy).expect("copy sleep");
        self.spawn(&copy, &["600"]);
        dir
    }
}

/// Whether a process with this command name runs in the namespace called `ns_name`.
pub fn runs_in(ns_name: &str, comm: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "pids", ns_name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    })
}

/// Whether `ifname` exists in the namespace called `ns_name`.
pub fn link_exists(ns_name: &str, ifname: &str) -> bool {
    try_run("ip", &["-n", ns_name, "link", "show", ifname])
}

/// Serves `connections` HTTP/1.1 exchanges on `listener` (one per connection, then close), answering
/// each with `200 OK` and `response_body` as JSON. Returns the requests it read.
pub fn serve_http(
    listener: TcpListener,
    connections: usize,
    response_body: &'static str,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut requests = Vec::new();
        for _ in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                break;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = read_http_message(&mut stream);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                response_body.len(),
                response_body
            );
            let _ = stream.write_all(response.as_bytes());
            requests.push(request);
        }
        requests
    })
}

/// Sends `request` on `stream` and reads the whole response (the server closes the connection).
pub fn http_exchange(mut stream: TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).expect("send request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response
}

/// A POST with a JSON body.
pub fn post_json(host: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one request: the head, then `Content-Length` bytes of body.
fn read_http_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return data;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return data,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The TCP ports and payload of a captured packet (Ethernet, Linux cooked or raw IP).
pub fn tcp_segment(
    link_type: node_worker::source::LinkType,
    data: &[u8],
) -> Option<(u16, u16, Vec<u8>)> {
    use etherparse::{SlicedPacket, TransportSlice};
    use node_worker::source::LinkType;
    let sliced = match link_type {
        LinkType::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        LinkType::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        LinkType::RAW | LinkType::LINKTYPE_RAW | LinkType::IPV4 | LinkType::IPV6 => {
            SlicedPacket::from_ip(data).ok()?
        }
        _ => return None,
    };
    match sliced.transport? {
        TransportSlice::Tcp(tcp) => Some((
            tcp.source_port(),
            tcp.destination_port(),
            tcp.payload().to_vec(),
        )),
        _ => None,
    }
}

/// TCP payload bytes captured per direction, in capture order: what a server on `port` received
/// (`to_server`) and sent (`from_server`).
#[derive(Default, Debug)]
pub struct Streams {
    pub to_server: Vec<u8>,
    pub from_server: Vec<u8>,
    pub packets: usize,
}

impl Streams {
    pub fn add(&mut self, port: u16, link_type: node_worker::source::LinkType, data: &[u8]) {
        if let Some((src, dst, payload)) = tcp_segment(link_type, data) {
            if dst == port {
                self.to_server.extend_from_slice(&payload);
                self.packets += 1;
            } else if src == port {
                self.from_server.extend_from_slice(&payload);
                self.packets += 1;
            }
        }
    }
}
