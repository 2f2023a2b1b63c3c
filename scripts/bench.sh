#!/usr/bin/env bash
# `make bench`: offline and live benchmarks of node-worker (issue 7; figures and how to read them in
# BENCHMARKS.md). Never a pass/fail on speed: it fails only when something is wrong (the worker emits
# other pairs than the generator knows it should, a tool fails, a pair does not belong together).
#
# Offline: capture-gen writes deterministic captures of BENCH_SIZES MB; on each, in the same run and on
# the same file, it times `node-worker capture --read` (the product), `tshark -r` with HTTP dissection
# (the peer) and `tcpdump -r FILE -w /dev/null` (the floor: reading the packets), best of BENCH_RUNS,
# and checks that the worker emitted exactly the expected pairs. Then callgrind instruction counts on a
# small capture (repeatable whatever the machine does: the figure to compare across commits) and,
# optionally, a perf profile.
# Live (root): two network namespaces joined by a veth (10.93.0.0/30), nginx answering JSON in one, wrk
# with keep-alive in the other at BENCH_RATES requests/s, and the worker capturing the server's veth
# (`--interface --netns`) to a file sink. Requests sent vs pairs captured (each pair checked), kernel
# drops, CPU of worker, client and server, the worker's peak RSS. BENCH_LONG=1 adds a 10-minute run
# sampling the worker's RSS.
#
# Results: a table on stdout and $BENCH_OUT/results.json (default target/bench). Settings (environment):
#   BENCH_SIZES="100 300 1000"   capture sizes, MB          BENCH_RUNS=3          repetitions (best of)
#   BENCH_TSHARK_MAX_MB=1000     tshark on sizes up to this BENCH_TSHARK_RUNS=1   tshark is slow
#   BENCH_CALLGRIND_MB=20        callgrind capture (0: off) BENCH_PERF=1          perf profile (0: off)
#   BENCH_CALLGRIND_H2_MB=10     callgrind on an HTTP/2 capture (capture-gen --h2; 0: off; smoke: 0)
#   BENCH_PERF_MB=(largest size) capture for perf           BENCH_SEED=1          capture-gen seed
#   BENCH_LIVE=1                 live part (0: off)         BENCH_LIVE_SECONDS=20 per rate
#   BENCH_RATES="2000 5000 10000 20000 max"  requests/s; max: as fast as wrk can (BENCH_MAX_CONNS connections)
#   BENCH_MAX_CONNS=32  BENCH_WRK_THREADS=1  BENCH_DELAY_MS=10 (pause per connection for fixed rates)
#   BENCH_LONG=0  BENCH_LONG_SECONDS=600  BENCH_LONG_RATE=max  BENCH_LONG_SAMPLE=5 (seconds between RSS)
#   BENCH_LONG_CLIENT=wrk        the long run's client: wrk (HTTP/1.1) or h2load (HTTP/2)
#   BENCH_LIVE_CONFIG=FILE       config.yaml for the live worker (e.g. capture.bufferBytes); default: none
#   BENCH_PAIRS_DIR=/dev/shm     where the live runs write their pairs to be checked: a tmpfs, so that the
#                                disk's writeback (gigabytes per run) is not counted as the worker's CPU;
#                                empty: into BENCH_OUT. The 10-minute run always writes into BENCH_OUT,
#                                through `gzip -1` when piped (about 8 GB of pairs at 10 000/s otherwise)
#   BENCH_PAIRS_VIA=pipe         the live worker writes its pairs into a pipe that `cat` empties into that
#                                file (as in production, where they leave through a socket to Kafka);
#                                file: the worker writes the file itself (its CPU then includes the page
#                                cache's cost of every byte)
#   BENCH_LIVE_PERF=1            perf profile of the worker during the max-rate run (perf/, results.json)
#   BENCH_LIVE_PERF_RATE=max     ... or during the runs at this rate instead (e.g. 5000)
#   BENCH_KAFKA=1                live runs again with `--sink kafka`, the production data path (issue 19): the
#                                tests' broker (tansu) on loopback ($INTERCEPTOR_TEST_KAFKA, else one started
#                                here with scripts/broker.sh), a fresh topic of 3 partitions per run, the default
#                                config's lz4 and acks=all. After each run a consumer (examples/read_topic) counts
#                                the messages on the topic. First a verification run (kafka-verify: 2000/s for 5 s,
#                                compression none) whose pairs are all read back and checked like the others:
#                                tansu 0.6 takes minutes to serve a few thousand lz4-compressed messages back.
#                                The broker's CPU is reported beside the worker's, not counted as client or server
#   BENCH_KAFKA_RATES="2000 10000 max"  rates of the Kafka runs  READ_TOPIC=   the consumer binary
#   BENCH_KAFKA_BROKER=sqlite    memory: a broker that keeps up (tansu's bench build, opt-level 3, a first build
#                                of 20 minutes; data in memory) for the worker's throughput. Its in-memory storage
#                                loses some acknowledged messages (0.05-2.3 %), which the runs report as wrong
#   BENCH_KAFKA_OUTAGE=0         1: one more Kafka run with a broker outage (issue 19): a broker of its own, killed
#                                (-9) after BENCH_OUTAGE_AFTER=30 s of load, restarted BENCH_OUTAGE_SECONDS=300 s
#                                later, the load going on BENCH_OUTAGE_TAIL=60 s more, at BENCH_OUTAGE_RATE=5000/s;
#                                the default config's purgeAfter (60 s) and buffer (64 MiB); RSS sampled each second.
#                                Checked: every pair the worker emitted is delivered or counted (full, purged,
#                                failed), what was delivered is on the topic, delivery resumed by itself
#   BENCH_H2=1                   an HTTP/2 load (issue 17): h2load (nghttp2-client) -> nginx's h2c listener
#                                (prior knowledge), GETs of unique paths echoed in the JSON answers, one pair
#                                per stream checked (same path, no stream twice)
#   BENCH_H2_RATES="2000 10000 max"  BENCH_H2_CONNS=8 (fixed rates)  BENCH_H2_STREAMS=10 (per connection)
#   BENCH_SMOKE=1                a quick run for `make test`: 5 MB, one run, 1 MB callgrind, 3 s live (and
#                                3 s of HTTP/2; 3 s into Kafka when $INTERCEPTOR_TEST_KAFKA names a broker)
#   BENCH_FLOODS="10000 50000 100000"  floods of connections that stay open (issue 15), offline, default
#                                config: peak RSS of `capture --read` on each, less a flood of 10 (0 or empty:
#                                off; smoke: 2000). BENCH_FLOOD_KINDS="syn handshake request": a SYN each; the
#                                handshake then silence; the handshake and one request never answered
#   BENCH_NODE=0                 1: the in-cluster worker on the real node (issue 19): the tests' Kubernetes 1.20
#                                (scripts/cluster.sh, Docker, the images of scripts/images.sh) with the product
#                                installed from config/default; at each of BENCH_NODE_RATES="2000 5000", the same
#                                Kafka load measured twice with the image's binary: `capture --sink kafka` (as the
#                                Kafka runs), then `node-worker run` in the DaemonSet's pod, configured by an
#                                InterceptorConfig (client's veth skipped). Its CPU and peak RSS (reset before each
#                                run) beside capture mode's: what the kube client, watches, status and metrics add;
#                                and its CPU with no traffic over BENCH_NODE_IDLE_SECONDS=30
#   BENCH_KEEP=1                 keep the pairs files     BENCH_OUT=DIR   NODE_WORKER=, CAPTURE_GEN= binaries
# Needs: tshark, tcpdump, valgrind, python3; live: root, iproute2, wrk, nginx, curl, h2load. Missing Debian
# packages are installed when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=${BENCH_SMOKE:-0}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${NODE_WORKER:-$TARGET/release/node-worker}
GEN=${CAPTURE_GEN:-$TARGET/release/capture-gen}
OUT=${BENCH_OUT:-$TARGET/bench}
SEED=${BENCH_SEED:-1}
if [ "$SMOKE" = 1 ]; then
  SIZES=${BENCH_SIZES:-5}; RUNS=${BENCH_RUNS:-1}; TSHARK_MAX_MB=${BENCH_TSHARK_MAX_MB:-5}
  CALLGRIND_MB=${BENCH_CALLGRIND_MB:-1}; PERF=${BENCH_PERF:-0}; LIVE_SECONDS=${BENCH_LIVE_SECONDS:-3}
  CALLGRIND_H2_MB=${BENCH_CALLGRIND_H2_MB:-0}
  RATES=${BENCH_RATES:-500}; LONG=0
  KAFKA_RATES=${BENCH_KAFKA_RATES:-}; H2_RATES=${BENCH_H2_RATES:-500}
  KAFKA_VERIFY_RATE=500; KAFKA_VERIFY_SECONDS=3
  KAFKA=${BENCH_KAFKA:-$([ -n "${INTERCEPTOR_TEST_KAFKA:-}" ] && echo 1 || echo 0)}
else
  SIZES=${BENCH_SIZES:-100 300 1000}; RUNS=${BENCH_RUNS:-3}; TSHARK_MAX_MB=${BENCH_TSHARK_MAX_MB:-1000}
  CALLGRIND_MB=${BENCH_CALLGRIND_MB:-20}; PERF=${BENCH_PERF:-1}; LIVE_SECONDS=${BENCH_LIVE_SECONDS:-20}
  CALLGRIND_H2_MB=${BENCH_CALLGRIND_H2_MB:-10}
  RATES=${BENCH_RATES:-2000 5000 10000 20000 max}; LONG=${BENCH_LONG:-0}
  KAFKA_RATES=${BENCH_KAFKA_RATES:-2000 10000 max}; H2_RATES=${BENCH_H2_RATES:-2000 10000 max}
  KAFKA_VERIFY_RATE=2000; KAFKA_VERIFY_SECONDS=5
  KAFKA=${BENCH_KAFKA:-1}
fi
H2=${BENCH_H2:-1}
if [ "$SMOKE" = 1 ]; then FLOODS=${BENCH_FLOODS-2000}; else FLOODS=${BENCH_FLOODS-10000 50000 100000}; fi
FLOODS=$(echo $FLOODS) # " " is none, as for the other lists
[ "$FLOODS" = 0 ] && FLOODS=
FLOOD_KINDS=${BENCH_FLOOD_KINDS:-syn handshake request}
KAFKA_OUTAGE=${BENCH_KAFKA_OUTAGE:-0}
NODE=${BENCH_NODE:-0}
NODE_RATES=${BENCH_NODE_RATES:-2000 5000}
NODE_IDLE_SECONDS=${BENCH_NODE_IDLE_SECONDS:-30}
OUTAGE_AFTER=${BENCH_OUTAGE_AFTER:-30}
OUTAGE_SECONDS=${BENCH_OUTAGE_SECONDS:-300}
OUTAGE_TAIL=${BENCH_OUTAGE_TAIL:-60}
OUTAGE_RATE=${BENCH_OUTAGE_RATE:-5000}
H2_CONNS=${BENCH_H2_CONNS:-8}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
TSHARK_RUNS=${BENCH_TSHARK_RUNS:-1}
PERF_MB=${BENCH_PERF_MB:-$(for s in $SIZES; do echo "$s"; done | sort -n | tail -1)}
LIVE=${BENCH_LIVE:-1}
MAX_CONNS=${BENCH_MAX_CONNS:-32}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
DELAY_MS=${BENCH_DELAY_MS:-10}
LONG_SECONDS=${BENCH_LONG_SECONDS:-600}
LONG_RATE=${BENCH_LONG_RATE:-max}
LONG_SAMPLE=${BENCH_LONG_SAMPLE:-5}
LONG_CLIENT=${BENCH_LONG_CLIENT:-wrk}
KEEP=${BENCH_KEEP:-0}
LIVE_CONFIG=${BENCH_LIVE_CONFIG:-}
KAFKA_BROKER_KIND=${BENCH_KAFKA_BROKER:-sqlite}
case "$KAFKA_BROKER_KIND" in sqlite | memory) ;; *) echo "bench: BENCH_KAFKA_BROKER=$KAFKA_BROKER_KIND: sqlite or memory" >&2; exit 2 ;; esac
LIVE_PERF=${BENCH_LIVE_PERF:-0}
LIVE_PERF_RATE=${BENCH_LIVE_PERF_RATE:-max}
PAIRS_DIR=${BENCH_PAIRS_DIR-/dev/shm}
PAIRS_VIA=${BENCH_PAIRS_VIA:-pipe}
if [ -n "$PAIRS_DIR" ] && ! [ -d "$PAIRS_DIR" -a -w "$PAIRS_DIR" ]; then PAIRS_DIR=; fi

log() { echo "bench: [${SECONDS}s] $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }
case "$LONG_CLIENT" in wrk | h2load) ;; *) die "BENCH_LONG_CLIENT=$LONG_CLIENT: wrk or h2load" ;; esac
# Wrong output is recorded, the run goes on (the figures help to understand it) and fails at the end.
wrong() { echo "$*" >>"$OUT/failures.txt"; log "WRONG OUTPUT: $*"; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# --- tools ------------------------------------------------------------------------------------
[ -x "$BIN" ] || die "$BIN not found: run 'make build' first (or set NODE_WORKER)"
[ -x "$GEN" ] || die "$GEN not found: run 'make build' first (or set CAPTURE_GEN)"
BIN=$(realpath "$BIN"); GEN=$(realpath "$GEN")
# The consumer of the Kafka runs: the example built beside the worker (cargo builds it with the tests).
READ_TOPIC=${READ_TOPIC:-$(dirname "$BIN")/examples/read_topic}
MEASURE=$ROOT/bench/measure.py
REPORT=$ROOT/bench/report.py

# Installs the Debian packages behind the missing commands (root only). The nginx package must not start
# its service on the host: a policy-rc.d forbids it during the install when none exists.
ensure_tools() { # command=package ...
  local missing=() pair
  for pair in "$@"; do command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  is_root || { log "missing: ${missing[*]} (run as root to install them)"; return 1; }
  log "installing: ${missing[*]}"
  local policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  local ok=0
  { apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; } || ok=1
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  return $ok
}

# In smoke mode a part whose tools cannot be had is skipped (and says so); in a real run it is an error.
need() { # what command=package ...
  local what=$1; shift
  ensure_tools "$@" && return 0
  [ "$SMOKE" = 1 ] && { log "SKIPPED $what: tools missing"; return 1; }
  die "$what needs: $*"
}

command -v python3 >/dev/null || die "python3 is missing (make deps)"
need "offline" tcpdump=tcpdump || true
HAVE_TCPDUMP=$(command -v tcpdump >/dev/null && echo 1 || echo 0)
HAVE_TSHARK=0; need "tshark" tshark=tshark && HAVE_TSHARK=1
HAVE_VALGRIND=0
{ [ "$CALLGRIND_MB" != 0 ] || [ "$CALLGRIND_H2_MB" != 0 ]; } && need "callgrind" valgrind=valgrind && HAVE_VALGRIND=1
HAVE_PERF=0
if [ "$PERF" = 1 ]; then
  if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then HAVE_PERF=1
  else log "SKIPPED perf profile: perf is missing or not allowed here (linux-perf)"; fi
fi

mkdir -p "$OUT"/{captures,offline,live}
OUT=$(realpath "$OUT")
rm -f "$OUT"/offline/*/*.json "$OUT"/offline/*/*.err "$OUT/results.json" "$OUT/results.txt" "$OUT/failures.txt" 2>/dev/null || true
rm -rf "$OUT/callgrind" "$OUT/callgrind-h2" "$OUT/perf" "$OUT"/live/*/ 2>/dev/null || true

# --- machine ----------------------------------------------------------------------------------
python3 - "$OUT/machine.json" "$BIN" <<'PY'
import json, os, platform, subprocess, sys
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
json.dump({
    "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
    "ram_gib": round(mem / 1048576, 1),
    "hypervisor": sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
    "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
    "load_average_at_start": open("/proc/loadavg").read().split()[:3],
    "commit": sh("git rev-parse --short HEAD") + ("-dirty" if sh("git status --porcelain --untracked-files=no") else ""),
    "worker": sys.argv[2],
    "worker_build": "debug" if "/debug/" in sys.argv[2] else "release",
    "versions": {
        "tshark": sh("tshark --version 2>/dev/null | head -1"),
        "tcpdump": sh("tcpdump --version 2>&1 | head -1"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "nginx": sh("nginx -v 2>&1"),
        "valgrind": sh("valgrind --version 2>/dev/null"),
    },
}, open(sys.argv[1], "w"), indent=1)
PY

# --- captures -----------------------------------------------------------------------------------
# Deterministic for a size and seed: kept across runs, regenerated when capture-gen is newer.
capture() { # size_mb [h2] -> path of the pcap; its stats next to it (.json). h2: capture-gen --h2
  local size=$1 kind=${2:-mix}
  local cap="$OUT/captures/$kind-${1}MB-seed$SEED.pcap"
  local stats="${cap%.pcap}.json"
  local h2_arg=()
  [ "$kind" = h2 ] && h2_arg=(--h2)
  if [ ! -s "$cap" ] || [ ! -s "$stats" ] || [ "$GEN" -nt "$stats" ]; then
    local avail_mb=$(( $(df -Pk "$OUT" | awk 'NR==2 {print $4}') / 1024 ))
    [ "$avail_mb" -gt $((size + size / 2 + 500)) ] || die "not enough disk space in $OUT for a $size MB capture ($avail_mb MB free)"
    log "generating a $size MB $kind capture (seed $SEED)"
    rm -f "$stats"
    "$GEN" "${h2_arg[@]}" --out "$cap.tmp" --size-mb "$size" --seed "$SEED" --stats "$stats" 2>/dev/null
    mv "$cap.tmp" "$cap"
  fi
  echo "$cap"
}

# The peer: full HTTP dissection (TCP reassembly, de-chunking, decompression: tshark's defaults) of every
# packet, printing a few fields of each HTTP message (less output than the worker's whole pairs).
TSHARK_ARGS=(-n -d tcp.port==8080,http -Y http -T fields -E separator=/t -e frame.number
             -e http.request.method -e http.request.uri -e http.response.code -e http.content_type
             -e http.request_in)

# --- offline ----------------------------------------------------------------------------------
offline() {
  local size cap d run
  for size in $SIZES; do
    cap=$(capture "$size")
    d="$OUT/offline/$size"
    mkdir -p "$d"
    cp "${cap%.pcap}.json" "$d/capture.json"
    cat "$cap" >/dev/null # in the page cache for every tool alike
    # Untimed: the real output, one JSON object a line, checked against what capture-gen generated.
    "$BIN" capture --read "$cap" --sink "file:$d/pairs.jsonl" --stats-json "$d/verify.stats.json" \
      --node-name bench 2>"$d/verify.err" || die "node-worker failed on $cap: $(tail -3 "$d/verify.err")"
    python3 "$REPORT" verify-offline "$d/pairs.jsonl" "$d/capture.json" "$d/verify.stats.json" >"$d/verify.json" ||
      wrong "node-worker capture --read $cap: $(cat "$d/verify.json")"
    [ "$KEEP" = 1 ] || rm -f "$d/pairs.jsonl"
    local tshark_here=0
    [ "$HAVE_TSHARK" = 1 ] && [ "$size" -le "$TSHARK_MAX_MB" ] && tshark_here=1
    for run in $(seq "$RUNS"); do
      log "offline $size MB, run $run/$RUNS: node-worker"
      python3 "$MEASURE" "$d/worker-$run.json" --stderr "$d/worker-$run.err" -- \
        "$BIN" capture --read "$cap" --sink file:/dev/null --stats-json "$d/worker-$run.stats.json" --node-name bench ||
        die "node-worker failed on $cap: $(tail -3 "$d/worker-$run.err")"
      python3 "$REPORT" check-count "$d/worker-$run.stats.json" "$d/capture.json" >"$d/worker-$run.check.json" ||
        wrong "node-worker capture --read $cap (timed run $run): pairs differ from expected_pairs"
      if [ "$HAVE_TCPDUMP" = 1 ]; then
        log "offline $size MB, run $run/$RUNS: tcpdump"
        python3 "$MEASURE" "$d/tcpdump-$run.json" --stderr /dev/null -- tcpdump -r "$cap" -w /dev/null ||
          die "tcpdump failed on $cap"
      fi
      if [ "$tshark_here" = 1 ] && [ "$run" -le "$TSHARK_RUNS" ]; then
        log "offline $size MB, run $run/$TSHARK_RUNS: tshark (slow)"
        python3 "$MEASURE" "$d/tshark-$run.json" --stdout "$d/tshark.tsv" --stderr "$d/tshark.err" -- \
          tshark "${TSHARK_ARGS[@]}" -r "$cap" || die "tshark failed on $cap: $(tail -3 "$d/tshark.err")"
        python3 "$REPORT" tshark-count "$d/tshark.tsv" >"$d/tshark-$run.count.json"
        [ "$KEEP" = 1 ] || rm -f "$d/tshark.tsv"
      fi
    done
    [ "$tshark_here" = 1 ] || echo "{\"skipped\": \"tshark not run on $size MB (BENCH_TSHARK_MAX_MB=$TSHARK_MAX_MB)\"}" >"$d/tshark-skipped.json"
  done
}

# --- floods: memory per tracked connection (issue 15) ----------------------------------------------
# A flood's connections all stay open until the capture ends, so the table holds min(N, maxFlows) of
# them at once. What they cost = peak RSS (wait4) of the flood - peak RSS of a flood of FLOOD_BASE (the
# same code run, almost no connections); report.py divides it by N and by the flows tracked.
FLOOD_BASE=10
flood_capture() { # kind n -> path of the pcap (deterministic, kept until capture-gen changes)
  local cap="$OUT/captures/flood-$1-$2.pcap"
  if [ ! -s "$cap" ] || [ "$GEN" -nt "$cap" ]; then
    "$GEN" --flood "$1" --connections "$2" --out "$cap.tmp" 2>/dev/null || die "capture-gen --flood $1 failed"
    mv "$cap.tmp" "$cap"
  fi
  echo "$cap"
}

flood_run() { # kind n -> $OUT/floods/<kind>-<n>/{measure,stats}.json
  local cap d="$OUT/floods/$1-$2"
  cap=$(flood_capture "$1" "$2")
  mkdir -p "$d"
  log "flood: $2 connections ($1)"
  python3 "$MEASURE" "$d/measure.json" --stderr "$d/worker.err" -- \
    "$BIN" capture --read "$cap" --sink file:/dev/null --stats-json "$d/stats.json" --node-name bench ||
    die "node-worker failed on $cap: $(tail -3 "$d/worker.err")"
  printf '{"kind": "%s", "connections": %s}\n' "$1" "$2" >"$d/flood.json"
}

floods() {
  [ -n "$FLOODS" ] || return 0
  rm -rf "$OUT/floods"
  local kind n
  for kind in $FLOOD_KINDS; do
    flood_run "$kind" "$FLOOD_BASE"
    for n in $FLOODS; do flood_run "$kind" "$n"; done
  done
}

# --- callgrind: instruction counts, repeatable ---------------------------------------------------
callgrind() { # [mb kind dir]: the HTTP/1 mix by default; `$CALLGRIND_H2_MB h2 callgrind-h2` for HTTP/2
  local cap mb=${1:-$CALLGRIND_MB} kind=${2:-mix} d="$OUT/${3:-callgrind}"
  cap=$(capture "$mb" "$kind")
  mkdir -p "$d"
  cp "${cap%.pcap}.json" "$d/capture.json"
  log "callgrind on $mb MB ($kind)"
  valgrind --tool=callgrind --callgrind-out-file="$d/callgrind.out" \
    "$BIN" capture --read "$cap" --sink file:/dev/null --stats-json "$d/stats.json" --node-name bench \
    2>"$d/valgrind.err" || die "callgrind run failed: $(tail -5 "$d/valgrind.err")"
  python3 "$REPORT" check-count "$d/stats.json" "$d/capture.json" >"$d/check.json" || wrong "node-worker under callgrind on $cap: pairs differ"
  # The fixed cost (start, dynamic linking, config, exit) on a capture without packets: subtracted, the
  # rest is what the traffic costs.
  printf '\xd4\xc3\xb2\xa1\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x01\x00\x00\x00' >"$d/empty.pcap"
  valgrind --tool=callgrind --callgrind-out-file="$d/baseline.out" \
    "$BIN" capture --read "$d/empty.pcap" --sink file:/dev/null --node-name bench 2>"$d/baseline.err" ||
    log "callgrind baseline failed: $(tail -2 "$d/baseline.err")"
  callgrind_annotate --inclusive=no "$d/callgrind.out" >"$d/flat.txt" 2>/dev/null || true
  callgrind_annotate --inclusive=yes "$d/callgrind.out" >"$d/inclusive.txt" 2>/dev/null || true
}

# --- perf: where the time goes on a larger capture ----------------------------------------------------
perf_profile() {
  local cap d="$OUT/perf"
  cap=$(capture "$PERF_MB")
  mkdir -p "$d"
  log "perf record on $PERF_MB MB"
  perf record -q -F 2999 -o "$d/perf.data" -- \
    "$BIN" capture --read "$cap" --sink file:/dev/null --node-name bench >/dev/null 2>"$d/perf.err" ||
    { log "perf record failed: $(tail -2 "$d/perf.err")"; return 0; }
  perf report -i "$d/perf.data" --no-children --sort symbol --stdio --percent-limit 0.5 2>/dev/null \
    | grep -v '^$' >"$d/flat.txt" || true
  perf report -i "$d/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^$' >"$d/dso.txt" || true
  [ "$KEEP" = 1 ] || rm -f "$d/perf.data" "$d/perf.data.old"
}

# --- live -------------------------------------------------------------------------------------
NS_PREFIX=icbench-
NS_C=${NS_PREFIX}$$-c
NS_S=${NS_PREFIX}$$-s
C_ADDR=10.93.0.1
S_ADDR=10.93.0.2
worker_pid=
writer_pid=
nginx_pid=
sampler_pid=

stop_worker() {
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -INT "$worker_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$worker_pid" 2>/dev/null || true
  fi
  [ -z "$worker_pid" ] || wait "$worker_pid" 2>/dev/null || true
  worker_pid=
}

del_namespace() {
  local ns=$1 pids
  ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || return 0
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}

cleanup() {
  set +e
  [ -z "$sampler_pid" ] || kill "$sampler_pid" 2>/dev/null
  stop_worker
  [ -z "$writer_pid" ] || kill "$writer_pid" 2>/dev/null
  [ -z "$nginx_pid" ] || kill -TERM "$nginx_pid" 2>/dev/null
  [ -z "${outage_pid:-}" ] || kill "$outage_pid" 2>/dev/null
  [ -z "${NODE_DIR:-}" ] || { /usr/bin/python3 "$ROOT/bench/node.py" down "$NODE_DIR"; rm -rf "$NODE_DIR"; }
  [ -z "${NODE_DOCKER_DIR:-}" ] || "$ROOT/scripts/docker.sh" stop "$NODE_DOCKER_DIR" >/dev/null 2>&1
  for dir in ${KAFKA_DIRS_STARTED:-}; do "$ROOT/scripts/broker.sh" stop "$dir" >/dev/null 2>&1; done
  del_namespace "$NS_C"
  del_namespace "$NS_S"
  [ "$KEEP" = 1 ] || rm -f "$OUT"/live/*/pairs.jsonl "$OUT"/live/*/pairs.jsonl.gz "$OUT"/offline/*/pairs.jsonl "$OUT"/offline/*/tshark.tsv
  [ -z "$PAIRS_DIR" ] || rm -f "$PAIRS_DIR/icbench-$$-"*.jsonl
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Namespaces of an earlier run that was killed hard (its PID is gone).
remove_stale() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS_PREFIX" || true); do
    pid=${ns#"$NS_PREFIX"}; pid=${pid%%-*}
    [ -d "/proc/$pid" ] || del_namespace "$ns"
  done
}

cpu_ticks() { # pid -> utime+stime in clock ticks (0 when gone)
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
vm_kib() { # pid field (VmHWM, VmRSS)
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}
machine_ticks() { # busy softirq (all CPUs)
  awk '$1 == "cpu" {print $2+$3+$4+$7+$8+$9, $8}' /proc/stat
}
nginx_requests() { # requests nginx has taken (stub_status), this query included
  local n
  n=$(ip netns exec "$NS_S" curl -s --max-time 5 "http://127.0.0.1:8081/status" | awk 'NR == 3 {print $3}')
  echo "${n:-0}"
}

live_setup() {
  remove_stale
  ip netns add "$NS_C"
  ip netns add "$NS_S"
  ip -n "$NS_C" link set lo up
  ip -n "$NS_S" link set lo up
  ip link add bc0 netns "$NS_C" type veth peer name bs0 netns "$NS_S"
  ip -n "$NS_C" addr add "$C_ADDR/30" dev bc0
  ip -n "$NS_S" addr add "$S_ADDR/30" dev bs0
  ip -n "$NS_C" link set bc0 up
  ip -n "$NS_S" link set bs0 up
  local nd="$OUT/live/nginx"
  rm -rf "$nd"
  mkdir -p "$nd/tmp"
  sed -e "s#@DIR@#$nd#g" -e "s#@ADDR@#$S_ADDR#g" "$ROOT/bench/nginx.conf" >"$nd/nginx.conf"
  ip netns exec "$NS_S" nginx -c "$nd/nginx.conf" -p "$nd/" >"$nd/nginx.out" 2>&1 &
  nginx_pid=$!
  for _ in $(seq 100); do
    ip netns exec "$NS_C" curl -s -o /dev/null --max-time 1 -X POST "http://$S_ADDR:8080/api/up" && return 0
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
  done
  die "nginx did not start: $(cat "$nd/error.log" "$nd/nginx.out" 2>/dev/null | tail -3)"
}

# One load run: fresh worker, a client at a rate for some seconds, figures into $OUT/live/<name>/.
#   RUN_CLIENT=wrk (HTTP/1.1 POSTs, keep-alive) or h2load (HTTP/2 GETs, h2c prior knowledge)
#   RUN_SINK=local (BENCH_PAIRS_VIA: a pipe or a file) or kafka (the broker in $KAFKA_BROKER, read back after)
#   RUN_OUTAGE=AFTER:SECONDS  kill -9 the broker of $OUTAGE_DIR after AFTER s of load, restart it SECONDS later
#   RUN_WORKER=node           no worker started: the in-cluster one ($NODE_WORKER_PID, into $NODE_TOPIC) is measured,
#                             its peak RSS reset first; its counters come from its /metrics (bench/node.py)
live_run() { # name rate seconds [sample_every_seconds]
  local name=$1 rate=$2 seconds=$3 sample=${4:-0}
  local client=${RUN_CLIENT:-wrk} sink_kind=${RUN_SINK:-local}
  local d="$OUT/live/$name" conns delay
  mkdir -p "$d"
  if [ "$client" = h2load ]; then
    # h2load paces per connection (--rps); a few connections, many streams each, as gRPC clients do.
    if [ "$rate" = max ]; then conns=$MAX_CONNS; else conns=$H2_CONNS; fi
    delay=0
  elif [ "$rate" = max ]; then
    conns=$MAX_CONNS; delay=0
  else
    conns=$(( (rate * DELAY_MS + 999) / 1000 )); delay=$DELAY_MS
    if [ "$conns" -lt 1 ]; then conns=1; fi
    if [ "$conns" -eq 1 ]; then delay=$(( 1000 / rate )); fi
  fi
  local threads=$WRK_THREADS
  [ "$threads" -le "$conns" ] || threads=$conns
  log "live $name: $client, rate $rate/s ($conns connections, $delay ms pause, $threads threads), sink $sink_kind, for $seconds s"
  local pairs="$d/pairs.jsonl"
  rm -f "$pairs"
  if [ -n "$PAIRS_DIR" ] && [ "$name" != long ]; then
    pairs="$PAIRS_DIR/icbench-$$-$name.jsonl"
    ln -s "$pairs" "$d/pairs.jsonl"
  fi
  local sink="file:$pairs" config=$LIVE_CONFIG topic= worker=${RUN_WORKER:-capture} on_topic0=0
  if [ "$worker" = node ]; then
    topic=$NODE_TOPIC
    on_topic0=$("$READ_TOPIC" --count "$KAFKA_BROKER" "$topic" 2>"$d/read_topic.err") ||
      die "live run $name: counting the messages of $topic failed: $(tail -2 "$d/read_topic.err")"
    /usr/bin/python3 "$ROOT/bench/node.py" counters >"$d/counters-before.json" || die "no counters from the node's worker"
  elif [ "$sink_kind" = kafka ]; then
    # The user's live config (if any) plus the broker; everything else is the default config's (lz4, acks=all,
    # 3 partitions for a created topic). A fresh topic per run: the consumer reads exactly this run's pairs.
    topic="icbench-$$-$name"
    config="$d/config.yaml"
    /usr/bin/python3 - "$LIVE_CONFIG" "$KAFKA_BROKER" "$topic" "${RUN_KAFKA_VERIFY:-0}" >"$config" <<'PY' ||
import json, sys, yaml
config = (yaml.safe_load(open(sys.argv[1])) if sys.argv[1] else None) or {}
kafka = config.setdefault("kafka", None) or {}
config["kafka"] = kafka
kafka.update({"brokers": [sys.argv[2]], "topic": sys.argv[3], "createTopic": True})
if sys.argv[4] == "1":
    kafka["compression"] = "none"
json.dump(config, sys.stdout)  # JSON is YAML
PY
      die "cannot read $LIVE_CONFIG"
    sink=kafka
  elif [ "$PAIRS_VIA" = pipe ]; then
    rm -f "$d/pairs.fifo"
    mkfifo "$d/pairs.fifo"
    if [ "$name" = long ]; then
      # Ten minutes of pairs do not fit a tmpfs, and barely a disk: compressed (some 30 times) on the way.
      pairs="$d/pairs.jsonl.gz"
      gzip -1 <"$d/pairs.fifo" >"$pairs" &
    else
      cat "$d/pairs.fifo" >"$pairs" &
    fi
    writer_pid=$!
    sink="file:$d/pairs.fifo"
  fi
  if [ "$worker" = node ]; then
    worker_pid=$NODE_WORKER_PID
    kill -0 "$worker_pid" 2>/dev/null || die "the node's worker ($worker_pid) is gone"
    echo 5 >"/proc/$worker_pid/clear_refs" # its peak RSS, from now on
  else
    # MALLOC_ARENA_MAX: as the worker's image sets it (Dockerfile.worker), unless the caller chose.
    MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2} RUST_LOG=info "${RUN_BIN:-$BIN}" capture --interface bs0 --netns "/run/netns/$NS_S" ${config:+--config "$config"} \
      --sink "$sink" \
      --stats-json "$d/worker.stats.json" --log-format json --node-name bench 2>"$d/worker.log" &
    worker_pid=$!
  fi
  # The tap is open once the worker says it is capturing.
  for _ in $(seq 200); do
    [ "$worker" != node ] || break
    grep -q '"message":"capturing' "$d/worker.log" 2>/dev/null && break
    kill -0 "$worker_pid" 2>/dev/null || die "the worker exited: $(tail -3 "$d/worker.log")"
    sleep 0.05
  done
  [ "$worker" = node ] || grep -q '"message":"capturing' "$d/worker.log" ||
    die "the worker did not start capturing: $(tail -3 "$d/worker.log")"
  if [ "$sample" -gt 0 ]; then
    ( echo "epoch_s,rss_kib,hwm_kib,cpu_ticks" >"$d/rss.csv"
      while kill -0 "$worker_pid" 2>/dev/null; do
        echo "$(date +%s.%N),$(vm_kib "$worker_pid" VmRSS),$(vm_kib "$worker_pid" VmHWM),$(cpu_ticks "$worker_pid")" >>"$d/rss.csv"
        sleep "$sample"
      done ) &
    sampler_pid=$!
  fi
  local perf_pid=
  if [ "$LIVE_PERF" = 1 ] && [ "$rate" = "$LIVE_PERF_RATE" ] && command -v perf >/dev/null; then
    perf record -q -F 999 -p "$worker_pid" -o "$d/perf.data" >/dev/null 2>"$d/perf.err" &
    perf_pid=$!
  fi
  local w0 n0 m0 r0 b0=0 kafka_messages=null
  w0=$(cpu_ticks "$worker_pid"); n0=$(cpu_ticks "$nginx_pid"); m0=$(machine_ticks); r0=$(nginx_requests)
  [ "$sink_kind" != kafka ] || b0=$(cpu_ticks "$KAFKA_PID")
  if [ -n "${RUN_OUTAGE:-}" ]; then
    # outage.log: when the broker was killed and started again, and how many pairs the topic held when it
    # went (more on the topic at the end: delivery resumed by itself).
    ( sleep "${RUN_OUTAGE%:*}"
      echo "$("$READ_TOPIC" --count "$KAFKA_BROKER" "$topic") on_topic" >>"$d/outage.log"
      "$ROOT/scripts/broker.sh" kill "$OUTAGE_DIR" && echo "$(date +%s.%N) killed" >>"$d/outage.log"
      sleep "${RUN_OUTAGE#*:}"
      "$ROOT/scripts/broker.sh" start "$OUTAGE_DIR" >/dev/null && echo "$(date +%s.%N) started" >>"$d/outage.log"
    ) 2>>"$d/outage.log" &
    outage_pid=$!
  fi
  if [ "$client" = h2load ]; then
    local rps=()
    [ "$rate" = max ] || rps=(--rps "$(( (rate + conns - 1) / conns ))")
    python3 "$MEASURE" "$d/client.json" --stdout "$d/h2load.out" --stderr "$d/h2load.err" -- \
      ip netns exec "$NS_C" h2load -c "$conns" -m "$H2_STREAMS" -t "$threads" -D "$seconds" "${rps[@]}" \
      -i "$OUT/live/h2-uris.txt" || die "h2load failed: $(tail -3 "$d/h2load.err" "$d/h2load.out")"
  else
    WRK_DELAY_MS=$delay python3 "$MEASURE" "$d/client.json" --stdout "$d/wrk.out" --stderr "$d/wrk.err" -- \
      ip netns exec "$NS_C" wrk -t "$threads" -c "$conns" -d "${seconds}s" --timeout 5s -s "$ROOT/bench/wrk.lua" \
      "http://$S_ADDR:8080" || die "wrk failed: $(tail -3 "$d/wrk.err")"
  fi
  if [ -n "$outage_pid" ]; then wait "$outage_pid" || true; outage_pid=; fi
  sleep 1 # the last packets reach the worker (blocks of the ring are handed over every few ms)
  local w1 n1 m1 r1 b1=0 hwm rss
  w1=$(cpu_ticks "$worker_pid"); n1=$(cpu_ticks "$nginx_pid"); m1=$(machine_ticks); r1=$(nginx_requests)
  hwm=$(vm_kib "$worker_pid" VmHWM); rss=$(vm_kib "$worker_pid" VmRSS)
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf report -i "$d/perf.data" --no-children --sort symbol --stdio --percent-limit 0.5 2>/dev/null \
      | grep -v '^$' >"$d/perf-flat.txt" || true
    [ "$KEEP" = 1 ] || rm -f "$d/perf.data" "$d/perf.data.old"
  fi
  if [ "$worker" = node ]; then
    # It goes on running: wait until it has nothing left to deliver, then take its counters.
    for _ in $(seq 120); do
      /usr/bin/python3 "$ROOT/bench/node.py" counters >"$d/counters-after.json" || die "no counters from the node's worker"
      grep -q '"buffered_pairs": 0' "$d/counters-after.json" && break
      sleep 0.5
    done
    /usr/bin/python3 "$REPORT" node-stats "$d/counters-before.json" "$d/counters-after.json" >"$d/worker.stats.json"
    worker_pid=
  else
    # The worker flushes what Kafka has not acknowledged yet on its way out (within its flush timeout).
    stop_worker
  fi
  if [ "$sink_kind" = kafka ]; then
    b1=$(cpu_ticks "$KAFKA_PID")
    [ "$b1" -ge "$b0" ] || b1=$b0 # the broker was restarted (outage): its CPU is not counted
    # Every message is counted (the broker's watermarks). The pairs are read back and checked only in the
    # verification run: tansu 0.6 takes minutes to serve a few thousand lz4-compressed messages.
    kafka_messages=$("$READ_TOPIC" --count "$KAFKA_BROKER" "$topic" 2>"$d/read_topic.err") ||
      wrong "live run $name: counting the messages of $topic failed: $(tail -2 "$d/read_topic.err")"
    [[ "$kafka_messages" =~ ^[0-9]+$ ]] && kafka_messages=$((kafka_messages - on_topic0)) || kafka_messages=null
    if [ "${RUN_KAFKA_VERIFY:-0}" = 1 ]; then
      "$READ_TOPIC" "$KAFKA_BROKER" "$topic" >"$pairs" 2>"$d/read_topic.err" ||
        wrong "live run $name: reading $topic back failed: $(tail -2 "$d/read_topic.err")"
    fi
  fi
  if [ -n "$writer_pid" ]; then
    wait "$writer_pid" 2>/dev/null || true
    writer_pid=
    rm -f "$d/pairs.fifo"
  fi
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=; fi
  cat >"$d/run.json" <<JSON
{"name": "$name", "rate": "$rate", "client": "$client", "sink": "$sink_kind", "connections": $conns,
 "delay_ms": $delay, "threads": $threads, "seconds": $seconds, "clk_tck": $(getconf CLK_TCK),
 "worker_ticks": $((w1 - w0)), "nginx_ticks": $((n1 - n0)), "broker_ticks": $((b1 - b0)),
 "machine_busy_ticks": $(( ${m1% *} - ${m0% *} )), "machine_softirq_ticks": $(( ${m1#* } - ${m0#* } )),
 "server_requests": $(( r1 - r0 - 1 )), "worker_vm_hwm_kib": $hwm, "worker_vm_rss_kib": $rss,
 "kafka_messages": $kafka_messages, "kafka_read_back": $([ "${RUN_KAFKA_VERIFY:-0}" = 1 ] && echo true || echo false),
 "worker": "$worker", "pairs_file": "$pairs", "pairs_via": "$([ "$sink_kind" = kafka ] && echo "kafka:$topic" || echo "$PAIRS_VIA")"}
JSON
  python3 "$REPORT" check-live "$d" >"$d/check.json" || wrong "live run $name: $(cat "$d/check.json")"
  [ "$KEEP" = 1 ] || rm -f "$pairs" "$d/pairs.jsonl"
}

# The broker of the Kafka runs: the tests' one when $INTERCEPTOR_TEST_KAFKA names it, else one started here.
KAFKA_BROKER=
KAFKA_PID=
KAFKA_DIRS_STARTED=
OUTAGE_DIR=
outage_pid=
start_broker() { # dir -> sets KAFKA_BROKER and KAFKA_PID
  local exports
  exports=$("$ROOT/scripts/broker.sh" start ${1:+"$1"} 2>"$OUT/live/broker-start.log") ||
    { log "kafka: the broker did not start: $(tail -3 "$OUT/live/broker-start.log")"; return 1; }
  KAFKA_BROKER=$(sed -n 's/^export INTERCEPTOR_TEST_KAFKA=//p' <<<"$exports")
  local dir
  dir=$(sed -n 's/^export INTERCEPTOR_TEST_KAFKA_DIR=//p' <<<"$exports")
  KAFKA_DIRS_STARTED="$KAFKA_DIRS_STARTED $dir"
  KAFKA_PID=$(cat "$dir/pid")
}
kafka_setup() {
  if [ -n "${INTERCEPTOR_TEST_KAFKA:-}" ]; then
    KAFKA_BROKER=$INTERCEPTOR_TEST_KAFKA
    KAFKA_PID=$(cat "${INTERCEPTOR_TEST_KAFKA_DIR:-/nonexistent}/pid" 2>/dev/null || echo 0)
  else
    # BENCH_KAFKA_BROKER=memory: tansu's bench build with its data in memory, for the worker's throughput
    # (the outage runs' broker keeps sqlite, broker.sh's default: its data must outlive kill -9).
    [ "$KAFKA_BROKER_KIND" = sqlite ] || export INTERCEPTOR_TANSU_FLAVOR=bench
    log "kafka: installing (first run: a build of 10-20 minutes) and starting a broker (tansu, $KAFKA_BROKER_KIND)"
    "$ROOT/scripts/broker.sh" install >"$OUT/live/broker-install.log" 2>&1 ||
      { log "kafka: installing the broker failed: $(tail -3 "$OUT/live/broker-install.log")"; return 1; }
    INTERCEPTOR_TANSU_STORAGE=$KAFKA_BROKER_KIND start_broker "" || return 1
  fi
  # A consumer built before `--count` existed (a partial `cargo test` builds no examples) counts as missing.
  if ! { [ -x "$READ_TOPIC" ] && { "$READ_TOPIC" 2>&1 || true; } | grep -q -- --count; }; then
    [ "$SMOKE" = 1 ] && { log "SKIPPED kafka: $READ_TOPIC not built or out of date (cargo build --example read_topic)"; return 1; }
    log "kafka: building the consumer (examples/read_topic)"
    cargo build --release --locked -q -p node-worker --example read_topic || return 1
    READ_TOPIC=$ROOT/${CARGO_TARGET_DIR:-target}/release/examples/read_topic
  fi
}

# The node part (BENCH_NODE=1): capture mode, then the in-cluster worker, under the same Kafka load.
NODE_DIR=
NODE_DOCKER_DIR=
node_runs() {
  [ -n "$KAFKA_BROKER" ] || kafka_setup || die "BENCH_NODE=1: no broker"
  log "node: the Kubernetes binaries (first run: a build of about 25 minutes), Docker, the images"
  "$ROOT/scripts/kubernetes.sh" install >"$OUT/live/node-kubernetes.log" 2>&1 ||
    die "node: scripts/kubernetes.sh install failed: $(tail -3 "$OUT/live/node-kubernetes.log")"
  if [ -z "${DOCKER_HOST:-}" ] || ! "$("$ROOT/scripts/docker.sh" client)" version >/dev/null 2>&1; then
    eval "$("$ROOT/scripts/docker.sh" start 2>"$OUT/live/node-docker.log")" ||
      die "node: the Docker engine did not start: $(tail -3 "$OUT/live/node-docker.log")"
    NODE_DOCKER_DIR=$INTERCEPTOR_DOCKER_DIR
  fi
  "$ROOT/scripts/images.sh" >"$OUT/live/node-images.log" 2>&1 ||
    die "node: building the images failed: $(tail -3 "$OUT/live/node-images.log")"
  NODE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/interceptor-bench-node.XXXXXX")
  log "node: cluster up in $NODE_DIR, the product installed (config/default)"
  eval "$(/usr/bin/python3 "$ROOT/bench/node.py" up "$NODE_DIR" 2>"$OUT/live/node-up.log")" ||
    die "node: cluster up failed: $(tail -5 "$OUT/live/node-up.log")"
  local rate
  for rate in $NODE_RATES; do
    RUN_SINK=kafka RUN_BIN=$NODE_IMAGE_WORKER live_run "node-capture-$rate" "$rate" "$LIVE_SECONDS"
  done
  NODE_TOPIC="icbench-$$-node"
  log "node: an InterceptorConfig for the node (topic $NODE_TOPIC); waiting for its worker to tap bs0"
  eval "$(/usr/bin/python3 "$ROOT/bench/node.py" apply --broker "$KAFKA_BROKER" --topic "$NODE_TOPIC" \
    --skip bc0 --tap bs0 2>"$OUT/live/node-apply.log")" ||
    die "node: the worker did not start: $(tail -5 "$OUT/live/node-apply.log")"
  sleep 10 # past its start (first scans, first status writes): the runs measure it at work
  # Its cost with no traffic at all (the scans, watches, status writes and metrics alone).
  local t0 t1 i0 i1
  t0=$(date +%s.%N); i0=$(cpu_ticks "$NODE_WORKER_PID")
  sleep "$NODE_IDLE_SECONDS"
  t1=$(date +%s.%N); i1=$(cpu_ticks "$NODE_WORKER_PID")
  echo "{\"seconds\": $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'), \"worker_ticks\": $((i1 - i0)), \"clk_tck\": $(getconf CLK_TCK)," \
    "\"rss_kib\": $(vm_kib "$NODE_WORKER_PID" VmRSS)}" >"$OUT/live/node-idle.json"
  for rate in $NODE_RATES; do
    RUN_SINK=kafka RUN_WORKER=node live_run "node-run-$rate" "$rate" "$LIVE_SECONDS"
  done
  /usr/bin/python3 "$ROOT/bench/node.py" down "$NODE_DIR"
  rm -rf "$NODE_DIR"
  NODE_DIR=
}

live() {
  if ! is_root; then
    [ "$SMOKE" = 1 ] && { log "SKIPPED live: needs root (network namespaces, packet capture)"; return 0; }
    die "the live benchmark needs root (network namespaces, packet capture); BENCH_LIVE=0 skips it"
  fi
  need "live" ip=iproute2 wrk=wrk nginx=nginx-light curl=curl || return 0
  live_setup
  local rate
  for rate in $RATES; do live_run "rate-$rate" "$rate" "$LIVE_SECONDS"; done
  if [ "$H2" = 1 ] && need "live HTTP/2" h2load=nghttp2-client; then
    # Unique paths, used in turn by every connection: a pair is told apart by its connection and stream.
    seq 1 997 | sed "s#^#http://$S_ADDR:8082/api/v2/items/#" >"$OUT/live/h2-uris.txt"
    for rate in $H2_RATES; do RUN_CLIENT=h2load live_run "h2-rate-$rate" "$rate" "$LIVE_SECONDS"; done
  fi
  if [ "$KAFKA" = 1 ]; then
    if kafka_setup; then
      RUN_SINK=kafka RUN_KAFKA_VERIFY=1 live_run kafka-verify "$KAFKA_VERIFY_RATE" "$KAFKA_VERIFY_SECONDS"
      for rate in $KAFKA_RATES; do RUN_SINK=kafka live_run "kafka-rate-$rate" "$rate" "$LIVE_SECONDS"; done
      if [ "$KAFKA_OUTAGE" = 1 ]; then
        # A broker of its own, so that killing it disturbs nobody else's.
        OUTAGE_DIR="$OUT/live/outage-broker"
        rm -rf "$OUTAGE_DIR"
        start_broker "$OUTAGE_DIR" || die "kafka outage: no broker"
        RUN_SINK=kafka RUN_OUTAGE="$OUTAGE_AFTER:$OUTAGE_SECONDS" live_run kafka-outage "$OUTAGE_RATE" \
          $((OUTAGE_AFTER + OUTAGE_SECONDS + OUTAGE_TAIL)) 1
        "$ROOT/scripts/broker.sh" stop "$OUTAGE_DIR" >/dev/null 2>&1 || true
        [ "$KEEP" = 1 ] || rm -rf "$OUTAGE_DIR/data"
      fi
    elif [ "$SMOKE" = 1 ] || [ -n "${BENCH_KAFKA:-}" ]; then
      [ "$SMOKE" = 1 ] || die "BENCH_KAFKA=1: no broker"
    else
      log "SKIPPED kafka: no broker (BENCH_KAFKA=0 to not try)"
    fi
  fi
  if [ "$NODE" = 1 ]; then node_runs; fi
  if [ "$LONG" = 1 ]; then RUN_CLIENT=$LONG_CLIENT live_run long "$LONG_RATE" "$LONG_SECONDS" "$LONG_SAMPLE"; fi
}

offline
floods
if [ "$HAVE_VALGRIND" = 1 ] && [ "$CALLGRIND_MB" != 0 ]; then callgrind; fi
if [ "$HAVE_VALGRIND" = 1 ] && [ "$CALLGRIND_H2_MB" != 0 ]; then callgrind "$CALLGRIND_H2_MB" h2 callgrind-h2; fi
if [ "$HAVE_PERF" = 1 ]; then perf_profile; fi
if [ "$LIVE" = 1 ]; then live; fi
python3 "$REPORT" summary "$OUT" | tee "$OUT/results.txt"
log "results: $OUT/results.json (table: $OUT/results.txt)"
if [ -s "$OUT/failures.txt" ]; then
  log "FAILED: wrong output (see above and $OUT/failures.txt):"
  sed 's/^/  /' "$OUT/failures.txt" >&2
  exit 1
fi
