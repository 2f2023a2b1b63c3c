//! The interceptor API, shared by the operator and the worker.
//!
//! - [`config`]: the worker's `config.yaml` (the ConfigMap the operator writes, `--config FILE`).

pub mod config;
