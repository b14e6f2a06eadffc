#!/usr/bin/env bash
# Start a Docker engine for image builds and container runs on a machine without one running
# (CI, build hosts), or reuse the one already answering. Idempotent: a second call returns at once.
#
# The engine keeps its state outside any clone (POGONA_DOCKER_ROOT), so later CI runs on the same
# machine reuse its layer cache. It gets no bridge and leaves iptables alone: containers run with
# --network none (or host for builds), which is all the images' checks need.
#
#   scripts/dockerd.sh      start (or reuse the engine DOCKER_HOST, or the default socket, names)
set -euo pipefail

root=${POGONA_DOCKER_ROOT:-/var/lib/pogona-docker}
run=${POGONA_DOCKER_RUN:-/run/pogona-docker}
# The default socket, so that docker, kfp.local's DockerRunner and the tests find it unconfigured.
socket=${POGONA_DOCKER_SOCKET:-/var/run/docker.sock}

if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "docker engine already answering ($(docker version --format '{{.Server.Version}}'))"
  exit 0
fi

command -v dockerd >/dev/null || {
  echo "dockerd not found: install Debian's docker.io (apt-get install docker.io)" >&2; exit 1; }
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO mkdir -p "$root" "$run"
# A daemon left dead by a reboot leaves its pidfile behind; dockerd refuses to start over it.
if [ -f "$run/dockerd.pid" ] && ! kill -0 "$(cat "$run/dockerd.pid")" 2>/dev/null; then
  $SUDO rm -f "$run/dockerd.pid"
fi
$SUDO nohup dockerd \
  --host "unix://$socket" \
  --data-root "$root" \
  --exec-root "$run/exec" \
  --pidfile "$run/dockerd.pid" \
  --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
  --exec-opt native.cgroupdriver=cgroupfs \
  >"$run/dockerd.log" 2>&1 &

for _ in $(seq 60); do
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "docker engine $(docker version --format '{{.Server.Version}}') started on $socket (log $run/dockerd.log)"
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer on $socket within 60 s; its log:" >&2
tail -n 30 "$run/dockerd.log" >&2
exit 1
