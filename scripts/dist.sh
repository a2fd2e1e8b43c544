#!/usr/bin/env bash
# Builds the release files into DIST_DIR, reproducibly: the same commit, Go
# version and inputs give the same bytes, on any machine and in any directory.
#
#   bkcache-VERSION-linux-ARCH.tar.gz    docker-bkcache, kubectl-bkcache, install.sh, registry-image.sh,
#                                        README.md, LICENSE, docs/, manifests/ (RBAC), RELEASE, CONTENTS.sha256
#   bkcache-VERSION-registry-image-linux-ARCH.tar.gz
#                                        by default (DIST_IMAGE=auto: when this host can build it; 1 insists,
#                                        0 skips): the registry:2 image built from Debian's
#                                        docker-registry, as a `docker save` archive (docker load -i,
#                                        or docker bkcache up --image-archive)
#   SHA256SUMS                           sha256 of every archive above
#   bkcache.yaml                         krew plugin manifest (kind Plugin) for kubectl-bkcache
#
# Called by `make dist`; every input is an environment variable:
#   VERSION            stamped into the binaries and the file names (required)
#   DIST_DIR           output directory (earlier release files in it are replaced)
#   DIST_ARCHES        "amd64 arm64"
#   DIST_URL           where the archives will be downloaded from (the krew manifest's uri base)
#   DIST_IMAGE         auto (default): add the registry image archives when this host can build them
#                      (apt-get, and docker-registry installed or root);
#                      1: add them or fail; 0: leave them out
#   SOURCE_DATE_EPOCH  mtime of every file in the archives (default: the commit time of HEAD)
#   GO                 the go command
#
#   scripts/dist.sh --build ARCH docker-bkcache|kubectl-bkcache OUT
#                      builds one binary exactly as the release does (VERSION from the
#                      environment), e.g. to check a release binary: cmp OUT <the released one>
set -euo pipefail

: "${VERSION:?VERSION is required}"
GO=${GO:-go}
case $VERSION in
  *[!A-Za-z0-9._+-]*) echo "dist: VERSION=$VERSION: use letters, digits and . _ + - only (it names files)" >&2; exit 1 ;;
esac

build() { # build ARCH CMD OUT
  # -trimpath: no build paths; -buildvcs=false: no VCS state (a dirty tree would change the bytes);
  # CGO_ENABLED=0: static, no host libc; GOAMD64/GOARM64 pinned so the host's environment does not choose.
  env -u GOFLAGS CGO_ENABLED=0 GOOS=linux GOARCH="$1" GOAMD64=v1 GOARM64=v8.0 \
    "$GO" build -trimpath -buildvcs=false \
    -ldflags "-s -w -X github.com/bkcache/bkcache/pkg/version.Version=$VERSION" \
    -o "$3" "./cmd/$2"
}

if [ "${1:-}" = --build ]; then
  [ $# -eq 4 ] || { echo "usage: scripts/dist.sh --build ARCH docker-bkcache|kubectl-bkcache OUT" >&2; exit 2; }
  case $2 in amd64 | arm64) ;; *) echo "dist: --build: unsupported arch $2 (amd64, arm64)" >&2; exit 2 ;; esac
  case $3 in docker-bkcache | kubectl-bkcache) ;; *) echo "dist: --build: no command $3" >&2; exit 2 ;; esac
  out=$(cd "$(dirname "$4")" && pwd)/$(basename "$4")
  cd "$(dirname "$0")/.."
  build "$2" "$3" "$out"
  exit 0
fi

cd "$(dirname "$0")/.."
: "${DIST_DIR:?DIST_DIR is required}"
DIST_ARCHES=${DIST_ARCHES:-amd64 arm64}
DIST_URL=${DIST_URL:-https://github.com/bkcache/bkcache/releases/download/$VERSION}
DIST_URL=${DIST_URL%/}
DIST_IMAGE=${DIST_IMAGE:-auto}
if [ "$DIST_IMAGE" = auto ]; then
  # The image is built from Debian's docker-registry package: it needs apt-get,
  # and the package installed or root to install it (scripts/registry-image.sh).
  if command -v apt-get >/dev/null && { [ -x /usr/bin/docker-registry ] || [ "$(id -u)" = 0 ]; }; then
    DIST_IMAGE=1
  else
    DIST_IMAGE=0
    echo "dist: NOTE: no registry image archives (the offline path for hosts that cannot pull registry:2): they need a Debian or Ubuntu host with docker-registry installed (or root); DIST_IMAGE=1 to insist" >&2
  fi
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH LC_ALL=C TZ=UTC

# krew wants spec.version to be a semantic version with a v prefix; a build
# from an untagged commit (git describe gives a hash) gets v0.0.0-g<hash>.
if [[ $VERSION =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z.-]+)?$ ]] &&
  ! [[ ${VERSION%%+*} =~ [-.]0[0-9]+(\.|$) ]]; then # no empty or zero-padded numeric pre-release parts
  krew_version=$VERSION
else
  krew_version="v0.0.0-g${VERSION//[!0-9A-Za-z-]/-}"
  echo "dist: VERSION=$VERSION is not a semantic version vMAJOR.MINOR.PATCH[-PRE]; the krew manifest says $krew_version (tag the commit for a release)" >&2
fi

if command -v sha256sum >/dev/null; then sha256() { sha256sum "$@"; }; else sha256() { shasum -a 256 "$@"; }; fi
step() { # step NAME CMD...: run and report its wall and CPU time (the machine may be shared)
  local TIMEFORMAT="dist: $1: %0Rs (cpu %0Us user, %0Ss sys)"
  shift
  time "$@"
}
# Deterministic tar: sorted names, fixed mtime, root owner, no atime/ctime.
dtar() { # dtar DIR OUT.tar.gz ENTRY...
  local dir=$1 out=$2
  shift 2
  tar -C "$dir" --sort=name --format=gnu --mtime="@$SOURCE_DATE_EPOCH" \
    --owner=0 --group=0 --numeric-owner -cf - "$@" | gzip -n >"$out"
}

# Clear only what an earlier run wrote: DIST_DIR may hold other files.
mkdir -p "$DIST_DIR"
rm -f "$DIST_DIR"/bkcache-*-linux-*.tar.gz "$DIST_DIR/SHA256SUMS" "$DIST_DIR/bkcache.yaml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "dist: $($GO version), VERSION=$VERSION, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" >&2
archives=()
for arch in $DIST_ARCHES; do
  case $arch in amd64 | arm64) ;; *) echo "dist: unsupported arch $arch (amd64, arm64)" >&2; exit 1 ;; esac
  name=bkcache-$VERSION-linux-$arch
  stage=$work/$arch/$name
  mkdir -p "$stage/manifests"
  step "build docker-bkcache linux/$arch" build "$arch" docker-bkcache "$stage/docker-bkcache"
  step "build kubectl-bkcache linux/$arch" build "$arch" kubectl-bkcache "$stage/kubectl-bkcache"
  install -m 0755 scripts/install.sh "$stage/install.sh"
  install -m 0755 scripts/registry-image.sh "$stage/registry-image.sh"
  install -m 0644 README.md "$stage/README.md"
  install -m 0644 LICENSE "$stage/LICENSE"
  install -m 0644 manifests/mirror-rbac.yaml "$stage/manifests/mirror-rbac.yaml"
  # The README links into docs/: ship them, so its links work offline too.
  cp -R docs "$stage/docs"
  find "$stage/docs" -type d -exec chmod 0755 {} + && find "$stage/docs" -type f -exec chmod 0644 {} +
  printf 'name=bkcache\nversion=%s\nos=linux\narch=%s\n' "$VERSION" "$arch" >"$stage/RELEASE"
  chmod 0644 "$stage/RELEASE"
  (cd "$stage" && sha256 docker-bkcache kubectl-bkcache install.sh registry-image.sh README.md LICENSE RELEASE manifests/mirror-rbac.yaml \
    $(find docs -type f | sort) >CONTENTS.sha256)
  chmod 0644 "$stage/CONTENTS.sha256"
  chmod 0755 "$stage" "$stage/manifests"
  step "archive $name.tar.gz" dtar "$work/$arch" "$DIST_DIR/$name.tar.gz" "$name"
  archives+=("$name.tar.gz")
  if [ "$DIST_IMAGE" = 1 ]; then
    image=bkcache-$VERSION-registry-image-linux-$arch.tar.gz
    # Its times are the Debian package's, not the commit's: the same packages give the same image ID in every release.
    step "registry image linux/$arch" env -u SOURCE_DATE_EPOCH scripts/registry-image.sh --arch "$arch" -o "$DIST_DIR/$image" >/dev/null
    archives+=("$image")
  fi
done

mapfile -t archives < <(printf '%s\n' "${archives[@]}" | sort)
(cd "$DIST_DIR" && sha256 "${archives[@]}" >SHA256SUMS)

# The krew manifest: one platform per archive; krew unpacks it and links bin.
{
  cat <<EOF
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: bkcache
spec:
  version: $krew_version
  homepage: https://github.com/bkcache/bkcache
  shortDescription: List a helmfile's images offline; point containerd at a cache
  description: |
    kubectl bkcache works on the cluster side of a registry:2 pull-through cache
    (docker bkcache runs the cache itself). "images" renders every release of a
    helmfile or chart offline with the helm v3 SDK and lists the images it needs;
    "mirror" points containerd on every node at the cache through the Kubernetes
    API, with backups and --revert.
  caveats: |
    "kubectl bkcache mirror" runs a short-lived privileged pod on each node; the
    RBAC it needs is manifests/mirror-rbac.yaml in the release archive.
    The Docker plugin (docker bkcache) is in the same archive: run its install.sh.
  platforms:
EOF
  for arch in $DIST_ARCHES; do
    name=bkcache-$VERSION-linux-$arch
    sum=$(cd "$DIST_DIR" && sha256 "$name.tar.gz" | cut -d' ' -f1)
    cat <<EOF
  - selector:
      matchLabels:
        os: linux
        arch: $arch
    uri: $DIST_URL/$name.tar.gz
    sha256: $sum
    files:
    - from: $name/kubectl-bkcache
      to: .
    - from: $name/README.md
      to: .
    - from: $name/LICENSE
      to: .
    bin: kubectl-bkcache
EOF
  done
} >"$DIST_DIR/bkcache.yaml"

for f in "${archives[@]}"; do
  printf 'dist: %-60s %6.1f MiB\n' "$DIST_DIR/$f" "$(($(stat -c %s "$DIST_DIR/$f") * 10 / 1048576))e-1" >&2
done
echo "dist: $DIST_DIR/SHA256SUMS, $DIST_DIR/bkcache.yaml" >&2
