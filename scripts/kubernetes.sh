#!/usr/bin/env bash
# The Kubernetes binaries of the tests' one-node cluster (scripts/cluster.sh), built once from Debian's
# own source package (bookworm: kubernetes 1.20.5+really1.20.2, the full upstream 1.20.2 tree with
# vendor/) and cached. No registry offers newer server binaries to these machines; see
# ../shared/KUBERNETES-NODE.md for why 1.20 and what it does differently.
#
#   scripts/kubernetes.sh install    build kube-apiserver, kube-controller-manager, kube-scheduler and
#                                    kubelet once (10-15 minutes on 2 cores); no-op when cached.
#                                    Prints the directory holding them.
#   scripts/kubernetes.sh path       print that directory; exit 1 when not built yet
#
# Cached under ${XDG_CACHE_HOME:-$HOME/.cache}/interceptor/kubernetes-1.20.2/bin (next to the broker).
# Needs root for the Debian packages (golang-1.19-go, dpkg-dev, golang-github-modern-go-reflect2-dev).
set -euo pipefail

VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
DEBIAN_TAR=kubernetes_${DEB_VERSION}.debian.tar.xz
DSC=kubernetes_${DEB_VERSION}.dsc
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# From bookworm's Sources index (dists/bookworm/main/source/Sources.xz).
declare -A SHA256=(
  [$DSC]=19fa1da5aefcef673894ac9511986bd98a14410cf8eea0b626613c30df435257
  [$ORIG]=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
  [$DEBIAN_TAR]=9b6e5fd41769d2b5badf2e73b274e3bcd90f85e13d06a1a4a845ccce018127d8
)
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/interceptor"
ROOT="$CACHE/kubernetes-$VERSION"
BIN="$ROOT/bin"

die() { echo "kubernetes.sh: $*" >&2; exit 1; }

built() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

install_packages() {
  "$(dirname "$0")/install-deps.sh" golang-1.19-go dpkg-dev rsync golang-github-modern-go-reflect2-dev curl
}

download() {
  local dir=$1 f
  for f in "$DSC" "$ORIG" "$DEBIAN_TAR"; do
    if [ ! -f "$dir/$f" ] || ! echo "${SHA256[$f]}  $dir/$f" | sha256sum -c --status; then
      curl -fsSL --retry 3 -o "$dir/$f.partial" "$MIRROR/pool/main/k/kubernetes/$f" \
        || die "downloading $MIRROR/pool/main/k/kubernetes/$f failed"
      mv "$dir/$f.partial" "$dir/$f"
    fi
    echo "${SHA256[$f]}  $dir/$f" | sha256sum -c --status || die "$f: checksum mismatch"
  done
}

install_kubernetes() {
  if built; then echo "$BIN"; return 0; fi
  mkdir -p "$CACHE"
  exec 9>"$CACHE/kubernetes.lock"
  flock 9
  if built; then echo "$BIN"; return 0; fi
  install_packages
  local work="$CACHE/kubernetes-build"
  mkdir -p "$work/src"
  echo "kubernetes.sh: building Kubernetes $VERSION into $BIN (first run only; 10-15 minutes on 2 idle cores)" >&2
  download "$work/src"
  rm -rf "$work/tree"
  # dpkg-source applies Debian's patches (security fixes of the bookworm update) on the upstream tree.
  (cd "$work/src" && dpkg-source --no-check -x "$DSC" "$work/tree" >/dev/null)
  rm -f "$work"/*.orig.tar.*  # dpkg-source links the upstream tarball next to the tree
  # The one patch of ours: vendored reflect2 v1.0.1 crashes under Go >= 1.18 (SIGSEGV in map iteration
  # as soon as the API server encodes JSON). Debian's v1.0.2 source replaces it; vendor/modules.txt is
  # left as it is (the package path is the same).
  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  rsync -a --delete --exclude go.mod "$reflect2/" "$work/tree/vendor/github.com/modern-go/reflect2/"
  # The Makefile generates the OpenAPI code first (a plain `go build` lacks it). -s -w: no symbols.
  local what=() b
  for b in "${BINARIES[@]}"; do what+=("cmd/$b"); done
  (
    cd "$work/tree"
    export PATH=/usr/lib/go-1.19/bin:$PATH GOFLAGS=-mod=vendor GOCACHE="$work/gocache" GOPATH="$work/gopath"
    export KUBE_GIT_VERSION="v$VERSION" KUBE_GIT_TREE_STATE=clean
    make WHAT="${what[*]}" GOLDFLAGS="-s -w" >"$work/build.log" 2>&1
  ) || { tail -40 "$work/build.log" >&2; die "the build failed; log: $work/build.log"; }
  mkdir -p "$BIN.partial"
  for b in "${BINARIES[@]}"; do cp "$work/tree/_output/bin/$b" "$BIN.partial/"; done
  rm -rf "$BIN" && mv "$BIN.partial" "$BIN"
  # The tarballs stay (34 MB, a rebuild needs no download); the tree and Go's caches go (about 2 GB).
  rm -rf "$work/tree" "$work/gocache" "$work/gopath"
  exec 9>&-
  built || die "the build did not produce every binary in $BIN"
  echo "$BIN"
}

case "${1:-}" in
  install) install_kubernetes ;;
  path) built && echo "$BIN" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
