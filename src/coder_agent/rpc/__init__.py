"""The agent RPC stack: sans-I/O yamux and dRPC cores, the protobuf messages, and a thin asyncio transport."""
