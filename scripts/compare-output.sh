#!/usr/bin/env bash
# Compares what two builds of node-worker produce from the same captures, byte for byte: the pairs
# (JSON Lines), the counters (--stats-json) and the exit code. A refactoring that must not change the
# output runs this with the build before it and the build after it:
#
#   scripts/compare-output.sh BASELINE_BIN NEW_BIN [CAPTURE...]
#
# Each binary runs `node-worker capture --read CAP --sink file:OUT --stats-json STATS --node-name cmp
# --id-prefix cmp`. A binary older than --id-prefix writes ids with a random prefix: it runs without the
# option, and the prefix of its ids (`"id":"<prefix>-<counter>"`) is replaced by `cmp` before comparing,
# so that only the counter part of the id is compared.
#
# Captures: the ones given, or by default every capture of ../shared/corpus/captures, testdata/corpus/
# captures and testdata/regressions, plus generated mixes (capture-gen, as `make bench` makes them),
# kept in COMPARE_DIR between runs.
#   COMPARE_MIXES="20:1:64 100:2:64 10:3:2000 5:4:1"   size MB:seed:connections of each mix ("" for none)
#   COMPARE_DIR=target/compare                         where mixes and outputs go
#   CAPTURE_GEN=BIN                                    capture-gen (default: next to NEW_BIN)
#   COMPARE_KEEP=1                                     keep the outputs of identical runs too
# Prints one line per capture that differs, then a summary (captures and pairs compared); exits 0 when
# everything is identical, 1 otherwise, 2 on bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "compare-output: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: $0 BASELINE_BIN NEW_BIN [CAPTURE...]"
BASE=$(realpath "$1") || die "no such binary: $1"
NEW=$(realpath "$2") || die "no such binary: $2"
shift 2
[ -x "$BASE" ] && [ -x "$NEW" ] || die "both binaries must be executable"
OUT=${COMPARE_DIR:-target/compare}
MIXES=${COMPARE_MIXES-20:1:64 100:2:64 10:3:2000 5:4:1}
GEN=${CAPTURE_GEN:-$(dirname "$NEW")/capture-gen}
mkdir -p "$OUT/mixes" "$OUT/runs"

captures=("$@")
if [ ${#captures[@]} -eq 0 ]; then
  for dir in ../shared/corpus/captures testdata/corpus/captures testdata/regressions; do
    for cap in "$dir"/*.pcap "$dir"/*.pcapng; do [ -f "$cap" ] && captures+=("$cap"); done
  done
  for mix in $MIXES; do
    IFS=: read -r size seed conns <<<"$mix"
    cap="$OUT/mixes/mix-${size}MB-seed$seed-c$conns.pcap"
    if [ ! -s "$cap" ]; then
      [ -x "$GEN" ] || die "capture-gen not found at $GEN (set CAPTURE_GEN, or COMPARE_MIXES=)"
      "$GEN" --out "$cap.tmp" --size-mb "$size" --seed "$seed" --connections "$conns" 2>/dev/null
      mv "$cap.tmp" "$cap"
    fi
    captures+=("$cap")
  done
fi

# Whether a binary knows --id-prefix (else its ids' random prefix is normalised).
knows_prefix() { "$1" capture --help 2>/dev/null | grep -q -- '--id-prefix'; }

run() { # bin capture out-dir
  local bin=$1 cap=$2 dir=$3 code=0 args=()
  knows_prefix "$bin" && args=(--id-prefix cmp)
  mkdir -p "$dir"
  "$bin" capture --read "$cap" --sink "file:$dir/pairs.jsonl" --stats-json "$dir/stats.json" \
    --node-name cmp "${args[@]}" >/dev/null 2>"$dir/stderr" || code=$?
  echo "$code" >"$dir/exit"
  if [ ${#args[@]} -eq 0 ] && [ -f "$dir/pairs.jsonl" ]; then
    sed -E -i 's/^(\{"schema":"[^"]*","id":")[0-9a-z-]*-([0-9a-f]+")/\1cmp-\2/' "$dir/pairs.jsonl"
  fi
}

differ=0 pairs=0 n=0
for cap in "${captures[@]}"; do
  n=$((n + 1))
  name=$(printf '%03d-%s' "$n" "$(basename "$cap")")
  run "$BASE" "$cap" "$OUT/runs/$name/base"
  run "$NEW" "$cap" "$OUT/runs/$name/new"
  same=1
  for f in pairs.jsonl stats.json exit; do
    cmp -s "$OUT/runs/$name/base/$f" "$OUT/runs/$name/new/$f" || { same=0; echo "DIFFERS: $cap ($f)"; }
  done
  lines=$(wc -l <"$OUT/runs/$name/new/pairs.jsonl" 2>/dev/null || echo 0)
  pairs=$((pairs + lines))
  if [ "$same" = 1 ]; then
    [ "${COMPARE_KEEP:-0}" = 1 ] || rm -rf "${OUT:?}/runs/$name"
  else
    differ=$((differ + 1))
  fi
done

echo "compare-output: $n captures, $pairs pairs compared; $differ differ"
[ "$differ" = 0 ] && echo "compare-output: identical" || { echo "compare-output: outputs kept in $OUT/runs"; exit 1; }
