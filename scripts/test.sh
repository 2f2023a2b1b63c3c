#!/usr/bin/env bash
# `make test`: starts what the tests need (the Kafka-protocol broker), runs every test, stops what it
# started, also when interrupted. Live-capture tests need root (network namespaces); CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

broker_install=
cleanup() {
  if [ -n "$broker_install" ]; then kill "$broker_install" 2>/dev/null || true; fi
  if [ -x scripts/broker.sh ] && [ -n "${INTERCEPTOR_TEST_KAFKA_DIR:-}" ]; then scripts/broker.sh stop || true; fi
}
trap cleanup EXIT INT TERM

if [ -x scripts/broker.sh ]; then
  # The first run builds the broker (minutes): let it overlap with the cargo build below.
  broker_log="${TMPDIR:-/tmp}/interceptor-broker-install.$$.log"
  scripts/broker.sh install >"$broker_log" 2>&1 &
  broker_install=$!
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-run

if [ -x scripts/broker.sh ]; then
  wait "$broker_install" || { cat "$broker_log" >&2; echo "installing the test broker failed" >&2; exit 1; }
  broker_install=
  rm -f "$broker_log"
  # Prints `export INTERCEPTOR_TEST_KAFKA=127.0.0.1:PORT` (and its directory) once the broker answers.
  eval "$(scripts/broker.sh start)"
  # The Kafka tests fail instead of skipping when the broker is missing.
  export INTERCEPTOR_REQUIRE_KAFKA=1
fi

cargo test --workspace --locked --no-fail-fast
