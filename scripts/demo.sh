#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: install what is needed, build skiff,
# start a local registry, push the busybox demo image to it, and pull it with skiff.
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
