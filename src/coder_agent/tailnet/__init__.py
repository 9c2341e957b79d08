"""The workspace's tailnet: WireGuard over DERP, and a userspace IPv6 TCP on top of it."""
