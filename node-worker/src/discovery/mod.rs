//! Which network namespaces the host has, what runs in them, and which interfaces to capture.
//!
//! [`Scanner::scan`] (I/O: `/proc/*/ns/net`, `/run/netns`, and per namespace `setns` + getifaddrs on a
//! short-lived thread) produces a [`HostSnapshot`]; [`plan`] (pure) turns it into [`TapSpec`]s, which
//! `source::live::Taps::apply` opens and closes.

mod interfaces;
pub mod mesh;
pub mod netns;
pub mod plan;
mod procfs;
pub mod scan;
pub mod snapshot;
mod sockets;

pub use mesh::{Mesh, MeshKind};
pub use netns::{in_netns, NetnsError, NetnsTarget};
pub use plan::{plan, MeshOverride, MeshOverrides, PlanPolicy, TapSpec};
pub use scan::{ScanError, Scanner};
pub use snapshot::{HostSnapshot, InterfaceSnapshot, NetnsId, NetnsSnapshot, ProcessInfo};
