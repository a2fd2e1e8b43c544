#!/usr/bin/env bash
# Builds a registry:2-equivalent image from Debian's docker-registry package
# (distribution 2.8, the code the official image runs) for hosts that cannot
# pull hub.bktencent.com/library/registry:2. No network beyond Debian's archive.
#
#   scripts/registry-image.sh [TAG]        default TAG: bkcache.local/registry:2
#   docker bkcache up --image bkcache.local/registry:2
set -euo pipefail

tag=${1:-bkcache.local/registry:2}

if ! command -v docker >/dev/null; then
  echo "registry-image: the docker CLI is missing; install docker.io" >&2
  exit 1
fi
if [ ! -x /usr/bin/docker-registry ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  else
    echo "registry-image: /usr/bin/docker-registry is missing; run: sudo apt-get install docker-registry" >&2
    exit 1
  fi
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc/docker/registry,etc/ssl/certs,var/lib/registry,tmp}
chmod 1777 "$root/tmp"
install -m 0755 /usr/bin/docker-registry "$root/bin/registry"
# The binary is dynamically linked: copy its libraries and loader at their paths.
for lib in $(ldd /usr/bin/docker-registry | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# CA roots, so the cache can verify an https upstream.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
printf 'root:x:0:0:root:/root:/bin/registry\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
# The official image's default config, so `docker run IMAGE` alone serves too.
cat >"$root/etc/docker/registry/config.yml" <<'YAML'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YAML

version=$(/usr/bin/docker-registry --version | awk '{print $3}')
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . |
  docker import \
    -c 'ENTRYPOINT ["/bin/registry", "serve"]' \
    -c 'CMD ["/etc/docker/registry/config.yml"]' \
    -c 'EXPOSE 5000' \
    -c 'VOLUME ["/var/lib/registry"]' \
    -c "LABEL org.opencontainers.image.version=$version org.opencontainers.image.description=registry:2-from-debian-docker-registry" \
    - "$tag" >/dev/null
echo "$tag"
