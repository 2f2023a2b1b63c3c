#!/usr/bin/env bash
# `make images`: builds the worker and operator images under the names the manifests use
# (config/manager/deployment.yaml), with local stand-ins of the base images where no registry answers
# (scripts/base-images.sh), and prints each image's size and build time.
#
#   scripts/images.sh [--app]     --app also builds the end-to-end tests' application image
#
# Uses the Docker engine of DOCKER_HOST, or the default one; where none answers (and as root), starts the
# project's own (scripts/docker.sh) for the build and stops it afterwards: the images stay in its data
# root (~/.cache/interceptor/docker), where the tests' engine finds them.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REGISTRY=${IMAGE_REGISTRY:-ghcr.io/interceptor-dev}
WORKER_IMAGE=$REGISTRY/node-worker:$VERSION
OPERATOR_IMAGE=$REGISTRY/operator:$VERSION
APP_IMAGE=localhost/interceptor-test/app:1

die() { echo "images: $*" >&2; exit 1; }

with_app=0
case "${1:-}" in
  --app) with_app=1 ;;
  "") ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

DOCKER=$(scripts/docker.sh client)
started=
if ! "$DOCKER" version >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start one or run as root"
  eval "$(scripts/docker.sh start)"
  started=$INTERCEPTOR_DOCKER_DIR
  trap 'scripts/docker.sh stop "$started"' EXIT
fi

mapfile -t base_args < <(scripts/base-images.sh args)
[ ${#base_args[@]} -eq 0 ] || echo "images: base images: ${base_args[*]#--build-arg=}"

# BUILDKIT: the Dockerfiles use cache mounts. --network host: cargo fetches crates from crates.io.
build() { # tag dockerfile context
  local start=$SECONDS
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain "${base_args[@]}" -t "$1" -f "$2" "$3" \
    >"${TMPDIR:-/tmp}/interceptor-image-build.log" 2>&1 \
    || { tail -40 "${TMPDIR:-/tmp}/interceptor-image-build.log" >&2; die "building $1 failed"; }
  local size
  size=$("$DOCKER" image inspect -f '{{.Size}}' "$1")
  printf 'images: %-48s %6s MB  built in %ss\n' "$1" "$((size / 1000000))" "$((SECONDS - start))"
}

build "$WORKER_IMAGE" Dockerfile.worker .
build "$OPERATOR_IMAGE" Dockerfile.operator .
if [ "$with_app" = 1 ]; then build "$APP_IMAGE" e2e/app/Dockerfile e2e/app; fi
rm -f "${TMPDIR:-/tmp}/interceptor-image-build.log"
