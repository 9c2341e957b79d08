"""An in-process daemon (the real Daemon, local API on a unix socket) against the devserver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_agent.config import load_settings
from coder_agent.daemon import Daemon
from coder_agent.devserver import DevAgent, DevServer

from ..conftest import apoll, t

APPS = [{"slug": "claude-code"}, {"slug": "aider"}]


class Running:
    def __init__(self, daemon: Daemon, ds: DevServer, sock: Path) -> None:
        self.daemon = daemon
        self.ds = ds
        self.sock = sock
        self.http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://agent",
                                      timeout=t(30))

    async def post(self, slug: str = "claude-code", state: str = "working", message: str = "", uri: str = "",
                   **extra: Any) -> httpx.Response:
        return await self.http.post("/api/v0/app-status",
                                    json={"app_slug": slug, "state": state, "message": message, "uri": uri, **extra})

    async def listing(self) -> dict[str, Any]:
        r = await self.http.get("/api/v0/app-status")
        assert r.status_code == 200
        return dict(r.json())

    async def outcome(self, entry_id: str, wait: float = 0) -> dict[str, Any]:
        r = await self.http.get("/api/v0/app-status", params={"id": entry_id, "wait": str(t(wait))})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def received(self, slug: str | None = None) -> list[tuple[str, str, str]]:
        """(slug, state, message) of every status the devserver stored, in order."""
        return [(s["app_slug"], s["state"], s["message"]) for s in self.ds.agent.app_statuses
                if slug is None or s["app_slug"] == slug]

    def patches(self) -> list[Any]:
        return self.ds.requests_to("/me/app-status", "PATCH")


@pytest.fixture
async def appserver() -> AsyncIterator[DevServer]:
    async with DevServer(agents=[DevAgent(apps=list(APPS))]) as ds:
        yield ds


@pytest.fixture
async def running(appserver: DevServer, short_tmp: Path) -> AsyncIterator[Running]:
    sock = short_tmp / "api.sock"
    settings = load_settings({}, env={
        "CODER_AGENT_URL": appserver.url,
        "CODER_AGENT_TOKEN": appserver.agent.token,
        "CODER_AGENT_API_ADDRESS": f"unix:{sock}",
        "CODER_AGENT_LOG_DIR": str(short_tmp / "logs"),
        "CODER_AGENT_STATE_DIR": str(short_tmp / "state"),
        "CODER_AGENT_PROMETHEUS_ADDRESS": "",
        "CODER_AGENT_DEVCONTAINERS_ENABLE": "false",
        "CODER_AGENT_SHUTDOWN_TIMEOUT": "5",
    })
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run())
    await apoll(lambda: sock.exists() or task.done())
    assert not task.done(), task.exception()
    r = Running(daemon, appserver, sock)
    try:
        yield r
    finally:
        await r.http.aclose()
        daemon.request_stop()
        await asyncio.wait_for(task, t(20))
