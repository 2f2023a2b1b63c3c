//! Pod network namespaces set up the way a service mesh sets a pod up, without the mesh: the rules
//! istio-cni writes into an ambient pod's namespace, and a stand-in for ztunnel (a small relay process
//! named `ztunnel`, listening in the pod's namespace on ztunnel's ports) that forwards real traffic as
//! ztunnel would in plain text. Root only.
//!
//! The rules follow istio-cni's in-pod rules (its TPROXY variant, cni/pkg/iptables in istio/istio):
//! the app's outbound TCP is REDIRECTed to 15001; inbound TCP is TPROXYed to 15006 (plain text) or 15008
//! (HBONE); packets of ztunnel's own sockets carry the mark 0x539 and are left alone; the answers to
//! ztunnel's spoofed-source inbound connections are routed back over `lo` by the connmark 0x111 and
//! routing table 100.

use std::path::Path;
use std::time::Duration;

use crate::netns::{run, Netns};
use crate::wait::wait_until;

/// ztunnel's ports in the pod: outbound, inbound plain text, inbound HBONE.
pub const OUTBOUND: u16 = 15001;
pub const INBOUND_PLAIN: u16 = 15006;
pub const INBOUND_HBONE: u16 = 15008;

/// Writes istio-cni's ambient redirection into `pod`'s namespace.
pub fn ambient_redirection(pod: &Netns) {
    let ipt = |args: &[&str]| {
        let mut all = vec!["netns", "exec", pod.name.as_str(), "iptables", "-w"];
        all.extend_from_slice(args);
        run("ip", &all);
    };
    pod.ip(&[
        "rule",
        "add",
        "fwmark",
        "0x111/0xfff",
        "pref",
        "32764",
        "lookup",
        "100",
    ]);
    pod.ip(&[
        "route",
        "add",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        "100",
    ]);
    ipt(&["-t", "mangle", "-N", "ISTIO_PRERT"]);
    ipt(&["-t", "mangle", "-N", "ISTIO_OUTPUT"]);
    ipt(&["-t", "nat", "-N", "ISTIO_OUTPUT"]);
    ipt(&["-t", "mangle", "-A", "PREROUTING", "-j", "ISTIO_PRERT"]);
    ipt(&["-t", "mangle", "-A", "OUTPUT", "-j", "ISTIO_OUTPUT"]);
    ipt(&["-t", "nat", "-A", "OUTPUT", "-j", "ISTIO_OUTPUT"]);
    // ztunnel's packets (mark 0x539) mark their connection, so that the answers find their way back.
    ipt(&[
        "-t",
        "mangle",
        "-A",
        "ISTIO_PRERT",
        "-m",
        "mark",
        "--mark",
        "0x539/0xfff",
        "-j",
        "CONNMARK",
        "--set-xmark",
        "0x111/0xfff",
    ]);
    ipt(&[
        "-t",
        "mangle",
        "-A",
        "ISTIO_PRERT",
        "-p",
        "tcp",
        "-m",
        "tcp",
        "--dport",
        "15008",
        "-m",
        "mark",
        "!",
        "--mark",
        "0x539/0xfff",
        "-j",
        "TPROXY",
        "--on-port",
        "15008",
        "--tproxy-mark",
        "0x111/0xfff",
    ]);
    ipt(&[
        "-t",
        "mangle",
        "-A",
        "ISTIO_PRERT",
        "-p",
        "tcp",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ]);
    ipt(&[
        "-t",
        "mangle",
        "-A",
        "ISTIO_PRERT",
        "!",
        "-d",
        "127.0.0.1/32",
        "-p",
        "tcp",
        "-m",
        "mark",
        "!",
        "--mark",
        "0x539/0xfff",
        "-j",
        "TPROXY",
        "--on-port",
        "15006",
        "--tproxy-mark",
        "0x111/0xfff",
    ]);
    ipt(&[
        "-t",
        "mangle",
        "-A",
        "ISTIO_OUTPUT",
        "-m",
        "connmark",
        "--mark",
        "0x111/0xfff",
        "-j",
        "CONNMARK",
        "--restore-mark",
        "--nfmask",
        "0xffffffff",
        "--ctmask",
        "0xffffffff",
    ]);
    ipt(&[
        "-t",
        "nat",
        "-A",
        "ISTIO_OUTPUT",
        "-p",
        "tcp",
        "-m",
        "mark",
        "--mark",
        "0x111/0xfff",
        "-j",
        "ACCEPT",
    ]);
    ipt(&[
        "-t",
        "nat",
        "-A",
        "ISTIO_OUTPUT",
        "!",
        "-d",
        "127.0.0.1/32",
        "-o",
        "lo",
        "-j",
        "ACCEPT",
    ]);
    ipt(&[
        "-t",
        "nat",
        "-A",
        "ISTIO_OUTPUT",
        "!",
        "-d",
        "127.0.0.1/32",
        "-p",
        "tcp",
        "-m",
        "mark",
        "!",
        "--mark",
        "0x539/0xfff",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
}

/// The ztunnel stand-in: plain-text forwarding as ztunnel does it in a pod's namespace. Outbound
/// (15001): to the original destination (SO_ORIGINAL_DST), from the pod's address. Inbound plain text
/// (15006, transparent): to the original destination (the accepted socket's own address), from the
/// client's address (ztunnel keeps the original source). HBONE (15008, transparent): read and closed
/// (the encrypted leg, which never reaches `lo`). Every socket of its own carries the mark 0x539.
const ZTUNNEL_PY: &str = r#"
import socket, struct, sys, threading
MARK, SO_MARK, IP_TRANSPARENT, SO_ORIGINAL_DST = 0x539, 36, 19, 80

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            s.shutdown(how)
        except OSError:
            pass

def listener(port, transparent):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if transparent:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    return s

def upstream(dest, source_ip):
    u = socket.socket()
    u.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
    if source_ip:
        u.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        u.bind((source_ip, 0))
    u.connect(dest)
    return u

def relay(conn, dest, source_ip):
    try:
        up = upstream(dest, source_ip)
    except OSError:
        conn.close()
        return
    threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
    threading.Thread(target=pipe, args=(up, conn), daemon=True).start()

def outbound(l):
    while True:
        conn, _ = l.accept()
        try:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        except OSError:
            conn.close()
            continue
        port, = struct.unpack("!H", raw[2:4])
        relay(conn, (socket.inet_ntoa(raw[4:8]), port), None)

def inbound(l):
    while True:
        conn, peer = l.accept()
        relay(conn, conn.getsockname(), peer[0])

def hbone(l):
    while True:
        conn, _ = l.accept()
        try:
            conn.settimeout(2)
            conn.recv(65536)
        except OSError:
            pass
        conn.close()

threads = [threading.Thread(target=f, args=(listener(p, t),), daemon=True)
           for f, p, t in ((outbound, 15001, False), (inbound, 15006, True), (hbone, 15008, True))]
for t in threads:
    t.start()
for t in threads:
    t.join()
"#;

/// The ztunnel stand-in running in a pod; it stops with the pod's [`Netns`].
pub struct Ztunnel {
    _dir: tempfile::TempDir,
}

impl Ztunnel {
    /// Starts it in `pod` (a process named `ztunnel`: a link to python3) and waits for its listeners.
    pub fn start(pod: &mut Netns) -> Ztunnel {
        let dir = tempfile::Builder::new()
            .prefix("ilt-ztunnel-")
            .tempdir()
            .expect("temporary directory");
        let script = dir.path().join("ztunnel.py");
        std::fs::write(&script, ZTUNNEL_PY).expect("write the relay");
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("python3 installed");
        let named = dir.path().join("ztunnel");
        std::os::unix::fs::symlink(python, &named).expect("link python3 as ztunnel");
        pod.spawn(&named, &[script.to_str().expect("utf-8 path")]);
        let listening = || {
            let out = pod.output("cat", &["/proc/net/tcp"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            [OUTBOUND, INBOUND_PLAIN, INBOUND_HBONE].iter().all(|port| {
                let hex = format!(":{port:04X} ");
                text.lines()
                    .any(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A"))
            })
        };
        assert!(
            wait_until(Duration::from_secs(10), listening),
            "the ztunnel stand-in did not listen in {}",
            pod.name
        );
        Ztunnel { _dir: dir }
    }
}
