//! Where packets come from: a capture file, or live interfaces (I/O edge of the pipeline).

pub mod file;
pub mod live;

/// A link-layer header type, as numbered by libpcap (`DLT_*` / `LINKTYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkType(pub i32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// `DLT_RAW` on most platforms.
    pub const RAW: LinkType = LinkType(12);
    /// `DLT_RAW` on OpenBSD.
    pub const RAW_OPENBSD: LinkType = LinkType(14);
    /// `LINKTYPE_RAW` as written in capture files.
    pub const LINKTYPE_RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// One captured packet, borrowed from the capture buffer.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// Capture time, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    pub link_type: LinkType,
    /// The captured bytes (at most snaplen).
    pub data: &'a [u8],
    /// The packet's length on the wire (more than `data.len()` when truncated by snaplen).
    pub orig_len: u32,
}

/// Which interface a packet was captured on; carried into every pair it produces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceInfo {
    pub name: String,
    /// The network namespace: its inode or path; `None` for a capture file or the host namespace.
    pub netns: Option<String>,
    pub mode: CaptureMode,
}

/// How an interface is tapped (the pair message's `interface.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptureMode {
    /// A pod's external interface.
    External,
    /// A pod's loopback, tapped because a service-mesh sidecar encrypts what leaves the pod.
    Loopback,
    /// A capture file.
    File,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::External => "external",
            CaptureMode::Loopback => "loopback",
            CaptureMode::File => "file",
        }
    }
}
