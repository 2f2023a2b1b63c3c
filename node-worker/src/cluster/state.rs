//! What the capture thread and the async tasks share: the loop's heartbeat and a snapshot of its counters
//! (published from the loop's each-round callback about once a second), the network namespaces of the
//! last scan, and the state of the configuration. Everything here is cheap to read and to write.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use interceptor_crds::status_cadence::StatusCadence;
use tokio::sync::{watch, Notify};

use crate::discovery::{HostSnapshot, NetnsId};
use crate::sink::SinkStats;
use crate::source::live::TapsStats;
use crate::source::InterfaceInfo;
use crate::stats::Counters;

/// Each discovered network namespace and its addresses: what pod IPs are matched against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsView {
    pub namespaces: Vec<(NetnsId, Vec<IpAddr>)>,
}

impl NetnsView {
    pub fn of(snapshot: &HostSnapshot) -> NetnsView {
        NetnsView {
            namespaces: snapshot
                .namespaces
                .iter()
                .map(|ns| {
                    let mut addresses: Vec<IpAddr> = ns
                        .interfaces
                        .iter()
                        .flat_map(|i| i.addresses.iter().copied())
                        .collect();
                    addresses.sort_unstable();
                    addresses.dedup();
                    (ns.id, addresses)
                })
                .collect(),
        }
    }

    /// The addresses of the namespace labelled `label` (its inode, as in `InterfaceInfo::netns`).
    pub fn addresses_of(&self, label: &str) -> Option<&[IpAddr]> {
        self.namespaces
            .iter()
            .find(|(id, _)| id.label() == label)
            .map(|(_, a)| a.as_slice())
    }
}

/// The capture loop's counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct LoopSnapshot {
    pub counters: Counters,
    pub sink: SinkStats,
    pub taps: TapsStats,
    /// The interfaces open now.
    pub tapped: Vec<InterfaceInfo>,
    /// Interfaces the last scan could not open, and why.
    pub failed: Vec<(InterfaceInfo, String)>,
    pub scans: u64,
    pub scan_failures: u64,
    /// Purges of the Kafka buffer so far.
    pub purges: u64,
    /// What the translation of mesh-redirected connections did (see `redirect`).
    pub redirects: crate::redirect::RedirectStats,
}

impl LoopSnapshot {
    /// Packets the kernel dropped (ring full, or the interface itself) on every tap so far.
    pub fn kernel_drops(&self) -> u64 {
        let totals = self.taps.totals();
        totals
            .kernel
            .dropped
            .saturating_add(totals.kernel.if_dropped)
    }
}

/// The configuration the worker runs with, and the last one it refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigState {
    /// `resourceVersion` of the ConfigMap whose `config.yaml` is in use (None: no valid config yet).
    pub version: Option<String>,
    /// Why the latest ConfigMap content was refused (None when the latest is the one in use).
    pub refused: Option<String>,
}

/// Shared by the capture thread, the watches, the status writer and the HTTP endpoints.
#[derive(Debug)]
pub struct Shared {
    /// Unix milliseconds of the capture loop's last round; 0 before it starts.
    heartbeat_ms: AtomicU64,
    capture_running: AtomicBool,
    stopping: AtomicBool,
    snapshot: Mutex<Option<LoopSnapshot>>,
    config: Mutex<ConfigState>,
    /// The status cadence of the config in use (None: no valid config yet).
    cadence: Mutex<Option<StatusCadence>>,
    netns: watch::Sender<Arc<NetnsView>>,
    /// Wakes the status writer on a change worth reporting at once (config, shutdown).
    pub changed: Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            heartbeat_ms: AtomicU64::new(0),
            capture_running: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            snapshot: Mutex::new(None),
            config: Mutex::new(ConfigState::default()),
            cadence: Mutex::new(None),
            netns: watch::Sender::new(Arc::new(NetnsView::default())),
            changed: Notify::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays meaningful if a holder panicked: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    /// The capture loop went round once more.
    pub fn beat(&self, now: SystemTime) {
        self.heartbeat_ms.store(unix_ms(now), Ordering::Relaxed);
    }

    /// Unix milliseconds of the loop's last round (0: it has not run yet).
    pub fn last_beat_ms(&self) -> u64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }

    /// Whether the capture loop runs but has not gone round for `after` (a blocked thread).
    pub fn loop_stalled(&self, now: SystemTime, after: Duration) -> bool {
        let last = self.last_beat_ms();
        self.capture_running()
            && last > 0
            && unix_ms(now).saturating_sub(last)
                > u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn set_capture_running(&self, running: bool) {
        self.capture_running.store(running, Ordering::Relaxed);
    }

    pub fn capture_running(&self) -> bool {
        self.capture_running.load(Ordering::Relaxed)
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn publish_snapshot(&self, snapshot: LoopSnapshot) {
        *lock(&self.snapshot) = Some(snapshot);
    }

    pub fn snapshot(&self) -> Option<LoopSnapshot> {
        lock(&self.snapshot).clone()
    }

    pub fn config(&self) -> ConfigState {
        lock(&self.config).clone()
    }

    pub fn set_config(&self, state: ConfigState) {
        let changed = {
            let mut slot = lock(&self.config);
            let changed = *slot != state;
            *slot = state;
            changed
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// How often the status is to be written, as the config in use says.
    pub fn cadence(&self) -> Option<StatusCadence> {
        *lock(&self.cadence)
    }

    pub fn set_cadence(&self, cadence: StatusCadence) {
        *lock(&self.cadence) = Some(cadence);
    }

    /// Publish the namespaces of a new scan (only when they differ from the last, so that watchers wake
    /// only on news).
    pub fn publish_netns(&self, view: NetnsView) {
        self.netns.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
    }

    pub fn netns(&self) -> Arc<NetnsView> {
        Arc::clone(&self.netns.borrow())
    }

    pub fn watch_netns(&self) -> watch::Receiver<Arc<NetnsView>> {
        self.netns.subscribe()
    }
}
