//! `node-worker run`: the worker in the cluster, as the operator's DaemonSet starts it (the contract is
//! `interceptor_crds::worker_env`).
//!
//! - [`config`]: `config.yaml` from the ConfigMap, watched; changes apply without a restart, an invalid
//!   one is refused and reported while the last good one stays.
//! - [`pods`] (pure) and [`pod_watch`]: the pods on this node: address -> pod/container for the pairs,
//!   meshes from annotations and containers, hostNetwork pods and excluded namespaces left alone.
//! - [`report`] (pure) and [`status`]: the node's InterceptorStatus, written at a bounded rate.
//! - [`sink`]: a sink whose Kafka producer is replaced on a config change without losing buffered pairs.
//! - [`capture`]: the capture loop on its own thread, publishing into [`state`].
//! - [`metrics`] and [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`run`]: the wiring, start and shutdown.

pub mod capture;
pub mod config;
pub mod http;
pub mod metrics;
pub mod pod_watch;
pub mod pods;
pub mod report;
pub mod run;
pub mod sink;
pub mod state;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use interceptor_crds::worker_env;

pub use run::{run, RunFailure, WorkerSettings};
use sink::{KafkaFactory, LinesFactory, SinkFactory};

/// `node-worker run`: every flag can also be set by the environment variable shown (the DaemonSet sets
/// those of the worker contract).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The ConfigMap holding config.yaml (in --namespace).
    #[arg(long, env = worker_env::CONFIG_MAP, value_name = "NAME")]
    pub config_map: Option<String>,

    /// The InterceptorConfig this worker belongs to (in --namespace).
    #[arg(long, env = worker_env::NAME, value_name = "NAME")]
    pub interceptor_name: Option<String>,

    /// The InterceptorConfig's uid (owner of this node's InterceptorStatus).
    #[arg(long, env = worker_env::UID, value_name = "UID")]
    pub interceptor_uid: Option<String>,

    /// The node this worker runs on.
    #[arg(long, env = worker_env::NODE_NAME, value_name = "NAME")]
    pub node_name: Option<String>,

    /// The namespace of the InterceptorConfig, its ConfigMap and the worker pod.
    #[arg(long, env = worker_env::POD_NAMESPACE, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// The worker pod's name (for logs).
    #[arg(long, env = worker_env::POD_NAME, value_name = "NAME")]
    pub pod_name: Option<String>,

    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, env = "INTERCEPTOR_HEALTH_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], worker_env::HEALTH_PORT)))]
    pub health_addr: SocketAddr,

    /// Where pairs go: kafka (config.yaml's kafka section), or stdout / file:PATH (JSON Lines) for
    /// debugging a node.
    #[arg(
        long,
        env = "INTERCEPTOR_SINK",
        default_value = "kafka",
        value_name = "SINK"
    )]
    pub sink: String,

    /// Heartbeat: the InterceptorStatus is written at least this often. Default: what config.yaml's
    /// `status.heartbeatSeconds` says (the operator chooses it from the cluster's size: 20 s up to 500
    /// nodes, then doubling). At most 50: the operator counts a worker as reporting for three
    /// heartbeats of the config's cadence, and never less than 60 s.
    #[arg(long, env = "INTERCEPTOR_STATUS_INTERVAL_SECONDS", value_parser = clap::value_parser!(u64).range(1..=50))]
    pub status_interval_seconds: Option<u64>,

    /// Two InterceptorStatus writes are never closer than this. Default: config.yaml's
    /// `status.minIntervalSeconds` (a quarter of its heartbeat).
    #[arg(long, env = "INTERCEPTOR_STATUS_MIN_INTERVAL_SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub status_min_interval_seconds: Option<u64>,

    /// At shutdown, how long buffered pairs may take to be delivered.
    #[arg(long, env = "INTERCEPTOR_FLUSH_TIMEOUT_SECONDS", default_value_t = 10)]
    pub flush_timeout_seconds: u64,

    /// Log format on stderr (JSON by default in the cluster); the level comes from RUST_LOG.
    #[arg(
        long,
        value_enum,
        env = "INTERCEPTOR_LOG_FORMAT",
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Why `node-worker run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad flags or environment (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to the Kubernetes API: {0}")]
    Client(kube::Error),
    #[error(transparent)]
    Failed(#[from] RunFailure),
}

impl RunError {
    pub fn is_usage(&self) -> bool {
        matches!(self, RunError::Usage(_))
    }
}

impl RunArgs {
    pub fn settings(&self) -> Result<WorkerSettings, RunError> {
        // Checked here rather than by clap, for a one-line reason naming the variable the DaemonSet sets.
        let required = |value: &Option<String>, variable: &str, flag: &str| match value
            .as_deref()
            .map(str::trim)
        {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            Some(_) => Err(RunError::Usage(format!("{variable} is empty"))),
            None => Err(RunError::Usage(format!(
                "{variable} (or {flag}) is not set: the operator's DaemonSet sets it"
            ))),
        };
        let config_map = required(&self.config_map, worker_env::CONFIG_MAP, "--config-map")?;
        let name = required(
            &self.interceptor_name,
            worker_env::NAME,
            "--interceptor-name",
        )?;
        let uid = required(&self.interceptor_uid, worker_env::UID, "--interceptor-uid")?;
        let node = required(&self.node_name, worker_env::NODE_NAME, "--node-name")?;
        let namespace = required(&self.namespace, worker_env::POD_NAMESPACE, "--namespace")?;
        if let (Some(period), Some(min_gap)) = (
            self.status_interval_seconds,
            self.status_min_interval_seconds,
        ) {
            if min_gap > period {
                return Err(RunError::Usage(
                    "--status-min-interval-seconds is longer than --status-interval-seconds".into(),
                ));
            }
        }
        let mut settings = WorkerSettings::new(&node, &namespace, &name, &uid, &config_map);
        settings.pacing.period = self.status_interval_seconds.map(Duration::from_secs);
        settings.pacing.min_gap = self.status_min_interval_seconds.map(Duration::from_secs);
        settings.flush_timeout = Duration::from_secs(self.flush_timeout_seconds);
        Ok(settings)
    }

    /// The sink `--sink` names, for the worker on `node`.
    pub fn sink_factory(&self, node: &str) -> Result<Arc<dyn SinkFactory>, RunError> {
        match self.sink.as_str() {
            "kafka" => Ok(Arc::new(KafkaFactory { node: node.into() })),
            "stdout" => Ok(Arc::new(LinesFactory::Stdout)),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Arc::new(LinesFactory::File(path.into()))),
                _ => Err(RunError::Usage(format!(
                    "unknown --sink {other:?}: use kafka, stdout or file:PATH"
                ))),
            },
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a subscriber may already be installed (embedding, tests).
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Completes on SIGTERM (the kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `node-worker run`.
pub fn main(args: RunArgs) -> Result<(), RunError> {
    init_logging(args.log_format);
    let settings = args.settings()?;
    let factory = args.sink_factory(&settings.node)?;
    if let Some(pod) = &args.pod_name {
        tracing::info!(%pod, node = %settings.node, "node-worker run");
    }
    // The watches, the status writer and the endpoints are light: two threads are plenty (the capture
    // loop and Kafka have threads of their own).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.health_addr)
            .await
            .map_err(|source| RunError::Bind {
                addr: args.health_addr,
                source,
            })?;
        let client = kube::Client::try_default()
            .await
            .map_err(RunError::Client)?;
        run(settings, client, factory, listener, shutdown_signal()).await?;
        Ok(())
    })
}
