#!/usr/bin/env bash
# Regenerate src/coder_agent/rpc/proto/*_pb2.py and *_pb2.pyi from the .proto files.
#
# Needs grpcio-tools (the `dev` extra). Protos are compiled with src/ as the include
# root and import each other by their package path (coder_agent/rpc/proto/...), so the
# generated modules import `coder_agent.rpc.proto.tailnet_pb2` and work from an
# installed package; the sed below is a guard in case a proto ever uses a bare import.
# The generated code requires a protobuf runtime at least as new as the protoc bundled
# with grpcio-tools.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
out="$root/src/coder_agent/rpc/proto"

cd "$root/src"
"$python" -m grpc_tools.protoc -I . \
  --python_out=. --pyi_out=. \
  coder_agent/rpc/proto/tailnet.proto coder_agent/rpc/proto/agent.proto

# Rewrite a bare `import tailnet_pb2` (protoc emits one for a proto included by file
# name only) into the package import.
sed -i -E 's/^import (tailnet_pb2|agent_pb2) as /from coder_agent.rpc.proto import \1 as /' \
  "$out"/*_pb2.py "$out"/*_pb2.pyi

# protoc's stubs use bare `Mapping` (type-arg under mypy --strict). pyproject excludes
# the generated .py files; the stubs stay visible to mypy so callers are still checked
# against them, but errors inside the stubs themselves are not ours to fix.
for stub in "$out"/*_pb2.pyi; do
  sed -i '1i # mypy: ignore-errors' "$stub"
done

echo "generated: $(cd "$root" && ls src/coder_agent/rpc/proto/*_pb2.py* | tr '\n' ' ')"
