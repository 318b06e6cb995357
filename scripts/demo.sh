#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: install what is needed, build skiff,
# start a local registry, push the busybox demo image to it, pull it with skiff and run a
# command in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked -p skiff -p skiff-test-rig --bin skiff --bin skiff-rig
bash scripts/registry.sh
digest=$(target/release/skiff-rig push-busybox --registry "http://127.0.0.1:${SKIFF_REGISTRY_PORT:-5000}" demo/busybox:latest)
echo "demo.sh: pushed 127.0.0.1:${SKIFF_REGISTRY_PORT:-5000}/demo/busybox:latest ($digest)"
target/release/skiff pull "127.0.0.1:${SKIFF_REGISTRY_PORT:-5000}/demo/busybox:latest"
target/release/skiff images
target/release/skiff run --rm "127.0.0.1:${SKIFF_REGISTRY_PORT:-5000}/demo/busybox:latest" \
  sh -c 'echo "hello from $(hostname) in a skiff container: $(uname -sr), uid $(id -u)"'
