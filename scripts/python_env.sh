#!/usr/bin/env bash
# Prints the path of a Python whose venv holds the pinned packages of a requirements file,
# creating the venv on first use: `scripts/python_env.sh NAME REQUIREMENTS`. The venv lives
# outside the checkout, keyed by NAME and the requirements' hash, so repeated runs and CI on the
# same machine reuse it and a changed pin builds a new one: $TROUPE_CACHE_DIR/NAME-HASH (default
# ~/.cache/troupe). Everything but the final path goes to stderr.
set -euo pipefail
if [ $# -ne 2 ] || [ ! -f "$2" ]; then
  echo "usage: scripts/python_env.sh NAME REQUIREMENTS (an existing requirements file)" >&2
  exit 2
fi
name="$1"
requirements="$2"
key="$(sha256sum "$requirements" | cut -c1-12)"
venv="${TROUPE_CACHE_DIR:-$HOME/.cache/troupe}/$name-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "== setting up the $name venv $venv from $requirements (once per machine)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
