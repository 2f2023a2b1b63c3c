//! The worker's API side against a real API server (the current kubeconfig context). Ignored by default:
//! no cluster can run where `make test` runs. With kind or k3d:
//!
//! ```sh
//! kubectl apply --server-side -k config/crd       # the CRDs are enough for the first test
//! cargo test -p node-worker --test cluster real:: -- --ignored --test-threads=1
//! ```
//!
//! The second test needs the whole product installed with a worker image the nodes can pull (see
//! operator/scripts/kind-e2e.sh; load `Dockerfile.worker`'s image too) and the sample config applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use interceptor_crds::config::{KafkaConfig, WorkerConfig};
use interceptor_crds::interceptor_status::OwnerConfig;
use interceptor_crds::{InterceptorConfig, InterceptorStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use node_worker::cluster::config::{ConfigTracker, ConfigWatch};
use node_worker::cluster::pods::SharedPods;
use node_worker::cluster::sink::{ClusterSink, SinkFactory, SinkSwitch};
use node_worker::cluster::state::{ConfigState, Shared};
use node_worker::cluster::status::{Pacing, PacingOverride, StatusWriter};
use node_worker::sink::{MemorySink, SinkError};
use serde_json::json;
use testkit::wait::wait_for;
use tokio::sync::watch;

struct Memory;

impl SinkFactory for Memory {
    fn build(&self, _kafka: &KafkaConfig) -> Result<Box<dyn ClusterSink>, SinkError> {
        Ok(Box::new(MemorySink::default()))
    }
}

fn namespace() -> String {
    std::env::var("INTERCEPTOR_E2E_NAMESPACE").unwrap_or_else(|_| "default".into())
}

#[tokio::test]
#[ignore = "needs a cluster with the interceptor CRDs (kubectl apply --server-side -k config/crd)"]
async fn config_watch_and_status_writes_against_a_real_api_server() {
    let client = Client::try_default().await.unwrap();
    let ns = namespace();
    let apply = PatchParams::apply("e2e-test").force();

    // The owner of the status object. It selects no node, so an operator (if one runs) starts no worker.
    let configs: Api<InterceptorConfig> = Api::namespaced(client.clone(), &ns);
    let icfg: InterceptorConfig = serde_json::from_value(json!({
        "apiVersion": "interceptor.dev/v1alpha1", "kind": "InterceptorConfig",
        "metadata": {"name": "e2e-worker"},
        "spec": {"nodeSelector": {"interceptor.dev/e2e": "no-such-node"}}
    }))
    .unwrap();
    let owner = configs
        .patch("e2e-worker", &apply, &Patch::Apply(&icfg))
        .await
        .unwrap();

    // A ConfigMap of the test's own (the operator writes e2e-worker-config).
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm_name = "e2e-worker-test-config";
    let cm = |yaml: &str| {
        serde_json::from_value::<ConfigMap>(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm_name},
            "data": {"config.yaml": yaml}
        }))
        .unwrap()
    };
    cms.patch(
        cm_name,
        &apply,
        &Patch::Apply(&cm("limits: {maxMessageBytes: 2048}\n")),
    )
    .await
    .unwrap();

    let shared = Shared::new();
    let (applied_tx, applied) = watch::channel::<Option<Arc<WorkerConfig>>>(None);
    let watch_task = tokio::spawn(
        ConfigWatch {
            api: cms.clone(),
            display: format!("{ns}/{cm_name}"),
            name: cm_name.into(),
            factory: Arc::new(Memory),
            switch: SinkSwitch::new(),
            shared: Arc::clone(&shared),
            applied: applied_tx,
            tracker: ConfigTracker::default(),
        }
        .run(),
    );
    wait_for("the first config", Duration::from_secs(120), || {
        let v = applied.borrow().clone();
        async move { v.filter(|c| c.limits.max_message_bytes == 2048).map(|_| ()) }
    })
    .await;
    cms.patch(
        cm_name,
        &apply,
        &Patch::Apply(&cm("limits: {maxMessageBytes: 4096}\n")),
    )
    .await
    .unwrap();
    wait_for("the change", Duration::from_secs(120), || {
        let v = applied.borrow().clone();
        async move { v.filter(|c| c.limits.max_message_bytes == 4096).map(|_| ()) }
    })
    .await;
    cms.patch(cm_name, &apply, &Patch::Apply(&cm("limits: [")))
        .await
        .unwrap();
    let refused = wait_for("the refusal", Duration::from_secs(120), || {
        let state = shared.config();
        async move { state.refused }
    })
    .await;
    assert!(refused.contains("refused"), "{refused}");
    assert_eq!(
        applied.borrow().as_ref().unwrap().limits.max_message_bytes,
        4096
    );
    watch_task.abort();

    // The status, applied as the worker does: the API server's schema accepts it.
    shared.set_config(ConfigState {
        version: Some("1".into()),
        refused: None,
    });
    let statuses: Api<InterceptorStatus> = Api::namespaced(client.clone(), &ns);
    let (done, done_rx) = watch::channel(false);
    let writer = tokio::spawn(
        StatusWriter {
            api: statuses.clone(),
            owner: OwnerConfig {
                namespace: ns.clone(),
                name: "e2e-worker".into(),
                uid: owner.metadata.uid.clone().unwrap(),
            },
            node: "e2e-node".into(),
            shared: Arc::clone(&shared),
            pods: SharedPods::default(),
            pacing: PacingOverride::fixed(Pacing {
                period: Duration::from_secs(2),
                min_gap: Duration::from_secs(1),
                check_every: Duration::from_millis(200),
            }),
            stall_after: Duration::from_secs(30),
            clock: k8s_openapi::jiff::Timestamp::now,
        }
        .run(done_rx),
    );
    let object = wait_for("the InterceptorStatus", Duration::from_secs(120), || {
        let statuses = statuses.clone();
        async move {
            statuses
                .get_opt("e2e-worker-e2e-node")
                .await
                .unwrap()
                .filter(|s| s.status.is_some())
        }
    })
    .await;
    assert_eq!(object.spec.node, "e2e-node");
    assert_eq!(
        object.metadata.owner_references.unwrap()[0].uid,
        owner.metadata.uid.clone().unwrap()
    );
    let managers: Vec<String> = object
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == "interceptor-worker"),
        "{managers:?}"
    );
    shared.set_stopping();
    done.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .unwrap()
        .unwrap();
    let last = statuses.get("e2e-worker-e2e-node").await.unwrap();
    assert_eq!(
        last.status.unwrap().phase,
        Some(interceptor_crds::interceptor_status::NodePhase::Stopping)
    );

    let _ = cms.delete(cm_name, &DeleteParams::default()).await;
    // Deleting the owner deletes the InterceptorStatus (garbage collection).
    let _ = configs.delete("e2e-worker", &DeleteParams::default()).await;
}

#[tokio::test]
#[ignore = "needs the product installed with a pullable worker image and config/samples/interceptorconfig-minimal.yaml applied"]
async fn every_node_reports_and_a_config_change_reloads_without_a_restart() {
    let client = Client::try_default().await.unwrap();
    let ns = "interceptor-system";
    let statuses: Api<InterceptorStatus> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node_count = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let workers = ListParams::default()
        .labels("app.kubernetes.io/instance=default,app.kubernetes.io/component=worker");

    let version = || {
        let cms = cms.clone();
        async move {
            cms.get("default-config")
                .await
                .unwrap()
                .metadata
                .resource_version
        }
    };
    let current = version().await;
    wait_for(
        "a report from every node, with the current config",
        Duration::from_secs(120),
        || {
            let statuses = statuses.clone();
            let current = current.clone();
            async move {
                let reports = statuses
                    .list(&ListParams::default().labels("interceptor.dev/config=default"))
                    .await
                    .unwrap()
                    .items;
                let fresh = reports
                    .iter()
                    .filter_map(|r| r.status.as_ref())
                    .filter(|s| s.config_version == current && s.last_heartbeat.is_some())
                    .count();
                (fresh == node_count).then_some(())
            }
        },
    )
    .await;
    let before: BTreeMap<String, Option<String>> = pods
        .list(&workers)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name.unwrap_or_default(), p.metadata.uid))
        .collect();

    let configs: Api<InterceptorConfig> = Api::namespaced(client.clone(), ns);
    configs
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"filters": {"excludePaths": ["/metrics", "/e2e"]}}})),
        )
        .await
        .unwrap();
    let changed = wait_for(
        "the operator to write the new config",
        Duration::from_secs(120),
        || async {
            let v = version().await;
            (v != current).then_some(v)
        },
    )
    .await;
    wait_for(
        "every worker to run with it",
        Duration::from_secs(120),
        || {
            let statuses = statuses.clone();
            let changed = changed.clone();
            async move {
                let reports = statuses
                    .list(&ListParams::default().labels("interceptor.dev/config=default"))
                    .await
                    .unwrap()
                    .items;
                reports
                    .iter()
                    .all(|r| {
                        r.status
                            .as_ref()
                            .is_some_and(|s| s.config_version == changed)
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let after: BTreeMap<String, Option<String>> = pods
        .list(&workers)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name.unwrap_or_default(), p.metadata.uid))
        .collect();
    assert_eq!(before, after, "the workers reloaded without a restart");
}
