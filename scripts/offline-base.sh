#!/usr/bin/env bash
# Build the images' offline base: Debian bookworm made from Debian's own packages, for builders that
# cannot reach Docker Hub (air-gapped networks, these CI machines). It stands in for
# python:3.11-slim-bookworm: the same Debian release, Debian's Python 3.11, a CA bundle for pip.
#
#   scripts/offline-base.sh [TAG]     default TAG pogona-base:bookworm; reused when already present
#   make images BASE_IMAGE=pogona-base:bookworm      builds on it (make does this itself when offline)
#
# Needs mmdebstrap (Debian package) and a Debian mirror (MMDEBSTRAP_MIRROR, default deb.debian.org).
set -euo pipefail

tag=${1:-pogona-base:bookworm}
mirror=${MMDEBSTRAP_MIRROR:-http://deb.debian.org/debian}
if [ -n "$(docker images --quiet "$tag")" ]; then
  echo "offline base $tag already present"
  exit 0
fi
command -v mmdebstrap >/dev/null || {
  echo "mmdebstrap not found: apt-get install mmdebstrap" >&2; exit 1; }
archive=$(mktemp --suffix=.tar)
trap 'rm -f "$archive"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$archive" "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
  "deb http://security.debian.org/debian-security bookworm-security main"
# docker import keeps no configuration: give it what a base image is expected to carry.
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "Debian bookworm minbase + python3, python3-venv, ca-certificates (scripts/offline-base.sh)" \
  "$archive" "$tag"
echo "offline base $tag imported ($(docker image inspect --format '{{.Size}}' "$tag") bytes)"
