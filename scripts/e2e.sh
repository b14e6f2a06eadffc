#!/usr/bin/env bash
# End-to-end run in the kind cluster (`make e2e` brings up the cluster, KFP, MinIO and the
# CPU image first): compile the kind pipeline, upload it, put the demo dataset in MinIO, run
# it with CPU training, wait, and check that the run published models/<name>/production.json.
# Tunables: E2E_EPOCHS, E2E_IMGSZ, E2E_MODEL, E2E_RUN_TIMEOUT, E2E_KFP_PORT, E2E_MINIO_PORT.
set -euo pipefail

namespace=${POGONA_NAMESPACE:-kubeflow}
kubectl=${KUBECTL:-kubectl}
pogona=${POGONA:-pogona}
python=${PYTHON:-python3}
kfp_port=${E2E_KFP_PORT:-8888}
minio_port=${E2E_MINIO_PORT:-9900}
run_timeout=${E2E_RUN_TIMEOUT:-3600}
bucket=pogona
dataset_uri="s3://$bucket/datasets/demo"
store_uri="s3://$bucket"
model_name="pogona-e2e"
work=$(mktemp -d)
forwards=()

step() { printf '\n==> %s\n' "$*"; }

cleanup() {
  # The ${a[@]+...} form: an empty array is "unbound" under set -u in bash before 4.4 (macOS).
  for pid in ${forwards[@]+"${forwards[@]}"}; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# port_forward SERVICE LOCAL_PORT REMOTE_PORT: forwards in the background, returns once it answers.
port_forward() {
  "$kubectl" -n "$namespace" port-forward "svc/$1" "$2:$3" >"$work/port-forward-$1.log" 2>&1 &
  forwards+=("$!")
  for _ in $(seq 60); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 1
  done
  echo "port-forward to svc/$1 did not come up in 60 s:" >&2
  cat "$work/port-forward-$1.log" >&2
  return 1
}

secret_value() {
  "$kubectl" -n "$namespace" get secret pogona-s3 -o "jsonpath={.data.$1}" | base64 -d
}

step "compile the kind pipeline (CPU training, no GPU placement)"
"$pogona" compile --profile kind --output "$work/pipeline.yaml"

step "port-forward KFP (localhost:$kfp_port) and MinIO (localhost:$minio_port)"
port_forward ml-pipeline "$kfp_port" 8888
port_forward pogona-minio "$minio_port" 9000
kfp_host="http://localhost:$kfp_port"
AWS_ACCESS_KEY_ID=$(secret_value AWS_ACCESS_KEY_ID)
AWS_SECRET_ACCESS_KEY=$(secret_value AWS_SECRET_ACCESS_KEY)
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export AWS_ENDPOINT_URL_S3="http://localhost:$minio_port" AWS_DEFAULT_REGION=us-east-1

step "demo dataset -> $dataset_uri"
"$pogona" dataset demo --out "$dataset_uri"

step "upload the pipeline"
pipeline_name="pogona-kind"
"$pogona" upload --host "$kfp_host" --package "$work/pipeline.yaml" \
  --name "$pipeline_name" --version "e2e-$(git rev-parse --short HEAD)-$(date +%Y%m%d%H%M%S)"

step "run the pipeline and wait for it (up to $run_timeout s)"
# Demo scale: a few CPU epochs on generated images, so the quality floors are 0.
imgsz=${E2E_IMGSZ:-320}
started=$(date +%s)
# Runs use the least-privilege account from manifests/base/pipeline-runs (E2E_SERVICE_ACCOUNT to override).
"$pogona" submit --host "$kfp_host" --experiment pogona-e2e --pipeline-name "$pipeline_name" \
  --service-account "${E2E_SERVICE_ACCOUNT:-pogona-pipeline-runner}" \
  --param dataset_uri="$dataset_uri" --param store_uri="$store_uri" --param model_name="$model_name" \
  --param model="${E2E_MODEL:-yolo11n}" --param epochs="${E2E_EPOCHS:-3}" \
  --param imgsz="$imgsz" --param sanity_imgsz="$imgsz" \
  --param s3_secret_name=pogona-s3 --param min_map50=0 --param sanity_min_map50=0 \
  --wait --timeout "$run_timeout"

step "check that the run published s3://$bucket/models/$model_name/production.json"
"$python" - "$bucket" "models/$model_name/production.json" "$started" <<'PY'
import sys

import boto3

bucket, key, started = sys.argv[1], sys.argv[2], float(sys.argv[3])
s3 = boto3.client("s3")
try:
    pointer = s3.get_object(Bucket=bucket, Key=key)
except s3.exceptions.NoSuchKey:
    sys.exit(f"s3://{bucket}/{key} does not exist: the run published no champion")
if pointer["LastModified"].timestamp() < started:
    sys.exit(f"s3://{bucket}/{key} predates this run ({pointer['LastModified']})")
print(pointer["Body"].read().decode())
PY

step "e2e passed"
