"""An AgentSession on a real (unstarted) Daemon against the devserver's /me/rpc, with short intervals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from coder_agent.agentrpc import AgentSession, new_session
from coder_agent.config import load_settings
from coder_agent.daemon import Daemon
from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.rpc import RpcControl, RpcRecord, control, record

from ..conftest import t


@pytest.fixture
async def ds() -> AsyncIterator[DevServer]:
    async with DevServer(agents=[DevAgent(apps=[{"slug": "claude-code"}])]) as server:
        ctl = control(server)
        ctl.report_interval = 0.5
        yield server


def ctl_of(ds: DevServer) -> RpcControl:
    return control(ds)


def rec_of(ds: DevServer) -> RpcRecord:
    return record(ds.agent)


def lifecycle_states(ds: DevServer) -> list[str]:
    return [e["state"] for e in ds.agent.lifecycle]


@pytest.fixture
def make_daemon(short_tmp: Path) -> Callable[..., Daemon]:
    def make(server: DevServer, toml: str = "", **env: str) -> Daemon:
        cfg = short_tmp / "config.toml"
        cfg.write_text(toml)
        settings = load_settings({}, env={
            "CODER_AGENT_URL": server.url, "CODER_AGENT_TOKEN": server.agent.token,
            "CODER_AGENT_API_ADDRESS": f"unix:{short_tmp / 'api.sock'}",
            "CODER_AGENT_LOG_DIR": str(short_tmp / "logs"), "CODER_AGENT_STATE_DIR": str(short_tmp / "state"),
            "CODER_AGENT_PROMETHEUS_ADDRESS": "", **env}, config_file=cfg)
        return Daemon(settings)

    return make


@pytest.fixture
async def start_session(make_daemon: Callable[..., Daemon]) -> AsyncIterator[Callable[..., Any]]:
    """``await start_session(ds, toml="", **session_kwargs) -> (daemon, session)``; shut down after."""
    sessions: list[AgentSession] = []

    async def start(server: DevServer, toml: str = "", **kw: Any) -> tuple[Daemon, AgentSession]:
        daemon = make_daemon(server, toml)
        kw.setdefault("tick", 0.2)
        session = new_session(daemon.agent_parts(), **kw)
        sessions.append(session)
        await session.start()
        return daemon, session

    yield start
    for s in sessions:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(t(15)):
                await s.shutdown()
