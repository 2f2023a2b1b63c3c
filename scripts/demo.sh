#!/usr/bin/env bash
# `make demo`: a node with a few "pods" (network namespaces on a bridge), real HTTP services and
# clients in them, and node-worker capturing them all with `capture --discover`. Prints the pairs, one
# line each, and the worker's summary with drops by reason. Needs root; touches nothing outside the
# namespaces it creates (prefix icdemo-, 10.88.0.0/24). Cleans up on exit, Ctrl-C included, and
# removes leftovers of an earlier run first, so it can always be run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=icdemo-
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NET=10.88.0
OUT="${TMPDIR:-/tmp}/interceptor-demo"
BIN="${NODE_WORKER:-${CARGO_TARGET_DIR:-target}/release/node-worker}"

die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and packet capture): sudo make demo"
[ -x "$BIN" ] || die "$BIN not found: run 'make build' first (or set NODE_WORKER)"
for tool in ip python3 curl iptables setpriv; do command -v "$tool" >/dev/null || die "$tool is missing (make deps)"; done
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 is missing (make deps): the ztunnel stand-in runs on it"

worker_pid=
our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX" || true; }

cleanup() {
  set +e
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -INT "$worker_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$worker_pid" 2>/dev/null
  fi
  # A worker left by an earlier run that was killed hard.
  if [ -f "$OUT/worker.pid" ]; then
    old=$(cat "$OUT/worker.pid")
    if [ "$old" != "$worker_pid" ] && [ "$(cat "/proc/$old/comm" 2>/dev/null)" = node-worker ]; then
      kill -KILL "$old" 2>/dev/null
    fi
    rm -f "$OUT/worker.pid"
  fi
  for ns in $(our_namespaces); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$OUT/bin"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cleanup
set -e
rm -rf "$OUT"
mkdir -p "$OUT/bin"

# --- the node and its pods --------------------------------------------------------------------
# The "node" namespace holds a bridge (no address: the worker does not tap it); each pod gets a veth.
ip netns add ${PREFIX}node
ip -n ${PREFIX}node link set lo up
ip -n ${PREFIX}node link add br0 type bridge
ip -n ${PREFIX}node link set br0 up
declare -A ADDR=([web]=$NET.10 [api]=$NET.20 [shop]=$NET.30 [mesh]=$NET.40 [ambient]=$NET.50)
PODS="web api shop mesh ambient"
for pod in $PODS; do
  ns=$PREFIX$pod
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add eth0 netns "$ns" type veth peer name "v-$pod" netns ${PREFIX}node
  ip -n ${PREFIX}node link set "v-$pod" master br0 up
  ip -n "$ns" addr add "${ADDR[$pod]}/24" dev eth0
  ip -n "$ns" link set eth0 up
done

# The ambient pod: istio-cni's in-pod rules (Istio ambient mode), as docs/DESIGN.md "Service meshes"
# describes them: the app's outbound TCP REDIRECTed to ztunnel's 15001, inbound TPROXYed to 15006 (plain
# text) or 15008 (HBONE); ztunnel's own packets (mark 0x539) left alone, answers to them routed back.
amb() { ip netns exec ${PREFIX}ambient iptables -w "$@"; }
ip -n ${PREFIX}ambient rule add fwmark 0x111/0xfff pref 32764 lookup 100
ip -n ${PREFIX}ambient route add local 0.0.0.0/0 dev lo table 100
amb -t mangle -N ISTIO_PRERT; amb -t mangle -N ISTIO_OUTPUT; amb -t nat -N ISTIO_OUTPUT
amb -t mangle -A PREROUTING -j ISTIO_PRERT; amb -t mangle -A OUTPUT -j ISTIO_OUTPUT
amb -t nat -A OUTPUT -j ISTIO_OUTPUT
amb -t mangle -A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
amb -t mangle -A ISTIO_PRERT -p tcp -m tcp --dport 15008 -m mark ! --mark 0x539/0xfff \
  -j TPROXY --on-port 15008 --tproxy-mark 0x111/0xfff
amb -t mangle -A ISTIO_PRERT -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
amb -t mangle -A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff \
  -j TPROXY --on-port 15006 --tproxy-mark 0x111/0xfff
amb -t mangle -A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff \
  -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
amb -t nat -A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT
amb -t nat -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT
amb -t nat -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001

# --- services ---------------------------------------------------------------------------------
cat >"$OUT/bin/service.py" <<'PY'
import gzip, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, HOST, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json", encoding=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        if encoding == "gzip":
            body = gzip.compress(body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        p = self.path.split("?")[0]
        if p == "/healthz":
            self.send(200, {"status": "ok"})
        elif p.startswith("/api/users/"):
            self.send(200, {"id": int(p.rsplit("/", 1)[1]), "name": "Ada Lovelace", "email": "ada@example.com"})
        elif p == "/api/export":  # a large JSON body (~300 KB)
            self.send(200, [{"id": i, "email": f"user{i}@example.com", "plan": "pro"} for i in range(6000)])
        elif p == "/api/report":  # gzip-compressed JSON
            self.send(200, {"service": NAME, "orders": [{"id": i, "total": i * 3.5} for i in range(50)]}, encoding="gzip")
        elif p == "/api/dump":  # over the 1 MiB message limit
            self.send(200, {"blob": "x" * (2 << 20)})
        elif p == "/":
            self.send(200, b"<!doctype html><title>shop</title><h1>Welcome</h1>", "text/html; charset=utf-8")
        else:
            self.send(404, {"error": "not found", "path": p})

    def do_POST(self):
        p, data = self.path.split("?")[0], self.body()
        if p in ("/api/users", "/orders"):
            self.send(201, {"created": json.loads(data or b"{}"), "by": NAME})
        elif p == "/checkout":  # a form post
            self.send(200, {"order": "A-1001", "form": data.decode()})
        else:
            self.send(404, {"error": "not found", "path": p})

ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
PY
# A fake service-mesh sidecar: a process named `envoy` in the mesh pod makes the worker tap its loopback.
# It runs as Istio's proxy does, as uid 1337.
cp "$(command -v sleep)" "$OUT/bin/envoy"
# A ztunnel stand-in in the ambient pod (real ztunnel runs in its own pod and only opens its listeners in
# the pod's namespace: the worker recognises the pod by those listeners, 15001, 15006 and 15008).
cp "$ROOT/scripts/mesh-proxy.py" "$OUT/bin/mesh-proxy.py"
ln -s /usr/bin/python3 "$OUT/bin/ztunnel"
# Each pod's `pause` process, as in Kubernetes (uid 65535): it holds the pod's network namespace, so the
# worker finds every pod in /proc (as a DaemonSet's worker does; it does not see the host's /run/netns).
cp "$(command -v sleep)" "$OUT/bin/pause"
chmod 755 "$OUT" "$OUT/bin"
# Started in the pods, not as jobs of this shell: cleanup ends them with the namespace (ip netns pids).
in_pod() { local ns=$PREFIX$1; shift; ip netns exec "$ns" "$@" >>"$OUT/services.log" 2>&1 & disown; }
as_user() { echo setpriv --reuid="$1" --regid="$1" --clear-groups; }
for pod in $PODS; do in_pod "$pod" $(as_user 65535) "$OUT/bin/pause" 600; done
in_pod mesh $(as_user 1337) "$OUT/bin/envoy" 600
in_pod api python3 "$OUT/bin/service.py" api "${ADDR[api]}" 8080
in_pod shop python3 "$OUT/bin/service.py" shop "${ADDR[shop]}" 8080
in_pod mesh python3 "$OUT/bin/service.py" orders 127.0.0.1 8080
in_pod ambient "$OUT/bin/ztunnel" "$OUT/bin/mesh-proxy.py" 15001 15006 tproxy 15008
in_pod ambient python3 "$OUT/bin/service.py" payments "${ADDR[ambient]}" 8080
wait_up() { # namespace url
  for _ in $(seq 100); do
    ip netns exec "$1" curl -s -o /dev/null --max-time 1 "$2" && return 0
    sleep 0.1
  done
  die "service $2 in $1 did not start"
}
wait_up ${PREFIX}web "http://${ADDR[api]}:8080/x"
wait_up ${PREFIX}web "http://${ADDR[shop]}:8080/x"
wait_up ${PREFIX}mesh "http://127.0.0.1:8080/x"
wait_up ${PREFIX}web "http://${ADDR[ambient]}:8080/x" # through the ztunnel stand-in

# --- the worker -------------------------------------------------------------------------------
echo "demo: pods web ${ADDR[web]}, api ${ADDR[api]}, shop ${ADDR[shop]}, mesh ${ADDR[mesh]} (with an 'envoy' sidecar), ambient ${ADDR[ambient]} (Istio ambient: istio-cni's rules, a ztunnel stand-in)"
echo "demo: starting $BIN capture --discover"
NO_COLOR=1 RUST_LOG=info "$BIN" capture --discover --node-name demo-node \
  --sink "file:$OUT/pairs.jsonl" --stats-json "$OUT/stats.json" --log-format json \
  2>"$OUT/worker.log" &
worker_pid=$!
echo "$worker_pid" >"$OUT/worker.pid"
for _ in $(seq 100); do
  [ "$(grep -c '"message":"tapped"' "$OUT/worker.log" || true)" -ge 5 ] && break
  kill -0 "$worker_pid" 2>/dev/null || { cat "$OUT/worker.log" >&2; die "the worker exited"; }
  sleep 0.1
done

# --- traffic ----------------------------------------------------------------------------------
web() { ip netns exec ${PREFIX}web curl -s -o /dev/null --max-time 10 "$@"; }
api=http://${ADDR[api]}:8080
shop=http://${ADDR[shop]}:8080
json='Content-Type: application/json'
# Kept: JSON API calls, three on one keep-alive connection, one gzip-compressed.
web "$api/api/users/42" \
  --next -o /dev/null -H "$json" -d '{"name":"Grace Hopper","email":"grace@example.com"}' "$api/api/users" \
  --next -o /dev/null "$api/api/report"
# Kept: a form post, answered with JSON; a large JSON body.
web -d 'item=book&qty=2&card=4111111111111111' "$shop/checkout"
web "$api/api/export"
# Dropped: health check path, Kubernetes probe, a 404, an HTML page, a body over 1 MiB.
web "$api/healthz"
web -A 'kube-probe/1.31' "$api/api/users/1"
web "$api/api/missing"
web "$shop/"
web "$api/api/dump"
# Inside the mesh pod, over loopback (sidecar to app): kept, captured on lo.
ip netns exec ${PREFIX}mesh curl -s -o /dev/null --max-time 10 -H "$json" \
  -d '{"sku":"B-17","qty":1}' http://127.0.0.1:8080/orders \
  --next -o /dev/null -H "$json" -d '{"sku":"C-3","qty":4}' http://127.0.0.1:8080/orders

# The ambient pod calls api (its app's packets go to ztunnel's 127.0.0.1:15001; the worker recovers the
# real destination from conntrack), and web calls the ambient pod (through ztunnel's 15006): each
# exchange once, from the calling pod's tap.
ip netns exec ${PREFIX}ambient curl -s -o /dev/null --max-time 10 -H "$json" \
  -d '{"name":"Alan Turing","email":"alan@example.com"}' "$api/api/users"
web -H "$json" -d '{"sku":"D-8","qty":2}' "http://${ADDR[ambient]}:8080/orders"

sleep 1 # let the last packets reach the worker
kill -INT "$worker_pid" 2>/dev/null || true
wait "$worker_pid" || die "the worker failed: see $OUT/worker.log"
worker_pid=

# --- what it captured -------------------------------------------------------------------------
declare -A INODE
for pod in $PODS; do INODE[$pod]=$(stat -L -c %i "/run/netns/$PREFIX$pod"); done
# The pods as name=address=netns inode (also kept in $OUT/pods.txt for tests that read the pairs).
NAMES=$(for pod in $PODS; do printf '%s=%s=%s ' "$pod" "${ADDR[$pod]}" "${INODE[$pod]}"; done)
echo "$NAMES" >"$OUT/pods.txt"
NAMES=$NAMES python3 - "$OUT/pairs.jsonl" "$OUT/stats.json" <<'PY'
import base64, json, os, sys
pods, by_ip, by_ino = {}, {}, {}
for entry in os.environ["NAMES"].split():
    name, ip, ino = entry.split("=")
    by_ip[ip], by_ino[ino] = name, name
def size(m):
    b = m.get("body") or ""
    return len(base64.b64decode(b)) if m.get("body_base64") else len(b.encode())
def ctype(m):
    return next((v for k, v in m.get("headers", []) if k.lower() == "content-type"), "-")
def human(n):
    return f"{n} B" if n < 10240 else f"{n // 1024} KiB"
pairs = [json.loads(l) for l in open(sys.argv[1])]
ours = [p for p in pairs if p["interface"]["netns"] in by_ino]
print(f"\n{len(ours)} pairs captured (one line each):\n")
print(f"  {'METHOD':<6} {'PATH':<14} {'STATUS':<6} {'CONTENT TYPE':<17} {'REQ BODY':>8} {'RESP BODY':>15}  {'FROM -> TO':<21} CAPTURED ON")
for p in ours:
    q, r, i = p["request"], p["response"], p["interface"]
    src = by_ip.get(p["source"]["ip"], p["source"]["ip"])
    dst = by_ip.get(p["destination"]["ip"], p["destination"]["ip"])
    if p["destination"]["ip"].startswith("127."):
        src = dst = by_ino[i["netns"]]
    enc = f" ({r['content_encoding']})" if r.get("content_encoding") else ""
    ct = ctype(r) if ctype(r) != "-" else ctype(q)
    print(f"  {q['method']:<6} {q['path']:<14} {r['status']:<6} {ct.split(';')[0]:<17} {human(size(q)):>8} {human(size(r)) + enc:>15}  "
          f"{src + ' -> ' + dst + ':' + str(p['destination']['port']):<21} {i['name']}@{by_ino[i['netns']]} ({i['mode']})")
if len(pairs) > len(ours):
    print(f"\n  ({len(pairs) - len(ours)} more pairs from network namespaces this demo did not create)")
stats = json.load(open(sys.argv[2]))
dropped = sum(stats["drops"].values())
print(f"\n  {dropped} more requests were dropped by the rules: see 'drops' in the summary below")
tapped = [f"{t['name']}@{by_ino.get(t['netns'], t['netns'])} ({t['mode']}{', ' + t['mesh'] if t.get('mesh') else ''})"
          for t in stats["capture"]["tapped"]]
print("\ntapped:", ", ".join(tapped) or "-")
PY
echo
echo "raw pairs (JSON Lines, one object per pair): $OUT/pairs.jsonl"
echo "counters (JSON): $OUT/stats.json; worker log: $OUT/worker.log"
echo
echo "worker summary:"
sed -n '/^interfaces:/,$p' "$OUT/worker.log" | sed 's/^/  /'
