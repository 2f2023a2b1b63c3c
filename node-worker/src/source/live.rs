//! Live capture: a set of pcap handles ("taps"), one per interface, all served by one event loop.
//!
//! Handles are non-blocking and read only when poll(2) says their descriptor is ready, at most
//! [`TapOptions::batch`] packets per handle per round, from the kernel's memory-mapped ring (libpcap's
//! TPACKET_V3: packets are read without a system call each). No thread ever blocks in `pcap_next`.
//!
//! [`Taps::apply`] makes the open taps match a plan: new ones are opened (inside their namespaces),
//! vanished ones are closed. An interface that disappears while captured (its pod was deleted) is
//! normal: the tap is closed, counted as vanished and logged at debug level.

mod open;

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::time::Duration;

use interceptor_crds::config::CaptureConfig;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use pcap::{Active, Capture};

use super::{InterfaceInfo, LinkType, Packet};
use crate::discovery::{Mesh, TapSpec};

/// TCP over IPv4 and IPv6, also inside a VLAN tag (`vlan` compiles only for Ethernet-like link types;
/// elsewhere the handle falls back to `tcp`).
pub const DEFAULT_FILTER: &str = "tcp or (vlan and tcp)";

/// How handles are opened and read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapOptions {
    /// Bytes captured per packet.
    pub snaplen: u32,
    /// The kernel ring per handle, in bytes.
    pub buffer_bytes: u32,
    /// How long the kernel may hold captured packets before making them readable, so that a busy
    /// interface is read in batches. `None`: immediate mode (every packet wakes the loop).
    pub read_timeout: Option<Duration>,
    /// BPF filter (libpcap syntax).
    pub filter: String,
    /// Packets read from one handle per round at most, so that one busy interface cannot starve the
    /// others.
    pub batch: usize,
    /// Promiscuous mode. Off: a pod's interface only carries the pod's traffic anyway. (libpcap reports
    /// `if_dropped` on Linux only for promiscuous handles.)
    pub promiscuous: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions::from(&CaptureConfig::default())
    }
}

impl From<&CaptureConfig> for TapOptions {
    fn from(config: &CaptureConfig) -> Self {
        TapOptions {
            snaplen: config.snaplen,
            buffer_bytes: config.buffer_bytes,
            read_timeout: Some(Duration::from_millis(20)),
            filter: DEFAULT_FILTER.to_string(),
            batch: 256,
            promiscuous: false,
        }
    }
}

/// Why a tap could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("{interface}: {message}")]
    Netns {
        interface: String,
        message: String,
        vanished: bool,
    },
    #[error("{interface}: cannot open capture: {message}")]
    Open {
        interface: String,
        message: String,
        vanished: bool,
    },
    #[error("{interface}: cannot set capture filter {filter:?}: {message}")]
    Filter {
        interface: String,
        filter: String,
        message: String,
    },
    #[error("the thread opening captures panicked")]
    Thread,
}

impl TapError {
    /// The namespace or interface is gone: normal under pod churn, not worth a warning.
    pub fn is_vanished(&self) -> bool {
        match self {
            TapError::Netns { vanished, .. } | TapError::Open { vanished, .. } => *vanished,
            TapError::Filter { .. } | TapError::Thread => false,
        }
    }
}

/// Why the event loop failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("poll: {0}")]
    Poll(nix::Error),
}

/// Kernel-side counters of a handle (`pcap_stats`), cumulative since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets that passed the filter (captured or dropped).
    pub received: u64,
    /// Dropped because the ring was full (the loop did not keep up).
    pub dropped: u64,
    /// Dropped by the interface or its driver (only reported for promiscuous handles on Linux).
    pub if_dropped: u64,
}

impl KernelStats {
    fn add(&mut self, other: &KernelStats) {
        self.received += other.received;
        self.dropped += other.dropped;
        self.if_dropped += other.if_dropped;
    }
}

/// What a tap has delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapCounters {
    pub packets: u64,
    /// Captured bytes (at most snaplen per packet).
    pub bytes: u64,
    /// Packets cut by snaplen.
    pub truncated: u64,
    pub kernel: KernelStats,
}

impl TapCounters {
    fn add(&mut self, other: &TapCounters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.truncated += other.truncated;
        self.kernel.add(&other.kernel);
    }
}

/// One open tap, as reported by [`Taps::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapStats {
    pub info: InterfaceInfo,
    pub link_type: LinkType,
    pub mesh: Option<Mesh>,
    pub counters: TapCounters,
}

/// All taps: the open ones, and the sums of those closed since the start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapsStats {
    pub open: Vec<TapStats>,
    /// Sums over the taps closed so far (released by a plan, or vanished).
    pub closed: TapCounters,
    /// Taps opened since the start.
    pub opened: u64,
    /// Taps closed because the plan no longer had them.
    pub released: u64,
    /// Taps closed because their interface went away or down while captured.
    pub vanished: u64,
    /// Taps closed because reading failed for another reason.
    pub read_errors: u64,
    /// Opens that failed (most often: the pod went away between the scan and the open).
    pub open_failures: u64,
}

impl TapsStats {
    /// Everything captured since the start, by open and closed taps.
    pub fn totals(&self) -> TapCounters {
        let mut totals = self.closed;
        for tap in &self.open {
            totals.add(&tap.counters);
        }
        totals
    }
}

/// What [`Taps::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub opened: Vec<InterfaceInfo>,
    pub closed: Vec<InterfaceInfo>,
    pub failed: Vec<(InterfaceInfo, TapError)>,
}

/// What one [`Taps::poll`] round did.
#[derive(Debug, Default)]
pub struct PollReport {
    pub packets: u64,
    pub bytes: u64,
    /// Taps closed in this round because their interface went away (or reading failed): the pipeline
    /// may flush what it holds for them.
    pub lost: Vec<InterfaceInfo>,
}

struct Tap {
    info: InterfaceInfo,
    mesh: Option<Mesh>,
    capture: Capture<Active>,
    link_type: LinkType,
    counters: TapCounters,
    /// The last round stopped at the batch limit: read again without waiting for poll.
    backlog: bool,
    /// libpcap's counters as last read (32 bits, they wrap), to add up their increments.
    kernel_raw: RawKernelStats,
}

/// The open taps and the event loop over them.
pub struct Taps {
    options: TapOptions,
    taps: Vec<Tap>,
    closed: TapCounters,
    opened: u64,
    released: u64,
    vanished: u64,
    read_errors: u64,
    open_failures: u64,
}

impl Taps {
    pub fn new(options: TapOptions) -> Self {
        Taps {
            options,
            taps: Vec::new(),
            closed: TapCounters::default(),
            opened: 0,
            released: 0,
            vanished: 0,
            read_errors: 0,
            open_failures: 0,
        }
    }

    pub fn options(&self) -> &TapOptions {
        &self.options
    }

    pub fn len(&self) -> usize {
        self.taps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    /// The interfaces being captured.
    pub fn interfaces(&self) -> impl Iterator<Item = &InterfaceInfo> {
        self.taps.iter().map(|t| &t.info)
    }

    /// Makes the open taps match `plan`: closes those not in it, opens those not yet open (including
    /// ones lost earlier). Failures are reported and counted, never fatal: the next apply retries.
    pub fn apply(&mut self, plan: &[TapSpec]) -> ApplyReport {
        let mut report = ApplyReport::default();
        let wanted: HashSet<&InterfaceInfo> = plan.iter().map(|s| &s.info).collect();
        let mut index = 0;
        let mut closing = Vec::new();
        while index < self.taps.len() {
            if wanted.contains(&self.taps[index].info) {
                index += 1;
            } else {
                let tap = self.taps.swap_remove(index);
                tracing::debug!(interface = %tap.info.name, netns = ?tap.info.netns, "releasing tap");
                self.released += 1;
                let (info, capture) = self.retire(tap);
                report.closed.push(info);
                closing.push(capture);
            }
        }
        open::close_all(closing);

        let mut open: HashSet<&InterfaceInfo> = self.taps.iter().map(|t| &t.info).collect();
        let new: Vec<&TapSpec> = plan.iter().filter(|s| open.insert(&s.info)).collect();
        if new.is_empty() {
            return report;
        }
        let results = open::open_all(&new, &self.options);
        for (spec, result) in new.into_iter().zip(results) {
            match result {
                Ok(opened) => {
                    tracing::debug!(interface = %spec.info.name, netns = ?spec.info.netns,
                        mode = spec.info.mode.as_str(), link_type = opened.link_type.0, "tap opened");
                    self.opened += 1;
                    report.opened.push(spec.info.clone());
                    self.taps.push(Tap {
                        info: spec.info.clone(),
                        mesh: spec.mesh.clone(),
                        capture: opened.capture,
                        link_type: opened.link_type,
                        counters: TapCounters::default(),
                        backlog: false,
                        kernel_raw: RawKernelStats::default(),
                    });
                }
                Err(e) => {
                    if e.is_vanished() {
                        tracing::debug!(error = %e, netns = ?spec.info.netns, "interface gone before it could be tapped");
                    } else {
                        tracing::warn!(error = %e, netns = ?spec.info.netns, "cannot tap interface");
                    }
                    self.open_failures += 1;
                    report.failed.push((spec.info.clone(), e));
                }
            }
        }
        report
    }

    /// Waits up to `timeout` for packets on any tap, then hands each ready tap's packets (up to the
    /// batch size per tap) to `deliver`. Returns early, with nothing, when a signal interrupts the
    /// wait. With no taps, it sleeps for `timeout` (so a caller's loop never spins).
    pub fn poll<F>(&mut self, timeout: Duration, mut deliver: F) -> Result<PollReport, LiveError>
    where
        F: FnMut(&InterfaceInfo, &Packet<'_>),
    {
        let mut report = PollReport::default();
        if self.taps.is_empty() {
            std::thread::sleep(timeout);
            return Ok(report);
        }
        let backlog = self.taps.iter().any(|t| t.backlog);
        let wait = if backlog {
            PollTimeout::ZERO
        } else {
            PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX)
        };
        let ready: Vec<Option<PollFlags>> = {
            let mut fds: Vec<PollFd<'_>> = self
                .taps
                .iter()
                .map(|t| PollFd::new(t.capture.as_fd(), PollFlags::POLLIN))
                .collect();
            match nix::poll::poll(&mut fds, wait) {
                Ok(_) => fds.iter().map(|f| f.revents()).collect(),
                Err(Errno::EINTR) => return Ok(report),
                Err(e) => return Err(LiveError::Poll(e)),
            }
        };

        let batch = self.options.batch.max(1);
        let mut lost = Vec::new();
        for (index, (tap, revents)) in self.taps.iter_mut().zip(ready).enumerate() {
            let revents = revents.unwrap_or(PollFlags::empty());
            if revents.is_empty() && !tap.backlog {
                continue;
            }
            match read_batch(tap, batch, &mut deliver) {
                Ok((packets, bytes)) => {
                    report.packets += packets;
                    report.bytes += bytes;
                    tap.backlog = packets >= batch as u64;
                    // An error condition that libpcap did not turn into an error would wake every poll
                    // from now on: treat the handle as gone.
                    let broken = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
                    if packets == 0 && revents.intersects(broken) {
                        lost.push((index, true, format!("poll reported {revents:?}")));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    lost.push((index, open::looks_vanished(&message), message));
                }
            }
        }
        // Highest index first, so swap_remove leaves the remaining indices valid.
        let mut closing = Vec::new();
        for (index, vanished, message) in lost.into_iter().rev() {
            let tap = self.taps.swap_remove(index);
            if vanished {
                tracing::debug!(interface = %tap.info.name, netns = ?tap.info.netns, reason = %message, "interface vanished while captured");
                self.vanished += 1;
            } else {
                tracing::warn!(interface = %tap.info.name, netns = ?tap.info.netns, error = %message, "capture failed, tap closed");
                self.read_errors += 1;
            }
            let (info, capture) = self.retire(tap);
            report.lost.push(info);
            closing.push(capture);
        }
        open::close_all(closing);
        Ok(report)
    }

    /// Counters per open tap (with fresh kernel statistics) and for the closed ones.
    pub fn stats(&mut self) -> TapsStats {
        let open = self
            .taps
            .iter_mut()
            .map(|tap| {
                refresh_kernel_stats(tap);
                TapStats {
                    info: tap.info.clone(),
                    link_type: tap.link_type,
                    mesh: tap.mesh.clone(),
                    counters: tap.counters,
                }
            })
            .collect();
        TapsStats {
            open,
            closed: self.closed,
            opened: self.opened,
            released: self.released,
            vanished: self.vanished,
            read_errors: self.read_errors,
            open_failures: self.open_failures,
        }
    }

    /// Closes every tap (their counters join the closed sums).
    pub fn close_all(&mut self) -> Vec<InterfaceInfo> {
        let taps = std::mem::take(&mut self.taps);
        let (infos, captures) = taps.into_iter().map(|tap| self.retire(tap)).unzip();
        open::close_all(captures);
        infos
    }

    /// Takes a tap's final counters; the caller closes its handle.
    fn retire(&mut self, mut tap: Tap) -> (InterfaceInfo, Capture<Active>) {
        refresh_kernel_stats(&mut tap);
        self.closed.add(&tap.counters);
        (tap.info, tap.capture)
    }
}

/// Reads up to `batch` packets from a ready tap.
fn read_batch<F>(tap: &mut Tap, batch: usize, deliver: &mut F) -> Result<(u64, u64), pcap::Error>
where
    F: FnMut(&InterfaceInfo, &Packet<'_>),
{
    let info = &tap.info;
    let link_type = tap.link_type;
    let counters = &mut tap.counters;
    let mut bytes = 0u64;
    let packets = tap.capture.dispatch(Some(batch), |p| {
        let packet = Packet {
            timestamp_us: timeval_us(&p.header.ts),
            link_type,
            data: p.data,
            orig_len: p.header.len,
        };
        let len = p.data.len() as u64;
        bytes += len;
        counters.packets += 1;
        counters.bytes += len;
        if p.header.len > p.header.caplen {
            counters.truncated += 1;
        }
        deliver(info, &packet);
    })?;
    Ok((packets as u64, bytes))
}

/// Microseconds since the epoch. `time_t` and `suseconds_t` are `i64` here but narrower on some
/// targets, hence the conversions.
#[allow(clippy::useless_conversion)]
fn timeval_us(ts: &libc::timeval) -> i64 {
    i64::from(ts.tv_sec)
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.tv_usec))
}

/// libpcap's `pcap_stats` counters: 32 bits, so they wrap on a long-lived busy tap (2^32 packets is
/// half a day at 100k packets/s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawKernelStats {
    received: u32,
    dropped: u32,
    if_dropped: u32,
}

/// Adds what the 32-bit counters gained since `last` (modulo 2^32) to the 64-bit `total`.
fn accumulate(total: &mut KernelStats, last: &mut RawKernelStats, now: RawKernelStats) {
    total.received += u64::from(now.received.wrapping_sub(last.received));
    total.dropped += u64::from(now.dropped.wrapping_sub(last.dropped));
    total.if_dropped += u64::from(now.if_dropped.wrapping_sub(last.if_dropped));
    *last = now;
}

fn refresh_kernel_stats(tap: &mut Tap) {
    match tap.capture.stats() {
        Ok(stat) => {
            let now = RawKernelStats {
                received: stat.received,
                dropped: stat.dropped,
                if_dropped: stat.if_dropped,
            };
            accumulate(&mut tap.counters.kernel, &mut tap.kernel_raw, now);
        }
        // Keep the last values; the handle may be going away.
        Err(e) => tracing::debug!(interface = %tap.info.name, error = %e, "pcap_stats failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_add_up_across_the_32_bit_wrap() {
        let mut total = KernelStats::default();
        let mut last = RawKernelStats::default();
        let raw = |received, dropped| RawKernelStats {
            received,
            dropped,
            if_dropped: 0,
        };
        accumulate(&mut total, &mut last, raw(u32::MAX - 9, 5));
        assert_eq!(
            (total.received, total.dropped),
            (u64::from(u32::MAX) - 9, 5)
        );
        // The 32-bit counter wraps: 20 more packets read as 10.
        accumulate(&mut total, &mut last, raw(10, 5));
        assert_eq!(total.received, u64::from(u32::MAX) + 11);
        accumulate(&mut total, &mut last, raw(10, 7));
        assert_eq!(
            (total.received, total.dropped),
            (u64::from(u32::MAX) + 11, 7)
        );
    }
}
