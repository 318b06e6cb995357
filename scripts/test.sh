#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: set-up, format and lint checks, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The library builds without the command line's crates (what an embedder gets).
cargo check -p skiff --lib --no-default-features --locked
cargo test --workspace --locked
bash scripts/fuzz.sh --ci  # every fuzz target, FUZZ_CI_SECONDS (20) each; a crash fails
