#!/usr/bin/env bash
# Prints the path of a Python with the pinned transformers + torch of the parity suite
# (actors/tests/parity/requirements.txt), creating the venv on first use. The venv lives outside
# the checkout, keyed by the requirements' hash, so repeated runs and CI on the same machine
# reuse it and a changed pin builds a new one: $TROUPE_CACHE_DIR (default ~/.cache/troupe).
# Everything but the final path goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=actors/tests/parity/requirements.txt
key="$(sha256sum "$requirements" | cut -c1-12)"
venv="${TROUPE_CACHE_DIR:-$HOME/.cache/troupe}/parity-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "== setting up the parity venv $venv (torch and transformers on CPU: a few GB, once)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
