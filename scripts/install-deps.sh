#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the demo need, when they are missing.
#   scripts/install-deps.sh              everything `make demo`, `make test` and `make e2e` use
#   scripts/install-deps.sh PACKAGE...   only these (the other scripts call it for what they need)
set -euo pipefail

if [ $# -gt 0 ]; then
  packages=("$@")
else
  packages=(libpcap-dev pkg-config cmake build-essential libssl-dev libsasl2-dev zlib1g-dev
            iproute2 tcpdump tshark python3 curl procps
            # HTTP/2 and gRPC live tests: h2c server and clients, Python gRPC
            nghttp2-server nghttp2-client python3-grpcio
            # HTTP/2 live test of `Upgrade: h2c`: Apache with mod_http2 (the binary and modules, no service)
            apache2-bin
            # CONNECT tunnels live test: a forward proxy (the binary only, no service)
            tinyproxy-bin
            # mesh live tests: istio-cni's in-pod rules (REDIRECT, TPROXY, CONNMARK) in pod namespaces
            iptables
            # make e2e: the Docker engine, base-image stand-ins, the Kubernetes node (kubernetes.sh
            # builds it with Go 1.19 from Debian's source package), Python's YAML for the checks
            docker.io debootstrap busybox-static etcd-server containernetworking-plugins openssl
            python3-yaml golang-1.19-go dpkg-dev rsync golang-github-modern-go-reflect2-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer once, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ $# -gt 0 ] || command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
