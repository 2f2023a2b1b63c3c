//! Tests against a real cluster with the operator installed (`operator/scripts/kind-e2e.sh` sets one up
//! with kind). Ignored by default: `cargo test -p operator --test integration cluster:: -- --ignored`.

use std::time::Duration;

use interceptor_crds::InterceptorConfig;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};

const NS: &str = "interceptor-system";

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    mut probe: impl FnMut() -> F,
) -> T {
    for _ in 0..60 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out after 60 s");
}

#[tokio::test]
#[ignore = "needs a cluster with the operator installed (operator/scripts/kind-e2e.sh)"]
async fn a_config_gets_its_children_owner_references_and_status() {
    let client = Client::try_default().await.unwrap();
    let configs: Api<InterceptorConfig> = Api::namespaced(client.clone(), NS);
    let mut icfg = crate::common::sample("interceptorconfig-full.yaml");
    icfg.metadata.name = Some("e2e".into());
    icfg.metadata.uid = None;
    icfg.metadata.generation = None;
    let created = configs
        .patch(
            "e2e",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&icfg),
        )
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm = wait_for(|| {
        let cms = cms.clone();
        async move { cms.get_opt("e2e-config").await.unwrap() }
    })
    .await;
    assert_eq!(cm.metadata.owner_references.unwrap()[0].uid, uid);
    assert!(!cm.data.unwrap()["config.yaml"].contains("kafka-credentials"));

    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    let ds = wait_for(|| {
        let dss = dss.clone();
        async move { dss.get_opt("e2e").await.unwrap() }
    })
    .await;
    let managers: Vec<String> = ds
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"interceptor-operator".to_string()),
        "{managers:?}"
    );

    let reconciled = wait_for(|| {
        let configs = configs.clone();
        async move {
            let c = configs.get("e2e").await.unwrap();
            let status = c.status?;
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Reconciled" && c.status == "True")
                .cloned()
        }
    })
    .await;
    assert_eq!(reconciled.reason, "Applied");

    // Admission refuses what must never reach a worker.
    let mut bad = icfg.clone();
    bad.spec.kafka.brokers.clear();
    let err = configs
        .patch(
            "e2e",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&bad),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least one broker"), "{err}");

    configs
        .delete("e2e", &DeleteParams::default())
        .await
        .unwrap();
}
