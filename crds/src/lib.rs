//! The interceptor API, shared by the operator and the worker.
//!
//! - [`config`]: the worker's `config.yaml` (the ConfigMap the operator writes, `--config FILE`).
//! - [`interceptor_config`]: the `InterceptorConfig` custom resource (what users write) and its status.
//! - [`interceptor_status`]: the `InterceptorStatus` custom resource (what each node's worker reports).
//! - [`status_cadence`]: how often workers write their InterceptorStatus, from the cluster's size.
//! - [`worker_env`]: the environment, port and paths the operator's DaemonSet gives the worker.
//! - `validation` (feature `cel`): the CRDs' defaults and CEL rules applied client-side, as at admission.
//! - [`manifests`]: the CRD manifests generated from these types (checked in under `config/crd/`).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod interceptor_config;
pub mod interceptor_status;
pub mod manifests;
pub mod status_cadence;
#[cfg(any(test, feature = "cel"))]
pub mod validation;
pub mod worker_env;

pub use interceptor_config::{InterceptorConfig, InterceptorConfigSpec, InterceptorConfigStatus};
pub use interceptor_status::{InterceptorStatus, InterceptorStatusSpec, NodeReport};
