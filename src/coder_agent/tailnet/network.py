"""The tailnet capability's face to the agent session: one engine per agent id, served per connection.

Rules (coder-tailnet.md §1; Go's ``agent.run``: ``createOrUpdateNetwork`` after the manifest,
then ``coordination`` and ``derp map subscriber`` on the same connection):

* The tailnet starts by itself when a manifest carries a non-empty DERP map and the
  ``tailnet_enable`` setting is on (default); otherwise :meth:`TailnetNetwork.serve` returns at
  once and the agent runs without a tunnel (said once in the log and in ``status``).
* First manifest with a DERP map: an engine is built (new node and disco keys) and started.
  Later manifests (reconnect) update the DERP map and flags in place; a manifest with another
  agent id rebuilds it (:meth:`~.engine.Tailnet.update`).
* Per agent RPC connection the engine coordinates and follows DERP maps until a stream ends;
  then :meth:`serve` raises :class:`TailnetStreamEnded` so the session redials the connection as
  a whole, as any routine of Go's agent does.
* :meth:`close` (session shutdown: SIGTERM or reinit) sends ``disconnect{}`` while the
  connection is still up and drops the engine; the next session's first manifest builds a new
  one (reinit: new agent id, new keys, new addresses).
* ``on_engine`` callbacks see every engine built. Each engine gets a :class:`~.tunnel.TunnelTcp`
  (TCP inside the tunnel: its packets come from ``on_ip_packet``); ``on_tunnel`` callbacks
  register their port handlers on it (the agent HTTP API on 4, the speedtest on 3...).
  :meth:`stats` gives the session the tunnel's counters for UpdateStats.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import CoderAgentError
from ..log import get_logger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..agentrpc.parts import TunnelStats
    from ..clock import Clock
    from ..config import Settings
    from ..rpc.proto import agent_pb2
    from .engine import Tailnet
    from .tunnel import TunnelTcp

__all__ = ["TailnetNetwork", "TailnetStreamEnded"]


class TailnetStreamEnded(CoderAgentError):
    """A tailnet stream (Coordinate or StreamDERPMaps) ended: the agent RPC connection is redialed."""


class TailnetNetwork:
    """Implements ``agentrpc.parts.NetworkRoutine`` for the tailnet engine."""

    def __init__(self, *, settings: Settings, clock: Clock, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = registry
        self.engine: Tailnet | None = None
        self.on_engine: list[Callable[[Tailnet], None]] = []
        self.on_tunnel: list[Callable[[TunnelTcp], None]] = []
        self.tunnel: TunnelTcp | None = None
        self.on_close: list[Callable[[], Awaitable[None]]] = []
        self.extra_status: dict[str, Any] = {}  # more keys for status (the HTTP API's loopback port)
        self.log = get_logger("tailnet")
        self._why_off: str | None = None
        self._closing = False

    def _off(self, why: str) -> None:
        if why != self._why_off:
            self.log.info("tailnet off", reason=why)
            self._why_off = why

    async def serve(self, rpc: object, manifest: agent_pb2.Manifest) -> None:
        if not self.settings.tailnet_enable:
            self._off("disabled by the tailnet_enable setting")
            return
        from .derpmap import DerpMap

        # Decided before the engine is imported: without a DERP map the engine (and cryptography,
        # ~10 MiB of RSS) never loads.
        if not DerpMap.from_proto(manifest.derp_map).derp_region_ids():
            self._off("the manifest carries no DERP map")
            return
        from .engine import manifest_inputs

        inputs = manifest_inputs(manifest)
        if inputs is None:
            self._off("the manifest carries no DERP map")
            return
        self._why_off = None
        self._closing = False
        engine = self.engine
        if engine is None:
            engine = self._build(inputs.agent_id, inputs.derp_map, inputs.flags)
        else:
            old_id = engine.agent_id
            await engine.update(inputs.agent_id, inputs.derp_map, inputs.flags)
            if engine.agent_id != old_id and self.tunnel is not None:
                self.tunnel.reset_all()  # new addresses: connections to the old ones are gone
        reason = await engine.run_on_rpc(rpc)  # type: ignore[arg-type]  # agentrpc.RpcClient has .conn
        if self._closing or engine is not self.engine:
            return
        raise TailnetStreamEnded(f"tailnet: {reason}")

    def _build(self, agent_id: Any, derp_map: Any, flags: Any) -> Tailnet:
        from .derpclient import DialOptions
        from .engine import Tailnet
        from .tunnel import TunnelTcp

        engine = Tailnet(agent_id=agent_id, derp_map=derp_map, coder_url=self.settings.url,
                         dial=DialOptions.from_settings(self.settings), flags=flags, clock=self.clock,
                         registry=self.registry, log=self.log)
        self.engine = engine
        tunnel = TunnelTcp(engine.send_ip, lambda: engine.local_addresses, log=self.log)
        engine.on_ip_packet = tunnel.receive
        self.tunnel = tunnel
        for tunnel_hook in self.on_tunnel:
            tunnel_hook(tunnel)
        for hook in self.on_engine:
            hook(engine)
        engine.start()
        return engine

    async def close(self) -> None:
        self._closing = True
        engine, self.engine = self.engine, None
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            await tunnel.close()
        if engine is not None:
            await engine.close()
        for hook in self.on_close:
            await hook()

    def stats(self) -> TunnelStats | None:
        if self.tunnel is None:
            return None
        from ..agentrpc.parts import TunnelStats

        c = self.tunnel.take_stats()
        return TunnelStats(connections=c.connections, rx_packets=c.rx_packets, rx_bytes=c.rx_bytes,
                           tx_packets=c.tx_packets, tx_bytes=c.tx_bytes)

    def netcheck(self) -> dict[str, Any]:
        """``GET /api/v0/netcheck``: what this agent knows of its network — the DERP home region,
        latencies and connection state (no STUN/UDP probing: the agent only uses DERP)."""
        engine = self.engine
        if engine is None:
            return {"tailnet": self.status(), "derp": None}
        st = engine.status()
        keys = ("home_region", "home_latency_ms", "derp_connection", "derp_transport", "derp_regions", "derp_latency")
        return {"tailnet": st["state"], "derp": {k: st[k] for k in keys}, "udp": False, "ipv6": False}

    def status(self) -> dict[str, Any]:
        if self.engine is None:
            return {"state": "off" if self._why_off else "waiting for the manifest", "reason": self._why_off}
        st = self.engine.status()
        if self.tunnel is not None:
            st["tcp"] = self.tunnel.status()
        st.update(self.extra_status)
        return st
