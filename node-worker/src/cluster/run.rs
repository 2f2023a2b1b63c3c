//! The wiring of `node-worker run`: the watches, the status writer and the HTTP endpoints on the async
//! runtime, the capture loop on its own thread, and the order of things at start and at shutdown.
//!
//! Start: serve health and metrics, watch the ConfigMap and the node's pods, report `Starting`; capture
//! begins with the first valid config. Shutdown (SIGTERM): report `Stopping`, stop the loop, flush the
//! sink (bounded), write the final counters, exit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use interceptor_crds::config::WorkerConfig;
use interceptor_crds::interceptor_status::OwnerConfig;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::capture::{self, CaptureError, CaptureOutcome, CaptureParams, StartError};
use super::config::{ConfigTracker, ConfigWatch};
use super::http::{serve, Health};
use super::metrics::Metrics;
use super::pod_watch::{MeshTarget, PodWatch};
use super::pods::SharedPods;
use super::sink::{SinkFactory, SinkSwitch};
use super::state::Shared;
use super::status::{PacingOverride, StatusWriter};
use crate::pipeline::Identity;
use crate::sink::SinkError;

/// Who this worker is and how it behaves.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub node: String,
    /// The InterceptorConfig's (and the worker pod's) namespace.
    pub namespace: String,
    /// The InterceptorConfig's name and uid.
    pub interceptor: String,
    pub uid: String,
    /// The ConfigMap holding `config.yaml`.
    pub config_map: String,
    pub pacing: PacingOverride,
    /// How long the final flush may take at shutdown (the pod's grace period is 30 s).
    pub flush_timeout: Duration,
    /// How long a replaced Kafka producer may take to deliver what it holds.
    pub drain_timeout: Duration,
    /// The capture loop counts as stalled (liveness fails) after this long without a round.
    pub stall_after: Duration,
    /// How often the capture thread publishes its counters.
    pub publish_every: Duration,
    /// The wall clock of `lastHeartbeat`.
    pub clock: fn() -> Timestamp,
}

impl WorkerSettings {
    /// The defaults for everything but the identity.
    pub fn new(
        node: &str,
        namespace: &str,
        interceptor: &str,
        uid: &str,
        config_map: &str,
    ) -> Self {
        WorkerSettings {
            node: node.into(),
            namespace: namespace.into(),
            interceptor: interceptor.into(),
            uid: uid.into(),
            config_map: config_map.into(),
            pacing: PacingOverride::default(),
            flush_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            stall_after: Duration::from_secs(30),
            publish_every: Duration::from_secs(1),
            clock: Timestamp::now,
        }
    }
}

/// Why the worker stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    #[error("capture: {0}")]
    Start(#[from] StartError),
    #[error("capture: {0}")]
    Capture(#[from] CaptureError),
    #[error("flushing pairs at shutdown: {0}")]
    Flush(#[from] SinkError),
}

/// How long the last status write may take at shutdown.
const FINAL_STATUS_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the worker until `shutdown` completes (SIGTERM) or capture fails.
pub async fn run(
    settings: WorkerSettings,
    client: Client,
    factory: Arc<dyn SinkFactory>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunFailure> {
    let shared = Shared::new();
    let pods = SharedPods::default();
    let switch = SinkSwitch::new();
    let metrics = Arc::new(Metrics::new(Arc::clone(&shared), pods.clone()));

    let (stop_http, http_stopped) = watch::channel(false);
    let http = tokio::spawn(serve(
        listener,
        Health {
            metrics,
            shared: Arc::clone(&shared),
            stall_after: settings.stall_after,
        },
        http_stopped,
    ));

    let (applied_tx, mut applied) = watch::channel::<Option<Arc<WorkerConfig>>>(None);
    let (control_tx, control_rx) = watch::channel::<Option<Arc<dyn MeshTarget>>>(None);
    let config_watch = tokio::spawn(
        ConfigWatch {
            api: Api::namespaced(client.clone(), &settings.namespace),
            display: format!("{}/{}", settings.namespace, settings.config_map),
            name: settings.config_map.clone(),
            factory,
            switch: Arc::clone(&switch),
            shared: Arc::clone(&shared),
            applied: applied_tx,
            tracker: ConfigTracker::default(),
        }
        .run(),
    );
    let pod_watch = tokio::spawn(
        PodWatch {
            api: Api::all(client.clone()),
            node: settings.node.clone(),
            shared: Arc::clone(&shared),
            pods: pods.clone(),
            config: applied.clone(),
            control: control_rx,
        }
        .run(),
    );
    let (status_done, status_done_rx) = watch::channel(false);
    let status = tokio::spawn(
        StatusWriter {
            api: Api::namespaced(client.clone(), &settings.namespace),
            owner: OwnerConfig {
                namespace: settings.namespace.clone(),
                name: settings.interceptor.clone(),
                uid: settings.uid.clone(),
            },
            node: settings.node.clone(),
            shared: Arc::clone(&shared),
            pods: pods.clone(),
            pacing: settings.pacing,
            stall_after: settings.stall_after,
            clock: settings.clock,
        }
        .run(status_done_rx),
    );
    tracing::info!(
        node = %settings.node,
        interceptor = %format!("{}/{}", settings.namespace, settings.interceptor),
        configmap = %settings.config_map,
        "started; waiting for the config"
    );

    let mut shutdown = std::pin::pin!(shutdown);
    let first = tokio::select! {
        _ = &mut shutdown => None,
        config = applied.wait_for(Option::is_some) => config.ok().and_then(|c| c.clone()),
    };
    let mut failure = None;
    let mut thread = None;
    if let Some(config) = first {
        let params = CaptureParams {
            config: config.as_ref().clone(),
            identity: Identity {
                node: settings.node.clone(),
                interceptor: format!("{}/{}", settings.namespace, settings.interceptor),
            },
            switch: Arc::clone(&switch),
            pods: pods.clone(),
            shared: Arc::clone(&shared),
            drain_timeout: settings.drain_timeout,
            flush_timeout: settings.flush_timeout,
            publish_every: settings.publish_every,
        };
        match capture::start(params) {
            Ok(started) => {
                control_tx.send_replace(Some(Arc::new(started.control.clone())));
                thread = Some(started);
            }
            Err(e) => failure = Some(RunFailure::Start(e)),
        }
    }

    let mut outcome: Option<CaptureOutcome> = None;
    if let Some(running) = thread.as_mut() {
        applied.borrow_and_update();
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    break;
                }
                changed = applied.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let config = applied.borrow_and_update().clone();
                    if let Some(config) = config {
                        running.control.reconfigure(config.as_ref().clone());
                    }
                }
                ended = &mut running.finished => {
                    outcome = ended.ok();
                    break;
                }
            }
        }
    }

    // Shutdown: report it, stop capturing, flush, report the final counters.
    shared.set_stopping();
    if let Some(running) = thread {
        running.control.stop();
        if outcome.is_none() {
            outcome = running.finished.await.ok();
        }
        let _ = tokio::task::spawn_blocking(move || running.handle.join()).await;
    }
    if let Some(outcome) = outcome {
        if let Some(reason) = outcome.failure {
            failure.get_or_insert(RunFailure::Capture(reason));
        }
        if let Some(reason) = outcome.flush_error {
            tracing::warn!(%reason, "not every pair was delivered before exit");
            failure.get_or_insert(RunFailure::Flush(reason));
        }
    }
    let _ = status_done.send(true);
    if tokio::time::timeout(FINAL_STATUS_TIMEOUT, status)
        .await
        .is_err()
    {
        tracing::warn!("the final status write did not finish in time");
    }
    config_watch.abort();
    pod_watch.abort();
    let _ = stop_http.send(true);
    let _ = http.await;
    tracing::info!("stopped");
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}
