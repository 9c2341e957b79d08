"""The agent's tailnet: keys, coordination, DERP, WireGuard and the in-tunnel stack."""
