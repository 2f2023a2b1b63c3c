#!/usr/bin/env bash
# A real one-node Kubernetes cluster for the end-to-end tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and a kubelet (dockershim, on the engine of scripts/docker.sh),
# pods on a CNI bridge. Kubernetes 1.20.2 built by scripts/kubernetes.sh (why 1.20:
# ../shared/KUBERNETES-NODE.md). Everything lives under one directory; nothing listens outside loopback
# and the bridge's private range, and nothing leaves the machine (no masquerading, no default route out).
#
#   scripts/cluster.sh up [DIR]     start the cluster, wait until the node is Ready, print `export ...`:
#                                     KUBECONFIG=DIR/admin.kubeconfig      cluster-admin (static token)
#                                     INTERCEPTOR_CLUSTER_DIR=DIR          its state (logs, pids, pki)
#                                     INTERCEPTOR_CLUSTER_NODE=NAME        the node's name
#                                   Needs DOCKER_HOST (scripts/docker.sh start) and root. Without DIR, a new
#                                   directory under /tmp.
#   scripts/cluster.sh down [DIR]   stop everything, unmount what the kubelet mounted, delete the bridge;
#                                   removes DIR when `up` made it. Also after a failed or killed `up`.
#   scripts/cluster.sh logs [DIR]   print the tail of each component's log (for a failed test)
# DIR defaults to $INTERCEPTOR_CLUSTER_DIR.
#
# Addresses: the bridge icbr0 is 10.89.0.1/24 (the node's IP; pods get 10.89.0.2-254). Services get
# 10.89.1.0/24, and the `kubernetes` Service's address 10.89.1.1 is also on the bridge, where the API
# server listens on port 443: pods reach the API at the address their environment names without a
# kube-proxy (this node has none, and no cluster DNS, so other Services' addresses do not route).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE=${INTERCEPTOR_CLUSTER_NODE:-icnode}
BRIDGE=icbr0
NODE_IP=10.89.0.1
POD_SUBNET=10.89.0.0/24
SERVICE_RANGE=10.89.1.0/24
API_IP=10.89.1.1
PAUSE_IMAGE=localhost/interceptor-test/pause:1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/interceptor"

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

state_dir() {
  local dir="${1:-${INTERCEPTOR_CLUSTER_DIR:-}}"
  [ -n "$dir" ] || die "no cluster directory: pass DIR or set INTERCEPTOR_CLUSTER_DIR"
  echo "$dir"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start COMPONENT (a name for its pid and log file) in the background, detached from this shell.
spawn() {
  local dir=$1 name=$2
  shift 2
  setsid "$@" </dev/null >>"$dir/log/$name.log" 2>&1 &
  echo $! >"$dir/pid/$name"
}

alive() { local pid; pid=$(cat "$1/pid/$2" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; }

wait_until() { # dir what seconds component command...
  local dir=$1 what=$2 seconds=$3 component=$4
  shift 4
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$component" ] && ! alive "$dir" "$component"; then
      tail -30 "$dir/log/$component.log" >&2
      die "$component exited while waiting for $what; log: $dir/log/$component.log"
    fi
    [ $SECONDS -lt $deadline ] || { [ -z "$component" ] || tail -30 "$dir/log/$component.log" >&2; die "timed out after ${seconds}s waiting for $what"; }
    sleep 0.5
  done
}

pki() {
  local p=$1/pki
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=interceptor-test-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  cat >"$p/apiserver.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$API_IP,IP:$NODE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
EOF
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$p/apiserver.key" \
    -out "$p/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 2 \
    -extfile "$p/apiserver.ext" -out "$p/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  # Static tokens (a test cluster): the admin, the node and the two controllers, each as the user the
  # bootstrap RBAC policy knows (user name, then its group if any).
  local name group token
  : >"$p/tokens.csv"
  while read -r name group; do
    token=$(openssl rand -hex 16)
    echo "$token,$name,$name${group:+,\"$group\"}" >>"$p/tokens.csv"
    kubeconfig "$1" "$name" "$token"
  done <<EOF
admin system:masters
system:node:$NODE system:nodes
system:kube-controller-manager
system:kube-scheduler
EOF
}

kubeconfig_file() { echo "$1/$(echo "$2" | tr ':' '-').kubeconfig"; }

kubeconfig() { # dir user token
  local file
  file=$(kubeconfig_file "$1" "$2")
  [ "$2" = admin ] && file="$1/admin.kubeconfig"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: interceptor-test
  cluster: {server: "https://$API_IP:443", certificate-authority: "$1/pki/ca.crt"}
users:
- name: "$2"
  user: {token: "$3"}
contexts:
- name: interceptor-test
  context: {cluster: interceptor-test, user: "$2", namespace: default}
current-context: interceptor-test
EOF
}

network() {
  local dir=$1
  if ip link show "$BRIDGE" >/dev/null 2>&1; then die "$BRIDGE exists: another cluster runs (or run 'scripts/cluster.sh down DIR')"; fi
  cat /proc/sys/net/ipv4/ip_forward >"$dir/ip_forward.before"
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip addr add "$API_IP/32" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  mkdir -p "$dir/cni"
  # The bridge plugin reuses icbr0 and its gateway address; no masquerading (pods reach nothing beyond
  # this machine), host-local addresses kept under DIR.
  cat >"$dir/cni/10-interceptor-test.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "interceptor-test",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "subnet": "$POD_SUBNET", "rangeStart": "10.89.0.2",
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$dir/cni-ipam"}},
    {"type": "loopback"}
  ]
}
EOF
}

# The pause image of every pod sandbox, from Debian's static busybox (no registry answers here).
pause_image() {
  local docker dir=$1
  docker=$(scripts/docker.sh client)
  "$docker" image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  scripts/install-deps.sh busybox-static
  local root="$dir/pause-root"
  mkdir -p "$root/bin"
  cp /bin/busybox "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  ln -s busybox "$root/bin/sleep"
  # PID 1 of the sandbox: sleeps until the kubelet stops it, and stops at once on SIGTERM.
  tar -C "$root" -c . | "$docker" import \
    --change 'ENTRYPOINT ["/bin/busybox", "sh", "-c", "trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]' \
    - "$PAUSE_IMAGE" >/dev/null
  rm -rf "$root"
}

up() {
  [ "$(id -u)" -eq 0 ] || die "needs root"
  [ -n "${DOCKER_HOST:-}" ] || die "DOCKER_HOST is not set: start the engine first (eval \"\$(scripts/docker.sh start)\")"
  local bin dir created=0
  bin=$(scripts/kubernetes.sh path) || die "the Kubernetes binaries are not built: scripts/kubernetes.sh install"
  scripts/install-deps.sh etcd-server containernetworking-plugins openssl
  command -v kubectl >/dev/null || die "kubectl is missing"
  if [ -n "${1:-}" ]; then dir=$1; mkdir -p "$dir"; else dir=$(mktemp -d "${TMPDIR:-/tmp}/interceptor-cluster.XXXXXX"); created=1; fi
  dir=$(cd "$dir" && pwd)
  [ "$created" = 1 ] && touch "$dir/.created-by-up"
  echo "$DOCKER_HOST" >"$dir/docker_host"
  mkdir -p "$dir/log" "$dir/pid"
  network "$dir"
  pki "$dir"
  pause_image "$dir"

  local etcd_port etcd_peer
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  spawn "$dir" etcd etcd --name icetcd --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "icetcd=http://127.0.0.1:$etcd_peer" --listen-metrics-urls "" --log-level warn
  wait_until "$dir" etcd 30 etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

  local p=$dir/pki
  spawn "$dir" kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$API_IP" --secure-port 443 --advertise-address "$API_IP" --insecure-port 0 \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" --client-ca-file "$p/ca.crt" \
    --token-auth-file "$p/tokens.csv" --authorization-mode Node,RBAC \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$SERVICE_RANGE" --allow-privileged=true \
    --kubelet-preferred-address-types InternalIP --profiling=false --v 1
  local admin=(kubectl --kubeconfig "$dir/admin.kubeconfig")
  wait_until "$dir" "the API server" 90 kube-apiserver "${admin[@]}" get --raw /readyz

  spawn "$dir" kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$(kubeconfig_file "$dir" system:kube-controller-manager)" \
    --leader-elect=false --bind-address 127.0.0.1 --port 0 --secure-port 0 \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --use-service-account-credentials=true --profiling=false --v 1
  spawn "$dir" kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$(kubeconfig_file "$dir" system:kube-scheduler)" \
    --leader-elect=false --bind-address 127.0.0.1 --port 0 --secure-port 0 --profiling=false --v 1

  mkdir -p "$dir/kubelet" "$dir/dockershim" "$dir/kubelet-plugins"
  # Paths the 1.20 kubelet uses whatever its flags say (device plugins' socket, container logs): noted
  # when they do not exist yet, so that `down` removes exactly what this cluster made.
  local fixed
  for fixed in /var/lib/kubelet /var/log/pods /var/log/containers; do
    [ -e "$fixed" ] || echo "$fixed" >>"$dir/made-outside"
  done
  # --v 2: the kubelet logs each pod's sync events (ADD, DELETE, its containers' deaths, REMOVE), which
  # the e2e prints when a pod is slow to go.
  spawn "$dir" kubelet "$bin/kubelet" \
    --kubeconfig "$(kubeconfig_file "$dir" "system:node:$NODE")" \
    --hostname-override "$NODE" --node-ip "$NODE_IP" --address "$NODE_IP" --read-only-port 0 \
    --healthz-bind-address 127.0.0.1 --healthz-port 0 \
    --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" \
    --experimental-dockershim-root-directory "$dir/dockershim" --volume-plugin-dir "$dir/kubelet-plugins" \
    --container-runtime docker --docker-endpoint "$DOCKER_HOST" --pod-infra-container-image "$PAUSE_IMAGE" \
    --container-runtime-endpoint "unix://$dir/dockershim.sock" --image-service-endpoint "unix://$dir/dockershim.sock" \
    --network-plugin cni --cni-bin-dir /usr/lib/cni --cni-conf-dir "$dir/cni" --cni-cache-dir "$dir/cni-cache" \
    --fail-swap-on=false --cgroup-driver cgroupfs --cgroups-per-qos=false --enforce-node-allocatable "" \
    --image-gc-high-threshold 100 --image-gc-low-threshold 99 --eviction-hard "" \
    --resolv-conf /etc/resolv.conf --register-node=true --v 2
  wait_until "$dir" "node $NODE to be Ready" 120 kubelet \
    "${admin[@]}" wait --for=condition=Ready "node/$NODE" --timeout=2s
  # The default ServiceAccount exists once the controller manager's token controller ran.
  wait_until "$dir" "the default ServiceAccount's token" 60 kube-controller-manager \
    sh -c "${admin[*]} get secrets -n default -o name | grep -q default-token"

  echo "export KUBECONFIG=$dir/admin.kubeconfig"
  echo "export INTERCEPTOR_CLUSTER_DIR=$dir"
  echo "export INTERCEPTOR_CLUSTER_NODE=$NODE"
}

stop_component() {
  local dir=$1 name=$2 pid
  pid=$(cat "$dir/pid/$name" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid/$name"
}

down() {
  local dir
  dir=$(state_dir "${1:-}")
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  # The kubelet first (it would restart the containers), then the pods' containers, then the control
  # plane.
  stop_component "$dir" kubelet
  if [ -f "$dir/docker_host" ]; then
    local docker ids
    docker=$(scripts/docker.sh client)
    ids=$(DOCKER_HOST=$(cat "$dir/docker_host") "$docker" ps -aq --filter label=io.kubernetes.pod.uid 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || DOCKER_HOST=$(cat "$dir/docker_host") "$docker" rm -f $ids >/dev/null 2>&1 || true
  fi
  local c
  for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_component "$dir" "$c"; done
  # What the kubelet mounted (secrets as tmpfs, the pods' volumes), deepest first.
  { grep -F " $dir/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # The kubelet keeps container logs under /var/log/pods (a fixed path in 1.20): remove this cluster's.
  local uid link
  for uid in $(ls "$dir/kubelet/pods" 2>/dev/null); do rm -rf /var/log/pods/*_"$uid"; done
  for link in /var/log/containers/*.log; do if [ -L "$link" ] && [ ! -e "$link" ]; then rm -f "$link"; fi; done
  local made
  while read -r made; do
    case "$made" in /var/lib/kubelet | /var/log/pods | /var/log/containers) rm -rf "$made" ;; esac
  done < <(cat "$dir/made-outside" 2>/dev/null)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
  # The bridge plugin turns on IP forwarding for its gateway; put back what was there before.
  if [ -f "$dir/ip_forward.before" ]; then cat "$dir/ip_forward.before" >/proc/sys/net/ipv4/ip_forward; fi
  if [ -f "$dir/.created-by-up" ]; then rm -rf "$dir"; fi
}

logs() {
  local dir f
  dir=$(state_dir "${1:-}")
  for f in "$dir"/log/*.log; do
    [ -f "$f" ] || continue
    echo "--- $(basename "$f") (last 40 lines)"
    tail -40 "$f"
  done
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  logs) logs "${2:-}" ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
