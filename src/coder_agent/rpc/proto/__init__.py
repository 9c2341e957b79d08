"""Generated protobuf modules for coder.agent.v2 and coder.tailnet.v2 (see scripts/gen-proto.sh)."""
