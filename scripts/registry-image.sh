#!/usr/bin/env bash
# Builds a registry:2-equivalent image from Debian's docker-registry package
# (distribution 2.8, the code the official image runs) for hosts that cannot
# pull hub.bktencent.com/library/registry:2. No network beyond Debian's archive.
#
#   scripts/registry-image.sh [TAG]                      load it into the Docker engine (host arch)
#   scripts/registry-image.sh -o FILE [--arch ARCH] [TAG]
#                                                        write a `docker save` archive instead (gzip
#                                                        when FILE ends in .gz); no engine needed
#   default TAG: bkcache.local/registry:2; ARCH: amd64 or arm64 (default: the host's)
#
#   docker bkcache up --image bkcache.local/registry:2
#   docker bkcache up --image bkcache.local/registry:2 --image-archive FILE   # on the offline host
#
# The host's architecture uses the installed /usr/bin/docker-registry and its
# libraries; another architecture downloads docker-registry and libc6 for it
# with apt-get into a private apt state (the host's dpkg and apt lists are not
# touched) and needs readelf (binutils). The archive is reproducible: fixed
# order, owners and times (SOURCE_DATE_EPOCH, default the registry binary's
# mtime, i.e. the Debian package's), so the image ID depends only on the
# package versions.
set -euo pipefail

out=
arch=
tag=
while [ $# -gt 0 ]; do
  case $1 in
    -o) out=${2:?-o needs a file}; shift ;;
    --arch) arch=${2:?--arch needs amd64 or arm64}; shift ;;
    -h | --help) sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "registry-image: unknown flag $1 (see --help)" >&2; exit 1 ;;
    *) tag=$1 ;;
  esac
  shift
done
tag=${tag:-bkcache.local/registry:2}
export LC_ALL=C

host_arch=$(dpkg --print-architecture 2>/dev/null || true)
if [ -z "$host_arch" ]; then
  case $(uname -m) in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; *) host_arch=$(uname -m) ;; esac
fi
arch=${arch:-$host_arch}
case $arch in
  amd64) variant= ;;
  arm64) variant=v8 ;;
  *) echo "registry-image: unsupported arch $arch (amd64, arm64)" >&2; exit 1 ;;
esac
if [ -z "$out" ]; then
  if [ "$arch" != "$host_arch" ]; then
    echo "registry-image: --arch $arch differs from this host ($host_arch): write an archive with -o FILE" >&2
    exit 1
  fi
  if ! command -v docker >/dev/null; then
    echo "registry-image: the docker CLI is missing; install docker.io" >&2
    exit 1
  fi
fi
if command -v sha256sum >/dev/null; then sha256() { sha256sum "$1" | cut -d' ' -f1; }; else sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc/docker/registry,etc/ssl/certs,var/lib/registry,tmp}

if [ "$arch" = "$host_arch" ]; then
  if [ ! -x /usr/bin/docker-registry ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
    else
      echo "registry-image: /usr/bin/docker-registry is missing; run: sudo apt-get install docker-registry" >&2
      exit 1
    fi
  fi
  bin=/usr/bin/docker-registry
  install -m 0755 "$bin" "$root/bin/registry"
  # The binary is dynamically linked: copy its libraries and loader at their paths.
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
else
  for tool in apt-get dpkg-deb readelf; do
    command -v "$tool" >/dev/null || { echo "registry-image: --arch $arch needs $tool (apt, dpkg, binutils)" >&2; exit 1; }
  done
  # A private apt state for the foreign architecture: lists, cache and status in $work.
  apt=$work/apt
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$work/pkg"
  : >"$apt/status"
  aptopts=(-qq -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Dir::State::status=$apt/status"
    -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o "Debug::NoLocking=true")
  [ "$(id -u)" = 0 ] && aptopts+=(-o "APT::Sandbox::User=root")
  if ! apt-get "${aptopts[@]}" update >&2; then
    echo "registry-image: apt-get update for $arch failed: Debian's archive must be reachable (see /etc/apt/sources.list*)" >&2
    exit 1
  fi
  (cd "$apt/debs" && apt-get "${aptopts[@]}" download "docker-registry:$arch" "libc6:$arch" >&2)
  for deb in "$apt"/debs/*.deb; do dpkg-deb -x "$deb" "$work/pkg"; done
  bin=$work/pkg/usr/bin/docker-registry
  install -m 0755 "$bin" "$root/bin/registry"
  # Its loader and the libraries it names (NEEDED), from the libc6 package.
  interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  libs=()
  for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    found=$(find "$work/pkg/lib" "$work/pkg/usr/lib" -name "$lib" \( -type f -o -type l \) 2>/dev/null | sort | head -n 1)
    [ -n "$found" ] || { echo "registry-image: $lib (needed by docker-registry) is not in libc6:$arch" >&2; exit 1; }
    libs+=("${found#"$work/pkg"}")
  done
  for lib in "$interp" "${libs[@]}"; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$work/pkg$lib" "$root$lib"
  done
fi
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
# Modes do not depend on the umask of whoever builds.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f ! -perm -u+x -exec chmod 0644 {} +
find "$root" -type f -perm -u+x -exec chmod 0755 {} +
chmod 1777 "$root/tmp"

# The upstream version (2.8.2+ds1), as `docker-registry --version` prints it.
if [ "$arch" = "$host_arch" ]; then
  version=$("$bin" --version | awk '{print $3}')
else
  version=$(dpkg-deb -f "$apt"/debs/docker-registry_*.deb Version)
  version=${version%-*}
fi
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$bin")}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

# A `docker save` archive: manifest.json, the image config, one layer.
image=$work/image
mkdir -p "$image"
layer=$work/layer.tar
(cd "$root" && tar --sort=name --format=gnu --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -cf "$layer" -- *)
diff_id=$(sha256 "$layer")
mkdir -p "$image/$diff_id"
mv "$layer" "$image/$diff_id/layer.tar"
variant_json=
[ -z "$variant" ] || variant_json=",\"variant\":\"$variant\""
printf '%s' "{\"architecture\":\"$arch\"$variant_json,\"os\":\"linux\",\"created\":\"$created\",\
\"config\":{\"ExposedPorts\":{\"5000/tcp\":{}},\"Entrypoint\":[\"/bin/registry\",\"serve\"],\
\"Cmd\":[\"/etc/docker/registry/config.yml\"],\"Volumes\":{\"/var/lib/registry\":{}},\
\"Labels\":{\"org.opencontainers.image.description\":\"registry:2-from-debian-docker-registry\",\
\"org.opencontainers.image.version\":\"$version\"}},\
\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]},\
\"history\":[{\"created\":\"$created\",\"created_by\":\"bkcache scripts/registry-image.sh: Debian docker-registry $version\"}]}" >"$work/config.json"
config_id=$(sha256 "$work/config.json")
mv "$work/config.json" "$image/$config_id.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$config_id" "$tag" "$diff_id" >"$image/manifest.json"
find "$image" -type d -exec chmod 0755 {} +
find "$image" -type f -exec chmod 0644 {} +

if [ -n "$out" ]; then
  tmp=$out.tmp.$$
  case $out in
    *.gz) (cd "$image" && tar --sort=name --format=gnu --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -cf - -- *) | gzip -n >"$tmp" ;;
    *) (cd "$image" && tar --sort=name --format=gnu --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -cf "$tmp" -- *) ;;
  esac
  mv -f "$tmp" "$out"
  echo "$out"
else
  (cd "$image" && tar -cf - -- *) | docker load >/dev/null
  echo "$tag"
fi
