"""Coder's workspace networking ("tailnet"): DERP relay, coordination, WireGuard, the tunnel's IP layer."""
