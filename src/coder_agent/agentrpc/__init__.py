"""The agent RPC capability: the connection coderd counts as "agent connected", and the session on it.

``setup(daemon)`` makes the RPC connection the source of ``daemon.controlplane`` (transport
"rpc"), installs ``daemon.session_runner`` / ``daemon.session_stopper`` (an
:class:`~coder_agent.agentrpc.session.AgentSession` per agent life; reinit replaces it with
``await daemon.agent_session.shutdown()`` and a new one), serves ``GET /api/v0/manifest``
(environment values redacted) and adds ``agent_rpc`` to ``GET /api/v0/status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..localapi import json_response
from ..localapi.server import HTTPResponseError
from .manifest import redacted
from .session import AgentSession

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..service import Service

__all__ = ["AgentSession", "current_session", "new_session", "setup"]


def current_session(daemon: Daemon) -> AgentSession | None:
    """The daemon's live session (None before the first start)."""
    session = daemon.agent_session
    return session if isinstance(session, AgentSession) else None


def new_session(daemon: Daemon, **kwargs: Any) -> AgentSession:
    """Create (not start) a session and make it the daemon's current one."""
    session = AgentSession(daemon, **kwargs)
    daemon.agent_session = session
    return session


def setup(daemon: Daemon) -> list[Service]:
    daemon.controlplane.transport = "rpc"

    async def run_session(d: Daemon) -> None:
        session = current_session(d)
        if session is None or session.stopping:  # first start, or a reinit after the old one shut down
            session = new_session(d)
        await session.start()
        await session.wait()

    async def stop_session(d: Daemon) -> None:
        session = current_session(d)
        if session is not None:
            await session.shutdown()

    daemon.session_runner = run_session
    daemon.session_stopper = stop_session

    async def manifest(request: web.Request) -> web.Response:
        if daemon.manifest is None:
            raise HTTPResponseError(503, "The manifest is not known yet.",
                                    "The agent has not received its manifest from coderd; see the connection "
                                    "state in GET /api/v0/status.")
        return json_response(redacted(daemon.manifest))

    daemon.local_api.route("GET", "/api/v0/manifest", manifest)

    def status() -> Any:
        session = current_session(daemon)
        return session.status() if session is not None else None

    daemon.status_extras["agent_rpc"] = status
    return []
