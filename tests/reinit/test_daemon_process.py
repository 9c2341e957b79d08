"""``coder-agent run`` as a real child process against the devserver: exactly once across a
restart, 409 stops the watcher for the whole process, silent streams reconnect, and 20 reinits in
a row leak no file descriptors, tasks, threads or child processes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
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


POOL_SLACK = 2


def _fd_targets(pid: int) -> list[str]:
    out = []
    for f in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{f}")
        except FileNotFoundError:
            continue
        out.append(target.split(":[")[0])  # socket:[inode] → socket: connections are replaced, not kept
    return sorted(out)


def _counts(pid: int) -> dict[str, int]:
    p = psutil.Process(pid)
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "children": len(p.children(recursive=True)),
    }


async def test_twenty_reinits_leak_nothing(
    prebuild_ds: DevServer, reinit_hub: ReinitHub, daemon_env: Any, spawn_daemon: Any, short_tmp: Path
) -> None:
    # A start script and a stop script per session: child processes, pipes, log files and the
    # log shipper are all exercised by each reinit.
    cfg = short_tmp / "agent.toml"
    cfg.write_text('[[scripts]]\ndisplay_name = "Start"\nscript = "echo started $$-$(date +%s%N)"\n\n'
                   '[[scripts]]\ndisplay_name = "Stop"\nscript = "echo stopping $(date +%s%N)"\n'
                   'run_on_start = false\nrun_on_stop = true\n')
    d = spawn_daemon(_env(daemon_env, prebuild_ds, CODER_AGENT_CONFIG=str(cfg)))
    assert d.proc is not None
    pid = d.proc.pid

    async def steady() -> dict[str, int]:
        """Counts once the daemon is idle (watching, start scripts done), sampled twice, equal."""
        await _wait_status(d, lambda s: s["reinit"]["state"] == "watching" and s["phase"] == "running"
                           and s["scripts"]["start_scripts"] == "done" and s["control_plane"]["state"] == "connected")
        while True:
            await asyncio.sleep(0.3)
            a = {**_counts(pid), "tasks": (await _status(d))["debug"]["tasks"]}
            await asyncio.sleep(0.3)
            b = {**_counts(pid), "tasks": (await _status(d))["debug"]["tasks"]}
            if a == b:
                return a

    def no_more_than(now: dict[str, int], ref: dict[str, int]) -> bool:
        # Sockets: pooled keep-alive connections to coderd (probe, log shipper) come and go with
        # timing (httpx keeps an idle one 5 s), so up to POOL_SLACK more than the reference are
        # tolerated; a per-reinit leak would show +20. Everything else must be exactly equal (and
        # the open files are compared by path below).
        return now["fds"] <= ref["fds"] + POOL_SLACK and {**now, "fds": 0} == {**ref, "fds": 0}

    async def settled(ref: dict[str, int]) -> dict[str, int]:
        deadline = asyncio.get_running_loop().time() + t(15)
        while True:
            now = await steady()
            if no_more_than(now, ref) or asyncio.get_running_loop().time() > deadline:
                return now

    def files(targets: list[str]) -> list[str]:
        return [f for f in targets if f != "socket"]

    def started() -> set[str]:
        return {r["output"] for r in prebuild_ds.agent.logs if r["output"].startswith("started ")}

    async def claim(i: int) -> None:
        reinit_hub.claim(f"owner-{i}")
        await _wait_status(d, lambda s: s["session_generation"] == i + 2 and s["reinit"]["duplicates"] >= i + 1)
        # The new session's start script ran (and its line arrived) before the next claim: a claim
        # that comes sooner ends the session before it starts (tested in test_rpc_reinit.py).
        await apoll(lambda: len(started()) >= i + 2)

    base = await steady()
    base_files = files(_fd_targets(pid))
    await claim(0)
    # The first reinit runs the stop script for the first time: its log source is born (the local
    # file, open for writing and for shipping). That is the only new file allowed after `base`.
    after_one = await settled({**base, "fds": base["fds"] + 2})
    assert no_more_than(after_one, {**base, "fds": base["fds"] + 2}), (after_one, base)
    born = list(files(_fd_targets(pid)))
    for f in base_files:
        born.remove(f)
    assert [f.rsplit("/", 1)[-1] for f in born] == ["Stop.log", "Stop.log"], born
    one_files = files(_fd_targets(pid))
    for i in range(1, 20):
        await claim(i)
    st = await _status(d)
    assert st["reinit"]["reinits"] == 20 and st["session_generation"] == 21
    now = await settled(after_one)
    assert no_more_than(now, after_one), f"after 20 reinits {now} > after the first {after_one}: {_fd_targets(pid)}"
    assert files(_fd_targets(pid)) == one_files
    # One start-script run per session: 21 distinct runs (each line is unique to its run; delivery
    # is at least once, so a batch whose answer was lost when a session's connection closed may
    # arrive twice: the same line, counted once here).
    assert len(started()) == 21, sorted(started())
    await apoll(lambda: len({r["output"] for r in prebuild_ds.agent.logs if r["output"].startswith("stopping ")}) == 20)
