"""Coder's tailnet for the agent: WireGuard over DERP, coordination, and what runs inside the tunnel.

Sans-I/O cores (keys, packet, wireguard, disco, derp, coordination, tcp) with thin asyncio layers;
the facts they follow are in ../shared/protocol/coder-tailnet.md.
"""
