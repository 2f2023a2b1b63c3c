//! What interceptor's tests share, written once. The test harnesses of `node-worker` (`tests/offline`,
//! `tests/live`, `tests/kafka`, `tests/cluster`) list this crate as a dev-dependency; nothing here ships.
//!
//! | module       | for                                                                                 |
//! |--------------|-------------------------------------------------------------------------------------|
//! | [`pipeline`] | the real pipeline on frames written to a capture file, and what came out             |
//! | [`sink`]     | the one test sink: keeps a copy of every pair, passes it on to a real sink if given  |
//! | [`wait`]     | waiting for a condition, blocking or on a tokio runtime                              |
//! | [`isolate`]  | tests of one module never beside another module's (live, Kafka)                      |
//! | [`netns`]    | network namespaces and veth links that clean up after themselves (root)              |
//! | [`http`]     | an HTTP/1.1 server and raw clients inside namespaces                                 |
//! | [`mesh`]     | pod namespaces set up as a mesh sets them up (ambient redirection, a ztunnel stand-in)|
//! | [`relay`]    | a user-space relay that drops, duplicates and reorders frames between namespaces     |
//! | [`worker`]   | the `node-worker` binary as a child process                                          |
//! | [`kafka`]    | the test broker, pairs to send, a consumer to read them back                         |
//! | [`cluster`]  | a mocked Kubernetes API that checks every request against the worker's RBAC          |
//! | [`fuzz`]     | the fuzz targets' bodies, also replayed by the offline tests                         |

// Test support: a failed unwrap is a failed test, reported with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod fuzz;
pub mod http;
pub mod isolate;
pub mod kafka;
pub mod mesh;
pub mod netns;
pub mod pipeline;
pub mod relay;
pub mod sink;
pub mod wait;
pub mod worker;
