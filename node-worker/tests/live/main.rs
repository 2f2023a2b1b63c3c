//! The live tests: real traffic between network namespaces, captured by the taps, discovery and the real
//! `node-worker` binary, over clean, impaired and churning links, under load, and the binary's limits
//! (memory, signals, full disks, secrets in logs); `make bench` in smoke mode. They need root and skip
//! without it. `cargo test -p node-worker --test live`.
//!
//! Each test holds [`testkit::isolate::module`]: tests of one module run beside each other, never beside
//! another module's (which measure the process, tap every namespace, or load the CPU).

// Tests: a failed unwrap is a failed test, reported with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench_smoke;
mod capture;
mod churn;
mod discovery;
mod e2e;
mod e2e_churn;
mod e2e_impaired;
mod e2e_load;
mod hostile_process;
mod http2;
mod load;
mod mesh;
mod proxy;
mod scale;
