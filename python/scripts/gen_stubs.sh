#!/usr/bin/env bash
# Generates the Python protobuf and gRPC stubs (troupe/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py)
# from proto/troupe/v1/*.proto with the pinned grpcio-tools, keeping only the client half of the
# gRPC code (scripts/client_only.py).
#
# Usage: python/scripts/gen_stubs.sh [OUT_DIR]   (default: python/, i.e. the committed stubs)
# The interpreter is $PYTHON (default python3); it must have grpcio-tools==$GRPCIO_TOOLS_VERSION
# (pip install -r python/requirements-dev.txt).
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.80.1"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
out="${1:-$repo/python}"

installed="$("$python" -c 'from importlib.metadata import version; print(version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$installed" != "$GRPCIO_TOOLS_VERSION" ]; then
  echo "gen_stubs.sh: $python has grpcio-tools '${installed:-none}', need $GRPCIO_TOOLS_VERSION" >&2
  echo "  (pip install -r python/requirements-dev.txt, or set PYTHON to a venv's python)" >&2
  exit 1
fi

mkdir -p "$out/troupe/v1"
cd "$repo"
"$python" -m grpc_tools.protoc -I proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/troupe/v1/*.proto
# A client only: the servicer base classes and add_*_to_server helpers are dropped.
"$python" "$here/client_only.py" "$out"/troupe/v1/*_pb2_grpc.py
