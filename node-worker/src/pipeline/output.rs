//! The pipeline's output: each completed pair encoded as a pair message, with its id and its
//! partition key, and handed to the sink.

use std::net::SocketAddr;

use crate::app::CompletedPair;
use crate::filters::Rules;
use crate::message::{encode_pair, Endpoint, Ipv4Text, Origin};
use crate::pair_id::{write_pair_id, IdPrefix};
use crate::sink::{OutgoingPair, Sink};
use crate::stats::Counters;

use super::sidecar_copies::{CopyOf, Fingerprint, Role, SidecarCopies};

pub(super) struct Output {
    pub sink: Box<dyn Sink>,
    /// The pair being encoded (a buffer reused for every pair).
    encoded: Vec<u8>,
    id_prefix: IdPrefix,
    next_id: u64,
    /// The id of the pair being encoded (a reused buffer).
    id: String,
    /// The partition key of the pairs being sent (a reused buffer).
    partition_key: String,
    /// Pairs of exchanges a sidecar pod of this node sees twice, waiting for their other copy.
    copies: SidecarCopies<OutgoingPair>,
}

/// One connection's pairs: the fields every pair of theirs shares.
pub(super) struct Ends<'a> {
    pub origin: &'a Origin,
    pub source: Endpoint,
    pub destination: Endpoint,
}

impl Output {
    pub fn new(sink: Box<dyn Sink>) -> Self {
        Output {
            sink,
            encoded: Vec::with_capacity(ENCODED_INITIAL_BYTES),
            id_prefix: IdPrefix::random(),
            next_id: 0,
            id: String::new(),
            partition_key: String::new(),
            copies: SidecarCopies::default(),
        }
    }

    pub fn set_id_prefix(&mut self, prefix: IdPrefix) {
        self.id_prefix = prefix;
    }

    /// Encodes and sends `pairs` (emptied), all of one connection; a pair that cannot be encoded is a
    /// counted drop. `copy`: the connection carries one copy of exchanges a sidecar pod of this node
    /// sees twice (see `sidecar_copies`): its pairs are matched with the other copy's before one is sent.
    pub fn send(
        &mut self,
        pairs: &mut Vec<CompletedPair>,
        ends: &Ends<'_>,
        copy: Option<CopyOf>,
        rules: &Rules,
        counters: &mut Counters,
    ) {
        write_partition_key(&mut self.partition_key, &ends.destination);
        for pair in pairs.drain(..) {
            // One of two copies of an exchange with a sidecar pod of this node: the proxy's leg is
            // skipped when the client's view is (or was) seen; a copy whose other half may still come
            // waits for it.
            let mut wait = None;
            if let Some(copy) = copy {
                let fingerprint = Fingerprint::of(&pair);
                match self.copies.take_other(copy.role, copy.pod, fingerprint) {
                    Some(other) => {
                        counters.pairs_sidecar_copies += 1;
                        if copy.role == Role::ProxyLeg {
                            // The held view goes; this leg is the copy, never encoded.
                            self.send_held(&other, counters);
                            continue;
                        }
                        // The held leg was the copy; this view goes now.
                    }
                    None => wait = Some((copy, fingerprint)),
                }
            }
            write_pair_id(&mut self.id, &self.id_prefix, self.next_id);
            self.next_id += 1;
            // Encoded where the sink keeps it if it can (see `Sink::encode_and_send`), else in
            // `encoded`.
            let mut encode = |out: &mut Vec<u8>| {
                encode_pair(
                    &pair,
                    &self.id,
                    ends.origin,
                    &ends.source,
                    &ends.destination,
                    rules,
                    out,
                )
            };
            let Some((copy, fingerprint)) = wait else {
                match self
                    .sink
                    .encode_and_send(&self.partition_key, &mut self.encoded, &mut encode)
                {
                    Ok(()) => counters.pairs_emitted += 1,
                    Err(reason) => counters.count_drop(reason),
                }
                continue;
            };
            self.encoded.clear();
            if let Err(reason) = encode(&mut self.encoded) {
                counters.count_drop(reason);
                continue;
            }
            let held = OutgoingPair {
                key: self.partition_key.clone(),
                value: self.encoded.clone(),
            };
            let bytes = held.key.len() + held.value.len();
            self.copies
                .hold(copy.role, copy.pod, fingerprint, copy.at_us, bytes, held);
        }
        // The buffer is reused for every pair, but a rare large one must not keep its memory for good.
        if self.encoded.capacity() > ENCODED_KEEP_BYTES {
            self.encoded = Vec::with_capacity(ENCODED_INITIAL_BYTES);
        }
    }

    /// Sends the copies that waited long enough for their other half by `now_us` (`i64::MAX`: all).
    pub fn send_due(&mut self, now_us: i64, counters: &mut Counters) {
        if self.copies.is_empty() {
            return;
        }
        while let Some(held) = self.copies.pop_due(now_us) {
            self.send_held(&held, counters);
        }
    }

    fn send_held(&mut self, pair: &OutgoingPair, counters: &mut Counters) {
        self.sink.send(pair.view());
        counters.pairs_emitted += 1;
    }
}

/// Writes the partition key of pairs sent to `destination` into `key` (a buffer reused for every
/// pair): its pod as `namespace/name`, or, for no known pod, its address as `Display` writes it
/// (`10.0.0.7:8080`, `[::1]:8080`), IPv4 without the formatting machinery.
fn write_partition_key(key: &mut String, destination: &Endpoint) {
    key.clear();
    match (&destination.pod, destination.addr) {
        (Some(pod), _) => {
            key.push_str(&pod.namespace);
            key.push('/');
            key.push_str(&pod.name);
        }
        (None, SocketAddr::V4(v4)) => {
            key.push_str(Ipv4Text::new(*v4.ip()).as_str());
            key.push(':');
            key.push_str(itoa::Buffer::new().format(v4.port()));
        }
        (None, addr @ SocketAddr::V6(_)) => {
            use std::fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(key, "{addr}");
        }
    }
}

/// The pair buffer's first size, and the most capacity it keeps between pairs. Escaping reserves six
/// times a body's length, so this keeps it for bodies up to about 700 KB; of that capacity only what
/// was written (at most the largest message the limits let through) is resident memory.
const ENCODED_INITIAL_BYTES: usize = 4096;
const ENCODED_KEEP_BYTES: usize = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PodRef;

    #[test]
    fn partition_keys_name_the_pod_or_read_as_display_does() {
        let mut key = String::from("left over");
        for addr in [
            "10.0.0.7:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:80",
            "[fe80::1]:443",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            write_partition_key(&mut key, &Endpoint { addr, pod: None });
            assert_eq!(key, addr.to_string());
        }
        let pod = PodRef {
            namespace: "shop".into(),
            name: "api-7d9f".into(),
            container: None,
        };
        let addr = "10.0.0.7:8080".parse().unwrap();
        write_partition_key(
            &mut key,
            &Endpoint {
                addr,
                pod: Some(pod),
            },
        );
        assert_eq!(key, "shop/api-7d9f");
    }
}
