//! Entering network namespaces: open an nsfs file, check it is the namespace we expect, `setns` into it.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling thread only. Everything here that enters
//! a namespace does so on a short-lived thread of its own, so no thread of the caller ever changes
//! namespace. Sockets (capture handles, netlink) created on that thread stay in the namespace they were
//! created in, and keep working after the thread is gone.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use super::snapshot::NetnsId;

/// Where a tap's interface lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NetnsTarget {
    /// The namespace of the process (of the thread that opens the tap).
    Current,
    /// A namespace reached through one of these files (tried in order), e.g. `/run/netns/<name>` or
    /// `/proc/<pid>/ns/net`. With `expect`, a file leading to another namespace (the PID was reused) is
    /// refused.
    Enter {
        paths: Vec<PathBuf>,
        expect: Option<NetnsId>,
    },
}

impl NetnsTarget {
    /// The namespace at `path`, whatever it is (a user's `--netns PATH`).
    pub fn path(path: impl Into<PathBuf>) -> Self {
        NetnsTarget::Enter {
            paths: vec![path.into()],
            expect: None,
        }
    }
}

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is now network namespace {found}, not {expected} (the process exited)")]
    Mismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("no file to open the network namespace with")]
    NoPath,
    #[error("the thread entering a network namespace panicked")]
    Thread,
}

impl NetnsError {
    /// The namespace is simply gone (its processes exited, it was deleted): normal under pod churn.
    pub fn is_vanished(&self) -> bool {
        match self {
            NetnsError::Open { source, .. } => {
                source.kind() == std::io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            NetnsError::Mismatch { .. } | NetnsError::NoPath => true,
            NetnsError::Enter { .. } | NetnsError::Thread => false,
        }
    }
}

/// The identity of the namespace a file (nsfs file or `/proc/<pid>/ns/net` link) refers to.
pub fn netns_id(path: &Path) -> std::io::Result<NetnsId> {
    let meta = std::fs::metadata(path)?;
    Ok(NetnsId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// An open namespace file: holding it keeps the namespace alive and makes entering it race-free.
#[derive(Debug)]
pub struct NetnsHandle {
    file: File,
    pub id: NetnsId,
    pub path: PathBuf,
}

impl NetnsHandle {
    /// Opens the first of `paths` that leads to a namespace (to `expect`, when given).
    pub fn open(paths: &[PathBuf], expect: Option<NetnsId>) -> Result<Self, NetnsError> {
        let mut last = NetnsError::NoPath;
        for path in paths {
            match Self::open_one(path, expect) {
                Ok(handle) => return Ok(handle),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn open_one(path: &Path, expect: Option<NetnsId>) -> Result<Self, NetnsError> {
        let open_error = |source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        // fstat of the open file, not stat of the path: the path may point elsewhere by now.
        let meta = file.metadata().map_err(open_error)?;
        let id = NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if let Some(expected) = expect {
            if expected != id {
                return Err(NetnsError::Mismatch {
                    path: path.to_path_buf(),
                    expected: expected.ino,
                    found: id.ino,
                });
            }
        }
        Ok(NetnsHandle {
            file,
            id,
            path: path.to_path_buf(),
        })
    }

    /// Moves the calling thread into this namespace. Call it only on a thread made for the purpose.
    pub fn enter_this_thread(&self) -> Result<(), NetnsError> {
        setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: self.path.clone(),
            source,
        })
    }
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result. For one-off work
/// (tests, opening a single handle); a scan over many namespaces enters them one after the other on one
/// thread instead.
pub fn in_netns<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let handle = NetnsHandle::open(&[path.to_path_buf()], None)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                handle.enter_this_thread()?;
                Ok(f())
            })
            .join()
            .unwrap_or(Err(NetnsError::Thread))
    })
}
