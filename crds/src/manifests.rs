//! The CustomResourceDefinitions generated from the Rust types. They are checked in under `config/crd/`
//! (`make crds` rewrites them; a test fails when they are stale).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{InterceptorConfig, InterceptorStatus};

/// Every CRD of the project with the file it is checked in as, under `config/crd/`.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("interceptorconfigs.yaml", InterceptorConfig::crd()),
        ("interceptorstatuses.yaml", InterceptorStatus::crd()),
    ]
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(crd)
}

/// Every CRD as one multi-document YAML stream (what `operator crds` prints).
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for (_, crd) in crds() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn crd_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/crd")
    }

    /// Fails when `config/crd/*.yaml` differ from the types. `make crds` (or `UPDATE_CRDS=1 cargo test -p
    /// interceptor-crds`) rewrites them.
    #[test]
    fn checked_in_crds_are_up_to_date() {
        let update = std::env::var_os("UPDATE_CRDS").is_some();
        for (file, crd) in crds() {
            let path = crd_dir().join(file);
            let want = to_yaml(&crd).unwrap();
            if update {
                std::fs::write(&path, &want).unwrap();
                continue;
            }
            let have = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
            assert!(
                have == want,
                "{} is stale: run `make crds` and commit the result",
                path.display()
            );
        }
    }

    #[test]
    fn crds_have_names_categories_columns_and_status() {
        for (_, crd) in crds() {
            let names = &crd.spec.names;
            assert_eq!(crd.spec.group, "interceptor.dev");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(
                names.categories.as_deref(),
                Some(&["interceptor".to_string()][..])
            );
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1");
            assert!(version.subresources.as_ref().unwrap().status.is_some());
            assert!(version.additional_printer_columns.as_ref().unwrap().len() >= 6);
        }
        let (_, icfg) = &crds()[0];
        assert_eq!(
            icfg.spec.names.short_names.as_deref(),
            Some(&["icfg".to_string()][..])
        );
        let (_, icst) = &crds()[1];
        assert_eq!(
            icst.spec.names.short_names.as_deref(),
            Some(&["icst".to_string()][..])
        );
        assert_eq!(icst.spec.names.plural, "interceptorstatuses");
    }
}
