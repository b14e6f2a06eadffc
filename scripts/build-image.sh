#!/usr/bin/env bash
# Build one of the pipeline's images (images/Dockerfile) under the names given: `make images` calls
# it with the names pipelines/images.py computes.
#
#   scripts/build-image.sh cpu|cuda NAME [NAME...]
#
# Each source the build reaches for is a build argument whose Dockerfile default is the public one.
# Set in the environment (even to nothing), it is passed as given. Unset, the default holds where its
# host answers; where it does not (air-gapped builders, CI machines without Docker Hub), the build
# says so and takes the offline stand-in:
#   BASE_IMAGE        Docker Hub's python slim image   -> Debian from Debian's packages (offline-base.sh)
#   TORCH_INDEX_URL   the PyTorch CPU index (cpu only) -> PyPI, whose Linux torch is the CUDA build
#   BASE_WEIGHTS_URL  GitHub's release of yolo11s.pt   -> none: runs train from scratch
# BUILD_CA_BUNDLE (default: pip's PIP_CERT) is a CA bundle the build stage alone trusts
# (images/build-ca/README.md). CONTAINER_ENGINE (docker or podman), VERSION and REVISION as make sets them.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=$1; shift
case "$flavour" in cpu|cuda) ;; *) echo "flavour $flavour: cpu or cuda" >&2; exit 2 ;; esac
[ $# -gt 0 ] || { echo "usage: $0 cpu|cuda NAME [NAME...]" >&2; exit 2; }
engine=${CONTAINER_ENGINE:-docker}
offline_base=pogona-base:bookworm

answers() { timeout 5 bash -c "</dev/tcp/$1/443" 2>/dev/null; }

args=(--file images/Dockerfile --build-arg "FLAVOUR=$flavour"
      --build-arg "VERSION=${VERSION:-0.0.0}" --build-arg "REVISION=${REVISION:-unknown}")
if [ -n "${BASE_IMAGE+set}" ]; then
  args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
elif ! answers registry-1.docker.io; then
  echo "build-image: Docker Hub unreachable: base $offline_base from Debian's packages (scripts/offline-base.sh)"
  scripts/offline-base.sh "$offline_base"
  args+=(--build-arg "BASE_IMAGE=$offline_base")
fi
if [ -n "${TORCH_INDEX_URL+set}" ]; then
  args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
elif [ "$flavour" = cpu ] && ! answers download.pytorch.org; then
  echo "build-image: the PyTorch CPU index is unreachable: the CPU image takes PyPI's torch, the CUDA build (docs/benchmarks.md)"
  args+=(--build-arg "TORCH_INDEX_URL=https://pypi.org/simple")
fi
if [ -n "${BASE_WEIGHTS_URL+set}" ]; then
  args+=(--build-arg "BASE_WEIGHTS_URL=$BASE_WEIGHTS_URL")
elif ! answers github.com; then
  echo "build-image: github.com unreachable: no base weights baked in (runs train from scratch)"
  args+=(--build-arg "BASE_WEIGHTS_URL=")
fi
for name in "$@"; do args+=(--tag "$name"); done

# Only the build stage reads it; the context's copy is rewritten each build so a stale CA never lingers.
rm -f images/build-ca/extra.pem
bundle=${BUILD_CA_BUNDLE-${PIP_CERT:-}}
if [ -n "$bundle" ]; then cp "$bundle" images/build-ca/extra.pem; fi

# --network host: the build reaches PyPI and Debian the way the builder does (containers get no bridge here).
echo "$engine build --network host ${args[*]} ."
exec "$engine" build --network host "${args[@]}" .
