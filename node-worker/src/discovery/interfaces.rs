//! The interfaces of the calling thread's network namespace, with their flags and addresses.

use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

use super::snapshot::InterfaceSnapshot;

/// Lists the interfaces of the namespace the calling thread is in (getifaddrs asks the kernel over a
/// netlink socket, which lives in the thread's namespace).
pub(crate) fn list_current() -> nix::Result<Vec<InterfaceSnapshot>> {
    let mut interfaces: Vec<InterfaceSnapshot> = Vec::new();
    for entry in getifaddrs()? {
        let address = entry.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        // getifaddrs yields one entry per address plus one link-level entry per interface; fold them.
        let index = match interfaces
            .iter()
            .position(|i| i.name == entry.interface_name)
        {
            Some(index) => index,
            None => {
                interfaces.push(InterfaceSnapshot {
                    name: entry.interface_name.clone(),
                    up: false,
                    loopback: false,
                    addresses: Vec::new(),
                });
                interfaces.len() - 1
            }
        };
        let interface = &mut interfaces[index];
        interface.up |= entry.flags.contains(InterfaceFlags::IFF_UP);
        interface.loopback |= entry.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        if let Some(address) = address {
            if !interface.addresses.contains(&address) {
                interface.addresses.push(address);
            }
        }
    }
    Ok(interfaces)
}
