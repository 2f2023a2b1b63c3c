#!/usr/bin/env bash
# `make e2e` (also run by `make test`): the images and the real Kubernetes node (e2e/run.py). Starts what
# the checks need and was not given, and stops what it started, also when interrupted:
#   - the project's Docker engine (scripts/docker.sh), unless DOCKER_HOST names one that answers;
#   - the tests' Kafka-protocol broker (scripts/broker.sh), unless INTERCEPTOR_TEST_KAFKA is set;
#   - the Kubernetes binaries are built once (scripts/kubernetes.sh install).
# Arguments go to e2e/run.py (`--only images`, `--only cluster`, `--bin-dir DIR`). Needs root.
# Ends with the line `e2e: N passed, M failed`; the exit status is non-zero when M > 0.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "e2e: needs root (Docker engine, network namespaces, a kubelet)" >&2; exit 1; }

docker_dir=
broker_dir=
# The cluster's directory: e2e/run.py starts and stops the cluster in it; stopped here again (a no-op
# then) in case the runner itself was killed.
export INTERCEPTOR_E2E_CLUSTER_DIR
INTERCEPTOR_E2E_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/interceptor-cluster.XXXXXX")
cleanup() {
  set +e
  scripts/cluster.sh down "$INTERCEPTOR_E2E_CLUSTER_DIR"
  rm -rf "$INTERCEPTOR_E2E_CLUSTER_DIR"
  [ -z "$broker_dir" ] || scripts/broker.sh stop "$broker_dir" >/dev/null 2>&1
  [ -z "$docker_dir" ] || scripts/docker.sh stop "$docker_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/kubernetes.sh install >/dev/null

if [ -z "${DOCKER_HOST:-}" ] || ! "$(scripts/docker.sh client)" version >/dev/null 2>&1; then
  if ! engine=$(scripts/docker.sh start 2>"${TMPDIR:-/tmp}/interceptor-e2e-docker.log"); then
    # The one case where these checks cannot run at all: say so in one line, and why.
    echo "e2e: skipped: the Docker engine cannot start here ($(tail -1 "${TMPDIR:-/tmp}/interceptor-e2e-docker.log"))"
    exit 0
  fi
  eval "$engine"
  docker_dir=$INTERCEPTOR_DOCKER_DIR
fi
if [ -z "${INTERCEPTOR_TEST_KAFKA:-}" ]; then
  scripts/broker.sh install >/dev/null
  eval "$(scripts/broker.sh start)"
  broker_dir=$INTERCEPTOR_TEST_KAFKA_DIR
fi

# Debian's python3 (with python3-yaml), whatever python3 comes first on PATH.
/usr/bin/python3 e2e/run.py "$@"
