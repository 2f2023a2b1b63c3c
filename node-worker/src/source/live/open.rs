//! Opening capture handles, each inside its interface's network namespace.

use std::collections::HashMap;

use pcap::{Active, Capture};

use super::{TapError, TapOptions};
use crate::discovery::netns::{NetnsHandle, NetnsTarget};
use crate::discovery::TapSpec;
use crate::source::LinkType;

/// The filter used when the options' filter does not compile for a link type (`vlan` exists only for
/// Ethernet-like link types; `any` is Linux cooked capture).
const FALLBACK_FILTER: &str = "tcp";

pub(super) struct Opened {
    pub capture: Capture<Active>,
    pub link_type: LinkType,
}

/// Threads opening (or closing) handles at once. Each open and close waits for the kernel's network
/// RCU grace period (`synchronize_net`, ~10-30 ms); in parallel those waits overlap, so a hundred taps
/// open in a fraction of a second instead of seconds during which the event loop would not read.
const PARALLEL: usize = 8;

/// Opens every spec; results in the order of `specs`. Specs in other namespaces are opened on a few
/// short-lived threads, each entering its namespaces one after the other; the caller's threads never
/// change namespace.
pub(super) fn open_all(specs: &[&TapSpec], options: &TapOptions) -> Vec<Result<Opened, TapError>> {
    let mut results: Vec<Option<Result<Opened, TapError>>> = specs.iter().map(|_| None).collect();
    // Group by namespace: each is entered once, however many of its interfaces are tapped.
    let mut groups: Vec<(&NetnsTarget, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<&NetnsTarget, usize> = HashMap::new();
    for (index, spec) in specs.iter().enumerate() {
        if spec.target == NetnsTarget::Current {
            results[index] = Some(open_here(&spec.info.name, options));
            continue;
        }
        let group = *group_of.entry(&spec.target).or_insert_with(|| {
            groups.push((&spec.target, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(index);
    }
    if !groups.is_empty() {
        let workers = groups.len().min(PARALLEL);
        let opened: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|worker| {
                    let groups = &groups;
                    scope.spawn(move || {
                        groups
                            .iter()
                            .skip(worker)
                            .step_by(workers)
                            .flat_map(|(target, members)| open_in(target, members, specs, options))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        for worker in opened {
            match worker {
                Ok(opened) => {
                    for (index, result) in opened {
                        results[index] = Some(result);
                    }
                }
                Err(_) => tracing::error!("a thread opening captures panicked"),
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(TapError::Thread)))
        .collect()
}

/// Closes handles, several at once (see [`PARALLEL`]).
pub(super) fn close_all(captures: Vec<Capture<Active>>) {
    if captures.len() <= 1 {
        drop(captures);
        return;
    }
    let workers = captures.len().min(PARALLEL);
    let mut shares: Vec<Vec<Capture<Active>>> = (0..workers).map(|_| Vec::new()).collect();
    for (index, capture) in captures.into_iter().enumerate() {
        shares[index % workers].push(capture);
    }
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || drop(share));
        }
    });
}

/// Runs on the opening thread: enters `target` and opens its members' interfaces.
fn open_in(
    target: &NetnsTarget,
    members: &[usize],
    specs: &[&TapSpec],
    options: &TapOptions,
) -> Vec<(usize, Result<Opened, TapError>)> {
    let entered = match target {
        NetnsTarget::Current => Ok(()),
        NetnsTarget::Enter { paths, expect } => {
            NetnsHandle::open(paths, *expect).and_then(|handle| handle.enter_this_thread())
        }
    };
    members
        .iter()
        .map(|&index| {
            let name = &specs[index].info.name;
            let result = match &entered {
                Ok(()) => open_here(name, options),
                Err(e) => Err(TapError::Netns {
                    interface: name.clone(),
                    message: e.to_string(),
                    vanished: e.is_vanished(),
                }),
            };
            (index, result)
        })
        .collect()
}

/// Opens `name` in the calling thread's namespace: non-blocking, TCP only.
fn open_here(name: &str, options: &TapOptions) -> Result<Opened, TapError> {
    let open_error = |e: pcap::Error| {
        let message = e.to_string();
        TapError::Open {
            interface: name.to_string(),
            vanished: looks_vanished(&message),
            message,
        }
    };
    let inactive = Capture::from_device(name)
        .map_err(open_error)?
        .snaplen(i32::try_from(options.snaplen).unwrap_or(i32::MAX))
        .buffer_size(i32::try_from(options.buffer_bytes).unwrap_or(i32::MAX))
        .promisc(options.promiscuous);
    let inactive = match options.read_timeout {
        None => inactive.immediate_mode(true),
        Some(timeout) => inactive.timeout(
            i32::try_from(timeout.as_millis())
                .unwrap_or(i32::MAX)
                .max(1),
        ),
    };
    let mut capture = inactive
        .open()
        .map_err(open_error)?
        .setnonblock()
        .map_err(open_error)?;
    if let Err(first) = capture.filter(&options.filter, true) {
        capture
            .filter(FALLBACK_FILTER, true)
            .map_err(|e| TapError::Filter {
                interface: name.to_string(),
                filter: options.filter.clone(),
                message: format!("{first}; fallback {FALLBACK_FILTER:?}: {e}"),
            })?;
        tracing::debug!(interface = name, filter = %options.filter, error = %first, "filter refused, capturing with \"tcp\"");
    }
    let link_type = LinkType(capture.get_datalink().0);
    Ok(Opened { capture, link_type })
}

/// Whether a libpcap error says the interface is gone or down: normal when a pod is deleted.
pub(super) fn looks_vanished(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no such device",
        "disappeared",
        "went down",
        "not up",
        "network is down",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}
