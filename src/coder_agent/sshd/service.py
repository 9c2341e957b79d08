"""The SSH server as a capability of the daemon: one :class:`SshService`.

Rules:

* :func:`make_service` builds it (the root hands it to the tunnel and the stats), :func:`setup`
  registers its status and runs it.
* asyncssh costs about 0.4 s to import (1.1 s cold, measured on the dev machine), so
  :mod:`.server` is imported in a worker thread, and the server started, when the tailnet comes
  up (:meth:`SshService.want`, called by the root when the tailnet builds its engine: only the
  tunnel reaches the server) or on the first :meth:`SshService.port` call, whichever comes first,
  once a manifest gave the host key's names. A daemon without a tailnet (tailnet off, or a
  manifest without a DERP map) never imports it.
* The listener is on 127.0.0.1, an ephemeral port, added to ``own_ports`` (never a workspace
  listening port: :class:`~coder_agent.tunnelports.LoopbackPort`); only loopback connections the
  tunnel registered are served (:mod:`coder_agent.tunnelports`).
* Sessions are reported to ``reports`` (CONNECT/DISCONNECT, app ``ssh``/``vscode``/
  ``jetbrains``/``unknown``); :meth:`SshService.session_counts` are the server's live counts.
* The host key follows the latest manifest's names (:func:`~.policy.host_key_seed`): a
  manifest whose owner, workspace or agent name differs from the key's (a prebuild claimed: the
  session starts over with the new owner's manifest) changes it for new connections at once,
  without a restart; live sessions keep the key they were accepted with. The same names again
  (a reconnect, a daemon restart) give the same key; the gap between sessions (no manifest)
  keeps the old one. Go sets its key when its agent builds the tailnet, once per agent life, and
  a claim starts a new agent life: both change the key at a claim and keep it across restarts.
  (Names changed on a mere reconnect change ours at once, Go's at its next restart.)
* Status key ``sshd``: ``listening`` and ``port`` (no secrets: the host key is never shown).
* Stop (drain): sessions hang up and their commands are waited for, bounded.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..log import get_logger
from ..service import Health
from ..tunnelports import LoopbackPort
from .policy import host_key_seed

if TYPE_CHECKING:
    from ..childenv import ChildEnv
    from ..config import Settings
    from ..connreports import ConnectionReports
    from ..feed import Feed
    from ..manifest import Manifest
    from ..procprio import ChildPriority
    from ..service import Service
    from ..status import StatusRegistry
    from .server import SshServer

__all__ = ["SshService", "make_service", "setup"]


def _seed(m: Manifest | None) -> bytes:
    return host_key_seed(m.owner, m.workspace_name, m.agent_name) if m is not None else host_key_seed("", "", "")


class _Reporter:
    """The server's ConnectionReporter onto the shared queue."""

    def __init__(self, reports: ConnectionReports) -> None:
        self.reports = reports

    def on_connect(self, id: str, type: str, ip: str) -> None:
        self.reports.connect(id, type, ip)

    def on_disconnect(self, id: str, type: str, ip: str, status_code: int, reason: str) -> None:
        self.reports.disconnect(id, type, ip, status_code, reason)


class SshService:
    """The SSH server's life in the daemon (see the module rules); a
    :class:`~coder_agent.tunnelports.TunnelService` and a :class:`~coder_agent.connreports.SessionCounts`."""

    name = "sshd"

    def __init__(self, *, command_env: ChildEnv, priority: ChildPriority, manifests: Feed[Manifest],
                 own_ports: set[int], reports: ConnectionReports | None, block_file_transfer: bool,
                 max_timeout: float = 0.0,
                 process_env: Mapping[str, str] | None = None) -> None:
        self.health = Health()
        self.command_env = command_env
        self.priority = priority
        self.manifests = manifests
        self.listener = LoopbackPort(own_ports)
        self.reports = reports
        self.block_file_transfer = block_file_transfer
        self.process_env = process_env
        self.max_timeout = max_timeout
        self.server: SshServer | None = None
        self.log = get_logger("sshd")
        self._want = asyncio.Event()  # start the server (the tailnet came up, or first use)
        self._named = asyncio.Event()  # a manifest came: the host key's names are known
        manifests.subscribe(self._on_manifest)  # for the daemon's life, as the service

    def _on_manifest(self, m: Manifest | None) -> None:
        if m is None:  # a session starting over: the key stays until its manifest names another
            return
        self._named.set()
        server = self.server
        if server is not None and server.set_host_key_seed(_seed(m)):
            self.log.info("ssh host key changed with the workspace's names: new connections get the new key",
                          workspace=m.workspace_name, agent=m.agent_name)

    async def run(self) -> None:
        if not self._want.is_set():
            self.health.set("ok", "idle: starts when the tailnet comes up or on the first connection")
        await self._want.wait()
        await self._named.wait()
        m = self.manifests.latest
        try:
            mod = await asyncio.to_thread(importlib.import_module, "coder_agent.sshd.server")
            server: SshServer = mod.SshServer(
                self.command_env, host_key_seed=_seed(m),
                block_file_transfer=self.block_file_transfer,
                reporter=_Reporter(self.reports) if self.reports is not None else None,
                priority=self.priority, process_env=self.process_env, max_timeout=self.max_timeout)
            port = await server.start()
        except Exception as e:
            self.listener.failed(e)
            raise
        self.server = server
        self._on_manifest(self.manifests.latest)  # one that came while the server was starting
        self.listener.listening(port)
        self.health.set("ok", f"listening on 127.0.0.1:{port}")
        try:
            await asyncio.Event().wait()
        finally:
            await self._stop()

    async def drain(self) -> None:
        await self._stop()

    async def _stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            self.listener.closed()
            await server.stop()

    # -- TunnelService ---------------------------------------------------------------------------

    def want(self) -> None:
        """Start the server now, before its first connection (the tailnet came up)."""
        self._want.set()

    async def port(self) -> int:
        self._want.set()
        return await self.listener.wait()

    def register_peer(self, local_client_port: int, remote: tuple[str, int], local: tuple[str, int]) -> None:
        if self.server is not None:
            self.server.register_peer(local_client_port, remote, local)

    def unregister_peer(self, local_client_port: int) -> None:
        if self.server is not None:
            self.server.unregister_peer(local_client_port)

    # -- SessionCounts ---------------------------------------------------------------------------

    def session_counts(self) -> dict[str, int]:
        return self.server.session_counts() if self.server is not None else {}

    def status(self) -> dict[str, Any]:
        return {"listening": self.listener.number > 0, "port": self.listener.number or None,
                "sessions": self.session_counts(), "block_file_transfer": self.block_file_transfer}


def make_service(*, settings: Settings, command_env: ChildEnv, priority: ChildPriority, manifests: Feed[Manifest],
                 own_ports: set[int], reports: ConnectionReports | None) -> SshService:
    """The SSH server: the tunnel's port 1/22 service and a session counter."""
    return SshService(command_env=command_env, priority=priority, manifests=manifests, own_ports=own_ports,
                      reports=reports, block_file_transfer=settings.block_file_transfer,
                      max_timeout=settings.ssh_max_timeout)


def setup(service: SshService, *, status: StatusRegistry) -> list[Service]:
    """The SSH server capability: its status key and the service to run."""
    status.add("sshd", service.status)
    return [service]
