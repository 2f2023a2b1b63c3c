//! The live worker's event loop: keep the taps in line with what should be captured (one interface, or
//! every pod's namespace found by discovery), feed their packets to the pipeline, and let time pass.
//!
//! One thread runs it; all handles are non-blocking and served by one poll(2). Everything else (signal
//! handlers, the Kubernetes integration) talks to it through [`LoopControl`], which is cheap to share.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use interceptor_crds::config::WorkerConfig;

use crate::discovery::mesh::{Mesh, MeshKind};
use crate::discovery::{plan, HostSnapshot, MeshOverrides, PlanPolicy, Scanner, TapSpec};
use crate::pipeline::mesh_views::NodeTaps;
use crate::pipeline::Pipeline;
use crate::redirect::conntrack::Conntrack;
use crate::redirect::Redirects;
use crate::source::live::{TapOptions, Taps, TapsStats};
use crate::source::InterfaceInfo;

/// What to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// One interface, optionally inside a network namespace (`/run/netns/NAME`, `/proc/PID/ns/net`),
    /// and the service mesh the user says runs there: on a loopback tap it turns on the translation of
    /// connections the mesh's rules redirect to its proxy (discovery finds the mesh by itself).
    Interface {
        name: String,
        netns: Option<PathBuf>,
        mesh: Option<MeshKind>,
    },
    /// Every pod namespace on the host, tapped as the in-cluster worker does.
    Discover,
}

/// Why the loop could not start.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LoopError {
    #[error("cannot capture on {interface}: {reason}")]
    Open { interface: String, reason: String },
}

/// Requests to a running loop, from any thread.
#[derive(Clone, Default)]
pub struct LoopControl {
    inner: Arc<ControlInner>,
}

#[derive(Default)]
struct ControlInner {
    /// Shared with signal handlers (`signal_hook::flag::register` takes an `Arc<AtomicBool>`).
    stop: Arc<AtomicBool>,
    rescan: Arc<AtomicBool>,
    /// A new configuration to apply at the next round.
    config: Mutex<Option<WorkerConfig>>,
    /// What the Kubernetes API says about meshes (replaces process-name detection per namespace).
    overrides: Mutex<Option<MeshOverrides>>,
}

impl LoopControl {
    /// Ask the loop to stop after its current round (it then returns; the caller flushes).
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }

    pub fn is_stopping(&self) -> bool {
        self.inner.stop.load(Ordering::Relaxed)
    }

    /// The flag behind [`LoopControl::stop`], for signal handlers (SIGINT, SIGTERM).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.stop)
    }

    /// The flag behind [`LoopControl::rescan`], for a signal handler (SIGHUP).
    pub fn rescan_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.rescan)
    }

    /// Rescan the host's namespaces at the next round instead of waiting for the interval.
    pub fn rescan(&self) {
        self.inner.rescan.store(true, Ordering::Relaxed);
    }

    /// Apply a new configuration without restarting (filters and limits at once, capture settings at
    /// the next rescan).
    pub fn reconfigure(&self, config: WorkerConfig) {
        if let Ok(mut slot) = self.inner.config.lock() {
            *slot = Some(config);
        }
        self.rescan();
    }

    pub fn set_mesh_overrides(&self, overrides: MeshOverrides) {
        if let Ok(mut slot) = self.inner.overrides.lock() {
            *slot = Some(overrides);
        }
        self.rescan();
    }
}

/// What the loop saw, for the summary and the status.
#[derive(Clone, Debug, Default)]
pub struct LoopReport {
    pub taps: TapsStats,
    pub scans: u64,
    pub scan_failures: u64,
    /// The interfaces that are open now.
    pub tapped: Vec<InterfaceInfo>,
    /// Interfaces the last scan wanted but could not open, and why (not those whose pod went away).
    pub failed: Vec<(InterfaceInfo, String)>,
}

pub struct CaptureLoop {
    selection: Selection,
    taps: Taps,
    scanner: Scanner,
    policy: PlanPolicy,
    overrides: MeshOverrides,
    rescan_every: Duration,
    next_scan: Instant,
    control: LoopControl,
    scans: u64,
    scan_failures: u64,
    /// Whether the last scan met processes whose namespace it may not read (warned once per episode).
    unreadable_warned: bool,
    last_snapshot: Option<HostSnapshot>,
    failed: Vec<(InterfaceInfo, String)>,
    /// Mesh loopback taps opened by the last scan, with their redirect translation, for the pipeline.
    redirects: Vec<(InterfaceInfo, Redirects)>,
    /// The node's tapped namespaces after the last scan, for the pipeline.
    node_taps: Option<NodeTaps>,
    /// Taps the last scan closed, whose redirect translation the pipeline drops.
    closed: Vec<InterfaceInfo>,
}

/// The redirect translation of a mesh's loopback tap: conntrack asked in the tap's namespace. Without
/// conntrack (no permission, no module) the tap still works; redirected destinations are then unknown.
fn redirects_for(spec: &TapSpec) -> Option<Redirects> {
    let mesh = spec.mesh.as_ref()?;
    if spec.info.mode != crate::source::CaptureMode::Loopback {
        return None;
    }
    let ports = mesh.kind.outbound_ports();
    match Conntrack::open_in(&spec.target) {
        Ok(conntrack) => Some(Redirects::new(ports, Box::new(conntrack))),
        Err(error) => {
            tracing::warn!(netns = ?spec.info.netns, %error,
                "cannot ask conntrack: destinations of redirected connections will be unknown");
            Some(Redirects::new(ports, Box::new(NoConntrack)))
        }
    }
}

/// Conntrack unavailable: every redirected destination is unknown.
struct NoConntrack;

impl crate::redirect::Resolve for NoConntrack {
    fn original_destination(
        &mut self,
        _client: std::net::SocketAddr,
        _proxy: std::net::SocketAddr,
    ) -> Result<Option<std::net::SocketAddr>, crate::redirect::conntrack::ConntrackError> {
        Ok(None)
    }
}

/// How long one poll waits when nothing happens: bounds how late timers and stop requests are seen.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// At a stop, how long a drain round waits for packets: longer than the kernel's block timeout
/// (`TapOptions::read_timeout`, 20 ms), so that a block still filling at the stop is handed over.
const DRAIN_WAIT: Duration = Duration::from_millis(60);

/// At a stop, the longest the taps are drained (traffic may go on while the worker stops).
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

fn wall_clock_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl CaptureLoop {
    /// Prepares the loop. For a single interface the tap is opened at once, so that a wrong name or
    /// namespace is reported before anything runs.
    pub fn new(config: &WorkerConfig, selection: Selection) -> Result<Self, LoopError> {
        let mut this = CaptureLoop {
            taps: Taps::new(TapOptions::from(&config.capture)),
            scanner: Scanner::default(),
            policy: PlanPolicy::from(&config.capture),
            overrides: MeshOverrides::new(),
            rescan_every: Duration::from_secs(config.capture.rescan_seconds.max(1)),
            next_scan: Instant::now(),
            control: LoopControl::default(),
            scans: 0,
            scan_failures: 0,
            unreadable_warned: false,
            last_snapshot: None,
            failed: Vec::new(),
            redirects: Vec::new(),
            node_taps: None,
            closed: Vec::new(),
            selection,
        };
        if let Selection::Interface { name, netns, mesh } = &this.selection {
            let mut spec = TapSpec::interface(name, netns.as_deref());
            spec.mesh = mesh.map(|kind| Mesh::new(kind, "--mesh"));
            let report = this.taps.apply(std::slice::from_ref(&spec));
            if let Some(redirects) = redirects_for(&spec) {
                this.redirects.push((spec.info.clone(), redirects));
            }
            if let Some((info, error)) = report.failed.into_iter().next() {
                return Err(LoopError::Open {
                    interface: match &info.netns {
                        Some(ns) => format!("{} in {ns}", info.name),
                        None => info.name.clone(),
                    },
                    reason: error.to_string(),
                });
            }
        }
        Ok(this)
    }

    pub fn control(&self) -> LoopControl {
        self.control.clone()
    }

    /// The most recent host snapshot (discovery mode), e.g. to match pod IPs to namespaces.
    pub fn last_snapshot(&self) -> Option<&HostSnapshot> {
        self.last_snapshot.as_ref()
    }

    fn should_stop(&self) -> bool {
        self.control.is_stopping()
    }

    fn take_rescan_request(&self) -> bool {
        self.control.inner.rescan.swap(false, Ordering::Relaxed)
    }

    /// Applies a pending configuration: the pipeline at once, the planning at the next scan.
    fn apply_pending_config(&mut self, pipeline: &mut Pipeline) {
        let pending = self
            .control
            .inner
            .config
            .lock()
            .ok()
            .and_then(|mut c| c.take());
        if let Some(config) = pending {
            pipeline.reconfigure(&config);
            self.policy = PlanPolicy::from(&config.capture);
            self.rescan_every = Duration::from_secs(config.capture.rescan_seconds.max(1));
            let options = TapOptions::from(&config.capture);
            if options.snaplen != self.taps.options().snaplen
                || options.buffer_bytes != self.taps.options().buffer_bytes
            {
                // Handles cannot change these once open: reopen them all at the next scan.
                self.taps.close_all();
                self.taps = Taps::new(options);
                self.next_scan = Instant::now();
            }
            tracing::info!("configuration applied");
        }
        let overrides = self
            .control
            .inner
            .overrides
            .lock()
            .ok()
            .and_then(|mut o| o.take());
        if let Some(overrides) = overrides {
            self.overrides = overrides;
        }
    }

    fn rescan_now(&mut self) {
        self.scans += 1;
        match self.scanner.scan() {
            Ok(snapshot) => {
                self.warn_unreadable(snapshot.unreadable_processes);
                let specs = plan(&snapshot, &self.policy, &self.overrides);
                let report = self.taps.apply(&specs);
                for info in &report.opened {
                    let spec = specs.iter().find(|s| s.info == *info);
                    let mesh = spec.and_then(|s| s.mesh.as_ref());
                    tracing::info!(interface = %info.name, netns = ?info.netns, mode = info.mode.as_str(),
                        mesh = mesh.map(|m| m.kind.as_str()), reason = mesh.map(|m| m.reason.as_str()), "tapped");
                    if let Some(redirects) = spec.and_then(redirects_for) {
                        self.redirects.push((info.clone(), redirects));
                    }
                }
                self.closed.extend(report.closed.iter().cloned());
                for info in &report.closed {
                    tracing::info!(interface = %info.name, netns = ?info.netns, "released");
                }
                self.failed = report
                    .failed
                    .iter()
                    .filter(|(_, error)| !error.is_vanished())
                    .map(|(info, error)| (info.clone(), error.to_string()))
                    .collect();
                for (info, error) in &report.failed {
                    if error.is_vanished() {
                        tracing::debug!(interface = %info.name, netns = ?info.netns, %error, "gone before it could be tapped");
                    } else {
                        tracing::warn!(interface = %info.name, netns = ?info.netns, %error, "cannot tap");
                    }
                }
                self.node_taps = Some(NodeTaps::new(&snapshot, &specs));
                self.last_snapshot = Some(snapshot);
            }
            Err(error) => {
                self.scan_failures += 1;
                tracing::warn!(%error, "scanning network namespaces failed");
            }
        }
        self.next_scan = Instant::now() + self.rescan_every;
    }

    /// Processes whose `/proc/<pid>/ns/net` may not be read hide their pods without any other sign: say
    /// so once when it starts (not at every rescan), and once more when it stops.
    fn warn_unreadable(&mut self, unreadable: usize) {
        if unreadable > 0 && !self.unreadable_warned {
            tracing::warn!(
                processes = unreadable,
                "cannot read the network namespace of some processes (permission denied): pods they hold stay unseen; the worker needs CAP_SYS_PTRACE"
            );
        } else if unreadable == 0 && self.unreadable_warned {
            tracing::info!("every process's network namespace is readable again");
        }
        self.unreadable_warned = unreadable > 0;
    }

    /// Runs until stopped. `each_round` is called after every poll round (status, metrics, watchdogs).
    /// Once stopped, what the kernel captured before the stop is still read (see [`DRAIN_WAIT`]).
    pub fn run(
        &mut self,
        pipeline: &mut Pipeline,
        mut each_round: impl FnMut(&mut CaptureLoop, &mut Pipeline),
    ) -> Result<(), crate::source::live::LiveError> {
        let mut interface_cache: Option<(InterfaceInfo, usize)> = None;
        while !self.should_stop() {
            self.apply_pending_config(pipeline);
            let discover = self.selection == Selection::Discover;
            if discover && (self.take_rescan_request() || Instant::now() >= self.next_scan) {
                self.rescan_now();
            }
            self.hand_over_taps(pipeline);
            self.poll_once(pipeline, &mut interface_cache, POLL_INTERVAL)?;
            each_round(self, pipeline);
        }
        self.drain(pipeline, &mut interface_cache)
    }

    /// What the last scan (or the chosen interface) changed that the pipeline must know: taps closed,
    /// redirect translations of mesh loopback taps, the node's taps for same-node duplicates.
    fn hand_over_taps(&mut self, pipeline: &mut Pipeline) {
        for info in self.closed.drain(..) {
            pipeline.drop_redirects(&info);
        }
        for (info, redirects) in self.redirects.drain(..) {
            let index = pipeline.add_interface(info);
            pipeline.set_redirects(index, redirects);
        }
        if let Some(node_taps) = self.node_taps.take() {
            pipeline.set_node_taps(node_taps);
        }
    }

    /// One poll round: packets to the pipeline, then the pipeline's clock.
    fn poll_once(
        &mut self,
        pipeline: &mut Pipeline,
        interface_cache: &mut Option<(InterfaceInfo, usize)>,
        timeout: Duration,
    ) -> Result<u64, crate::source::live::LiveError> {
        let report = self.taps.poll(timeout, |info, packet| {
            let index = match interface_cache {
                Some((cached, index)) if cached == info => *index,
                _ => {
                    let index = pipeline.add_interface(info.clone());
                    *interface_cache = Some((info.clone(), index));
                    index
                }
            };
            pipeline.handle(index, packet);
        })?;
        for info in &report.lost {
            pipeline.drop_redirects(info);
            tracing::debug!(interface = %info.name, netns = ?info.netns, "interface went away");
        }
        pipeline.tick(wall_clock_us());
        Ok(report.packets)
    }

    /// After a stop request: reads what the taps still hold (the kernel hands a block of packets over
    /// up to `read_timeout` after its first packet, and a signal cuts the last poll short), so that an
    /// exchange that ended just before SIGINT is not lost. Ends at the first quiet round, or after
    /// [`DRAIN_LIMIT`] on a busy node.
    fn drain(
        &mut self,
        pipeline: &mut Pipeline,
        interface_cache: &mut Option<(InterfaceInfo, usize)>,
    ) -> Result<(), crate::source::live::LiveError> {
        let start = Instant::now();
        while start.elapsed() < DRAIN_LIMIT {
            if self.poll_once(pipeline, interface_cache, DRAIN_WAIT)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Stops capturing: every tap is closed.
    pub fn close(&mut self) {
        self.taps.close_all();
    }

    pub fn report(&mut self) -> LoopReport {
        LoopReport {
            taps: self.taps.stats(),
            scans: self.scans,
            scan_failures: self.scan_failures,
            tapped: self.taps.interfaces().cloned().collect(),
            failed: self.failed.clone(),
        }
    }
}
