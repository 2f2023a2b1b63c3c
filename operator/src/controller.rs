//! The reconcile loop: the thin I/O layer around [`crate::render`], [`crate::selection`] and
//! [`crate::status`]. Every write is a server-side apply under [`FIELD_MANAGER`] with `force`, except the
//! deletion of stale InterceptorStatus objects and events.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use interceptor_crds::interceptor_config::{GROUP, VERSION};
use interceptor_crds::{InterceptorConfig, InterceptorStatus};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::render::{render, RenderSettings};
use crate::selection::{double_capture, selected_nodes};
use crate::status::{
    aggregate, differs, stale_reports, transitions, worker_cadence, Observed, Outcome,
};

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "interceptor-operator";

/// Tunables of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    pub render: RenderSettings,
    /// A worker whose last heartbeat is older than this does not count as reporting (the least: larger
    /// clusters get a longer heartbeat, and its [`StatusCadence::heartbeat_timeout`]).
    pub heartbeat_timeout: Duration,
    /// Reconcile each config at least this often (heartbeats and counters are read then).
    pub resync: Duration,
    /// Retry after a failed reconcile.
    pub retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            render: RenderSettings::default(),
            heartbeat_timeout: Duration::from_secs(60),
            resync: Duration::from_secs(30),
            retry: Duration::from_secs(10),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Every InterceptorConfig (the controller's own cache), for double-capture detection.
    pub configs: Store<InterceptorConfig>,
    pub nodes: Store<Node>,
    pub reports: Store<InterceptorStatus>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// The time (replaced in tests).
    pub clock: fn() -> Timestamp,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("InterceptorConfig has no namespace")]
    NoNamespace,
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading DaemonSet {name}: {source}")]
    ReadDaemonSet {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    #[error("deleting stale InterceptorStatus {name}: {source}")]
    DeleteReport {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The `reason` label of the failure metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::NoNamespace => "no_namespace",
            Error::Apply { .. } => "apply",
            Error::ReadDaemonSet { .. } => "read_daemonset",
            Error::Status(_) => "status",
            Error::DeleteReport { .. } => "delete_report",
        }
    }
}

/// Reconcile one InterceptorConfig (the controller calls this).
pub async fn reconcile(icfg: Arc<InterceptorConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_config(&icfg, &ctx).await;
    ctx.metrics.observe(
        result.as_ref().err().map(Error::metric_reason),
        start.elapsed(),
    );
    result
}

/// What to do after a failed reconcile (the controller calls this).
pub fn error_policy(icfg: Arc<InterceptorConfig>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(
        config = %format!("{}/{}", icfg.namespace().unwrap_or_default(), icfg.name_any()),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(ctx.settings.retry)
}

/// A 4xx answer from the API server: the request itself is wrong (and repeating it will not help until
/// something changes), as opposed to an unreachable or overloaded server.
fn is_refusal(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429)
}

async fn reconcile_config(icfg: &InterceptorConfig, ctx: &Context) -> Result<Action, Error> {
    if icfg.metadata.deletion_timestamp.is_some() {
        // Children carry ownerReferences: garbage collection removes them.
        return Ok(Action::await_change());
    }
    let namespace = icfg.namespace().ok_or(Error::NoNamespace)?;
    let name = icfg.name_any();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);

    let nodes = ctx.nodes.state();
    let existing: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let selected = selected_nodes(icfg, &nodes);
    let (cadence, heartbeat_timeout) = worker_cadence(
        selected.len(),
        icfg.status.as_ref(),
        ctx.settings.heartbeat_timeout,
    );
    let settings = RenderSettings {
        status_cadence: cadence,
        ..ctx.settings.render.clone()
    };

    let mut apply_error = None;
    let (outcome, daemon_set) = match render(icfg, &settings) {
        Err(e) => {
            let current =
                daemon_sets
                    .get_opt(&name)
                    .await
                    .map_err(|source| Error::ReadDaemonSet {
                        name: name.clone(),
                        source,
                    })?;
            (Outcome::InvalidSpec(e.to_string()), current)
        }
        Ok(rendered) => {
            let cm_name = rendered.config_map.name_any();
            let applied = match config_maps
                .patch(&cm_name, &apply, &Patch::Apply(&rendered.config_map))
                .await
            {
                Ok(_) => daemon_sets
                    .patch(&name, &apply, &Patch::Apply(&rendered.daemon_set))
                    .await
                    .map_err(|source| Error::Apply {
                        kind: "DaemonSet",
                        name: name.clone(),
                        source,
                    }),
                Err(source) => Err(Error::Apply {
                    kind: "ConfigMap",
                    name: cm_name,
                    source,
                }),
            };
            match applied {
                Ok(ds) => (Outcome::Applied, Some(ds)),
                Err(Error::Apply { kind, name, source }) if is_refusal(&source) => {
                    let outcome = Outcome::ApplyFailed(format!("{kind} {name}: {source}"));
                    apply_error = Some(Error::Apply { kind, name, source });
                    (outcome, None)
                }
                Err(e) => return Err(e),
            }
        }
    };

    let mut reports: Vec<Arc<InterceptorStatus>> = ctx
        .reports
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(namespace.as_str()) && r.spec.interceptor == name
        })
        .collect();
    reports.sort_by_key(|r| r.name_any());
    let now = (ctx.clock)();

    // An empty node cache means it is not filled yet, never that every node is gone.
    if !existing.is_empty() {
        let stale = stale_reports(&reports, &existing, &selected, now, heartbeat_timeout);
        if !stale.is_empty() {
            let api: Api<InterceptorStatus> = Api::namespaced(ctx.client.clone(), &namespace);
            for report in &stale {
                match api.delete(report, &DeleteParams::default()).await {
                    Ok(_) => {
                        ctx.metrics.stale_reports_deleted.inc();
                        info!(%namespace, report, "deleted the InterceptorStatus of a node that is gone");
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(source) => {
                        return Err(Error::DeleteReport {
                            name: report.clone(),
                            source,
                        })
                    }
                }
            }
            reports.retain(|r| !stale.contains(&r.name_any()));
        }
    }

    let configs = ctx.configs.state();
    let overlap = double_capture(icfg, &configs, &nodes);
    let status = aggregate(&Observed {
        generation: icfg.metadata.generation,
        previous: icfg.status.as_ref(),
        outcome: &outcome,
        daemon_set: daemon_set.as_ref(),
        selected_nodes: &selected,
        reports: &reports,
        overlap: overlap.as_ref(),
        now,
        heartbeat_timeout,
        cadence: matches!(outcome, Outcome::Applied).then_some(cadence),
    });

    if differs(icfg.status.as_ref(), &status) {
        let api: Api<InterceptorConfig> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "InterceptorConfig",
            "status": status,
        });
        api.patch_status(&name, &apply, &Patch::Apply(&patch))
            .await
            .map_err(Error::Status)?;
    }

    let reference = icfg.object_ref(&());
    for t in transitions(icfg.status.as_ref(), &status) {
        info!(%namespace, %name, condition = %t.type_, status = %t.status, reason = %t.reason, "{}", t.message);
        let event = Event {
            type_: if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.reason.clone(),
            note: Some(
                format!("{} is {}: {}", t.type_, t.status, t.message)
                    .chars()
                    .take(1000)
                    .collect(),
            ),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(%namespace, %name, error = %e, "could not record an event");
        }
    }

    match apply_error {
        Some(e) => Err(e),
        None => Ok(Action::requeue(ctx.settings.resync)),
    }
}
