//! The operator's integration tests, one binary: rendering and its snapshots (`render`), the status
//! aggregation (`status`, over the worlds of `scenarios`), what Flux and Argo CD read from it (`gitops`),
//! the CRDs, samples, RBAC and kustomize manifests (`manifests`), the reconcile loop against a mocked API
//! server (`reconcile`), and, `#[ignore]`d, a real cluster with the operator installed (`cluster`:
//! `cargo test -p operator --test integration cluster:: -- --ignored`).

// Tests: a failed unwrap is a failed test, reported with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod common;
mod gitops;
mod manifests;
mod reconcile;
mod render;
mod scenarios;
mod status;
