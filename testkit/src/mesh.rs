//! Pod network namespaces set up the way a service mesh sets a pod up, without the mesh: the rules
//! istio-cni writes into an ambient pod's namespace, or Linkerd's proxy-init into a meshed pod's, and a
//! stand-in for the proxy (a small relay process named `ztunnel` or `linkerd2-proxy`, listening in the
//! pod's namespace on the proxy's ports) that forwards real traffic as the proxy would, in plain text.
//! Root only.
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

/// Runs `iptables -w ARGS` inside `pod`'s namespace, panicking with its stderr when it fails.
fn iptables(pod: &Netns, args: &[&str]) {
    let mut all = vec!["netns", "exec", pod.name.as_str(), "iptables", "-w"];
    all.extend_from_slice(args);
    run("ip", &all);
}

/// Writes istio-cni's ambient redirection into `pod`'s namespace.
pub fn ambient_redirection(pod: &Netns) {
    let ipt = |args: &[&str]| iptables(pod, args);
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

/// A mesh proxy stand-in: plain-text forwarding as ztunnel or a sidecar does it in a pod's namespace.
/// Arguments: outbound port, inbound port, inbound mode, HBONE port (0: none). Outbound: to the original
/// destination (SO_ORIGINAL_DST), from the pod's address. Inbound `tproxy` (ztunnel's 15006,
/// transparent): to the original destination (the accepted socket's own address), from the client's
/// address (ztunnel keeps the original source); inbound `redirect` (Linkerd's): to the original
/// destination from the pod; `istio-redirect` (Istio's sidecar): the same from 127.0.0.6. HBONE
/// (transparent): read and closed (the encrypted leg, which never reaches `lo`). Its sockets carry the
/// mark 0x539 where it may set marks (root).
const PROXY_PY: &str = include_str!("../../scripts/mesh-proxy.py");

/// Linkerd's proxy user: its own connections are never redirected.
pub const LINKERD_PROXY_UID: &str = "2102";
/// Linkerd's proxy ports in the pod: outbound, inbound.
pub const LINKERD_OUTBOUND: u16 = 4140;
pub const LINKERD_INBOUND: u16 = 4143;

/// Writes Linkerd's proxy-init rules into `pod`'s namespace: inbound TCP (but the proxy's admin ports)
/// REDIRECTed to 4143, the application's outbound TCP to 4140; the proxy's user and `lo` are left alone.
pub fn linkerd_redirection(pod: &Netns) {
    let ipt = |args: &[&str]| iptables(pod, &[&["-t", "nat"], args].concat());
    ipt(&["-N", "PROXY_INIT_REDIRECT"]);
    ipt(&[
        "-A",
        "PROXY_INIT_REDIRECT",
        "-p",
        "tcp",
        "-m",
        "multiport",
        "--dports",
        "4190,4191",
        "-j",
        "RETURN",
    ]);
    ipt(&[
        "-A",
        "PROXY_INIT_REDIRECT",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-port",
        "4143",
    ]);
    ipt(&["-A", "PREROUTING", "-j", "PROXY_INIT_REDIRECT"]);
    ipt(&["-N", "PROXY_INIT_OUTPUT"]);
    ipt(&[
        "-A",
        "PROXY_INIT_OUTPUT",
        "-m",
        "owner",
        "--uid-owner",
        LINKERD_PROXY_UID,
        "-j",
        "RETURN",
    ]);
    ipt(&["-A", "PROXY_INIT_OUTPUT", "-o", "lo", "-j", "RETURN"]);
    ipt(&[
        "-A",
        "PROXY_INIT_OUTPUT",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-port",
        "4140",
    ]);
    ipt(&["-A", "OUTPUT", "-j", "PROXY_INIT_OUTPUT"]);
}

/// Istio's proxy user (uid 1337): its own connections are never redirected.
pub const ISTIO_PROXY_UID: &str = "1337";

/// Writes the Istio sidecar's rules (istio-init / istio-cni for sidecars, nat table) into `pod`'s
/// namespace: inbound TCP REDIRECTed to envoy's 15006 (its own ports excepted), the application's
/// outbound TCP to 15001; the proxy's user and `lo` are left alone.
pub fn istio_sidecar_redirection(pod: &Netns) {
    let ipt = |args: &[&str]| iptables(pod, &[&["-t", "nat"], args].concat());
    ipt(&["-N", "ISTIO_INBOUND"]);
    ipt(&[
        "-A",
        "ISTIO_INBOUND",
        "-p",
        "tcp",
        "-m",
        "multiport",
        "--dports",
        "15008,15090,15021,15020",
        "-j",
        "RETURN",
    ]);
    ipt(&[
        "-A",
        "ISTIO_INBOUND",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15006",
    ]);
    ipt(&["-A", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND"]);
    ipt(&["-N", "ISTIO_OUTPUT"]);
    ipt(&[
        "-A",
        "ISTIO_OUTPUT",
        "-m",
        "owner",
        "--uid-owner",
        ISTIO_PROXY_UID,
        "-j",
        "RETURN",
    ]);
    ipt(&["-A", "ISTIO_OUTPUT", "-o", "lo", "-j", "RETURN"]);
    ipt(&[
        "-A",
        "ISTIO_OUTPUT",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    ipt(&["-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"]);
}

/// A mesh proxy stand-in running in a pod; it stops with the pod's [`Netns`].
pub struct Proxy {
    _dir: tempfile::TempDir,
}

/// The ztunnel stand-in (ambient mode).
pub type Ztunnel = Proxy;

impl Proxy {
    /// Starts the ztunnel stand-in in `pod` (a process named `ztunnel`: a link to python3; ztunnel's
    /// listeners 15001, 15006, 15008) and waits for its listeners.
    pub fn start(pod: &mut Netns) -> Proxy {
        Proxy::spawn(
            pod,
            "ztunnel",
            None,
            &[OUTBOUND, INBOUND_PLAIN, INBOUND_HBONE],
            "tproxy",
        )
    }

    /// Starts the Linkerd proxy stand-in in `pod` (a process named `linkerd2-proxy` running as
    /// Linkerd's proxy user; 4140 outbound, 4143 inbound) and waits for its listeners.
    pub fn linkerd(pod: &mut Netns) -> Proxy {
        Proxy::spawn(
            pod,
            "linkerd2-proxy",
            Some(LINKERD_PROXY_UID),
            &[LINKERD_OUTBOUND, LINKERD_INBOUND, 0],
            "redirect",
        )
    }

    /// Starts the Istio sidecar stand-in in `pod` (a process named `envoy` running as Istio's proxy
    /// user; 15001 outbound, 15006 inbound, whose leg to the application comes from 127.0.0.6 as
    /// envoy's inbound passthrough does) and waits for its listeners.
    pub fn istio_sidecar(pod: &mut Netns) -> Proxy {
        Proxy::spawn(
            pod,
            "envoy",
            Some(ISTIO_PROXY_UID),
            &[OUTBOUND, INBOUND_PLAIN, 0],
            "istio-redirect",
        )
    }

    fn spawn(
        pod: &mut Netns,
        name: &str,
        uid: Option<&str>,
        ports: &[u16; 3],
        inbound: &str,
    ) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("ilt-proxy-")
            .tempdir()
            .expect("temporary directory");
        let script = dir.path().join("proxy.py");
        std::fs::write(&script, PROXY_PY).expect("write the relay");
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("python3 installed");
        let named = dir.path().join(name);
        std::os::unix::fs::symlink(python, &named).expect("link python3");
        let (out, inb, hbone) = (
            ports[0].to_string(),
            ports[1].to_string(),
            ports[2].to_string(),
        );
        let script = script.to_str().expect("utf-8 path");
        let named_str = named.to_str().expect("utf-8 path");
        match uid {
            None => pod.spawn(&named, &[script, &out, &inb, inbound, &hbone]),
            Some(uid) => {
                use std::os::unix::fs::PermissionsExt;
                // The proxy's user must reach the script.
                let _ =
                    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
                let _ = std::fs::set_permissions(
                    dir.path().join("proxy.py"),
                    std::fs::Permissions::from_mode(0o644),
                );
                pod.spawn(
                    Path::new("/usr/bin/setpriv"),
                    &[
                        "--reuid",
                        uid,
                        "--regid",
                        uid,
                        "--clear-groups",
                        named_str,
                        script,
                        &out,
                        &inb,
                        inbound,
                        &hbone,
                    ],
                )
            }
        };
        let wanted: Vec<u16> = ports.iter().copied().filter(|p| *p != 0).collect();
        let listening = || {
            let out = pod.output("cat", &["/proc/net/tcp"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            wanted.iter().all(|port| {
                let hex = format!(":{port:04X} ");
                text.lines()
                    .any(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A"))
            })
        };
        assert!(
            wait_until(Duration::from_secs(10), listening),
            "the {name} stand-in did not listen in {}",
            pod.name
        );
        Proxy { _dir: dir }
    }
}
