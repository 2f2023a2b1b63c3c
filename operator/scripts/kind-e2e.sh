#!/usr/bin/env bash
# End-to-end test on a real cluster (needs docker, kind and kubectl; not possible on the CI machine).
#   operator/scripts/kind-e2e.sh          # create a kind cluster, build and load the image, install, test
#   KEEP=1 operator/scripts/kind-e2e.sh   # keep the cluster afterwards
# With k3d instead of kind: create the cluster with `k3d cluster create interceptor`, import the image with
# `k3d image import ghcr.io/interceptor-dev/operator:0.1.0 -c interceptor`, then run the same steps below.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-interceptor-e2e}
IMAGE=ghcr.io/interceptor-dev/operator:0.1.0

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
trap '[ -n "${KEEP:-}" ] || kind delete cluster --name "$CLUSTER"' EXIT

docker build -f Dockerfile.operator -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

kubectl apply --server-side -k config/default
kubectl -n interceptor-system rollout status deployment/interceptor-operator --timeout=120s
kubectl apply -f config/samples/interceptorconfig-minimal.yaml
# The worker image may not exist in the cluster: Reconciled (ConfigMap and DaemonSet applied) is what
# the operator alone guarantees; Ready needs the workers.
kubectl -n interceptor-system wait interceptorconfig/default --for=condition=Reconciled --timeout=60s
kubectl get interceptorconfig -A -o wide

# The #[ignore]d Rust tests against this cluster (current kubeconfig context).
cargo test -p operator --test integration cluster:: -- --ignored --test-threads=1
