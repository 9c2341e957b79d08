"""The agent RPC capability: the connection coderd counts as "agent connected", and the session on it.

``setup(parts, routes=...)`` makes the RPC connection the source of the control-plane state
(transport "rpc"), drives the :class:`~coder_agent.sessionowner.SessionOwner` with an
:class:`~coder_agent.agentrpc.session.AgentSession` per agent life (a reinit shuts the current
one down and the next run creates a new one), publishes every manifest on the manifest feed
(cleared when a session starts over), serves ``GET /api/v0/manifest`` (environment values
redacted) and adds ``agent_rpc`` to ``GET /api/v0/status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..localapi import json_response
from ..localapi.server import HTTPResponseError
from .parts import AgentParts
from .session import AgentSession

if TYPE_CHECKING:
    from ..localapi import Routes
    from ..service import Service

__all__ = ["AgentParts", "AgentSession", "RpcSessionDriver", "new_session", "setup"]


def new_session(parts: AgentParts, **kwargs: Any) -> AgentSession:
    """Create (not start) a session."""
    return AgentSession(parts, **kwargs)


class RpcSessionDriver:
    """The agent session as the :class:`~coder_agent.sessionowner.SessionDriver`: one
    :class:`AgentSession` per agent life, ``current`` being the live (or last) one."""

    def __init__(self, parts: AgentParts) -> None:
        self.parts = parts
        self.current: AgentSession | None = None

    async def run(self) -> None:
        session = self.current
        if session is None or session.stopping:  # first start, or a reinit after the old one shut down
            session = self.current = new_session(self.parts)
        await session.start()
        await session.wait()

    async def stop(self) -> None:
        if self.current is not None:
            await self.current.shutdown()

    def status(self) -> Any:
        return self.current.status() if self.current is not None else None


def setup(parts: AgentParts, *, routes: Routes) -> list[Service]:
    parts.controlplane.transport = "rpc"
    driver = RpcSessionDriver(parts)
    parts.owner.drive(driver)
    parts.owner.on_new_session(parts.manifests.clear)  # nothing is known until the new session's manifest

    async def manifest(request: web.Request) -> web.Response:
        m = parts.manifests.latest
        if m is None:
            raise HTTPResponseError(503, "The manifest is not known yet.",
                                    "The agent has not received its manifest from coderd; see the connection "
                                    "state in GET /api/v0/status.")
        return json_response(m.local_view())

    routes.route("GET", "/api/v0/manifest", manifest)
    parts.status.add("agent_rpc", driver.status)
    return []
