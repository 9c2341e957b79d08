"""What the tunnel serves on its fixed agent ports: an interface module (ARCHITECTURE.md).

The root builds ``{1: ssh, 22: ssh, 2: rpty}`` (``Daemon.tunnel_services``) from the ``sshd`` and
``rpty`` capabilities and hands it to the tailnet capability, which, for each TCP connection the
tunnel accepts on one of those ports:

1. opens a loopback connection to ``await service.port()`` (the service starts its listener on
   first use if it has not yet; the call waits for it);
2. calls ``service.register_peer(<its loopback client port>, (peer_ip, peer_port),
   (agent_ip, agent_port))`` BEFORE it splices the first byte: the service serves only loopback
   connections registered this way (the SSH server has no authentication);
3. splices both ways until either side closes; if the loopback connect failed after
   registering, ``service.unregister_peer(port)``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["TunnelService"]


class TunnelService(Protocol):
    async def port(self) -> int:
        """The loopback (127.0.0.1) port to splice to."""
        ...

    def register_peer(self, local_client_port: int, remote: tuple[str, int], local: tuple[str, int]) -> None:
        """The loopback connection from ``local_client_port`` carries the tunnel's connection from
        ``remote`` (the client's tunnel address) to ``local`` (the agent's)."""
        ...

    def unregister_peer(self, local_client_port: int) -> None:
        """Forget a registration whose loopback connection was never made."""
        ...
