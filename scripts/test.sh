#!/usr/bin/env bash
# `make test`: starts what the tests need, runs every test, stops what it started, also when interrupted.
#   1. formatting, clippy, and the Rust tests (`cargo test`) against the tests' Kafka-protocol broker;
#   2. `make e2e` (scripts/e2e.sh): the container images and a real one-node Kubernetes, on the same broker.
# Live-capture tests and e2e need root (network namespaces, a Docker engine, a kubelet); CI runs as root.
# The first run builds the broker, the Kubernetes binaries and the base images (cached in
# ~/.cache/interceptor): they are built in the background while the Rust tests build and run.
set -euo pipefail
cd "$(dirname "$0")/.."

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/interceptor-test.XXXXXX")
background=()
cleanup() {
  local pid
  for pid in "${background[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${INTERCEPTOR_TEST_KAFKA_DIR:-}" ]; then scripts/broker.sh stop || true; fi
  if [ -n "${INTERCEPTOR_DOCKER_DIR:-}" ]; then scripts/docker.sh stop || true; fi
  rm -rf "$log_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Long first-run builds overlap with the cargo build below (each is a no-op once cached).
in_background() { # name command...
  local name=$1
  shift
  "$@" >"$log_dir/$name.log" 2>&1 &
  background+=($!)
  eval "${name}_pid=$!"
}
finish() { # name what
  local pid_var="${1}_pid"
  wait "${!pid_var}" || { cat "$log_dir/$1.log" >&2; echo "$2 failed" >&2; exit 1; }
}
in_background broker scripts/broker.sh install
as_root=0
[ "$(id -u)" -eq 0 ] && as_root=1
if [ "$as_root" = 1 ]; then
  in_background kubernetes scripts/kubernetes.sh install
  # The engine of the image checks and of the Kubernetes node; the base images' stand-ins (downloads,
  # mostly) are made while cargo builds. Where the engine cannot start, e2e.sh says so and skips.
  if engine=$(scripts/docker.sh start 2>"$log_dir/docker.log"); then
    eval "$engine"
    in_background base_images scripts/base-images.sh args
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-run

finish broker "installing the test broker"
# Prints `export INTERCEPTOR_TEST_KAFKA=127.0.0.1:PORT` (and its directory) once the broker answers.
eval "$(scripts/broker.sh start)"
# The Kafka tests fail instead of skipping when the broker is missing.
export INTERCEPTOR_REQUIRE_KAFKA=1

status=0
cargo test --workspace --locked --no-fail-fast || status=$?

if [ "$as_root" = 1 ]; then
  finish kubernetes "building the Kubernetes binaries"
  [ -z "${INTERCEPTOR_DOCKER_DIR:-}" ] || finish base_images "making the base images"
  # The binaries `cargo test` built (debug) serve the demo and `operator render` checks: no second build.
  scripts/e2e.sh --bin-dir target/debug || status=$?
else
  echo "e2e: skipped: needs root (a Docker engine, network namespaces, a kubelet)"
fi
exit "$status"
