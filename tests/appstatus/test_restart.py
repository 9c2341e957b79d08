"""Durability across daemon restarts, with the daemon as a real subprocess."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from coder_agent.devserver import DevServer, Fault

from ..conftest import DaemonProcess, apoll


async def _api(d: DaemonProcess, method: str, path: str, **kw: Any) -> Any:
    r = await asyncio.to_thread(d.api, method, path, **kw)
    return r


async def _start(spawn_daemon, env: dict[str, str]) -> DaemonProcess:  # type: ignore[no-untyped-def]
    d: DaemonProcess = spawn_daemon(env)
    await asyncio.to_thread(d.wait_ready)
    return d


async def test_accepted_while_down_survives_a_kill_and_is_delivered_once(  # type: ignore[no-untyped-def]
    devserver: DevServer, daemon_env, spawn_daemon
) -> None:
    env = daemon_env(devserver.url, devserver.agent.token)
    devserver.add_fault(Fault(path="/me/app-status", status=503))
    d = await _start(spawn_daemon, env)
    for state, message in (("working", "a"), ("idle", "b")):
        r = await _api(d, "POST", "/api/v0/app-status",
                       json={"app_slug": "claude-code", "state": state, "message": message})
        assert r.status_code == 202 and r.json()["durable"] is True
    await apoll(lambda: len(devserver.requests_to("/me/app-status", "PATCH")) >= 2)  # tried, refused by the fault
    # No graceful stop: the 202 alone promised the statuses are on disk.
    d.signal(signal.SIGKILL)
    await asyncio.to_thread(d.wait)
    assert devserver.agent.app_statuses == []

    devserver.clear_faults()
    d2 = await _start(spawn_daemon, env)
    await apoll(lambda: len(devserver.agent.app_statuses) == 2)
    assert [(s["state"], s["message"]) for s in devserver.agent.app_statuses] == [("working", "a"), ("idle", "b")]
    listing = await apoll(lambda: (j := d2.api("GET", "/api/v0/app-status").json())["pending"] == 0 and j)
    assert listing["statuses"][0]["delivery"] == "delivered"
    d2.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d2.wait) == 0

    # A third start knows both were delivered and sends nothing again.
    patches = len(devserver.requests_to("/me/app-status", "PATCH"))
    d3 = await _start(spawn_daemon, env)
    listing = (await _api(d3, "GET", "/api/v0/app-status")).json()
    assert listing["pending"] == 0
    assert [(s["state"], s["delivery"]) for s in listing["statuses"]] == [("idle", "delivered")]
    r = await _api(d3, "POST", "/api/v0/app-status", json={"app_slug": "claude-code", "state": "idle", "message": "b"})
    assert r.json()["duplicate"] is True and r.json()["delivery"] == "delivered"
    r = await _api(d3, "POST", "/api/v0/app-status", json={"app_slug": "claude-code", "state": "complete"})
    await apoll(lambda: len(devserver.agent.app_statuses) == 3)
    assert len(devserver.requests_to("/me/app-status", "PATCH")) == patches + 1
    assert len(devserver.agent.app_statuses) == 3


async def test_graceful_stop_sends_what_waits(devserver: DevServer, daemon_env, spawn_daemon) -> None:  # type: ignore[no-untyped-def]
    env = daemon_env(devserver.url, devserver.agent.token)
    d = await _start(spawn_daemon, env)
    r = await _api(d, "POST", "/api/v0/app-status", json={"app_slug": "claude-code", "state": "complete"})
    assert r.status_code == 202
    d.signal(signal.SIGTERM)  # within the debounce window: drain sends it before exiting
    assert await asyncio.to_thread(d.wait) == 0
    assert [s["state"] for s in devserver.agent.app_statuses] == ["complete"]


async def test_graceful_stop_while_coderd_is_down_keeps_it_for_next_time(  # type: ignore[no-untyped-def]
    daemon_env, spawn_daemon, devserver: DevServer
) -> None:
    # The first daemon has an unreachable coderd; the second the real devserver, same state dir.
    down = daemon_env("http://127.0.0.1:9", devserver.agent.token)
    d = await _start(spawn_daemon, down)
    r = await _api(d, "POST", "/api/v0/app-status", json={"app_slug": "claude-code", "state": "working"})
    assert r.status_code == 202
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait, 15) == 0  # drain gives up at the first failure: no hang
    await _start(spawn_daemon, daemon_env(devserver.url, devserver.agent.token))
    await apoll(lambda: devserver.agent.app_statuses)
    assert [s["state"] for s in devserver.agent.app_statuses] == ["working"]
