#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, the runtime's `cuda` feature
# (must compile without CUDA), unit tests and the multi-process integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo check -p troupe --features cuda"
cargo check -p troupe --features cuda
echo "== cargo test"
cargo test --workspace
