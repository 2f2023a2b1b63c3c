//! The Kafka tests: the sink against the real Kafka-protocol test broker (`make test` starts it; see
//! scripts/broker.sh), an outage of a broker of the test's own, librdkafka's mock cluster for fast fault
//! injection, the corpus end to end into a topic, the command line's Kafka sink, and the producer swapped
//! under a running sink. Without INTERCEPTOR_TEST_KAFKA the broker tests skip, unless
//! INTERCEPTOR_REQUIRE_KAFKA=1. `cargo test -p node-worker --test kafka`.
//!
//! Each test holds [`testkit::isolate::module`], as when each module was a binary of its own: the
//! outage test kills and restarts a broker and times the purge, the mock cluster's tests time backoff
//! and latency, and the end-to-end tests wait on the shared broker; beside another module's producers
//! they would compete for the CPU and the broker.

// Tests: a failed unwrap is a failed test, reported with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod cli;
mod cluster;
mod e2e;
mod mock;
mod outage;
