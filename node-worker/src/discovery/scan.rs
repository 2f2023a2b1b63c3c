//! One scan of the host: the namespaces (procfs), then their interfaces (entering each in turn on one
//! short-lived thread). Cheap enough to repeat every few seconds with hundreds of pods: a few small
//! procfs reads per process, and per namespace one `setns` and one netlink dump.

use std::path::PathBuf;

use super::interfaces;
use super::netns::{netns_id, NetnsError, NetnsHandle};
use super::procfs::{self, Census};
use super::snapshot::{HostSnapshot, InterfaceSnapshot, NetnsId, NetnsSnapshot};
use super::sockets;

/// Why a scan failed as a whole (single namespaces that cannot be read are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot list processes in {path}: {source}")]
    Proc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread listing interfaces panicked")]
    Thread,
}

/// Scans a host. The paths are configurable so a worker can read the host's `/proc` mounted elsewhere.
#[derive(Clone, Debug)]
pub struct Scanner {
    pub proc_root: PathBuf,
    pub netns_dir: PathBuf,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            proc_root: PathBuf::from("/proc"),
            netns_dir: PathBuf::from("/run/netns"),
        }
    }
}

impl Scanner {
    pub fn scan(&self) -> Result<HostSnapshot, ScanError> {
        let own = netns_id(&self.proc_root.join("self/ns/net")).ok();
        // PID 1's namespace is the host's. Reading it needs ptrace-level access to PID 1, which a
        // sandbox may deny even to root; then our own namespace is the best guess (the worker runs
        // with hostNetwork).
        let host = netns_id(&self.proc_root.join("1/ns/net")).ok().or(own);

        let mut census = Census::default();
        procfs::processes(&self.proc_root, &mut census).map_err(|source| ScanError::Proc {
            path: self.proc_root.clone(),
            source,
        })?;
        procfs::named(&self.netns_dir, own.map(|id| id.dev), &mut census);

        let mut snapshot = HostSnapshot {
            host,
            own,
            unreadable_processes: census.unreadable_processes,
            ..HostSnapshot::default()
        };
        let candidates: Vec<NetnsSnapshot> = census
            .namespaces
            .into_iter()
            .filter(|(id, _)| Some(*id) != host && Some(*id) != own)
            .map(|(id, found)| NetnsSnapshot {
                id,
                names: found.names,
                paths: found.paths,
                processes: found.processes,
                interfaces: Vec::new(),
                listening: Vec::new(),
            })
            .collect();
        let listed = list_interfaces(&candidates)?;
        for (mut ns, interfaces) in candidates.into_iter().zip(listed) {
            match interfaces {
                Ok((interfaces, listening)) => {
                    ns.interfaces = interfaces;
                    ns.listening = listening;
                    snapshot.namespaces.push(ns);
                }
                Err(e) => {
                    if e.is_vanished() {
                        tracing::debug!(netns = ns.id.ino, error = %e, "namespace vanished during scan");
                    } else {
                        tracing::warn!(netns = ns.id.ino, error = %e, "cannot list interfaces of namespace");
                    }
                    snapshot.unreadable_namespaces += 1;
                }
            }
        }
        Ok(snapshot)
    }
}

#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("getifaddrs: {0}")]
    Getifaddrs(nix::Error),
}

impl ListError {
    fn is_vanished(&self) -> bool {
        matches!(self, ListError::Netns(e) if e.is_vanished())
    }
}

/// A namespace's interfaces, and its listening TCP ports.
type Listed = (Vec<InterfaceSnapshot>, Vec<u16>);

/// Visits the namespaces one after the other on a single thread made for it (it ends in the last one
/// and exits), listing the interfaces and listeners of each.
fn list_interfaces(
    namespaces: &[NetnsSnapshot],
) -> Result<Vec<Result<Listed, ListError>>, ScanError> {
    if namespaces.is_empty() {
        return Ok(Vec::new());
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                namespaces
                    .iter()
                    .map(|ns| list_one(&ns.paths, ns.id))
                    .collect()
            })
            .join()
            .map_err(|_| ScanError::Thread)
    })
}

fn list_one(paths: &[PathBuf], id: NetnsId) -> Result<Listed, ListError> {
    let handle = NetnsHandle::open(paths, Some(id))?;
    handle.enter_this_thread()?;
    let interfaces = interfaces::list_current().map_err(ListError::Getifaddrs)?;
    Ok((interfaces, sockets::listening_current()))
}
