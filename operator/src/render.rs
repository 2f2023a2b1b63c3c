//! Pure rendering: an InterceptorConfig -> the ConfigMap (`<name>-config`, holding `config.yaml`) and the
//! worker DaemonSet (`<name>`) the operator applies. No I/O; `operator render` prints exactly these.
//!
//! The pod template never depends on the ConfigMap's content (workers reload `config.yaml` by watching the
//! ConfigMap), so a change of limits or filters does not roll the DaemonSet; a change of image, resources
//! or scheduling does.

use std::collections::BTreeMap;

use interceptor_crds::config::ConfigError;
use interceptor_crds::interceptor_status::LABEL_CONFIG;
use interceptor_crds::status_cadence::StatusCadence;
use interceptor_crds::worker_env as env;
use interceptor_crds::InterceptorConfig;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

/// The worker image used when a spec names none: the worker of the same release as this operator.
pub const DEFAULT_WORKER_IMAGE: &str = concat!(
    "ghcr.io/interceptor-dev/node-worker:",
    env!("CARGO_PKG_VERSION")
);
/// Name of the worker container.
pub const CONTAINER_NAME: &str = "worker";
/// Capabilities the worker needs (instead of `privileged`): capture sockets (NET_RAW), entering pods'
/// network namespaces (SYS_ADMIN for setns), opening other processes' `/proc/<pid>/ns/net` (SYS_PTRACE).
/// Each is shown to be needed, and nothing more, by running the worker image without it (`make e2e`,
/// e2e/images.py): NET_ADMIN and DAC_READ_SEARCH, given before, changed nothing and were removed.
pub const CAPABILITIES: [&str; 3] = ["NET_RAW", "SYS_ADMIN", "SYS_PTRACE"];

/// What rendering needs besides the InterceptorConfig.
#[derive(Clone, Debug)]
pub struct RenderSettings {
    /// Image for specs that name none.
    pub worker_image: String,
    /// How often the workers write their InterceptorStatus: chosen per reconcile from the number of
    /// selected nodes ([`StatusCadence::for_nodes`]); the base cadence for `operator render`.
    pub status_cadence: StatusCadence,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            worker_image: DEFAULT_WORKER_IMAGE.to_string(),
            status_cadence: StatusCadence::default(),
        }
    }
}

/// The objects applied for one InterceptorConfig.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub daemon_set: DaemonSet,
}

/// Why an InterceptorConfig cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("InterceptorConfig has no namespace")]
    NoNamespace,
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] ConfigError),
}

/// The labels of every object made for `name` (and the DaemonSet's selector, which must never change).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "interceptor-worker".to_string(),
        ),
        (LABEL_CONFIG.to_string(), name.to_string()),
    ])
}

fn labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert("app.kubernetes.io/instance".into(), name.to_string());
    labels.insert("app.kubernetes.io/component".into(), "worker".into());
    labels.insert("app.kubernetes.io/part-of".into(), "interceptor".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "interceptor-operator".into(),
    );
    labels
}

/// The ownerReference children carry (controller: the InterceptorConfig), when it has a uid (objects read
/// from a file for `operator render` may not).
fn owner_references(icfg: &InterceptorConfig) -> Option<Vec<OwnerReference>> {
    icfg.controller_owner_ref(&()).map(|owner| vec![owner])
}

/// Both objects for `icfg`.
pub fn render(
    icfg: &InterceptorConfig,
    settings: &RenderSettings,
) -> Result<Rendered, RenderError> {
    let mut config = icfg.spec.worker_config()?;
    config.status = settings.status_cadence;
    let namespace = icfg.namespace().ok_or(RenderError::NoNamespace)?;
    let name = icfg.name_any();
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(env::config_map_name(&name)),
            namespace: Some(namespace.clone()),
            labels: Some(labels(&name)),
            owner_references: owner_references(icfg),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            env::CONFIG_KEY.to_string(),
            config.to_yaml(),
        )])),
        ..ConfigMap::default()
    };
    let daemon_set = DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(labels(&name)),
            owner_references: owner_references(icfg),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("10%".into())),
                    ..RollingUpdateDaemonSet::default()
                }),
            }),
            template: pod_template(icfg, settings, &name),
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    };
    Ok(Rendered {
        config_map,
        daemon_set,
    })
}

/// The node selector of the worker pods: the spec's, and Linux nodes only.
pub fn node_selector(icfg: &InterceptorConfig) -> BTreeMap<String, String> {
    let mut selector = icfg.spec.node_selector.clone();
    selector
        .entry("kubernetes.io/os".into())
        .or_insert_with(|| "linux".into());
    selector
}

/// The tolerations of the worker pods: the spec's, or (unset) every taint.
pub fn tolerations(icfg: &InterceptorConfig) -> Vec<Toleration> {
    icfg.spec.tolerations.clone().unwrap_or_else(|| {
        vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]
    })
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("50m")),
            ("memory".to_string(), q("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q("512Mi"))])),
        ..ResourceRequirements::default()
    }
}

fn pod_template(
    icfg: &InterceptorConfig,
    settings: &RenderSettings,
    name: &str,
) -> PodTemplateSpec {
    let spec = &icfg.spec;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(name)),
            annotations: Some(BTreeMap::from([(
                "kubectl.kubernetes.io/default-container".to_string(),
                CONTAINER_NAME.to_string(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            host_network: Some(true),
            host_pid: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            service_account_name: Some(spec.service_account_name.clone()),
            node_selector: Some(node_selector(icfg)),
            tolerations: Some(tolerations(icfg)),
            priority_class_name: spec.priority_class_name.clone(),
            image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                .then(|| spec.image_pull_secrets.clone()),
            termination_grace_period_seconds: Some(30),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![container(icfg, settings, name)],
            volumes: Some(vec![Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("16Mi".into())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The worker's environment (the contract in [`interceptor_crds::worker_env`]).
pub fn worker_env(icfg: &InterceptorConfig, name: &str) -> Vec<EnvVar> {
    let mut vars = vec![
        field_env(env::NODE_NAME, "spec.nodeName"),
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        value_env(env::NAME, name),
        value_env(env::CONFIG_MAP, &env::config_map_name(name)),
    ];
    if let Some(uid) = icfg.uid() {
        vars.push(value_env(env::UID, &uid));
    }
    if let Some(creds) = &icfg.spec.kafka.credentials {
        for (var, key) in [
            (env::KAFKA_SASL_USERNAME, &creds.username_key),
            (env::KAFKA_SASL_PASSWORD, &creds.password_key),
            (env::KAFKA_SSL_CA_PEM, &creds.ca_key),
            (env::KAFKA_SSL_CERTIFICATE_PEM, &creds.certificate_key),
            (env::KAFKA_SSL_KEY_PEM, &creds.key_key),
        ] {
            if let Some(key) = key {
                vars.push(secret_env(var, &creds.secret_name, key));
            }
        }
    }
    vars
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(env::HEALTH_PORT)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn container(icfg: &InterceptorConfig, settings: &RenderSettings, name: &str) -> Container {
    let spec = &icfg.spec;
    let security_context = if spec.privileged {
        SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }
    } else {
        SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            }),
            ..SecurityContext::default()
        }
    };
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| settings.worker_image.clone()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec![env::WORKER_COMMAND.into()]),
        args: Some(env::WORKER_ARGS.iter().map(|a| a.to_string()).collect()),
        env: Some(worker_env(icfg, name)),
        ports: Some(vec![ContainerPort {
            name: Some("http-metrics".into()),
            container_port: i32::from(env::HEALTH_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe(env::LIVENESS_PATH, 10, 3)
        }),
        readiness_probe: Some(http_probe(env::READINESS_PATH, 5, 2)),
        security_context: Some(security_context),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// `kind`-tagged YAML documents of both objects, as `operator render` prints them.
pub fn to_yaml(rendered: &Rendered) -> Result<String, serde_yaml_ng::Error> {
    Ok(format!(
        "---\n{}---\n{}",
        serde_yaml_ng::to_string(&rendered.config_map)?,
        serde_yaml_ng::to_string(&rendered.daemon_set)?
    ))
}

/// The parts of the DaemonSet that roll the workers when they change: everything in the pod template.
/// (Used by tests to show that a config-only change leaves it alone.)
pub fn pod_template_of(ds: &DaemonSet) -> Option<&PodTemplateSpec> {
    ds.spec.as_ref().map(|s| &s.template)
}

/// `kind` for logs and errors.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).to_string()
}
