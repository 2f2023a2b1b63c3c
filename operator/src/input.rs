//! Reading an InterceptorConfig from YAML the way the API server admits it: defaults applied, CEL rules
//! checked. Used by `operator render` and by the tests of `config/samples`.

use interceptor_crds::validation::admit;
use interceptor_crds::InterceptorConfig;
use kube::CustomResourceExt;

/// Why a file is not an admissible InterceptorConfig.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("not YAML: {0}")]
    Yaml(String),
    #[error("expected kind InterceptorConfig, apiVersion interceptor.dev/v1alpha1; got {kind:?}, {api_version:?}")]
    Kind { kind: String, api_version: String },
    #[error("metadata.name is missing")]
    NoName,
    #[error("refused at admission: {0}")]
    Refused(String),
    #[error("not an InterceptorConfig: {0}")]
    Shape(String),
}

/// Parse one InterceptorConfig document; a missing namespace is `default` (as with kubectl).
pub fn parse_config(text: &str) -> Result<InterceptorConfig, InputError> {
    let mut value: serde_json::Value =
        serde_yaml_ng::from_str(text).map_err(|e| InputError::Yaml(e.to_string()))?;
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
    };
    let (kind, api_version) = (field(&value, "kind"), field(&value, "apiVersion"));
    if kind != "InterceptorConfig" || api_version != "interceptor.dev/v1alpha1" {
        return Err(InputError::Kind { kind, api_version });
    }
    if value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .is_none()
    {
        return Err(InputError::NoName);
    }
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.entry("namespace").or_insert_with(|| "default".into());
    }
    if let Some(obj) = value.as_object_mut() {
        obj.entry("spec").or_insert_with(|| serde_json::json!({}));
    }
    let admitted =
        admit(&InterceptorConfig::crd(), &value).map_err(|e| InputError::Refused(e.to_string()))?;
    serde_json::from_value(admitted).map_err(|e| InputError::Shape(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_documents_get_defaults() {
        let icfg = parse_config(
            "apiVersion: interceptor.dev/v1alpha1\nkind: InterceptorConfig\nmetadata: {name: a}\n",
        )
        .unwrap();
        assert_eq!(icfg.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(icfg.spec.kafka.topic, "interceptor-pairs");
    }

    #[test]
    fn bad_documents_are_refused_with_a_reason() {
        let head = "apiVersion: interceptor.dev/v1alpha1\nkind: InterceptorConfig\n";
        assert!(matches!(parse_config("a: [1"), Err(InputError::Yaml(_))));
        assert!(matches!(
            parse_config("apiVersion: v1\nkind: ConfigMap\n"),
            Err(InputError::Kind { .. })
        ));
        assert!(matches!(parse_config(head), Err(InputError::NoName)));
        let bad = format!("{head}metadata: {{name: a}}\nspec: {{kafka: {{brokers: []}}}}\n");
        match parse_config(&bad) {
            Err(InputError::Refused(m)) => assert!(m.contains("at least one broker"), "{m}"),
            other => panic!("{other:?}"),
        }
        let owned = format!(
            "{head}metadata: {{name: a}}\nspec: {{kafka: {{properties: {{enable.delivery.reports: \"false\"}}}}}}\n"
        );
        match parse_config(&owned) {
            Err(InputError::Refused(m)) => {
                assert!(m.contains("the worker needs every delivery report"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let wrong_type =
            format!("{head}metadata: {{name: a}}\nspec: {{capture: {{snaplen: many}}}}\n");
        assert!(parse_config(&wrong_type).is_err());
    }
}
