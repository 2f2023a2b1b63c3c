//! `operator run`: wiring of the controller, the caches, leader election, the HTTP endpoints and shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::channel::mpsc;
use futures::StreamExt;
use interceptor_crds::interceptor_status::LABEL_CONFIG;
use interceptor_crds::{InterceptorConfig, InterceptorStatus};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{controller, predicates, watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use operator::controller::{error_policy, reconcile, Context, Settings, FIELD_MANAGER};
use operator::http::{serve, Health};
use operator::lease::LeaderElector;
use operator::metrics::Metrics;
use operator::render::RenderSettings;
use operator::status::report_signature;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{LogFormat, RunArgs};

pub fn main(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(args));
    // Tasks still running (watches, a request without an answer) do not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Turns true on SIGTERM or SIGINT.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
        let _ = tx.send(true);
    });
    rx
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Fill a store from a watch, forever (the watcher retries with backoff).
fn spawn_reflector<K>(api: Api<K>, config: watcher::Config, strip: fn(&mut K)) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().modify(strip);
    tokio::spawn(
        reflector::reflector(writer, stream).for_each(|event| async move {
            if let Err(e) = event {
                warn!(error = %e, "watch failed; retrying");
            }
        }),
    );
    reader
}

/// The reports' cache, filled from a watch forever, and a stream of the InterceptorConfigs whose reports
/// changed in what their status shows ([`report_signature`]: phase, message, config version, Kafka),
/// so that a worker going Degraded shows on its config within a second or so rather than at the next
/// resync. Heartbeats and counters trigger nothing. Each config is triggered at most once a second
/// (changes are collected and sent each second): a thousand workers flapping cost one reconcile a second.
fn spawn_report_cache(
    api: Api<InterceptorStatus>,
    config: watcher::Config,
) -> (
    Store<InterceptorStatus>,
    mpsc::Receiver<ObjectRef<InterceptorConfig>>,
) {
    let (reader, writer) = reflector::store();
    let changed: Arc<Mutex<HashSet<ObjectRef<InterceptorConfig>>>> = Arc::default();
    let collect = Arc::clone(&changed);
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|r: &mut InterceptorStatus| {
            r.metadata.managed_fields = None;
            if let Some(s) = r.status.as_mut() {
                s.interfaces.clear();
            }
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(report_signature, Default::default());
    tokio::spawn(stream.for_each(move |event| {
        match event {
            Ok(report) => {
                if let Some(namespace) = report.namespace() {
                    let config = ObjectRef::new(&report.spec.interceptor).within(&namespace);
                    if let Ok(mut set) = collect.lock() {
                        set.insert(config);
                    }
                }
            }
            Err(e) => warn!(error = %e, "watch failed; retrying"),
        }
        futures::future::ready(())
    }));
    // Bounded: when the controller is behind, a trigger is dropped; the resync still comes.
    let (mut tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let batch = match changed.lock() {
                Ok(mut set) => std::mem::take(&mut *set),
                Err(_) => return,
            };
            for config in batch {
                if tx.try_send(config).is_err() && tx.is_closed() {
                    return;
                }
            }
        }
    });
    (reader, rx)
}

/// How long reconciles in progress may go on after SIGTERM, then releasing the Lease: together within
/// the pod's grace period (30 s), the runtime's last second included.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);
const RELEASE_DEADLINE: Duration = Duration::from_secs(5);

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity = args
        .identity
        .clone()
        .or_else(hostname_fallback)
        .unwrap_or_else(|| "interceptor-operator".into());
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let stop = shutdown_signal();

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    let http = tokio::spawn(serve(
        listener,
        Health {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        stop.clone(),
    ));
    info!(addr = %args.metrics_addr, %identity, "serving /metrics, /healthz and /readyz");

    // Leader election: a standby replica is ready (it serves), but does not reconcile.
    let lease_duration = Duration::from_secs(args.lease_seconds.max(3));
    let elector = args.leader_elect.then(|| {
        Arc::new(LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &args.lease_namespace),
            &args.lease_name,
            &identity,
            lease_duration,
        ))
    });
    let (lost_tx, lost) = watch::channel(false);
    if let Some(elector) = &elector {
        ready.store(true, Ordering::Relaxed);
        info!(lease = %args.lease_name, namespace = %args.lease_namespace, "waiting for leadership");
        loop {
            match elector.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::select! {
                _ = wait_for(stop.clone()) => {
                    http.abort();
                    return Ok(());
                }
                _ = tokio::time::sleep(lease_duration / 3) => {}
            }
        }
        info!("became the leader");
        metrics.leader.set(1);
        ready.store(false, Ordering::Relaxed);
        let elector = elector.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = wait_for(stop.clone()) => return,
                    _ = tokio::time::sleep(lease_duration / 3) => {}
                }
                match elector.try_acquire_or_renew(Timestamp::now()).await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => {
                        error!("lost the leader Lease to another replica");
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, "renewing the leader Lease");
                        if last_renewal.elapsed() >= lease_duration {
                            error!("could not renew the leader Lease in time");
                            let _ = lost_tx.send(true);
                            return;
                        }
                    }
                }
            }
        });
    }

    let ns = args.watch_namespace.as_deref();
    let managed =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=interceptor-operator");
    let nodes = spawn_reflector(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        |n: &mut Node| {
            n.status = None;
            n.metadata.managed_fields = None;
        },
    );
    let (reports, report_changes) = spawn_report_cache(
        api::<InterceptorStatus>(&client, ns),
        watcher::Config::default().labels(LABEL_CONFIG),
    );
    let (configs, configs_writer) = reflector::store::<InterceptorConfig>();
    let config_stream = watcher(
        api::<InterceptorConfig>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(configs_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());

    tokio::select! {
        _ = wait_for(stop.clone()) => { http.abort(); return release(elector.as_deref()).await; }
        synced = async { tokio::try_join!(nodes.wait_until_ready(), reports.wait_until_ready()) } => {
            synced.context("caches closed before they were filled")?;
        }
    }
    ready.store(true, Ordering::Relaxed);
    info!("caches filled; reconciling");

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.clone()),
            },
        ),
        configs: configs.clone(),
        nodes,
        reports,
        metrics: metrics.clone(),
        settings: Settings {
            render: RenderSettings {
                worker_image: args.worker_image.clone(),
                ..RenderSettings::default()
            },
            heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout_seconds),
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            retry: Duration::from_secs(10),
        },
        clock: Timestamp::now,
    });
    let (stop_c, lost_c) = (stop.clone(), lost.clone());
    let controller = Controller::for_stream(config_stream, configs)
        .owns(api::<DaemonSet>(&client, ns), managed.clone())
        .owns(api::<ConfigMap>(&client, ns), managed)
        .reconcile_on(report_changes)
        .graceful_shutdown_on(async move {
            tokio::select! {
                _ = wait_for(stop_c) => {}
                _ = wait_for(lost_c) => {}
            }
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                // A child's event for an InterceptorConfig deleted meanwhile: nothing to do (its children
                // go with it, by garbage collection).
                Err(controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(%object, "reconcile of a deleted InterceptorConfig skipped")
                }
                Err(e) => warn!(error = %e, "controller"),
            }
        });
    // The controller stops once the reconciles in progress are done. A reconcile waits on the API
    // server; one that does not answer must not keep the pod past its grace period (30 s), holding the
    // Lease until the kubelet kills it: after SHUTDOWN_DEADLINE the operator stops without it.
    tokio::select! {
        _ = controller => info!("controller stopped"),
        _ = async {
            wait_for(stop.clone()).await;
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        } => warn!(deadline = ?SHUTDOWN_DEADLINE, "reconciles still running after SIGTERM; stopping without them"),
    }
    if *lost.borrow() {
        // No SIGTERM came, so the endpoints would serve on (healthy, never reconciling again): stop
        // them, and exit so that the pod restarts as a standby.
        http.abort();
        anyhow::bail!("lost leadership");
    }
    let _ = http.await;
    release(elector.as_deref()).await
}

async fn release(elector: Option<&LeaderElector>) -> anyhow::Result<()> {
    if let Some(elector) = elector {
        match tokio::time::timeout(RELEASE_DEADLINE, elector.release()).await {
            Ok(Ok(())) => info!("released the leader Lease"),
            Ok(Err(e)) => warn!(error = %e, "releasing the leader Lease"),
            Err(_) => warn!(deadline = ?RELEASE_DEADLINE, "releasing the leader Lease: no answer"),
        }
    }
    Ok(())
}

fn hostname_fallback() -> Option<String> {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty())
}
