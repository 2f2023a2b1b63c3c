#!/usr/bin/env bash
# node-worker from its image, started as the operator's DaemonSet starts it (operator render): the host's
# network and PID namespaces, every capability dropped but WORKER_CAPABILITIES (default: the DaemonSet's
# five), read-only root filesystem, no new privileges, the engine's default seccomp profile, a tmpfs /tmp.
# TMPDIR is shared at the same path, so file sinks and --stats-json land where the caller looks.
# Arguments go to node-worker; signals reach it (docker run proxies them), so `kill -INT` stops it.
#   WORKER_IMAGE=IMAGE [DOCKER=docker] [WORKER_CAPABILITIES="NET_RAW ..."] e2e/worker-in-docker.sh ARGS...
set -euo pipefail
: "${WORKER_IMAGE:?set WORKER_IMAGE}"
caps=()
for c in ${WORKER_CAPABILITIES:-NET_RAW NET_ADMIN SYS_ADMIN SYS_PTRACE DAC_READ_SEARCH}; do caps+=(--cap-add "$c"); done
shared=${TMPDIR:-/tmp}
exec "${DOCKER:-docker}" run --rm -i --name "icworker-$$" \
  --network host --pid host --user 0:0 \
  --cap-drop ALL "${caps[@]}" \
  --read-only --security-opt no-new-privileges --tmpfs /tmp:rw,size=16m \
  -v "$shared:$shared" -e RUST_LOG -e NO_COLOR \
  "$WORKER_IMAGE" "$@"
