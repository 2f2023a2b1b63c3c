//! The install manifests: `kubectl kustomize config/default` renders, every object parses into its
//! k8s-openapi type, the CRDs are the generated ones, RBAC grants exactly what the code uses, and every
//! sample in `config/samples` is admitted.

use std::collections::BTreeSet;
use std::process::Command;

use crate::common::repo;
use interceptor_crds::manifests;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use operator::input::parse_config;
use operator::rbac::{Permission, OPERATOR, WORKER};
use serde::Deserialize;
use serde_json::Value;

/// Every object `kubectl kustomize config/default` prints, or None when kubectl is not installed.
fn kustomized() -> Option<Vec<Value>> {
    let output = match Command::new("kubectl")
        .args(["kustomize", "config/default"])
        .current_dir(repo())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: kubectl is not installed ({e}); the kustomize test needs it");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "kubectl kustomize config/default failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    Some(
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).unwrap())
            .filter(|v| !v.is_null())
            .collect(),
    )
}

#[derive(Default)]
struct Objects {
    crds: Vec<CustomResourceDefinition>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    service_accounts: Vec<ServiceAccount>,
    deployments: Vec<Deployment>,
}

/// Parse into the k8s-openapi type, and check that nothing is unknown to it (a typo would vanish).
fn parse<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> T {
    let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
    let typed: T = serde_json::from_value(obj.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert!(
        &back == obj,
        "{what} has fields its type does not know:\n{obj:#}"
    );
    typed
}

fn typed(objects: &[Value]) -> Objects {
    let mut all = Objects::default();
    for obj in objects {
        match obj["kind"].as_str().unwrap() {
            // JSON numbers (0 vs 0.0) do not round-trip; compared with the generated CRDs instead.
            "CustomResourceDefinition" => {
                all.crds.push(serde_json::from_value(obj.clone()).unwrap())
            }
            "ClusterRole" => all.cluster_roles.push(parse(obj)),
            "ClusterRoleBinding" => all.cluster_role_bindings.push(parse(obj)),
            "Role" => all.roles.push(parse(obj)),
            "RoleBinding" => all.role_bindings.push(parse(obj)),
            "ServiceAccount" => all.service_accounts.push(parse(obj)),
            "Deployment" => all.deployments.push(parse(obj)),
            "Namespace" => drop(parse::<Namespace>(obj)),
            "Service" => drop(parse::<Service>(obj)),
            other => panic!("unexpected kind {other} in config/default"),
        }
    }
    all
}

#[test]
fn config_default_renders_and_every_object_parses() {
    let Some(objects) = kustomized() else { return };
    let all = typed(&objects);
    // Namespaced objects land in interceptor-system.
    for obj in &objects {
        let kind = obj["kind"].as_str().unwrap();
        if [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
        ]
        .contains(&kind)
        {
            assert_eq!(obj["metadata"]["namespace"], "interceptor-system", "{kind}");
        }
    }
    // The CRDs installed are exactly the generated ones.
    let generated: Vec<CustomResourceDefinition> =
        manifests::crds().into_iter().map(|(_, c)| c).collect();
    assert_eq!(all.crds, generated);
    // The operator runs as its ServiceAccount with `run`, non-root.
    let deployment = &all.deployments[0];
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("interceptor-operator")
    );
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    assert_eq!(
        pod.containers[0].args.as_deref(),
        Some(&["run".to_string()][..])
    );
    assert!(all
        .service_accounts
        .iter()
        .any(|s| s.metadata.name.as_deref() == Some("interceptor-worker")));
}

/// (group, resource, verb) triples.
fn expand(permissions: &[Permission]) -> BTreeSet<(String, String, String)> {
    permissions
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

fn expand_rules(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert_ne!(v, "*", "no wildcard verbs");
                    out.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// Everything granted to a ServiceAccount by the roles bound to it.
fn granted(all: &Objects, service_account: &str) -> BTreeSet<(String, String, String)> {
    let bound = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects
            .iter()
            .flatten()
            .any(|s| s.kind == "ServiceAccount" && s.name == service_account)
    };
    let mut out = BTreeSet::new();
    for b in all
        .cluster_role_bindings
        .iter()
        .filter(|b| bound(&b.subjects))
    {
        let role = all
            .cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
            .unwrap();
        out.extend(expand_rules(role.rules.as_deref().unwrap_or_default()));
    }
    for b in all.role_bindings.iter().filter(|b| bound(&b.subjects)) {
        let role = all
            .roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
            .unwrap();
        out.extend(expand_rules(role.rules.as_deref().unwrap_or_default()));
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_code_uses() {
    let Some(objects) = kustomized() else { return };
    let all = typed(&objects);
    for (sa, used) in [
        ("interceptor-operator", OPERATOR),
        ("interceptor-worker", WORKER),
    ] {
        let granted = granted(&all, sa);
        let used = expand(used);
        let missing: Vec<_> = used.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&used).collect();
        assert!(
            missing.is_empty(),
            "{sa}: the code needs {missing:?}, config/rbac does not grant it"
        );
        assert!(
            extra.is_empty(),
            "{sa}: config/rbac grants {extra:?}, which the code does not use"
        );
    }
}

#[test]
fn every_sample_is_admitted_and_renders() {
    let dir = repo().join("config/samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "kustomization.yaml" || !name.ends_with(".yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Nothing in a sample is silently dropped: the admitted spec holds every key the file has.
        let raw: Value = serde_yaml_ng::from_str(&text).unwrap();
        let icfg = parse_config(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let admitted = serde_json::to_value(&icfg).unwrap();
        for (key, value) in raw["spec"].as_object().unwrap() {
            assert!(
                admitted["spec"].get(key).is_some(),
                "{name}: spec.{key} is unknown"
            );
            if let Some(inner) = value.as_object() {
                for k in inner.keys() {
                    assert!(
                        admitted["spec"][key].get(k).is_some(),
                        "{name}: spec.{key}.{k} is unknown"
                    );
                }
            }
        }
        operator::render::render(&icfg, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        seen += 1;
    }
    assert!(seen >= 2, "a minimal and a full sample");
}
