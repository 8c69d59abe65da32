#!/usr/bin/env bash
# Fails when the committed stubs under python/troupe/v1/ differ from what the protos generate
# now: regenerates them into a temporary directory and compares file by file (also catching
# stubs for a proto that was added or removed). The interpreter is $PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
committed="$(cd "$here/.." && pwd)/troupe/v1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$here/gen_stubs.sh" "$tmp"

stale=0
for path in "$tmp"/troupe/v1/*_pb2*.py*; do
  name="$(basename "$path")"
  if [ ! -f "$committed/$name" ]; then
    echo "missing stub: python/troupe/v1/$name" >&2
    stale=1
  elif ! diff -q "$path" "$committed/$name" >/dev/null; then
    echo "stale stub: python/troupe/v1/$name" >&2
    diff -u "$committed/$name" "$path" | head -20 >&2 || true
    stale=1
  fi
done
for path in "$committed"/*_pb2*.py*; do
  [ -e "$path" ] || continue
  name="$(basename "$path")"
  if [ ! -f "$tmp/troupe/v1/$name" ]; then
    echo "stub without a proto: python/troupe/v1/$name (delete it)" >&2
    stale=1
  fi
done
if [ "$stale" -ne 0 ]; then
  echo "the Python stubs do not match proto/: run python/scripts/gen_stubs.sh" >&2
  exit 1
fi
echo "Python stubs match proto/"
