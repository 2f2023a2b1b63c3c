//! The in-cluster worker's Kubernetes side: the ConfigMap watch, the pod watch and the status writer
//! against a mocked API server that checks every request against the worker's RBAC (paused tokio
//! time where rates are tested), `node-worker run`'s command line, the whole worker against a fake API
//! server with real traffic (root), and, `#[ignore]`d, the same against a real cluster (`real`:
//! `cargo test -p node-worker --test cluster real:: -- --ignored --test-threads=1`).
//! `cargo test -p node-worker --test cluster`.

// Tests: a failed unwrap is a failed test, reported with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod config;
mod pods;
mod real;
mod status;
mod worker;
