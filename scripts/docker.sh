#!/usr/bin/env bash
# A Docker engine of the project's own, for the image tests and the tests' Kubernetes node: Debian's
# dockerd (docker.io) with its data (images, build cache) under the project's cache directory and its
# socket, pid and state under a directory of its own. It never touches the host's network: no bridge,
# no iptables rules, no IP forwarding (the Kubernetes node's pods get their network from CNI).
#
#   scripts/docker.sh start [DIR]   start dockerd, wait until it answers, print `export ...` lines to eval:
#                                     DOCKER_HOST=unix://DIR/docker.sock   for docker and the kubelet
#                                     INTERCEPTOR_DOCKER_DIR=DIR          its state (pid, log, socket)
#                                   Without DIR, a new directory under /tmp.
#   scripts/docker.sh stop [DIR]    stop it (its containers with it); removes DIR when `start` made it
#   scripts/docker.sh status [DIR]  exit 0 when it answers
#   scripts/docker.sh client        print the docker client to use (one that builds with BuildKit)
# DIR defaults to $INTERCEPTOR_DOCKER_DIR. Needs root. One engine at a time per data root
# (${XDG_CACHE_HOME:-$HOME/.cache}/interceptor/docker, or $INTERCEPTOR_DOCKER_DATA).
#
# These machines refuse to lower a process's oom_score_adj (no CAP_SYS_RESOURCE), and the kubelet starts
# every pod sandbox at -998: runc then fails with "can't get final child's PID from pipe". The engine's
# default runtime is therefore a wrapper that raises `process.oomScoreAdj` in the bundle's config.json to
# the caller's own value before it execs runc; nothing else changes.
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/interceptor"
DATA="${INTERCEPTOR_DOCKER_DATA:-$CACHE/docker}"

die() { echo "docker.sh: $*" >&2; exit 1; }

# The client: Debian's docker.io client (20.10) builds with its built-in BuildKit; a newer client builds
# with BuildKit only through the buildx plugin.
client() {
  if docker buildx version >/dev/null 2>&1; then echo docker; return; fi
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; return; fi
  command -v docker || die "no docker client: install docker.io"
}

install_engine() {
  command -v dockerd >/dev/null && command -v runc >/dev/null && return 0
  "$(dirname "$0")/install-deps.sh" docker.io
}

state_dir() {
  local dir="${1:-${INTERCEPTOR_DOCKER_DIR:-}}"
  [ -n "$dir" ] || die "no engine directory: pass DIR or set INTERCEPTOR_DOCKER_DIR"
  echo "$dir"
}

running_pid() {
  local dir=$1 pid
  [ -f "$dir/dockerd.pid" ] || return 1
  pid=$(cat "$dir/dockerd.pid")
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--exec-root $dir/exec" && echo "$pid"
}

answers() { DOCKER_HOST="unix://$1/docker.sock" "$(client)" version >/dev/null 2>&1; }

write_runtime_wrapper() {
  local wrapper=$1
  cat >"$wrapper" <<'EOF'
#!/usr/bin/python3
# dockerd's default runtime here: runc, after raising process.oomScoreAdj in the bundle's config.json to
# this process's own value (this machine cannot lower it; the kubelet asks for -998 for pod sandboxes).
import json, os, sys
args = sys.argv[1:]
if "create" in args or "run" in args:
    bundle = "."
    for i, a in enumerate(args):
        if a in ("--bundle", "-b") and i + 1 < len(args):
            bundle = args[i + 1]
        elif a.startswith("--bundle="):
            bundle = a.split("=", 1)[1]
    path = os.path.join(bundle, "config.json")
    try:
        with open("/proc/self/oom_score_adj") as f:
            own = int(f.read())
        with open(path) as f:
            config = json.load(f)
        process = config.get("process") or {}
        if process.get("oomScoreAdj", own) < own:
            process["oomScoreAdj"] = own
            with open(path, "w") as f:
                json.dump(config, f)
    except (OSError, ValueError):
        pass  # runc reports what is wrong with the bundle
os.execvp("runc", ["runc"] + args)
EOF
  chmod +x "$wrapper"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "dockerd needs root"
  install_engine
  local dir created=0
  if [ -n "${1:-}" ]; then
    dir=$1
    mkdir -p "$dir"
  else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/interceptor-docker.XXXXXX")
    created=1
  fi
  dir=$(cd "$dir" && pwd)
  [ "$created" = 1 ] && touch "$dir/.created-by-start"
  if running_pid "$dir" >/dev/null; then die "an engine already runs from $dir"; fi
  mkdir -p "$DATA" "$dir/exec"
  # One engine per data root: a second one would corrupt it.
  if [ -f "$DATA/.owner" ] && owner=$(cat "$DATA/.owner") && running_pid "$owner" >/dev/null; then
    die "another engine (state in $owner) uses $DATA; stop it first (scripts/docker.sh stop $owner)"
  fi
  echo "$dir" >"$DATA/.owner"
  write_runtime_wrapper "$dir/runc-oom-wrapper"
  # setsid: the engine outlives this script and is not hit by a Ctrl-C meant for the tests.
  setsid dockerd \
    --data-root "$DATA" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" \
    --host "unix://$dir/docker.sock" \
    --bridge none --iptables=false --ip-forward=false --ip-masq=false --userland-proxy=false \
    --exec-opt native.cgroupdriver=cgroupfs \
    --add-runtime "interceptor-runc=$dir/runc-oom-wrapper" --default-runtime interceptor-runc \
    --log-driver json-file --log-opt max-size=10m \
    </dev/null >>"$dir/dockerd.log" 2>&1 &
  local deadline=$((SECONDS + 60))
  until answers "$dir"; do
    if ! kill -0 $! 2>/dev/null; then
      tail -20 "$dir/dockerd.log" >&2
      die "dockerd exited; its log: $dir/dockerd.log"
    fi
    [ $SECONDS -lt $deadline ] || die "dockerd does not answer after 60 s; log: $dir/dockerd.log"
    sleep 0.2
  done
  echo "export DOCKER_HOST=unix://$dir/docker.sock"
  echo "export INTERCEPTOR_DOCKER_DIR=$dir"
}

stop() {
  local dir pid
  dir=$(state_dir "${1:-}")
  [ -d "$dir" ] || return 0
  if pid=$(running_pid "$dir"); then
    # Containers first (a pod's sandbox survives its engine otherwise), then the engine.
    local ids
    ids=$(DOCKER_HOST="unix://$dir/docker.sock" "$(client)" ps -q 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      DOCKER_HOST="unix://$dir/docker.sock" "$(client)" rm -f $ids >/dev/null 2>&1 || true
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # containerd-shims of containers that were still running, and the mounts of the engine's state.
  pkill -f -- "containerd-shim.*$dir/exec" 2>/dev/null || true
  { grep -F " $dir/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -f "$dir/dockerd.pid"
  if [ -f "$DATA/.owner" ] && [ "$(cat "$DATA/.owner")" = "$dir" ]; then rm -f "$DATA/.owner"; fi
  if [ -f "$dir/.created-by-start" ]; then rm -rf "$dir"; fi
}

status() {
  local dir
  dir=$(state_dir "${1:-}")
  if running_pid "$dir" >/dev/null && answers "$dir"; then
    echo "dockerd answers on unix://$dir/docker.sock, data in $DATA"
    return 0
  fi
  echo "no engine answers from $dir"
  return 1
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  status) status "${2:-}" ;;
  client) client ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
