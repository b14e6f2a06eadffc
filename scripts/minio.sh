#!/usr/bin/env bash
# Deploys MinIO and the pogona objects (manifests/overlays/kind) into the kind cluster.
# The S3 credentials are generated here, once, into Secret pogona-s3: they never live in a
# file, and re-running keeps the existing ones (MinIO's data on its volume depends on them).
set -euo pipefail

namespace=${POGONA_NAMESPACE:-kubeflow}
kubectl=${KUBECTL:-kubectl}
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

step "namespace $namespace"
"$kubectl" create namespace "$namespace" --dry-run=client -o yaml | "$kubectl" apply -f -

step "S3 credentials (Secret pogona-s3)"
if "$kubectl" -n "$namespace" get secret pogona-s3 >/dev/null 2>&1; then
  echo "keeping the existing Secret pogona-s3"
else
  "$kubectl" -n "$namespace" create secret generic pogona-s3 \
    --from-literal=AWS_ACCESS_KEY_ID="pogona-$(random_hex 6)" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$(random_hex 24)"
fi

step "MinIO and pipeline objects (manifests/overlays/kind)"
"$kubectl" apply -k manifests/overlays/kind

step "waiting for MinIO (up to 5 min)"
"$kubectl" -n "$namespace" rollout status deployment/pogona-minio --timeout=300s

step "waiting for the bucket (up to 5 min)"
"$kubectl" -n "$namespace" wait --for=condition=complete job/pogona-minio-bucket --timeout=300s
"$kubectl" -n "$namespace" logs job/pogona-minio-bucket
