"""Coder's tailnet for the agent: WireGuard over DERP, coordination, and what runs inside the tunnel.

Sans-I/O cores (keys, packet, wireguard, disco, derp, coordination, tcp) with thin asyncio layers;
the facts they follow are in ../shared/protocol/coder-tailnet.md.

The capability: :func:`make_network` builds the :class:`~.network.TailnetNetwork` that the
composition root hands to the agent session (it runs on every agent RPC connection) and shows
under ``tailnet`` in ``GET /api/v0/status``. Nothing heavy is imported until a manifest carries
a DERP map.

Inside the tunnel (:mod:`.tunnel`): port 4 serves the agent HTTP API (:mod:`.httpapi`, the
local API's handlers for the routes coderd calls), port 3 the speedtest (:mod:`.speedtest`),
ports 1, 22 and 2 are refused until their servers register, every other port is forwarded to
the workspace's loopback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ..clock import Clock
    from ..config import Settings
    from ..localapi import LocalAPI
    from ..metrics import Metrics
    from ..status import StatusRegistry
    from ..tunnelports import TunnelService
    from .network import TailnetNetwork
    from .tunnel import TunnelConn, TunnelTcp

__all__ = ["make_network"]


def _spliced(service: TunnelService) -> Callable[[TunnelConn], Awaitable[None]]:
    """A tunnel port served by ``service``'s loopback listener; a reset when it cannot be reached."""
    import ipaddress

    from ..tunnelports import splice

    async def handle(conn: TunnelConn) -> None:
        local = (str(ipaddress.IPv6Address(conn.key.local_addr)), conn.local_port)
        try:
            await splice(service, conn, conn, conn.remote, local)
        except OSError:
            conn.abort()

    return handle


def make_network(*, settings: Settings, clock: Clock, metrics: Metrics, status: StatusRegistry, api: LocalAPI,
                 own_ports: set[int], services: Mapping[int, TunnelService]) -> TailnetNetwork:
    """``api``: the local API, whose handlers port 4 serves too (and where list-directory and
    netcheck are added); ``own_ports``: the daemon's own listeners (port 4's loopback joins);
    ``services``: what serves the agent's fixed ports (1 and 22: SSH, 2: the reconnecting PTY),
    each reached by a splice to its loopback listener (:mod:`coder_agent.tunnelports`)."""
    from . import speedtest
    from .httpapi import AgentHttpApi
    from .network import TailnetNetwork

    network = TailnetNetwork(settings=settings, clock=clock, registry=metrics.registry)
    http_api = AgentHttpApi(api, metrics, own_ports, network.netcheck, network.extra_status)

    def serve_ports(tunnel: TunnelTcp) -> None:
        tunnel.register(4, http_api.handle)
        tunnel.register(3, speedtest.serve)
        for port, service in services.items():
            tunnel.register(port, _spliced(service))

    network.on_tunnel.append(serve_ports)
    network.on_close.append(http_api.close)
    status.add("tailnet", network.status)
    return network
