#!/bin/sh
# Installs bkcache from an unpacked release archive: no Go, no network.
#
#   ./install.sh                  docker-bkcache into ${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins (you),
#                                 kubectl-bkcache into PREFIX/bin (default /usr/local/bin)
#   ./install.sh --system         docker-bkcache into /usr/local/lib/docker/cli-plugins (every user)
#   ./install.sh --prefix DIR     kubectl-bkcache into DIR/bin (or PREFIX=DIR)
#   ./install.sh --dry-run        say what would change, change nothing
#   ./install.sh --uninstall      remove exactly what was installed (same --prefix)
#
# Before it changes anything it checks: the host's OS and architecture match the
# archive's (RELEASE); every unpacked file matches CONTENTS.sha256; when the
# archive (bkcache-VERSION-linux-ARCH.tar.gz) sits beside SHA256SUMS in the
# directory above this one or in the current directory, the archive matches its
# SHA256SUMS line, and then the files installed are unpacked from that archive
# by this script (the unpacked ones beside it must be the same); the docker CLI
# is on PATH; every target is writable. Any failure says so and leaves the
# host as it was. Files are copied to a temporary
# name beside their target, then renamed. What it put where is recorded in
# PREFIX/share/bkcache/install-manifest, which --uninstall reads. Running it again
# is harmless: identical files are left alone.
set -eu

usage() {
  sed -n '2,22s/^# \{0,1\}//p' "$0"
}

die() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}

system=false
uninstall=false
dry_run=false
prefix=${PREFIX:-/usr/local}
while [ $# -gt 0 ]; do
  case $1 in
    --system) system=true ;;
    --uninstall) uninstall=true ;;
    --dry-run | -n) dry_run=true ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift ;;
    --prefix=*) prefix=${1#--prefix=} ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
case $prefix in
  /*) ;;
  *) die "--prefix must be an absolute path, not $prefix" ;;
esac
prefix=${prefix%/}

here=$(cd "$(dirname "$0")" && pwd -P)
manifest_dir=$prefix/share/bkcache
manifest=$manifest_dir/install-manifest
# The only file names this script installs or removes.
plugin_name=docker-bkcache
kubectl_name=kubectl-bkcache

if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
elif command -v openssl >/dev/null 2>&1; then
  sha256() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
else
  die "no sha256 tool (sha256sum, shasum or openssl) on PATH: cannot verify the files"
fi

# What to do about a directory we may not write: root gains nothing from sudo
# (a read-only file system, an immutable directory).
if [ "$(id -u)" = 0 ]; then
  root_hint() { echo "the file system may be read-only: pick another place (--prefix DIR, DOCKER_CONFIG)"; }
else
  root_hint() { echo "run as root (sudo $0 $1)"; }
fi

# Paths go into the manifest one per line: refuse the few that cannot.
check_path() {
  case $1 in
    *'
'*) die "path with a newline: $1" ;;
  esac
}

# ---- uninstall --------------------------------------------------------------
if $uninstall; then
  check_path "$manifest"
  if [ ! -f "$manifest" ]; then
    echo "bkcache: nothing to remove: no install manifest at $manifest (pass the --prefix you installed with)"
    exit 0
  fi
  # Writable first, so a refusal removes nothing.
  while read -r kind sum path; do
    if [ "$kind" = file ] && [ -e "$path" ] && [ ! -w "$(dirname "$path")" ] && ! $dry_run; then
      die "cannot remove $path: $(dirname "$path") is not writable; $(root_hint --uninstall); nothing was removed"
    fi
  done <"$manifest"
  [ -w "$manifest_dir" ] || $dry_run || die "cannot remove $manifest: $(root_hint --uninstall); nothing was removed"
  dirs=
  while read -r kind sum path; do
    case $kind in
      file)
        case ${path##*/} in
          "$plugin_name" | "$kubectl_name") ;;
          *) echo "bkcache: skipped $path: not a file this installer writes" >&2; continue ;;
        esac
        if [ ! -e "$path" ] && [ ! -L "$path" ]; then
          echo "already gone  $path"
        elif [ -f "$path" ] && [ ! -L "$path" ] && [ "$(sha256 "$path")" = "$sum" ]; then
          if $dry_run; then echo "would remove  $path"; else rm -f "$path" && echo "removed       $path"; fi
        else
          echo "bkcache: left $path in place: it changed since install (another version?); remove it yourself if it is not needed" >&2
        fi
        ;;
      dir) dirs="$path
$dirs" ;; # newest first, so children go before their parents
    esac
  done <"$manifest"
  if $dry_run; then
    echo "would remove  $manifest"
  else
    rm -f "$manifest" && echo "removed       $manifest"
  fi
  # Directories the install created, only when empty.
  printf '%s' "$dirs" | while IFS= read -r d; do
    [ -n "$d" ] && [ -d "$d" ] || continue
    if $dry_run; then
      echo "would remove  $d/ (if empty)"
    elif rmdir "$d" 2>/dev/null; then
      echo "removed       $d/"
    else
      echo "kept          $d/ (not empty)"
    fi
  done
  exit 0
fi

# ---- checks: nothing changes until all pass ---------------------------------
[ -f "$here/RELEASE" ] || die "no RELEASE file beside $0: run the install.sh of an unpacked bkcache release archive"
field() { sed -n "s/^$1=//p" "$here/RELEASE" | head -n 1; }
version=$(field version)
want_os=$(field os)
want_arch=$(field arch)
[ -n "$version" ] && [ -n "$want_os" ] && [ -n "$want_arch" ] || die "$here/RELEASE is incomplete (version, os, arch)"

host_os=$(uname -s | tr '[:upper:]' '[:lower:]')
case $(uname -m) in
  x86_64 | amd64) host_arch=amd64 ;;
  aarch64 | arm64) host_arch=arm64 ;;
  *) host_arch=$(uname -m) ;;
esac
if [ "$host_os/$host_arch" != "$want_os/$want_arch" ]; then
  die "this archive is for $want_os/$want_arch but this host is $host_os/$host_arch (uname -m: $(uname -m)); use bkcache-$version-$host_os-$host_arch.tar.gz"
fi

# Every unpacked file against the list shipped inside the archive.
[ -f "$here/CONTENTS.sha256" ] || die "CONTENTS.sha256 is missing from $here: the archive is incomplete; unpack it again"
checked=0
while read -r sum name; do
  [ -n "$sum" ] || continue
  case $name in /* | *..*) die "CONTENTS.sha256 names $name: not a file of this archive" ;; esac
  [ -f "$here/$name" ] || die "$here/$name is missing: the archive is incomplete; unpack it again"
  [ "$(sha256 "$here/$name")" = "$sum" ] || die "checksum mismatch for $here/$name: the file is damaged or was changed; nothing was installed"
  checked=$((checked + 1))
done <"$here/CONTENTS.sha256"
for f in $plugin_name $kubectl_name; do
  grep -q " $f\$" "$here/CONTENTS.sha256" || die "CONTENTS.sha256 does not list $f: the archive is incomplete"
done

# The archive itself against SHA256SUMS, when both sit next to the unpacked directory.
archive=bkcache-$version-$want_os-$want_arch.tar.gz
sums_note="the archive was not found beside a SHA256SUMS (looked in $(dirname "$here") and $PWD): only the unpacked files were checked"
for d in "$(dirname "$here")" "$PWD"; do
  [ -f "$d/SHA256SUMS" ] || continue
  want=$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1; exit }' "$d/SHA256SUMS")
  if [ ! -f "$d/$archive" ]; then
    continue
  fi
  [ -n "$want" ] || die "$d/SHA256SUMS has no line for $archive: is it the SHA256SUMS of release $version?"
  got=$(sha256 "$d/$archive")
  [ "$got" = "$want" ] || die "checksum mismatch: $d/$archive has sha256 $got, $d/SHA256SUMS says $want; the archive is damaged or was changed; nothing was installed"
  sums_note="$d/$archive matches $d/SHA256SUMS"
  verified=$d/$archive
  break
done

# Install from the verified archive itself: files unpacked beside this script
# could have been replaced together with their CONTENTS.sha256 lines.
src=$here
unpacked=
trap '[ -z "$unpacked" ] || rm -rf "$unpacked"' EXIT
if [ -n "${verified:-}" ]; then
  unpacked=$(mktemp -d "${TMPDIR:-/tmp}/bkcache-install.XXXXXX") || die "cannot make a temporary directory to unpack $verified; nothing was installed"
  top=bkcache-$version-$want_os-$want_arch
  gzip -dc "$verified" | tar -xf - -C "$unpacked" "$top/CONTENTS.sha256" "$top/$plugin_name" "$top/$kubectl_name" ||
    die "cannot unpack $top/$plugin_name and $top/$kubectl_name from $verified; nothing was installed"
  for f in CONTENTS.sha256 $plugin_name $kubectl_name; do
    { [ -f "$unpacked/$top/$f" ] && [ ! -L "$unpacked/$top/$f" ]; } || die "$verified holds no file $top/$f; nothing was installed"
    cmp -s "$unpacked/$top/$f" "$here/$f" ||
      die "$here/$f is not the file in $verified (which matches SHA256SUMS): the unpacked files were changed; unpack the archive again; nothing was installed"
  done
  src=$unpacked/$top
  sums_note="$sums_note; installing from it"
fi

command -v docker >/dev/null 2>&1 || die "the docker CLI is not on PATH: install Docker first (Debian/Ubuntu: apt-get install docker.io), then run this again; nothing was installed"

if $system; then
  plugin_dir=/usr/local/lib/docker/cli-plugins
else
  if [ -n "${DOCKER_CONFIG:-}" ]; then
    docker_config=$DOCKER_CONFIG
  else
    [ -n "${HOME:-}" ] || die "HOME is not set: set DOCKER_CONFIG, or pass --system"
    docker_config=$HOME/.docker
  fi
  case $docker_config in /*) ;; *) docker_config=$PWD/$docker_config ;; esac
  plugin_dir=${docker_config%/}/cli-plugins
fi
bin_dir=$prefix/bin
for p in "$plugin_dir" "$bin_dir" "$manifest_dir"; do check_path "$p"; done

# The nearest existing directory above (or at) $1.
existing_parent() {
  d=$1
  while [ ! -d "$d" ]; do d=$(dirname "$d"); done
  printf '%s\n' "$d"
}
for d in "$plugin_dir" "$bin_dir" "$manifest_dir"; do
  e=$(existing_parent "$d")
  if [ ! -w "$e" ]; then
    hint=$(root_hint)
    [ "$d" = "$plugin_dir" ] || hint="$hint or pass --prefix \$HOME/.local"
    die "cannot write to $e (for $d): $hint; nothing was installed"
  fi
done

echo "bkcache $version ($want_os/$want_arch): $checked files match CONTENTS.sha256; $sums_note"
if [ -n "${SUDO_USER:-}" ] && ! $system; then
  echo "note: running under sudo: the Docker plugin goes to $plugin_dir; for $SUDO_USER's own docker, run without sudo (with --prefix \$HOME/.local), or use --system" >&2
fi

# ---- plan -------------------------------------------------------------------
# Each target: what happens to it.
plan() { # plan SRC DEST
  if [ -f "$2" ] && cmp -s "$1" "$2"; then echo unchanged; elif [ -e "$2" ]; then echo replace; else echo new; fi
}
plugin_target=$plugin_dir/$plugin_name
kubectl_target=$bin_dir/$kubectl_name
plugin_plan=$(plan "$src/$plugin_name" "$plugin_target")
kubectl_plan=$(plan "$src/$kubectl_name" "$kubectl_target")
if $dry_run; then
  echo "would install docker-bkcache  -> $plugin_target ($plugin_plan)"
  echo "would install kubectl-bkcache -> $kubectl_target ($kubectl_plan)"
  echo "would record                  -> $manifest"
  exit 0
fi

# ---- install: temp copies beside the targets, then renames ------------------
created=
tmp_plugin=
tmp_kubectl=
tmp_manifest=
done_ok=false
cleanup() {
  rm -f "$tmp_plugin" "$tmp_kubectl" "$tmp_manifest"
  [ -z "$unpacked" ] || rm -rf "$unpacked"
  if ! $done_ok; then
    # Undo the directories this run made (newest first), so a failure changes nothing.
    printf '%s' "$created" | while IFS= read -r d; do [ -n "$d" ] && rmdir "$d" 2>/dev/null || true; done
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

make_dirs() { # make_dirs DIR: mkdir -p, remembering each directory it creates
  [ -d "$1" ] && return 0
  make_dirs "$(dirname "$1")"
  mkdir "$1"
  created="$1
$created"
  new_dirs="$new_dirs$1
"
}
new_dirs=
make_dirs "$plugin_dir"
make_dirs "$bin_dir"
make_dirs "$manifest_dir"

if [ "$plugin_plan" != unchanged ]; then
  tmp_plugin=$plugin_dir/.$plugin_name.tmp.$$
  { cp "$src/$plugin_name" "$tmp_plugin" && chmod 0755 "$tmp_plugin"; } || die "cannot copy $plugin_name to $plugin_dir; nothing was installed"
fi
if [ "$kubectl_plan" != unchanged ]; then
  tmp_kubectl=$bin_dir/.$kubectl_name.tmp.$$
  { cp "$src/$kubectl_name" "$tmp_kubectl" && chmod 0755 "$tmp_kubectl"; } || die "cannot copy $kubectl_name to $bin_dir; nothing was installed"
fi

# The manifest: this install's files and new directories, plus what an earlier
# install recorded elsewhere (e.g. the plugin for the user and with --system).
plugin_sum=$(sha256 "$src/$plugin_name")
kubectl_sum=$(sha256 "$src/$kubectl_name")
tmp_manifest=$manifest_dir/.install-manifest.tmp.$$
{
  echo "# bkcache install manifest: install.sh --uninstall --prefix $prefix removes these"
  echo "version - $version"
  echo "file $plugin_sum $plugin_target"
  echo "file $kubectl_sum $kubectl_target"
  if [ -f "$manifest" ]; then
    while read -r kind sum path; do
      case $kind in
        file) [ "$path" = "$plugin_target" ] || [ "$path" = "$kubectl_target" ] || echo "file $sum $path" ;;
        dir) echo "dir - $path" ;;
      esac
    done <"$manifest"
  fi
  printf '%s' "$new_dirs" | while IFS= read -r d; do [ -n "$d" ] && echo "dir - $d"; done
} >"$tmp_manifest" || die "cannot write $manifest"

if [ -n "$tmp_plugin" ]; then mv -f "$tmp_plugin" "$plugin_target"; tmp_plugin=; fi
if [ -n "$tmp_kubectl" ]; then mv -f "$tmp_kubectl" "$kubectl_target"; tmp_kubectl=; fi
mv -f "$tmp_manifest" "$manifest"
tmp_manifest=
done_ok=true

word() { case $1 in new) echo installed ;; replace) echo replaced ;; *) echo unchanged ;; esac; }
printf '%-10s docker-bkcache  -> %s\n' "$(word "$plugin_plan")" "$plugin_target"
printf '%-10s kubectl-bkcache -> %s\n' "$(word "$kubectl_plan")" "$kubectl_target"
printf '%-10s %s\n' recorded "$manifest (install.sh --uninstall --prefix $prefix removes what it lists)"

echo "Next:"
echo "  docker bkcache up                 # run the cache (bkhub -> https://hub.bktencent.com on :5500)"
img_hint="  (a host that cannot pull hub.bktencent.com/library/registry:2: README.md, \"A host that can pull nothing\")"
for d in "$(dirname "$here")" "$PWD"; do
  img=$d/bkcache-$version-registry-image-$want_os-$want_arch.tar.gz
  if [ -f "$img" ]; then
    img_hint="  docker bkcache up --image bkcache.local/registry:2 --image-archive $img   # no registry reachable: the cache image from this release"
    break
  fi
done
echo "$img_hint"
echo "  docker bkcache verify IMAGE       # prove a pull through it, e.g. blueking/slug-app:v1.1.0-beta.27"
echo "  kubectl bkcache mirror --registry HOST:5500 --dry-run   # then point the nodes at it"
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "note: $bin_dir is not on PATH: add it (export PATH=\"$bin_dir:\$PATH\") so kubectl finds kubectl-bkcache" ;;
esac
command -v kubectl >/dev/null 2>&1 || echo "note: kubectl is not on PATH: kubectl bkcache works once it is installed"
