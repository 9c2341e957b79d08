"""The reconnecting-PTY server as a capability of the daemon: :func:`make_service` builds
:class:`RptyService` (the root hands it to the tunnel and the stats), :func:`setup` registers its
status and runs it.

Rules:

* The loopback listener (127.0.0.1, an ephemeral port, added to ``own_ports``:
  :class:`~coder_agent.tunnelports.LoopbackPort`) starts with the service (the server is light to
  import); it serves only connections the tunnel registered (:mod:`coder_agent.tunnelports`).
* Sessions idle out after ``settings.reconnecting_pty_timeout``; their directory is the setting's,
  else the manifest's, else ``$HOME``.
* Every connection is reported to ``reports`` (app ``reconnecting_pty``: CONNECT, DISCONNECT with
  the server's status code and reason); :meth:`RptyService.session_counts` is the open
  connections (Go's ``ConnCount``).
* Status key ``rpty``: ``listening``, ``port``, ``connections``, ``sessions``.
* Stop (drain): every session ends (its processes killed) and every connection closes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..service import Health
from ..tunnelports import LoopbackPort
from .server import RptyServer
from .session import RptySettings

if TYPE_CHECKING:
    from ..childenv import ChildEnv
    from ..config import Settings
    from ..connreports import ConnectionReports
    from ..procprio import ChildPriority
    from ..service import Service
    from ..status import StatusRegistry

__all__ = ["APP", "RptyService", "make_service", "setup"]

APP = "reconnecting_pty"


class RptyService:
    """A :class:`~coder_agent.tunnelports.TunnelService` and a :class:`~coder_agent.connreports.SessionCounts`."""

    name = "rpty"

    def __init__(self, server: RptyServer, own_ports: set[int]) -> None:
        self.health = Health()
        self.server = server
        self.listener = LoopbackPort(own_ports)
        self._stopped = False

    async def run(self) -> None:
        try:
            port = await self.server.start()
        except Exception as e:
            self.listener.failed(e)
            raise
        self.listener.listening(port)
        self.health.set("ok", f"listening on 127.0.0.1:{port}")
        try:
            await asyncio.Event().wait()
        finally:
            await self._stop()

    async def drain(self) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.listener.closed()
        await self.server.close()

    async def port(self) -> int:
        return await self.listener.wait()

    def register_peer(self, local_client_port: int, remote: tuple[str, int], local: tuple[str, int]) -> None:
        self.server.register_peer(local_client_port, remote, local)

    def unregister_peer(self, local_client_port: int) -> None:
        self.server.unregister_peer(local_client_port)

    def session_counts(self) -> dict[str, int]:
        n = self.server.connections
        return {APP: n} if n else {}

    def status(self) -> dict[str, Any]:
        return {"listening": self.listener.number > 0, "port": self.listener.number or None,
                "connections": self.server.connections, "sessions": len(self.server.sessions)}


def make_service(*, settings: Settings, command_env: ChildEnv, priority: ChildPriority, own_ports: set[int],
                 reports: ConnectionReports | None, require_registered_peer: bool = True) -> RptyService:
    """The reconnecting-PTY server (``require_registered_peer`` False only in tests)."""

    def directory() -> str:
        return settings.directory or str((command_env.manifest or {}).get("directory") or "")

    server = RptyServer(
        command_env, directory=directory, settings=RptySettings(idle_timeout=settings.reconnecting_pty_timeout),
        on_connect=(lambda cid, ip: reports.connect(cid, APP, ip)) if reports is not None else None,
        on_disconnect=((lambda cid, ip, code, reason: reports.disconnect(cid, APP, ip, code, reason))
                       if reports is not None else None),
        require_registered_peer=require_registered_peer, priority=priority)
    return RptyService(server, own_ports)


def setup(service: RptyService, *, status: StatusRegistry) -> list[Service]:
    """The reconnecting-PTY capability: its status key and the service to run."""
    status.add("rpty", service.status)
    return [service]
