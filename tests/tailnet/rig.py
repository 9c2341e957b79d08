"""A Coder client tunnelled to the REAL daemon: reusable rig for the tunnel tests.

The devserver (agent RPC, coordinator, DERP relay) and the daemon as a subprocess; the client is
wireguard-go with its TUN link in a network namespace (the kernel's TCP is the client) + a
UDP<->DERP bridge + a coordinator client (derpbridge.py). ``Tunnelled.ns_python(code, *args)``
runs Python inside the namespace; ``agent_ip`` is the agent's primary address.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from coder_agent.devserver import DevServer
from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.tailnet import keys

from ..conftest import apoll, t
from .derpbridge import CoordClient, DerpBridge
from .wgpeer import WgPeer, require_wireguard_go


class Tunnelled:
    """Use as ``async with Tunnelled(ds, daemon, tmp) as rig:`` once the daemon is ready."""

    def __init__(self, ds: DevServer, daemon: Any, tmp: Path) -> None:
        require_wireguard_go()
        self.ds = ds
        self.daemon = daemon
        self.tmp = tmp
        self.agent_id = uuid.UUID(ds.agent.id)
        self.agent_ip = str(keys.addresses(self.agent_id)[0])
        self.client_ip = str(ipaddress.IPv6Address(
            keys.TAILSCALE_SERVICE_PREFIX.network_address.packed[:6] + os.urandom(10)))
        self.wg = WgPeer(tmp, address=self.client_ip)
        self.bridge: DerpBridge | None = None
        self.coord: CoordClient | None = None

    async def __aenter__(self) -> Tunnelled:
        await self.wg.__aenter__()
        try:
            self.bridge = await DerpBridge(self.ds, self.wg.private_key, self.wg.listen_port).start()
            cnode = tailnet_pb2.Node(id=77, key=b"np" + self.wg.public_key, disco=keys.DiscoKey.generate().wire,
                                     preferred_derp=999, addresses=[f"{self.client_ip}/128"],
                                     allowed_ips=[f"{self.client_ip}/128"])
            self.coord = await CoordClient.join(self.ds, self.agent_id, cnode)
            coord = self.coord
            agent_node = await apoll(lambda: coord.latest_node(self.agent_id), timeout=t(30))
            self.bridge.agent_key = keys.node_key_from_wire(agent_node.key)
            self.wg.set_peer(self.bridge.agent_key, list(agent_node.allowed_ips), self.bridge.endpoint)
            r = await self.wg.ans("ping", "-6", "-n", "-c", "1", "-W", "5", self.agent_ip, timeout=40)
            if r.returncode != 0:  # the first ping carries the handshake; give it one more try
                r = await self.wg.ans("ping", "-6", "-n", "-c", "2", "-W", "5", self.agent_ip, timeout=40)
            assert r.returncode == 0, self.wg.log()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.coord is not None:
            await self.coord.close()
        if self.bridge is not None:
            await self.bridge.close()
        await self.wg.__aexit__()

    async def ns_python(self, code: str, *args: object, timeout: float = 60) -> Any:
        """Run ``python -c code args...`` in the namespace; its stdout parsed as JSON."""
        import json

        r = await self.wg.ans(sys.executable, "-c", code, *map(str, args), timeout=timeout)
        assert r.returncode == 0, f"client failed ({r.returncode}): {r.stderr[-2000:]}"
        return json.loads(r.stdout)

    async def ns_script(self, script: Path, *args: object, timeout: float = 60) -> Any:
        import json

        r = await self.wg.ans(sys.executable, str(script), *map(str, args), timeout=timeout)
        assert r.returncode == 0, f"{script.name} failed ({r.returncode}): {r.stderr[-2000:]}"
        return json.loads(r.stdout)

    def add_loss(self, fraction: float) -> str:
        """Drop ``fraction`` of the packets both ways on the client's (kernel's) link."""
        import subprocess

        try:
            self.wg.ns("tc", "qdisc", "add", "dev", self.wg.dev, "root", "netem", "loss", f"{fraction * 100}%")
            return "netem"
        except subprocess.CalledProcessError:
            pass
        for chain in ("OUTPUT", "INPUT"):
            self.wg.ns("ip6tables", "-A", chain, "-m", "statistic", "--mode", "random", "--probability",
                       str(fraction), "-j", "DROP")
        return "ip6tables statistic"
