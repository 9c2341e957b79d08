"""Daemon.reinitialize driven by the watcher, in-process against the devserver: the session hooks
are re-run exactly once per claim, the local API stays up, the token is re-read.

The session driver here stands in for the agent session (scripts, RPC) that other capabilities
plug into the daemon's ``SessionOwner``; it records what the daemon asks of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_agent.config import Settings
from coder_agent.daemon import Daemon
from coder_agent.devserver import DevServer
from coder_agent.devserver.reinit import ReinitHub
from coder_agent.lifecycle import State

from ..conftest import apoll, t
from .conftest import PING


@dataclass
class FakeSession:
    """Records session starts/stops; "start scripts" take ``start_delay`` seconds."""

    start_delay: float = 0.0
    stop_delay: float = 0.0
    starts: int = 0
    stops: int = 0
    ready: int = 0
    lifecycles: list[Any] = field(default_factory=list)
    tokens_at_start: list[str] = field(default_factory=list)

    async def run(self, d: Daemon) -> None:
        self.starts += 1
        self.lifecycles.append(d.lifecycle)
        self.tokens_at_start.append(await d.tokens.token())
        d.lifecycle.advance(State.STARTING)
        await asyncio.sleep(self.start_delay)
        d.lifecycle.advance(State.READY)
        self.ready += 1
        await asyncio.Event().wait()

    async def stop(self, d: Daemon) -> None:
        self.stops += 1
        d.lifecycle.advance(State.SHUTTING_DOWN)
        await asyncio.sleep(self.stop_delay)
        d.lifecycle.advance(State.OFF)


@dataclass
class Running:
    daemon: Daemon
    session: FakeSession
    task: asyncio.Task[int]
    sock: Path

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(self.sock)),
                                     base_url="http://agent", timeout=5) as c:
            data: dict[str, Any] = (await c.get("/api/v0/status")).json()
            return data


@pytest.fixture
async def run_daemon(
    prebuild_ds: DevServer, short_tmp: Path
) -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def start(session: FakeSession, **over: Any) -> Running:
        fields: dict[str, Any] = {
            "url": prebuild_ds.url, "token": prebuild_ds.agent.token,
            "api_address": f"unix:{short_tmp / 'api.sock'}", "log_dir": short_tmp / "logs",
            "state_dir": short_tmp / "state", "prometheus_address": "", "devcontainers_enable": False,
            "reinit_ping_interval": PING, "shutdown_timeout": 5.0,
        }
        fields.update(over)
        made: list[Daemon] = []

        class Driver:  # installed after every real capability, in place of the RPC session
            async def run(self) -> None:
                await session.run(made[0])

            async def stop(self) -> None:
                await session.stop(made[0])

        d = Daemon(Settings.model_validate(fields), session_driver=Driver())
        made.append(d)
        task = asyncio.create_task(d.run())
        r = Running(d, session, task, short_tmp / "api.sock")
        running.append(r)
        await apoll(lambda: r.sock.exists() and session.starts >= 1)
        return r

    yield start
    for r in running:
        r.daemon.request_stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(r.task, t(20))


async def test_claim_during_start_scripts_reruns_the_session_once(
    run_daemon: Callable[..., Any], reinit_hub: ReinitHub
) -> None:
    s = FakeSession(start_delay=1.0)
    r: Running = await run_daemon(s)
    await apoll(lambda: reinit_hub.streams)
    assert s.ready == 0  # still in the "start scripts"
    reinit_hub.claim("owner-during-start")
    await apoll(lambda: s.ready >= 1 and s.starts == 2, timeout=15)
    await apoll(lambda: r.daemon.services.services["reinit"].duplicates >= 1)  # type: ignore[attr-defined]
    await asyncio.sleep(t(3 * PING))
    assert (s.starts, s.stops, s.ready) == (2, 1, 1)  # the interrupted start never became READY
    assert s.lifecycles[0] is not s.lifecycles[1]  # a fresh lifecycle for the new session
    st = await r.status()
    assert st["session_generation"] == 2 and st["phase"] == "running"
    assert st["reinit"]["reinits"] == 1 and st["reinit"]["last_claim"]["owner_id"] == "owner-during-start"


async def test_claim_after_ready_reruns_once_and_api_stays_up(
    run_daemon: Callable[..., Any], reinit_hub: ReinitHub
) -> None:
    s = FakeSession(stop_delay=0.8)
    r: Running = await run_daemon(s)
    await apoll(lambda: s.ready == 1 and reinit_hub.streams)
    assert r.daemon.lifecycle.state is State.READY
    reinit_hub.claim("owner-after-ready")
    # during the (slow) graceful stop of the session the local API answers and says so
    seen = await apoll(lambda: r.daemon.phase == "reinitializing")
    assert seen
    st = await r.status()
    assert st["phase"] == "reinitializing" and st["lifecycle"] == "shutting_down"
    await apoll(lambda: s.ready == 2, timeout=15)
    st = await r.status()
    assert st["phase"] == "running" and st["lifecycle"] == "ready" and st["session_generation"] == 2
    await asyncio.sleep(t(3 * PING))
    assert (s.starts, s.stops) == (2, 1)
    assert not r.task.done()  # same process, same daemon


async def test_stop_during_reinit_does_not_start_a_new_session(
    run_daemon: Callable[..., Any], reinit_hub: ReinitHub
) -> None:
    s = FakeSession(stop_delay=1.0)
    r: Running = await run_daemon(s)
    await apoll(lambda: s.ready == 1 and reinit_hub.streams)
    reinit_hub.claim("owner-x")
    await apoll(lambda: r.daemon.phase == "reinitializing")
    r.daemon.request_stop()
    assert await asyncio.wait_for(r.task, t(15)) == 0
    assert s.starts == 1 and s.stops == 1  # the session stopped once; no new one


async def test_token_file_is_reread_on_reinit(
    run_daemon: Callable[..., Any], reinit_hub: ReinitHub, prebuild_ds: DevServer, short_tmp: Path
) -> None:
    tok = short_tmp / "token"
    tok.write_text(prebuild_ds.agent.token + "\n")
    s = FakeSession()
    r: Running = await run_daemon(s, token=None, token_file=tok)
    await apoll(lambda: s.ready == 1 and reinit_hub.streams)
    old = prebuild_ds.agent.token
    new = "0b9c2a55-7a51-4e0d-9a55-3c2f7d1e8b11"
    prebuild_ds.agent.token = new  # the claim build hands out a new token
    tok.write_text(new + "\n")
    reinit_hub.claim("owner-t")
    await apoll(lambda: s.ready == 2, timeout=15)
    assert s.tokens_at_start == [old, new]
    # the watcher reconnected with the new token (the old one would get 401)
    await apoll(lambda: any(q.headers.get("Coder-Session-Token") == new
                            for q in prebuild_ds.requests_to("/me/reinit")))
    assert (await r.status())["auth"]["last_error"] is None
