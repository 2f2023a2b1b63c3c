//! Snapshot tests of the pure rendering: InterceptorConfig -> ConfigMap + DaemonSet.

use crate::common::{assert_appliable, assert_snapshot, sample};
use interceptor_crds::config::WorkerConfig;
use interceptor_crds::worker_env as env;
use k8s_openapi::api::core::v1::Container;
use operator::render::{pod_template_of, render, to_yaml, RenderSettings, Rendered};

fn rendered(file: &str) -> Rendered {
    let r = render(&sample(file), &RenderSettings::default()).unwrap();
    assert_appliable(
        &format!("the ConfigMap of {file}"),
        &serde_json::to_value(&r.config_map).unwrap(),
    );
    assert_appliable(
        &format!("the DaemonSet of {file}"),
        &serde_json::to_value(&r.daemon_set).unwrap(),
    );
    r
}

fn worker(r: &Rendered) -> &Container {
    &r.daemon_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

#[test]
fn minimal_sample_snapshot() {
    assert_snapshot(
        "minimal.yaml",
        &to_yaml(&rendered("interceptorconfig-minimal.yaml")).unwrap(),
    );
}

#[test]
fn full_sample_snapshot() {
    assert_snapshot(
        "full.yaml",
        &to_yaml(&rendered("interceptorconfig-full.yaml")).unwrap(),
    );
}

#[test]
fn the_config_map_holds_a_config_the_worker_accepts_and_no_credentials() {
    let r = rendered("interceptorconfig-full.yaml");
    assert_eq!(
        r.config_map.metadata.name.as_deref(),
        Some("web-nodes-config")
    );
    let text = &r.config_map.data.as_ref().unwrap()[env::CONFIG_KEY];
    let loaded = WorkerConfig::from_yaml(text).unwrap();
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    assert_eq!(loaded.config.kafka.brokers.len(), 2);
    assert_eq!(
        loaded.config.filters.exclude_namespaces,
        vec!["kube-system"]
    );
    assert!(!text.contains("kafka-credentials"));
    assert!(!text.contains("password"));
}

#[test]
fn credentials_reach_the_worker_as_secret_env_only() {
    let r = rendered("interceptorconfig-full.yaml");
    let vars = worker(&r).env.as_ref().unwrap();
    let from_secret: Vec<(&str, &str, &str)> = vars
        .iter()
        .filter_map(|v| {
            let s = v.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((v.name.as_str(), s.name.as_str(), s.key.as_str()))
        })
        .collect();
    assert_eq!(
        from_secret,
        vec![
            (env::KAFKA_SASL_USERNAME, "kafka-credentials", "username"),
            (env::KAFKA_SASL_PASSWORD, "kafka-credentials", "password"),
            (env::KAFKA_SSL_CA_PEM, "kafka-credentials", "ca.crt"),
        ]
    );
    assert!(vars.iter().all(|v| v.value.as_deref() != Some("password")));
}

#[test]
fn the_worker_pod_has_the_contracted_environment_probes_and_privileges() {
    let r = rendered("interceptorconfig-minimal.yaml");
    let pod = r
        .daemon_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.host_pid, Some(true));
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(tolerations[0].key, None);
    let c = worker(&r);
    assert_eq!(c.command.as_deref(), Some(&["node-worker".to_string()][..]));
    assert_eq!(c.args.as_deref(), Some(&["run".to_string()][..]));
    let var = |name: &str| {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == name)
            .cloned()
    };
    assert_eq!(
        var(env::CONFIG_MAP).unwrap().value.as_deref(),
        Some("default-config")
    );
    assert_eq!(var(env::NAME).unwrap().value.as_deref(), Some("default"));
    assert_eq!(var(env::UID).unwrap().value.as_deref(), Some("uid-default"));
    for (name, path) in [
        (env::NODE_NAME, "spec.nodeName"),
        (env::POD_NAME, "metadata.name"),
        (env::POD_NAMESPACE, "metadata.namespace"),
    ] {
        let field = var(name).unwrap().value_from.unwrap().field_ref.unwrap();
        assert_eq!(field.field_path, path);
    }
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(
        live.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9090)
    );
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added = caps.add.as_ref().unwrap();
    assert_eq!(added, &["NET_RAW", "SYS_ADMIN", "SYS_PTRACE"]);
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "50m");
    // Owned by the InterceptorConfig, as the controller.
    let owner = &r.daemon_set.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("InterceptorConfig", "uid-default", Some(true))
    );
    assert_eq!(
        r.config_map.metadata.owner_references,
        r.daemon_set.metadata.owner_references
    );
}

#[test]
fn config_changes_do_not_touch_the_pod_template_but_image_and_scheduling_do() {
    let base = sample("interceptorconfig-minimal.yaml");
    let settings = RenderSettings::default();
    let before = render(&base, &settings).unwrap();

    let mut config_only = base.clone();
    config_only.spec.limits.max_message_bytes = 2048;
    config_only.spec.filters.exclude_paths.push("/ping".into());
    config_only.spec.kafka.topic = "other".into();
    let after = render(&config_only, &settings).unwrap();
    assert_ne!(before.config_map, after.config_map);
    assert_eq!(
        pod_template_of(&before.daemon_set),
        pod_template_of(&after.daemon_set)
    );

    for change in [
        |c: &mut interceptor_crds::InterceptorConfig| {
            c.spec.image = Some("example/worker:2".into())
        },
        |c: &mut interceptor_crds::InterceptorConfig| {
            c.spec.node_selector.insert("pool".into(), "web".into());
        },
        |c: &mut interceptor_crds::InterceptorConfig| {
            c.spec.priority_class_name = Some("high".into())
        },
    ] {
        let mut changed = base.clone();
        change(&mut changed);
        let after = render(&changed, &settings).unwrap();
        assert_ne!(
            pod_template_of(&before.daemon_set),
            pod_template_of(&after.daemon_set)
        );
        assert_eq!(before.config_map, after.config_map);
    }
}

#[test]
fn privileged_mode_replaces_the_capabilities() {
    let mut icfg = sample("interceptorconfig-minimal.yaml");
    icfg.spec.privileged = true;
    let r = render(&icfg, &RenderSettings::default()).unwrap();
    let sc = worker(&r).security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(true));
    assert!(sc.capabilities.is_none());
}

#[test]
fn an_invalid_spec_is_not_rendered() {
    let mut icfg = sample("interceptorconfig-minimal.yaml");
    icfg.spec.kafka.brokers.clear();
    let err = render(&icfg, &RenderSettings::default()).unwrap_err();
    assert!(err.to_string().contains("kafka.brokers"), "{err}");
}

#[test]
fn a_spec_with_a_property_the_worker_owns_is_not_rendered() {
    // The worker would refuse this config.yaml (WorkerConfig::validate): the operator refuses the spec
    // with the same reason instead of writing a ConfigMap no worker applies.
    let mut icfg = sample("interceptorconfig-minimal.yaml");
    icfg.spec
        .kafka
        .properties
        .insert("delivery.report.only.error".into(), "true".into());
    let err = render(&icfg, &RenderSettings::default())
        .unwrap_err()
        .to_string();
    let worker =
        WorkerConfig::from_yaml("kafka: {properties: {delivery.report.only.error: \"true\"}}")
            .unwrap_err()
            .to_string();
    assert!(err.ends_with(&worker), "{err} / {worker}");
    assert!(
        worker.starts_with("kafka.properties: \"delivery.report.only.error\" cannot be set"),
        "{worker}"
    );
}
