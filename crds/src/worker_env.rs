//! The contract between the operator's DaemonSet and the worker it starts (`node-worker run`): the
//! environment variables, port and paths the worker pod is given. Both sides use these constants.

/// Name of the ConfigMap holding `config.yaml` (`<InterceptorConfig name>-config`), in `POD_NAMESPACE`.
pub const CONFIG_MAP: &str = "INTERCEPTOR_CONFIG_MAP";
/// Name of the InterceptorConfig the worker belongs to.
pub const NAME: &str = "INTERCEPTOR_NAME";
/// UID of the InterceptorConfig, for the ownerReference of the worker's InterceptorStatus.
pub const UID: &str = "INTERCEPTOR_UID";
/// The node the pod runs on (downward API `spec.nodeName`).
pub const NODE_NAME: &str = "NODE_NAME";
/// The pod's name (downward API `metadata.name`).
pub const POD_NAME: &str = "POD_NAME";
/// The pod's namespace (downward API `metadata.namespace`), also the InterceptorConfig's namespace.
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// Kafka `sasl.username`, from the credentials Secret (set only when `kafka.credentials.usernameKey` is).
pub const KAFKA_SASL_USERNAME: &str = "INTERCEPTOR_KAFKA_SASL_USERNAME";
/// Kafka `sasl.password`, from the credentials Secret (set only when `kafka.credentials.passwordKey` is).
pub const KAFKA_SASL_PASSWORD: &str = "INTERCEPTOR_KAFKA_SASL_PASSWORD";
/// Kafka `ssl.ca.pem`, from the credentials Secret (set only when `kafka.credentials.caKey` is).
pub const KAFKA_SSL_CA_PEM: &str = "INTERCEPTOR_KAFKA_SSL_CA_PEM";
/// Kafka `ssl.certificate.pem`, from the credentials Secret (set only when `kafka.credentials.certificateKey` is).
pub const KAFKA_SSL_CERTIFICATE_PEM: &str = "INTERCEPTOR_KAFKA_SSL_CERTIFICATE_PEM";
/// Kafka `ssl.key.pem`, from the credentials Secret (set only when `kafka.credentials.keyKey` is).
pub const KAFKA_SSL_KEY_PEM: &str = "INTERCEPTOR_KAFKA_SSL_KEY_PEM";

/// Each credential variable and the librdkafka property the worker sets from it.
pub const KAFKA_CREDENTIAL_PROPERTIES: [(&str, &str); 5] = [
    (KAFKA_SASL_USERNAME, "sasl.username"),
    (KAFKA_SASL_PASSWORD, "sasl.password"),
    (KAFKA_SSL_CA_PEM, "ssl.ca.pem"),
    (KAFKA_SSL_CERTIFICATE_PEM, "ssl.certificate.pem"),
    (KAFKA_SSL_KEY_PEM, "ssl.key.pem"),
];

/// The port the worker serves `/healthz`, `/readyz` and `/metrics` on.
pub const HEALTH_PORT: u16 = 9090;
/// Liveness probe path.
pub const LIVENESS_PATH: &str = "/healthz";
/// Readiness probe path.
pub const READINESS_PATH: &str = "/readyz";
/// Prometheus metrics path.
pub const METRICS_PATH: &str = "/metrics";
/// The key of `config.yaml` in the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Field manager the worker uses for its server-side applies of InterceptorStatus.
pub const STATUS_FIELD_MANAGER: &str = "interceptor-worker";
/// The worker's command line in the pod.
pub const WORKER_ARGS: [&str; 1] = ["run"];
/// The worker binary in the worker image.
pub const WORKER_COMMAND: &str = "node-worker";

/// The ConfigMap name for an InterceptorConfig.
pub fn config_map_name(interceptor: &str) -> String {
    format!("{interceptor}-config")
}
