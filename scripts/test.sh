#!/usr/bin/env bash
# `make test`: starts what the tests need (the Kafka-protocol broker), runs every test, stops what it
# started, also when interrupted. Live-capture tests need root (network namespaces); CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

cleanup() {
  if [ -x scripts/broker.sh ]; then scripts/broker.sh stop || true; fi
}
trap cleanup EXIT INT TERM

if [ -x scripts/broker.sh ]; then
  # Prints `export INTERCEPTOR_TEST_KAFKA=127.0.0.1:PORT` once the broker answers.
  eval "$(scripts/broker.sh start)"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
