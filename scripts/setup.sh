#!/usr/bin/env bash
# Installs what skiff's demo, tests and benches need on Debian 12, as root. Idempotent.
#  - Debian packages: the reference registry server, a static busybox for the fixture image,
#    newuidmap/newgidmap for rootless runs, libseccomp for libcontainer, e2fsprogs for bench stores;
#  - a Rust toolchain, through rustup, only when cargo is missing;
#  - an unprivileged test user with /etc/subuid and /etc/subgid ranges for rootless tests.
set -euo pipefail

TEST_USER=${SKIFF_TEST_USER:-skiff-test}
PACKAGES=(docker-registry busybox-static uidmap libseccomp-dev pkg-config gcc e2fsprogs
          ca-certificates curl util-linux passwd)

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
echo "setup.sh: ready (test user $TEST_USER, uid $uid)"
