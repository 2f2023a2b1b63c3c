//! Admission as the apiserver does it, without an apiserver: apply the CRD schema's defaults, then evaluate
//! its CEL rules (`x-kubernetes-validations`). Used by `operator render` and by the tests of the rules and
//! of `config/samples`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{apply_defaults, Validator};
use serde_json::Value;

/// Why an object would be refused at admission.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("the CRD has no openAPIV3Schema")]
    NoSchema,
    #[error("{}", .0.join("; "))]
    Rejected(Vec<String>),
}

/// The object with the schema's defaults applied, or every rule it breaks (`field: message`).
pub fn admit(crd: &CustomResourceDefinition, object: &Value) -> Result<Value, AdmissionError> {
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or(AdmissionError::NoSchema)?;
    let schema = serde_json::to_value(schema).map_err(|_| AdmissionError::NoSchema)?;
    let defaulted = apply_defaults(&schema, object);
    match Validator::new().validate(&schema, &defaulted, None) {
        Ok(()) => Ok(defaulted),
        Err(errors) => Err(AdmissionError::Rejected(
            errors.iter().map(|e| e.to_string()).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::json;

    use super::*;
    use crate::{InterceptorConfig, InterceptorStatus};

    fn object(spec: Value) -> Value {
        json!({
            "apiVersion": "interceptor.dev/v1alpha1",
            "kind": "InterceptorConfig",
            "metadata": {"name": "test", "namespace": "default"},
            "spec": spec,
        })
    }

    fn check(spec: Value) -> Result<Value, AdmissionError> {
        admit(&InterceptorConfig::crd(), &object(spec))
    }

    #[test]
    fn every_rule_compiles_and_evaluates() {
        // An error of kind CompilationFailure/UnsupportedReference would show up as a rejection here.
        let admitted = check(json!({})).unwrap();
        assert_eq!(admitted["spec"]["kafka"]["topic"], "interceptor-pairs");
        assert_eq!(admitted["spec"]["limits"]["maxMessageBytes"], 1_048_576);
        assert_eq!(admitted["spec"]["limits"]["responseTimeout"], "10s");
        assert_eq!(admitted["spec"]["kafka"]["purgeAfter"], "60s");
        assert_eq!(
            admitted["spec"]["filters"]["excludeStatusCodes"],
            json!(["301", "308", "4xx", "5xx"])
        );
    }

    #[test]
    fn accepted_specs() {
        for spec in [
            json!({}),
            json!({"kafka": {"brokers": ["kafka-0.kafka:9092", "10.0.0.1:9093", "[::1]:9092"], "topic": "a.b_c-1"}}),
            json!({"kafka": {"purgeAfter": "1h30m", "bufferBytes": 1048576,
                             "properties": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"},
                             "credentials": {"secretName": "kafka", "usernameKey": "user", "passwordKey": "pass"}}}),
            json!({"limits": {"maxMessageBytes": 0, "maxPairBytes": 0, "responseTimeout": "0s"}}),
            json!({"limits": {"responseTimeout": "1m", "flowIdleTimeout": "24h",
                              "maxFlowBufferBytes": 1024, "maxTotalBufferBytes": 1024}}),
            json!({"filters": {"contentTypes": [], "excludeStatusCodes": ["404", "5XX", "1xx"],
                               "excludeHeaders": ["X-Probe", "x_custom~1"], "excludePaths": ["/", "/ready"],
                               "excludeNamespaces": ["kube-system"]}}),
            json!({"capture": {"snaplen": 64, "rescanInterval": "1s", "bufferBytes": 65536, "meshDetection": false}}),
            json!({"redaction": {"maskHeaders": []}}),
            json!({"kafka": {"compression": "zstd", "acks": "1", "clientId": "worker-a", "createTopic": true,
                             "topicPartitions": 6, "topicReplicationFactor": 3}}),
        ] {
            if let Err(e) = check(spec.clone()) {
                panic!("{spec} was refused: {e}");
            }
        }
    }

    #[test]
    fn rejected_specs_name_the_rule() {
        for (spec, expect) in [
            (json!({"kafka": {"brokers": []}}), "at least one broker"),
            (json!({"kafka": {"brokers": ["nohost"]}}), "host:port"),
            (json!({"kafka": {"brokers": ["kafka:0"]}}), "host:port"),
            (json!({"kafka": {"brokers": ["kafka:70000"]}}), "host:port"),
            (json!({"kafka": {"brokers": ["kafka:9092/x"]}}), "host:port"),
            (json!({"kafka": {"topic": "bad topic"}}), "topic must be"),
            (json!({"kafka": {"topic": ""}}), "topic must be"),
            (json!({"kafka": {"topic": ".."}}), "topic must be"),
            (json!({"kafka": {"purgeAfter": "0s"}}), "purgeAfter"),
            (json!({"kafka": {"purgeAfter": "-5s"}}), "purgeAfter"),
            (json!({"kafka": {"purgeAfter": "soon"}}), "purgeAfter"),
            (json!({"kafka": {"bufferBytes": 1000}}), "bufferBytes"),
            (
                json!({"kafka": {"properties": {"sasl.password": "hunter2"}}}),
                "credentials must come from",
            ),
            (
                json!({"kafka": {"properties": {"ssl.key.pem": "-----BEGIN"}}}),
                "credentials must come from",
            ),
            (
                json!({"kafka": {"credentials": {"secretName": "kafka"}}}),
                "at least one key",
            ),
            (
                json!({"kafka": {"properties": {"sasl.oauthbearer.client.secret": "x"}}}),
                "credentials must come from",
            ),
            (
                json!({"kafka": {"properties": {"delivery.report.only.error": "true"}}}),
                "cannot be set: the worker needs every delivery report",
            ),
            (
                json!({"kafka": {"properties": {"enable.delivery.reports": "false"}}}),
                "cannot be set: the worker needs every delivery report",
            ),
            (
                json!({"kafka": {"compression": "brotli"}}),
                "compression must be",
            ),
            (json!({"kafka": {"acks": "2"}}), "acks must be"),
            (json!({"kafka": {"topicPartitions": 0}}), "topicPartitions"),
            (
                json!({"kafka": {"topicReplicationFactor": 0}}),
                "topicReplicationFactor",
            ),
            (json!({"kafka": {"clientId": "a b"}}), "clientId"),
            (
                json!({"limits": {"responseTimeout": "500ms"}}),
                "responseTimeout",
            ),
            (
                json!({"limits": {"responseTimeout": "2h"}}),
                "responseTimeout",
            ),
            (
                json!({"limits": {"maxMessageBytes": 2147483648u64}}),
                "maxMessageBytes",
            ),
            (json!({"limits": {"maxFlows": 0}}), "maxFlows"),
            (json!({"limits": {"maxHeaderBytes": 100}}), "maxHeaderBytes"),
            (
                json!({"limits": {"maxPendingRequests": 0}}),
                "maxPendingRequests",
            ),
            (
                json!({"limits": {"maxFlowBufferBytes": 67108864}}),
                "must not exceed maxTotalBufferBytes",
            ),
            (
                json!({"limits": {"flowIdleTimeout": "0s"}}),
                "flowIdleTimeout",
            ),
            (
                json!({"filters": {"excludeStatusCodes": ["6xx"]}}),
                "status code",
            ),
            (
                json!({"filters": {"excludeStatusCodes": ["abc"]}}),
                "status code",
            ),
            (
                json!({"filters": {"excludePaths": ["metrics"]}}),
                "start with '/'",
            ),
            (json!({"filters": {"contentTypes": ["json"]}}), "media type"),
            (
                json!({"filters": {"excludeHeaders": ["bad header"]}}),
                "header name",
            ),
            (
                json!({"filters": {"excludeNamespaces": ["Bad_NS"]}}),
                "namespace name",
            ),
            (
                json!({"redaction": {"maskHeaders": ["a:b"]}}),
                "header name",
            ),
            (json!({"capture": {"snaplen": 10}}), "snaplen"),
            (
                json!({"capture": {"rescanInterval": "0s"}}),
                "rescanInterval",
            ),
            (json!({"capture": {"bufferBytes": 1024}}), "bufferBytes"),
        ] {
            match check(spec.clone()) {
                Ok(_) => panic!("{spec} was admitted"),
                Err(e) => assert!(
                    e.to_string().contains(expect),
                    "{spec}: {e} lacks {expect:?}"
                ),
            }
        }
    }

    /// Admission (the CEL rules on `kafka.properties`), the operator (`worker_config`, as `operator
    /// render` and the reconciler use it) and the worker (`WorkerConfig::validate` at load and reload)
    /// refuse the same properties, and say so in the same words.
    #[test]
    fn kafka_property_rules_agree_with_the_operator_and_the_worker() {
        use crate::config::{WorkerConfig, WORKER_OWNED_KAFKA_PROPERTY_REASON};
        const CREDENTIAL: &str =
            "credentials must come from kafka.credentials (a Secret), never from kafka.properties";
        // (key, why admission and the operator refuse it, whether the worker refuses it too).
        for (key, refusal, worker_refuses) in [
            ("security.protocol", None, false),
            ("sasl.mechanism", None, false),
            ("ssl.ca.pem", None, false),
            ("linger.ms", None, false),
            ("metadata.broker.list", None, false),
            ("sasl.username", Some(CREDENTIAL), false),
            ("SASL.Username", Some(CREDENTIAL), false),
            ("sasl.password", Some(CREDENTIAL), false),
            ("ssl.key.pem", Some(CREDENTIAL), false),
            ("ssl_key.location", Some(CREDENTIAL), false),
            ("ssl.keystore.password", Some(CREDENTIAL), false),
            ("sasl.oauthbearer.client.secret", Some(CREDENTIAL), false),
            ("sasl.oauthbearer.config", Some(CREDENTIAL), false),
            ("sasl.jaas.config", Some(CREDENTIAL), false),
            (
                "delivery.report.only.error",
                Some(WORKER_OWNED_KAFKA_PROPERTY_REASON),
                true,
            ),
            (
                "enable.delivery.reports",
                Some(WORKER_OWNED_KAFKA_PROPERTY_REASON),
                true,
            ),
        ] {
            let spec = json!({"kafka": {"properties": {key: "x"}}});
            let admitted = check(spec.clone());
            let typed: crate::InterceptorConfigSpec = serde_json::from_value(spec).unwrap();
            let rendered = typed.worker_config();
            match refusal {
                None => {
                    assert!(admitted.is_ok(), "{key}: {admitted:?}");
                    assert!(rendered.is_ok(), "{key}: {rendered:?}");
                }
                Some(reason) => {
                    let at_admission = admitted.unwrap_err().to_string();
                    assert!(at_admission.contains(reason), "{key}: {at_admission}");
                    let at_render = rendered.unwrap_err().to_string();
                    assert!(
                        at_render.starts_with("kafka.properties: ") && at_render.contains(reason),
                        "{key}: {at_render}"
                    );
                }
            }
            let at_load = WorkerConfig::from_yaml(&format!("kafka: {{properties: {{{key}: x}}}}"));
            match at_load {
                Err(e) if worker_refuses => assert!(
                    e.to_string().contains(WORKER_OWNED_KAFKA_PROPERTY_REASON),
                    "{key}: {e}"
                ),
                Ok(_) if !worker_refuses => {}
                other => panic!("{key}: the worker's answer is {other:?}"),
            }
        }
    }

    /// What the CEL rules admit, the worker accepts: the typed conversion never refuses an admitted spec.
    #[test]
    fn admitted_specs_convert_into_valid_worker_configs() {
        for spec in [
            json!({}),
            json!({"limits": {"maxMessageBytes": 0, "responseTimeout": "0s", "flowIdleTimeout": "1s"},
                   "kafka": {"purgeAfter": "24h", "bufferBytes": 4294967296u64},
                   "capture": {"snaplen": 262144, "bufferBytes": 1073741824}}),
        ] {
            let admitted = check(spec).unwrap();
            let typed: InterceptorConfig = serde_json::from_value(admitted).unwrap();
            typed.spec.worker_config().unwrap();
        }
    }

    #[test]
    fn the_status_crd_admits_a_worker_report() {
        let owner = crate::interceptor_status::OwnerConfig {
            namespace: "ns".into(),
            name: "cfg".into(),
            uid: "u".into(),
        };
        let obj = InterceptorStatus::for_node(&owner, "node-a");
        admit(
            &InterceptorStatus::crd(),
            &serde_json::to_value(obj).unwrap(),
        )
        .unwrap();
    }
}
