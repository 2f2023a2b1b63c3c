//! The offline tests: the pipeline on capture files built packet by packet, the public captures of
//! testdata/corpus, protocol detection, adversarial traffic, property tests, recorded regressions, the
//! fuzzers' findings, and the `capture --read` command line. No root, no network, no broker: they run
//! anywhere, in parallel. `cargo test -p node-worker --test offline`.

// Tests: a failed unwrap is a failed test, reported with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod corpus;
mod detection;
mod fuzz_regressions;
mod hostile_traffic;
mod http2_fuzz;
mod http2_pipeline;
mod pipeline_http;
mod pipeline_tcp;
mod properties;
mod regressions;
