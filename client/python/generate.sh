#!/usr/bin/env bash
# Generates the Python messages and gRPC stubs of proto/drfm/v1/*.proto with Debian's protoc
# (protobuf-compiler) and grpc_python_plugin (protobuf-compiler-grpc):
#   client/python/generate.sh [OUT_DIR]      default OUT_DIR: <repo>/build/python
# OUT_DIR receives the package drfm/v1/*_pb2.py, *_pb2_grpc.py; put OUT_DIR on PYTHONPATH (or set
# DRFM_PYTHON_STUBS=OUT_DIR) to import them. The generated files are never committed.
# Environment: PROTOC (default protoc), GRPC_PYTHON_PLUGIN (default grpc_python_plugin on PATH,
# else /usr/bin/grpc_python_plugin).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build/python}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || echo /usr/bin/grpc_python_plugin)}
if ! command -v "$protoc" >/dev/null 2>&1; then
  echo "generate.sh: $protoc not found (Debian package protobuf-compiler)" >&2
  exit 1
fi
if [ ! -x "$plugin" ]; then
  echo "generate.sh: $plugin not found (Debian package protobuf-compiler-grpc)" >&2
  exit 1
fi
mkdir -p "$out"
# Replace the previous generation whole, so a removed .proto leaves no stale module behind.
rm -rf "$out/drfm/v1"
"$protoc" -I "$repo/proto" \
  --python_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" \
  "$repo"/proto/drfm/v1/*.proto
# Regular packages (not namespace packages), so "drfm.v1" resolves to this directory only.
touch "$out/drfm/__init__.py" "$out/drfm/v1/__init__.py"
echo "$out"
