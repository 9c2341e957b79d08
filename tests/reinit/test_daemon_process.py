"""``coder-agent run`` as a real child process against the devserver: exactly once across a
restart, 409 stops the watcher for the whole process, silent streams reconnect, and 20 reinits in
a row leak no file descriptors, tasks, threads or child processes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import psutil

from coder_agent.devserver import DevServer
from coder_agent.devserver.reinit import ReinitHub, mark_prebuild

from ..conftest import DaemonProcess, apoll, t
from .conftest import PING


async def _status(d: DaemonProcess) -> dict[str, Any]:
    r = await asyncio.to_thread(d.api, "GET", "/api/v0/status")
    data: dict[str, Any] = r.json()
    return data


async def _wait_status(d: DaemonProcess, pred: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal last
        try:
            last = await _status(d)
        except Exception:
            return False
        return pred(last)

    deadline = asyncio.get_running_loop().time() + t(timeout)
    while not await check():
        assert d.proc is not None and d.proc.poll() is None, d.stderr()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status never matched; last: {last.get('reinit')} {last.get('phase')}")
        await asyncio.sleep(0.05)
    return last


def _env(daemon_env: Callable[..., dict[str, str]], ds: DevServer, **extra: str) -> dict[str, str]:
    return daemon_env(ds.url, ds.agent.token, CODER_AGENT_REINIT_PING_INTERVAL=str(PING),
                      CODER_AGENT_SHUTDOWN_TIMEOUT="5", **extra)


async def test_restart_does_not_reinit_the_same_claim_again(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any
) -> None:
    env = _env(daemon_env, prebuild_ds)
    d = spawn_daemon(env)
    await _wait_status(d, lambda s: s["reinit"]["state"] == "watching")
    reinit_hub.claim("owner-1")
    st = await _wait_status(d, lambda s: s["session_generation"] == 2 and s["reinit"]["duplicates"] >= 1)
    assert st["reinit"]["reinits"] == 1
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    # the same state dir, a new process; coderd pre-seeds the claim on its first connection
    conns = reinit_hub.connections
    d2 = spawn_daemon(env)
    st = await _wait_status(d2, lambda s: s["reinit"]["duplicates"] >= 1)
    assert reinit_hub.connections == conns + 1
    await asyncio.sleep(t(3 * PING))
    st = await _status(d2)
    assert st["session_generation"] == 1 and st["reinit"]["reinits"] == 0
    assert st["reinit"]["last_claim"]["owner_id"] == "owner-1"
    # a later, different claim is acted on
    reinit_hub.claim("owner-2")
    st = await _wait_status(d2, lambda s: s["session_generation"] == 2)
    assert st["reinit"]["reinits"] == 1


async def test_409_stops_the_watcher_for_the_process(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any
) -> None:
    mark_prebuild(prebuild_ds.agent, False)
    d = spawn_daemon(_env(daemon_env, prebuild_ds))
    st = await _wait_status(d, lambda s: s["reinit"]["state"] == "not_applicable")
    assert st["services"]["reinit"]["state"] == "stopped"
    assert "409" in st["services"]["reinit"]["message"]
    # several backoff periods (0.125 → 1 s) and silence timeouts: not one more request
    await asyncio.sleep(t(2.0))
    assert len(prebuild_ds.requests_to("/me/reinit")) == 1
    assert (await _status(d))["reinit"]["connections"] == 0
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    said = [ln for ln in d.stderr().splitlines() if "received terminal 409" in ln]
    assert len(said) == 1


async def test_dropped_and_silent_streams_reconnect(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any
) -> None:
    d = spawn_daemon(_env(daemon_env, prebuild_ds))
    await apoll(lambda: reinit_hub.streams, timeout=15)
    reinit_hub.drop_streams()
    await apoll(lambda: reinit_hub.connections == 2 and reinit_hub.streams)
    reinit_hub.silent = True
    await apoll(lambda: reinit_hub.connections == 3, timeout=10)
    reinit_hub.silent = False
    reinit_hub.claim("owner-s")
    st = await _wait_status(d, lambda s: s["session_generation"] == 2)
    assert st["reinit"]["reinits"] == 1


def _counts(pid: int) -> dict[str, int]:
    p = psutil.Process(pid)
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "children": len(p.children(recursive=True)),
    }


async def test_twenty_reinits_leak_nothing(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any
) -> None:
    d = spawn_daemon(_env(daemon_env, prebuild_ds))
    await _wait_status(d, lambda s: s["reinit"]["state"] == "watching" and s["control_plane"]["state"] == "connected")
    assert d.proc is not None
    pid = d.proc.pid

    async def steady() -> dict[str, int]:
        """Counts once the daemon is idle: watching, nothing in flight (sampled twice, equal)."""
        await _wait_status(d, lambda s: s["reinit"]["state"] == "watching" and s["phase"] == "running")
        while True:
            await asyncio.sleep(0.3)
            a = {**_counts(pid), "tasks": (await _status(d))["debug"]["tasks"]}
            await asyncio.sleep(0.3)
            b = {**_counts(pid), "tasks": (await _status(d))["debug"]["tasks"]}
            if a == b:
                return a

    base = await steady()
    for i in range(20):
        reinit_hub.claim(f"owner-{i}")
        await _wait_status(d, lambda s, n=i: s["session_generation"] == n + 2 and s["reinit"]["duplicates"] >= n + 1)
    assert (await _status(d))["reinit"]["reinits"] == 20

    deadline = asyncio.get_running_loop().time() + t(15)
    while True:
        now = await steady()
        if now == base or asyncio.get_running_loop().time() > deadline:
            break
    assert now == base, f"after 20 reinits {now} != after start {base}"
