"""Coder's tailnet for the agent: WireGuard over DERP, coordination, and what runs inside the tunnel.

Sans-I/O cores (keys, packet, wireguard, disco, derp, coordination, tcp) with thin asyncio layers;
the facts they follow are in ../shared/protocol/coder-tailnet.md.

The capability: :func:`make_network` builds the :class:`~.network.TailnetNetwork` that the
composition root hands to the agent session (it runs on every agent RPC connection) and shows
under ``tailnet`` in ``GET /api/v0/status``. Nothing heavy is imported until a manifest carries
a DERP map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import Settings
    from ..metrics import Metrics
    from ..status import StatusRegistry
    from .network import TailnetNetwork

__all__ = ["make_network"]


def make_network(*, settings: Settings, clock: Clock, metrics: Metrics, status: StatusRegistry) -> TailnetNetwork:
    from .network import TailnetNetwork

    network = TailnetNetwork(settings=settings, clock=clock, registry=metrics.registry)
    status.add("tailnet", network.status)
    return network
