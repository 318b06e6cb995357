#!/usr/bin/env bash
# Builds the cold-pull benchmark image, a 7-layer Debian "deployment tool" image, and pushes it
# as ${IMAGE:-127.0.0.1:5000/bench/tools:1} (OCI manifest, gzip layers) to a running registry.
#
#   layer 1  debootstrap --variant=minbase bookworm
#   layer 2  python3
#   layer 3  openjdk-17-jre-headless
#   layer 4  nodejs npm
#   layer 5  git curl ca-certificates openssh-client
#   layer 6  unzip jq gnupg less python3-pip
#   layer 7  a user and a work dir; /usr/share/doc and /usr/share/man emptied (whiteouts)
#
# Each apt step runs `chroot ROOT apt-get install -y --no-install-recommends` (lists removed in
# the same step, like a Dockerfile RUN); `skiff-rig snapshot` before and `skiff-rig diff-layer`
# after the step turn what changed (new/changed paths, their parent directories, whiteouts for
# deleted paths) into a tar layer. The tars and their gzip blobs are cached under
# ${CACHE:-/var/cache/skiff-bench/tools}; a rerun only pushes (blobs already there are skipped).
# Run as root from anywhere; needs debootstrap and a built target/release/skiff-rig.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CACHE:-/var/cache/skiff-bench/tools}
IMAGE=${IMAGE:-127.0.0.1:5000/bench/tools:1}
RIG=${RIG:-$PWD/target/release/skiff-rig}
# The Debian mirror of this host's apt sources (deb822 or one-line format).
if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null | grep -oE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' | grep -oE 'https?://[^ ]+' |
    head -n1 || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
ROOT=$CACHE/rootfs
LAYERS=7

mounted=()
unmount_all() {
  local m
  for m in "${mounted[@]}"; do umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  mounted=()
}
trap unmount_all EXIT
trap 'exit 1' INT TERM

# Runs a shell command in the chroot with /proc, /sys, /dev and a persistent apt archive cache
# mounted; everything is unmounted again before the tree is compared.
in_root() {
  mkdir -p "$CACHE/apt-archives/partial" "$ROOT/var/cache/apt/archives"
  mount -t proc proc "$ROOT/proc"
  mounted+=("$ROOT/proc")
  mount -t sysfs sysfs "$ROOT/sys"
  mounted+=("$ROOT/sys")
  mount --rbind /dev "$ROOT/dev"
  mount --make-rslave "$ROOT/dev"
  mounted+=("$ROOT/dev")
  mount --bind "$CACHE/apt-archives" "$ROOT/var/cache/apt/archives"
  mounted+=("$ROOT/var/cache/apt/archives")
  local rc=0
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 /bin/sh -euc "$1" || rc=$?
  unmount_all
  return "$rc"
}

apt_step() {
  in_root "apt-get update -q && apt-get install -y -q --no-install-recommends $* && rm -rf /var/lib/apt/lists/*"
}

step() {
  case $1 in
    2) apt_step python3 ;;
    3) apt_step openjdk-17-jre-headless ;;
    4) apt_step nodejs npm ;;
    5) apt_step git curl ca-certificates openssh-client ;;
    6) apt_step unzip jq gnupg less python3-pip ;;
    7) in_root 'useradd --create-home --uid 1000 --shell /bin/bash deploy && mkdir -p /work &&
         chown deploy:deploy /work && rm -rf /usr/share/doc/* /usr/share/man/*' ;;
  esac
}

build() {
  echo "build-tool-image.sh: building $LAYERS layers in $CACHE (mirror $MIRROR)"
  rm -rf "$ROOT" "$CACHE"/layer*.tar* "$CACHE/complete" "$CACHE/snapshot"
  mkdir -p "$CACHE/debootstrap-cache"
  debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-cache" bookworm "$ROOT" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log" >&2; exit 1; }
  # As in Debian's official container images, apt writes no pkgcache.bin/srcpkgcache.bin (the
  # .debs never land in the tree: the archive cache is a bind mount during each step).
  printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' \
    >"$ROOT/etc/apt/apt.conf.d/docker-clean"
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/cache/apt/*.bin
  "$RIG" diff-layer "$ROOT" "$CACHE/layer1.tar" >"$CACHE/layer1.json"
  for n in $(seq 2 "$LAYERS"); do
    "$RIG" snapshot "$ROOT" "$CACHE/snapshot"
    if ! step "$n" >"$CACHE/step$n.log" 2>&1; then
      tail -n 30 "$CACHE/step$n.log" >&2
      exit 1
    fi
    "$RIG" diff-layer "$ROOT" --since "$CACHE/snapshot" "$CACHE/layer$n.tar" >"$CACHE/layer$n.json"
  done
  rm -f "$CACHE/snapshot"
  touch "$CACHE/complete"
}

mkdir -p "$CACHE"
[ -f "$CACHE/complete" ] || build
args=()
for n in $(seq 1 "$LAYERS"); do args+=(--layer "$CACHE/layer$n.tar"); done
registry=${IMAGE%%/*}
"$RIG" push-layers --registry "http://$registry" "${IMAGE#*/}" "${args[@]}" | tee "$CACHE/pushed.json"
