#!/usr/bin/env bash
# Installs and starts what bkcache needs on a Debian host: the Docker engine
# (docker.io) and Debian's docker-registry (for the local registry:2 image);
# starts dockerd when none answers; builds the local registry image when the
# Docker engine does not have it. Idempotent: a second run changes nothing.
#
#   scripts/setup.sh            engine only (what `docker bkcache up` needs)
#   scripts/setup.sh --test     also the local registry image the tests run
#   scripts/setup.sh --bench    also the peers the benchmarks compare with (skopeo)
set -euo pipefail

want_image=false
need=()
case "${1:-}" in
  --test) want_image=true
    command -v zstd >/dev/null 2>&1 || need+=(zstd)
    command -v curl >/dev/null 2>&1 || need+=(curl) ;; # the planted-upload attempt on the storage writer
  --bench) want_image=true; command -v skopeo >/dev/null 2>&1 || need+=(skopeo) ;;
esac

command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v go >/dev/null 2>&1 || { echo "setup: Go 1.26 or newer is needed on PATH (https://go.dev/doc/install)" >&2; exit 1; }

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker version >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: the Docker engine does not answer; run: sudo systemctl start docker" >&2
    exit 1
  fi
  if [ -d /run/systemd/system ]; then
    systemctl start docker
  else
    # No init system (containers, CI): run dockerd in the background, logging to a file.
    echo "setup: starting dockerd (log: /var/log/bkcache-dockerd.log)" >&2
    nohup dockerd >/var/log/bkcache-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker version >/dev/null 2>&1; then
    echo "setup: dockerd did not start; see /var/log/bkcache-dockerd.log" >&2
    tail -n 20 /var/log/bkcache-dockerd.log >&2 || true
    exit 1
  fi
fi

if $want_image; then
  image=${BKCACHE_TEST_IMAGE:-bkcache.local/registry:2}
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    "$(dirname "$0")/registry-image.sh" "$image" >/dev/null
    echo "setup: built $image" >&2
  fi
fi
