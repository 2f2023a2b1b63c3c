//! The capture loop on an OS thread of its own (it is synchronous: one poll(2) over every tap). It
//! publishes a heartbeat every round and a snapshot of its counters about once a second; on stop it
//! closes the taps and flushes the sink (bounded), then publishes the final counters.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use interceptor_crds::config::WorkerConfig;
use tokio::sync::oneshot;

use super::pods::SharedPods;
use super::sink::{SinkSwitch, SwitchableSink};
use super::state::{LoopSnapshot, NetnsView, Shared};
use crate::capture_loop::{CaptureLoop, LoopControl, LoopError, Selection};
use crate::message::PodRef;
use crate::pipeline::{Identity, Pipeline, PodLookup};
use crate::sink::SinkError;
use crate::source::live::LiveError;

/// What the capture thread needs.
pub struct CaptureParams {
    pub config: WorkerConfig,
    pub identity: Identity,
    pub switch: Arc<SinkSwitch>,
    pub pods: SharedPods,
    pub shared: Arc<Shared>,
    /// How long a replaced Kafka producer may take to deliver what it holds.
    pub drain_timeout: Duration,
    /// How long the final flush may take.
    pub flush_timeout: Duration,
    /// How often counters are published.
    pub publish_every: Duration,
}

/// Pods by address, and, for loopback addresses, by the network namespace they were seen in (matched
/// through the namespaces' addresses found by the last scan).
struct NodePods {
    pods: SharedPods,
    shared: Arc<Shared>,
}

impl PodLookup for NodePods {
    fn pod(&self, addr: &SocketAddr) -> Option<PodRef> {
        self.pods.pod(addr)
    }

    /// A loopback address at the mesh's outbound port is the proxy standing in for a destination the
    /// redirection hid (see `redirect`): not this pod, an unknown one.
    fn pod_in_netns(&self, netns: &str, port: u16) -> Option<PodRef> {
        let view = self.shared.netns();
        let table = self.pods.current();
        let ip = view
            .addresses_of(netns)?
            .iter()
            .find(|ip| table.pod(ip).is_some())?;
        let redirected = table
            .pod(ip)
            .and_then(|pod| pod.mesh.as_ref())
            .is_some_and(|mesh| mesh.kind.outbound_ports().contains(&port));
        if redirected {
            return None;
        }
        table.lookup(&SocketAddr::new(*ip, port))
    }
}

/// How the capture thread ended.
#[derive(Debug)]
pub struct CaptureOutcome {
    /// The loop failed rather than being stopped.
    pub failure: Option<CaptureError>,
    /// The final flush did not deliver everything.
    pub flush_error: Option<SinkError>,
}

/// Why capturing failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The loop could not open its taps.
    #[error(transparent)]
    Open(#[from] LoopError),
    /// The running loop failed.
    #[error(transparent)]
    Loop(#[from] LiveError),
}

/// Why the capture thread could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the capture thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error(transparent)]
    Open(#[from] LoopError),
    #[error("the capture thread ended before starting")]
    Ended,
}

/// What the capture thread tells [`start`] once it has opened its taps, or failed to.
type Started = Result<LoopControl, LoopError>;

/// The running capture thread.
pub struct CaptureThread {
    pub control: LoopControl,
    /// Fires when the thread has finished (flushed and published its last counters).
    pub finished: oneshot::Receiver<CaptureOutcome>,
    pub handle: thread::JoinHandle<()>,
}

/// Publishes the loop's state from its each-round callback: a heartbeat every round, the rest at most
/// every `every` (reading tap statistics costs a syscall per tap).
struct Publisher {
    shared: Arc<Shared>,
    switch: Arc<SinkSwitch>,
    every: Duration,
    last: Option<Instant>,
    scans: u64,
}

impl Publisher {
    fn round(&mut self, capture: &mut CaptureLoop, pipeline: &Pipeline) {
        self.shared.beat(SystemTime::now());
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.publish(capture, pipeline);
    }

    fn publish(&mut self, capture: &mut CaptureLoop, pipeline: &Pipeline) {
        self.last = Some(Instant::now());
        let report = capture.report();
        if report.scans != self.scans {
            self.scans = report.scans;
            if let Some(snapshot) = capture.last_snapshot() {
                self.shared.publish_netns(NetnsView::of(snapshot));
            }
        }
        self.shared.publish_snapshot(LoopSnapshot {
            counters: pipeline.counters(),
            sink: pipeline.sink_stats(),
            taps: report.taps,
            tapped: report.tapped,
            failed: report.failed,
            scans: report.scans,
            scan_failures: report.scan_failures,
            purges: self.switch.purges(),
            redirects: pipeline.redirect_stats(),
        });
    }
}

/// Starts capturing every pod namespace of the host with `params.config`.
pub fn start(params: CaptureParams) -> Result<CaptureThread, StartError> {
    let (control_tx, control_rx) = mpsc::channel::<Started>();
    let (done_tx, finished) = oneshot::channel();
    let handle = thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let outcome = capture_thread(params, &control_tx);
            let _ = done_tx.send(outcome);
        })?;
    match control_rx.recv() {
        Ok(Ok(control)) => Ok(CaptureThread {
            control,
            finished,
            handle,
        }),
        Ok(Err(e)) => Err(StartError::Open(e)),
        Err(_) => Err(StartError::Ended),
    }
}

fn capture_thread(params: CaptureParams, control_tx: &mpsc::Sender<Started>) -> CaptureOutcome {
    let CaptureParams {
        config,
        identity,
        switch,
        pods,
        shared,
        drain_timeout,
        flush_timeout,
        publish_every,
    } = params;
    let mut capture = match CaptureLoop::new(&config, Selection::Discover) {
        Ok(capture) => capture,
        Err(e) => {
            let _ = control_tx.send(Err(e.clone()));
            return CaptureOutcome {
                failure: Some(e.into()),
                flush_error: None,
            };
        }
    };
    let _ = control_tx.send(Ok(capture.control()));
    let sink = SwitchableSink::new(Arc::clone(&switch), drain_timeout);
    let mut pipeline = Pipeline::new(&config, identity, Box::new(sink));
    pipeline.set_pod_lookup(Box::new(NodePods {
        pods,
        shared: Arc::clone(&shared),
    }));
    let mut publisher = Publisher {
        shared: Arc::clone(&shared),
        switch,
        every: publish_every,
        last: None,
        scans: 0,
    };
    shared.set_capture_running(true);
    tracing::info!("capturing");
    let result = capture.run(&mut pipeline, |capture, pipeline| {
        publisher.round(capture, pipeline)
    });
    shared.set_capture_running(false);
    let failure = result.err().map(CaptureError::from);
    if let Some(reason) = &failure {
        tracing::error!(%reason, "the capture loop failed");
    }
    capture.close();
    let flush_error = pipeline.finish(flush_timeout).err();
    publisher.publish(&mut capture, &pipeline);
    let sink = pipeline.sink_stats();
    tracing::info!(
        pairs = pipeline.counters().pairs_emitted,
        delivered = sink.delivered,
        purged = sink.purged,
        failed = sink.failed,
        "capture stopped"
    );
    CaptureOutcome {
        failure,
        flush_error,
    }
}
