#!/usr/bin/env bash
# Installs what skiff's demo, tests and benches need on Debian 12, as root. Idempotent.
#  - Debian packages: the reference registry server, a static busybox for the fixture image,
#    newuidmap/newgidmap for rootless runs, libseccomp for libcontainer, e2fsprogs for bench stores;
#  - a Rust toolchain, through rustup, only when cargo is missing;
#  - an unprivileged test user with /etc/subuid and /etc/subgid ranges for rootless tests, and a
#    second one without any range (rootless with no set-up: only the caller is mapped);
#  - /dev/fuse usable by every user (mode 0666, Debian's usual) for rootless lazy runs;
#  - a Debian bookworm minbase root filesystem as a tar (debootstrap, once), which the tests turn
#    into a Debian-based image of their own.
set -euo pipefail

TEST_USER=${SKIFF_TEST_USER:-skiff-test}
NOSUB_USER=${SKIFF_TEST_NOSUB_USER:-skiff-nosub}
PACKAGES=(docker-registry busybox-static uidmap libseccomp-dev pkg-config gcc e2fsprogs
          ca-certificates curl util-linux passwd debootstrap
          golang-github-containers-common)  # containers-common: /usr/share/containers/seccomp.json

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages and creates the user $TEST_USER)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "setup.sh: installing a Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "setup.sh: installing the nightly toolchain (fuzzing)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "setup.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if ! id "$TEST_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$TEST_USER"
fi
uid=$(id -u "$TEST_USER")
# A 65536-id range per user, placed by uid so that two test users never overlap.
start=$((100000 + uid * 65536))
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  grep -q "^$TEST_USER:" "$f" || echo "$TEST_USER:$start:65536" >>"$f"
done
if ! id "$NOSUB_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$NOSUB_USER"
fi
# No range for this one: a useradd configured with SUB_UID_COUNT may have given it one.
for f in /etc/subuid /etc/subgid; do
  if grep -q "^$NOSUB_USER:" "$f" 2>/dev/null; then
    sed -i "/^$NOSUB_USER:/d" "$f"
  fi
done
# Rootless lazy runs mount FUSE inside skiff's user namespace: the device must be open to all.
if [ -c /dev/fuse ]; then
  chmod 0666 /dev/fuse
fi
DEBIAN_TAR=${SKIFF_TEST_DEBIAN_TAR:-/var/cache/skiff-test/debian-bookworm-minbase.tar}
if [ ! -s "$DEBIAN_TAR" ]; then
  mirror=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
           | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "setup.sh: debootstrap --variant=minbase bookworm from $mirror (once, for the Debian test image)"
  mkdir -p "$(dirname "$DEBIAN_TAR")"
  work=$(mktemp -d /var/tmp/skiff-debian.XXXXXX)
  debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; rm -rf "$work"; exit 1; }
  rm -f "$work/root/var/cache/apt/archives/"*.deb
  rm -rf "$work/root/var/lib/apt/lists/"*
  tar --numeric-owner -C "$work/root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$DEBIAN_TAR.tmp" .
  mv "$DEBIAN_TAR.tmp" "$DEBIAN_TAR"
  rm -rf "$work"
fi
echo "setup.sh: ready (test user $TEST_USER, uid $uid; $NOSUB_USER without a subordinate range)"
