#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, the runtime's `cuda` feature
# (must compile without CUDA), unit tests and the multi-process integration tests. Installs what
# it needs (a Python venv with numpy) on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The model tests compare against an independent NumPy forward pass.
if ! .venv/bin/python -c "import numpy" 2>/dev/null; then
  echo "== setting up .venv with numpy"
  python3 -m venv .venv
  .venv/bin/pip install --quiet numpy
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo check -p troupe --features cuda"
cargo check -p troupe --features cuda
echo "== cargo test"
cargo test --workspace
