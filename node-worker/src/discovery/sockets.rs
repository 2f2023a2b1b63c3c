//! The TCP ports listened on in the calling thread's network namespace (`/proc/thread-self/net/tcp`
//! and `tcp6`, which show the sockets of the namespace the thread is in, whoever owns them). An ambient
//! pod is recognised by ztunnel's listeners there (see `mesh::detect`).

use std::io::Read;

/// `/proc/net/tcp` of a busy pod can be long; the listeners come first in practice, and a cut file only
/// hides listeners (the namespace is then not taken for ambient).
const MAX_BYTES: u64 = 1 << 20;

/// The listening ports of the calling thread's namespace, sorted, without duplicates. A file that
/// cannot be read (no IPv6) counts as no listener.
pub(crate) fn listening_current() -> Vec<u16> {
    let mut ports = Vec::new();
    for path in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let mut text = String::new();
        let read =
            std::fs::File::open(path).and_then(|f| f.take(MAX_BYTES).read_to_string(&mut text));
        if read.is_ok() {
            ports.extend(listening_ports(&text));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The local ports of the sockets in state LISTEN (`0A`) in a `/proc/net/tcp{,6}` text. Lines that do
/// not parse are skipped.
pub(crate) fn listening_ports(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (_, port) = local.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_read_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:3A99 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 00000000:3A9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:3A99 0100000A:D3A2 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n\
   3: garbage\n\
   4: 00000000:ZZZZ 00000000:0000 0A\n";
        assert_eq!(listening_ports(text), vec![15001, 15006]);
        let v6 = "header\n   0: 00000000000000000000000000000000:3AA0 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(listening_ports(v6), vec![15008]);
        assert!(listening_ports("").is_empty());
    }

    #[test]
    fn this_threads_namespace_can_be_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_current().contains(&port));
    }
}
