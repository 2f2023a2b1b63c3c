//! interceptor's operator: reconciles each `InterceptorConfig` into a ConfigMap (`config.yaml`) and a worker
//! DaemonSet, and aggregates the workers' `InterceptorStatus` reports into the config's status.
//!
//! Pure logic ([`render`], [`selection`], [`status`], the decisions of [`lease`]) is separate from the thin
//! I/O layer ([`controller`], [`http`], the `run` module of the binary).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod controller;
pub mod http;
pub mod input;
pub mod lease;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod selection;
pub mod status;
