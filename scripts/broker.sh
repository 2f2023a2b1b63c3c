#!/usr/bin/env bash
# The Kafka-protocol broker the tests run against: tansu, a broker written in Rust, on 127.0.0.1.
#
#   scripts/broker.sh install        build tansu once into the cache (10-15 minutes on 2 cores); no-op after
#   scripts/broker.sh start [DIR]    start a broker, wait until it answers, print `export ...` lines to eval:
#                                      INTERCEPTOR_TEST_KAFKA=127.0.0.1:PORT   its address
#                                      INTERCEPTOR_TEST_KAFKA_DIR=DIR          its state (pid, port, data, log)
#                                      INTERCEPTOR_TEST_TANSU=PATH             the tansu binary
#                                    Without DIR, a new directory under /tmp. With a DIR that held a broker
#                                    before (killed or stopped), it restarts on the same port and data.
#   scripts/broker.sh kill [DIR]     kill -9 the broker (an outage); `start DIR` brings it back
#   scripts/broker.sh stop [DIR]     stop the broker; removes DIR when `start` created it
#   scripts/broker.sh status [DIR]   print whether it runs and answers; exit 0 only when it answers
# DIR defaults to $INTERCEPTOR_TEST_KAFKA_DIR. Each command acts only on the broker recorded in DIR.
#
# The binary is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/interceptor/tansu-0.6.0/bin/tansu (the bench
# build, INTERCEPTOR_TANSU_FLAVOR=bench, under tansu-0.6.0-bench); a prebuilt tansu 0.6.0 put there (or named
# by $INTERCEPTOR_TANSU) is used as it is. INTERCEPTOR_TANSU_STORAGE=sqlite (default) or memory (bench build
# only) at `start`.
set -euo pipefail

TANSU_VERSION=0.6.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/interceptor"
# Two builds. The tests' one (INTERCEPTOR_TANSU_FLAVOR=test): opt-level 1 (a quicker build), sqlite storage.
# `make bench`'s (bench): opt-level 3 and the in-memory storage too (INTERCEPTOR_TANSU_STORAGE=memory at
# `start`): with sqlite, tansu takes half a core for 2 000 pairs/s and a core for 5 000, whatever its
# opt-level, a peer process that starves the worker measured beside it on two cores.
FLAVOR=${INTERCEPTOR_TANSU_FLAVOR:-test}
case "$FLAVOR" in
  test) ROOT="$CACHE/tansu-$TANSU_VERSION"; OPT=1; FEATURES=libsql ;;
  bench) ROOT="$CACHE/tansu-$TANSU_VERSION-bench"; OPT=3; FEATURES=libsql,dynostore ;;
  *) echo "broker.sh: INTERCEPTOR_TANSU_FLAVOR=$FLAVOR: test or bench" >&2; exit 2 ;;
esac
case "${INTERCEPTOR_TANSU_STORAGE:-sqlite}" in
  # sqlite keeps the data across kill -9 and restart (the outage runs need that); memory does not.
  sqlite) STORAGE="sqlite://tansu.db" ;;
  memory) STORAGE="memory://tansu/"
    [ "$FLAVOR" = bench ] || { echo "broker.sh: INTERCEPTOR_TANSU_STORAGE=memory needs INTERCEPTOR_TANSU_FLAVOR=bench (the tests' build has no in-memory storage)" >&2; exit 2; } ;;
  *) echo "broker.sh: INTERCEPTOR_TANSU_STORAGE=$INTERCEPTOR_TANSU_STORAGE: sqlite or memory" >&2; exit 2 ;;
esac
BIN="${INTERCEPTOR_TANSU:-$ROOT/bin/tansu}"

die() { echo "broker.sh: $*" >&2; exit 1; }

install_tansu() {
  if [ -x "$BIN" ]; then return 0; fi
  [ -n "${INTERCEPTOR_TANSU:-}" ] && die "INTERCEPTOR_TANSU=$INTERCEPTOR_TANSU is not an executable"
  command -v cargo >/dev/null || die "cargo is needed to build tansu"
  mkdir -p "$CACHE"
  # One build at a time: a second caller (the background install of `make test`, then `start`) waits here.
  exec 9>"$CACHE/tansu-$FLAVOR.lock"
  flock 9
  if [ -x "$BIN" ]; then exec 9>&-; return 0; fi
  echo "broker.sh: building tansu $TANSU_VERSION ($FLAVOR: opt-level $OPT, $FEATURES) into $ROOT (first run only; 10-20 minutes on 2 idle cores)" >&2
  # The default features give a broker without usable storage: libsql brings the sqlite storage engine,
  # dynostore the in-memory one. A broker for tests needs no heavy optimisation: compile faster (settings
  # from the caller win).
  CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-$OPT}" \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS="${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-16}" \
  CARGO_PROFILE_RELEASE_LTO="${CARGO_PROFILE_RELEASE_LTO:-false}" \
  CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-false}" \
  cargo install tansu --version "$TANSU_VERSION" --locked --features "$FEATURES" --root "$ROOT.partial" \
    --target-dir "$CACHE/tansu-target-$FLAVOR" >&2 &
  local cargo_pid=$!
  trap 'kill "$cargo_pid" 2>/dev/null; exit 143' TERM INT
  wait "$cargo_pid" || die "building tansu failed"
  trap - TERM INT
  rm -rf "$ROOT" && mv "$ROOT.partial" "$ROOT"
  rm -rf "$CACHE/tansu-target-$FLAVOR"
  exec 9>&-
  [ -x "$BIN" ] || die "the build did not produce $BIN"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Exit 0 when a Kafka broker on 127.0.0.1:$1 answers an ApiVersions request.
answers() {
  python3 - "$1" <<'EOF'
import socket, struct, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    client = b"broker.sh"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client  # ApiVersions v0, correlation id 7
    s.sendall(struct.pack(">i", len(body)) + body)
    head = b""
    while len(head) < 8:
        chunk = s.recv(8 - len(head))
        if not chunk:
            sys.exit(1)
        head += chunk
    size, correlation = struct.unpack(">ii", head)
    sys.exit(0 if correlation == 7 and size >= 6 else 1)
except OSError:
    sys.exit(1)
EOF
}

state_dir() {
  local dir="${1:-${INTERCEPTOR_TEST_KAFKA_DIR:-}}"
  [ -n "$dir" ] || die "no broker directory: pass DIR or set INTERCEPTOR_TEST_KAFKA_DIR"
  echo "$dir"
}

running_pid() {
  local dir=$1 pid
  [ -f "$dir/pid" ] || return 1
  pid=$(cat "$dir/pid")
  # Only a process that is still the tansu started in this directory (pids get reused).
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir/data" ] \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- " broker " \
    && echo "$pid"
}

start() {
  install_tansu
  local dir port created=0
  if [ -n "${1:-}" ]; then
    dir=$1
    mkdir -p "$dir"
  else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/interceptor-broker.XXXXXX")
    created=1
  fi
  dir=$(cd "$dir" && pwd)
  [ "$created" = 1 ] && touch "$dir/.created-by-start"
  if running_pid "$dir" >/dev/null; then die "a broker already runs from $dir"; fi
  if [ -f "$dir/port" ]; then port=$(cat "$dir/port"); else port=$(free_port); echo "$port" >"$dir/port"; fi
  mkdir -p "$dir/data"
  # In its data directory: tansu reads `sqlite://tansu.db` relative to it (an absolute path is not).
  # setsid: the broker outlives this script and is not hit by the terminal's Ctrl-C meant for the tests.
  (cd "$dir/data" && exec setsid "$BIN" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$STORAGE" \
    </dev/null >>"$dir/broker.log" 2>&1) &
  echo $! >"$dir/pid"
  local deadline=$((SECONDS + 60))
  until answers "$port"; do
    if ! running_pid "$dir" >/dev/null; then
      tail -20 "$dir/broker.log" >&2
      die "tansu exited; its log: $dir/broker.log"
    fi
    [ $SECONDS -lt $deadline ] || die "tansu does not answer on 127.0.0.1:$port after 60 s; log: $dir/broker.log"
    sleep 0.2
  done
  echo "export INTERCEPTOR_TEST_KAFKA=127.0.0.1:$port"
  echo "export INTERCEPTOR_TEST_KAFKA_DIR=$dir"
  echo "export INTERCEPTOR_TEST_TANSU=$BIN"
}

kill9() {
  local dir pid
  dir=$(state_dir "${1:-}")
  pid=$(running_pid "$dir") || die "no broker runs from $dir"
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

stop() {
  local dir pid
  dir=$(state_dir "${1:-}")
  [ -d "$dir" ] || return 0
  if pid=$(running_pid "$dir"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
  if [ -f "$dir/.created-by-start" ]; then rm -rf "$dir"; fi
}

status() {
  local dir pid
  dir=$(state_dir "${1:-}")
  if pid=$(running_pid "$dir"); then
    if answers "$(cat "$dir/port")"; then
      echo "tansu (pid $pid) answers on 127.0.0.1:$(cat "$dir/port"), data in $dir/data"
      return 0
    fi
    echo "tansu (pid $pid) runs but does not answer on 127.0.0.1:$(cat "$dir/port")"
    return 1
  fi
  echo "no broker runs from $dir"
  return 1
}

case "${1:-}" in
  install) install_tansu; echo "$BIN" ;;
  start) start "${2:-}" ;;
  kill) kill9 "${2:-}" ;;
  stop) stop "${2:-}" ;;
  status) status "${2:-}" ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
