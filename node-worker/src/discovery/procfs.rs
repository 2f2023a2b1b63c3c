//! Which network namespaces exist, and which processes run in each: `/proc/*/ns/net` and `/run/netns`.
//! Reads only small procfs files; no namespace is entered here.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::netns::netns_id;
use super::snapshot::{NetnsId, ProcessInfo};

/// A process namespace keeps at most this many `/proc/<pid>/ns/net` paths as ways in: enough to survive
/// a few processes exiting between the scan and the open, without growing with busy pods.
const MAX_PID_PATHS: usize = 3;

/// `argv[0]` longer than this is cut; a path of an executable is shorter, and Java-style command lines
/// can be megabytes.
const MAX_ARGV0_BYTES: u64 = 4096;

/// One namespace as seen from procfs, before its interfaces are listed.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub names: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Default)]
pub(crate) struct Census {
    pub namespaces: BTreeMap<NetnsId, Found>,
    pub unreadable_processes: usize,
}

/// Every namespace that a process lives in, with its processes.
pub(crate) fn processes(proc_root: &Path, census: &mut Census) -> std::io::Result<()> {
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let ns_path = dir.join("ns/net");
        let id = match netns_id(&ns_path) {
            Ok(id) => id,
            // Exited since the directory was listed: nothing to count.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::trace!(pid, error = %e, "network namespace of process not readable");
                // PID 1 lives in the host's namespace, which is never tapped: a sandbox that hides it
                // (some do, even from root) hides no pod.
                if pid != 1 {
                    census.unreadable_processes += 1;
                }
                continue;
            }
        };
        let found = census.namespaces.entry(id).or_default();
        if found.paths.len() < MAX_PID_PATHS {
            found.paths.push(ns_path);
        }
        found.processes.push(ProcessInfo {
            pid,
            comm: read_comm(&dir),
            exe: read_argv0_name(&dir),
        });
    }
    Ok(())
}

/// Named namespaces (`ip netns add`), including those without any process. Their paths go first: they
/// stay valid as long as the name exists, unlike a PID.
pub(crate) fn named(netns_dir: &Path, nsfs_dev: Option<u64>, census: &mut Census) {
    let Ok(entries) = std::fs::read_dir(netns_dir) else {
        return; // No /run/netns: no named namespaces.
    };
    let mut named: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    named.sort();
    for (name, path) in named {
        let Ok(id) = netns_id(&path) else { continue };
        // A name whose bind mount is gone (or not yet made) is a plain empty file, not on nsfs.
        if nsfs_dev.is_some_and(|dev| dev != id.dev) {
            continue;
        }
        let found = census.namespaces.entry(id).or_default();
        found.names.push(name);
        let named_paths = found.names.len() - 1;
        found.paths.insert(named_paths, path);
    }
}

fn read_comm(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

fn read_argv0_name(dir: &Path) -> String {
    let Ok(file) = std::fs::File::open(dir.join("cmdline")) else {
        return String::new();
    };
    let mut buf = Vec::new();
    if file.take(MAX_ARGV0_BYTES).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    argv0_name(&buf)
}

/// The file name of the first NUL-terminated argument.
pub(crate) fn argv0_name(cmdline: &[u8]) -> String {
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn argv0_is_reduced_to_its_file_name() {
        assert_eq!(
            argv0_name(b"/usr/local/bin/envoy\0-c\0/etc/envoy.yaml\0"),
            "envoy"
        );
        assert_eq!(argv0_name(b"linkerd2-proxy\0"), "linkerd2-proxy");
        assert_eq!(argv0_name(b""), "");
        assert_eq!(argv0_name(b"/\0"), "");
    }
}
